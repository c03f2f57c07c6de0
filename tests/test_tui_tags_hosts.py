"""The Runs screen's tags and host columns (from 120 columns up, when they say something) and
its filter's `tag:` `exp:` `status:` `host:` words, over hand-made run folders (no torch)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from textual.widgets import DataTable, Input

from workbench.records import record_from_folder
from workbench.run_filter import matches
from workbench.store import Store
from workbench.tags import change_tags
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.runs import RunsScreen

from test_tui import make_run, table_ids
from tui_support import settle, sync

WIDE = (120, 30)


def run_elsewhere(monkeypatch, logs: Path, run_id: str, host: str, created: float) -> Path:
    """A failed run made on `host` (a shared logs dir seen from another node)."""
    with monkeypatch.context() as patch:
        patch.setattr(socket, "gethostname", lambda: host)
        return make_run(logs, run_id, "half-fixed", "failed", created)


def tagged(folder: Path, *tags: str) -> None:
    change_tags(folder, tags)
    Store(folder.parent).put(record_from_folder(folder))


def column_keys(app: WorkbenchApp) -> list[str]:
    return [str(key.value) for key in app.screen.query_one("#runs-table", DataTable).columns]


def cell(app: WorkbenchApp, run_id: str, column: str) -> str:
    return str(app.screen.query_one("#runs-table", DataTable).get_cell(run_id, column))


async def loaded(pilot, app: WorkbenchApp, rows: int) -> None:
    await settle(pilot, lambda: isinstance(app.screen, RunsScreen)
                 and app.screen.query_one("#runs-table", DataTable).row_count == rows)


async def typed_filter(pilot, app: WorkbenchApp, text: str) -> list[str]:
    field = app.screen.query_one("#runs-filter", Input)
    field.value = ""
    await pilot.press("slash", *text, "enter")
    await pilot.pause()
    return table_ids(app)


def test_the_filter_words():
    run = {"run_id": "ab12cd34", "experiment": "half-fixed", "status": "completed", "device": "cuda:1",
           "host": "gpu-node-2", "tags": ["lr-sweep", "Paper"]}
    assert matches(run, "tag:lr-sweep") and matches(run, "tag:paper") and not matches(run, "tag:lr")
    assert matches(run, "exp:HALF status:comp host:node-2") and not matches(run, "exp:baseline")
    assert not matches(run, "status:running") and not matches(run, "host:cpu-box")
    assert matches(run, "half cuda") and matches(run, "sweep")  # plain words: id, experiment, status, device, tags
    assert not matches(run, "lr:0.1")  # an unknown prefix is a plain word
    assert matches(run, "tag:paper", "completed") and not matches(run, "tag:paper", "failed")


@sync
async def test_tags_and_host_columns_from_120_columns_and_the_tag_filter(tmp_path: Path, monkeypatch):
    logs = tmp_path / "logs"
    now = time.time()
    base = make_run(logs, "base0001", "baseline", "completed", now - 300)
    half = make_run(logs, "half0001", "half-fixed", "completed", now - 200)
    app = WorkbenchApp(logs, tmp_path / "experiments.json")
    async with app.run_test(size=WIDE) as pilot:
        await loaded(pilot, app, 2)
        # every run on this host, none tagged: the columns would say nothing
        assert "host" not in column_keys(app) and "tags" not in column_keys(app)

        other = run_elsewhere(monkeypatch, logs, "half0002", "gpu-node-2", now - 100)
        tagged(half, "lr-sweep", "paper")
        tagged(other, "paper")
        await settle(pilot, lambda: "tags" in column_keys(app) and "host" in column_keys(app))
        assert cell(app, "half0001", "tags") == "lr-sweep paper" and cell(app, "base0001", "tags") == "-"
        assert cell(app, "half0002", "host") == "gpu-node-2" and cell(app, "base0001", "host") == socket.gethostname()

        assert await typed_filter(pilot, app, "tag:lr-sweep") == ["half0001"]
        assert await typed_filter(pilot, app, "tag:paper") == ["half0002", "half0001"]
        assert await typed_filter(pilot, app, "tag:paper status:failed") == ["half0002"]
        assert await typed_filter(pilot, app, "host:gpu-node") == ["half0002"]
        assert await typed_filter(pilot, app, "exp:base") == ["base0001"]
        assert await typed_filter(pilot, app, "half") == ["half0002", "half0001"]  # plain text as before
        assert str(app.screen.query_one("#runs-info").render()).startswith("2 of 3 runs")
        await pilot.press("q")

    app = WorkbenchApp(logs, tmp_path / "experiments.json")
    async with app.run_test(size=(80, 24)) as pilot:  # at 80 columns: neither column
        await loaded(pilot, app, 3)
        assert "host" not in column_keys(app) and "tags" not in column_keys(app)
        assert await typed_filter(pilot, app, "tag:paper") == ["half0002", "half0001"]  # the filter still finds them
    assert base.exists()
