"""Keys on the Runs screen that must never misfire: a burst of typing after `/`, the footer's
keys, moving with j/k/g/G, sorting by a key and by a click on a header, and the rates that
the steps/s and ETA columns show."""

from __future__ import annotations

import time
from pathlib import Path

from textual import events
from textual.widgets import DataTable, Input

from test_tui import app_for, logs, make_run, sleeper, table_ids  # noqa: F401  (fixtures)
from tui_support import SIZE, settle, sync
from workbench.tui.feed import StepRates, duration
from workbench.tui.screens.runs import RunsScreen


async def burst(pilot, keys: str) -> None:
    """Every key of `keys` queued at once, as a paste or a laggy SSH link delivers them
    (pilot.press waits for the app to go idle after each key, which hides the bug)."""
    app = pilot.app
    for char in keys:
        name = {"/": "slash", " ": "space"}.get(char, char)
        key = events.Key(name, char)
        key.set_sender(app)
        app._driver.send_message(key)
    await pilot.pause()


@sync
async def test_a_burst_typed_after_slash_all_reaches_the_filter(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        await burst(pilot, "/half fs")  # `s` would cycle the status filter, `f` open Fuse
        await settle(pilot, lambda: app.screen.query_one("#runs-filter", Input).value == "half fs")
        assert isinstance(app.screen, RunsScreen) and app.screen.status_filter == "all"
        assert isinstance(app.focused, Input) and not app._notifications  # no "nothing to fuse" either


@sync
async def test_the_footer_shows_open_mark_fuse_and_studies(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        shown = {key for key, active in app.screen.active_bindings.items() if active.binding.show}
        assert {"enter", "space", "f", "t", "slash", "c", "n", "m"} <= shown
        keys = dict(app.screen_keys())  # `?` lists the rest
        assert {"j k", "g G", "o", "s"} <= set(keys)


@sync
async def test_j_k_g_and_G_move_the_cursor(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        screen = app.screen
        assert screen.highlighted_id() == "live0001"
        await pilot.press("j")
        assert screen.highlighted_id() == "fail0001"
        await pilot.press("G")
        assert screen.highlighted_id() == "done0001"
        await pilot.press("k")
        assert screen.highlighted_id() == "fail0001"
        await pilot.press("g")
        assert screen.highlighted_id() == "live0001"


@sync
async def test_sort_by_a_key_and_by_a_click_on_a_header(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        screen = app.screen
        await pilot.press("o")  # the first column: run id
        assert screen.sort_key == "run" and table_ids(app) == ["done0001", "fail0001", "live0001"]
        await pilot.press("O")
        assert table_ids(app) == ["live0001", "fail0001", "done0001"]
        assert "run▼" in [str(c.label) for c in screen.query_one("#runs-table", DataTable).ordered_columns]
        await pilot.press("o")  # the experiment; equal names keep their newest-first order
        assert screen.sort_key == "experiment" and table_ids(app) == ["done0001", "live0001", "fail0001"]
        header = screen.query_one("#runs-table", DataTable)
        status_x = sum(c.get_render_width(header) for c in header.ordered_columns[:2])
        await pilot.click("#runs-table", offset=(status_x + 2, 0))  # the header row, `status`
        assert screen.sort_key == "status" and table_ids(app) == ["done0001", "fail0001", "live0001"]
        await pilot.click("#runs-table", offset=(status_x + 2, 0))  # again: reversed
        assert screen.sort_reverse and table_ids(app) == ["live0001", "fail0001", "done0001"]
        while screen.sort_key is not None:  # `o` past the last column: newest first again
            await pilot.press("o")
        assert table_ids(app) == ["live0001", "fail0001", "done0001"]


def test_steps_per_second_and_eta_come_from_two_heartbeats():
    rates = StepRates()
    record = {"run_id": "r", "status": "running", "step": 100, "steps": 1000, "heartbeat": 1000.0}
    rates.observe([record])
    assert rates.rate("r") is None and rates.eta(record) is None  # one beat: no rate yet
    record = {**record, "step": 140, "heartbeat": 1002.0}
    rates.observe([record])
    assert rates.rate("r") == 20.0 and rates.eta(record) == 43.0  # 860 steps left at 20/s
    assert duration(43.0) == "43s" and duration(4000) == "1h"
    rates.observe([{**record, "status": "completed"}])
    assert rates.rate("r") is None


@sync
async def test_wide_terminals_show_more_columns(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=(130, 30)) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        keys = [c.key.value for c in app.screen.query_one("#runs-table", DataTable).ordered_columns]
        assert {"acc", "seed", "rate", "eta", "device", "subset", "fixed", "age"} <= set(keys)
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        table = app.screen.query_one("#runs-table", DataTable)
        keys = [c.key.value for c in table.ordered_columns]
        assert {"acc", "seed", "rate", "eta"} <= set(keys) and "device" not in keys
        assert str(table.get_cell("done0001", "acc")) == "90.0%"
        assert sum(c.get_render_width(table) for c in table.ordered_columns) <= SIZE[0]


@sync
async def test_a_screenshot_goes_into_the_logs_dir_and_says_where(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        app.action_screenshot()
        saved = list((logs / "screenshots").glob("*.svg"))
        assert len(saved) == 1 and "live0001" in saved[0].read_text()
        await settle(pilot, lambda: any(str(saved[0]) in str(n.message) for n in app._notifications))


@sync
async def test_a_resumed_run_waiting_in_the_queue_shows_queued(logs: Path):
    """Cancelled, then resumed: its worker holds the run's lock while it waits for a device
    slot, and both screens say `queued` (not the old `cancelled`, not `lost`)."""
    from test_tui import append

    from workbench.liveness import RunLock
    from workbench.tui.screens.run import RunScreen

    folder = make_run(logs, "resu0001", "half-fixed", "cancelled", time.time())
    append(folder / "events.jsonl", {"type": "queued", "time": time.time()})
    lock = RunLock(folder)
    assert lock.acquire()  # this process stands for the waiting worker
    from workbench.records import record_from_folder
    from workbench.store import Store

    Store(logs).put(record_from_folder(folder))  # as `workbench resume` indexes it
    try:
        app = app_for(logs)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, lambda: "resu0001" in table_ids(app))
            table = app.screen.query_one("#runs-table", DataTable)
            await settle(pilot, lambda: str(table.get_cell("resu0001", "status")) == "queued")
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen) and app.screen.run_id == "resu0001"
            await settle(pilot, lambda: app.screen.status() == "queued")
    finally:
        lock.release()
