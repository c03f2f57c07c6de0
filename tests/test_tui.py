"""The Textual workbench: the torch-free feed alone, then the app driven by a pilot at 80x24
over hand-made run folders (no worker, no torch)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from engine.provenance import current_engine_hash
from engine.run_folder import atomic_write_json
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.app import WorkbenchApp
from workbench.tui.feed import EventsTail, LogTail, matches, progress_bar
from workbench.tui.screens.run import RunScreen
from workbench.tui.screens.runs import RunsScreen

from tui_support import SIZE, record_popen, settle, sync

SPEC = {"seed": 0, "device": "cpu", "freeze": True, "train": {"steps": 100},
        "model": {"name": "lenet"}, "data": {"name": "mnist5k"},
        "partition": {"strategy": "first_kernels", "fraction": 0.5}}


def movement(step: int, scale: float = 0.01) -> dict:
    def figures(x: float) -> dict:
        return {"dist": x, "rel": x / 10, "speed": x / max(step, 1), "path": x * 1.5, "cos": 1 - x,
                "layers": {"conv1.weight": {"dist": x / 2, "rel": x / 20, "speed": 0.1, "path": x, "cos": 1 - x / 2}}}
    return {"type": "movement", "step": step, "subsets": {"subset": figures(scale * step), "fixed": figures(scale * step / 2)}}


def start(run_id: str, experiment: str, step: int = 0, **extra) -> dict:
    return {"type": "start", "provenance": {"engine_hash": current_engine_hash()}, "step": step, "run_id": run_id, "experiment": experiment, "digest": "d", "device": "cpu",
            "pid": 1, "host": socket.gethostname(), "time": time.time(), "subset_sizes": {"subset": 10, "fixed": 10}, **extra}


def append(path: Path, *events: dict) -> None:
    with open(path, "a") as file:
        for event in events:
            file.write(json.dumps(event) + "\n")


def make_run(logs: Path, run_id: str, experiment: str, status: str, created: float, pid: int | None = None) -> Path:
    folder = logs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "spec.json", SPEC)
    atomic_write_json(folder / "launch.json", {"pid": pid or 1, "host": socket.gethostname(), "submitted": created,
                                               "experiment": experiment})
    events = [{"type": "queued", "time": created}, start(run_id, experiment), movement(0), movement(10),
              {"type": "eval", "step": 10, "train_loss": 2.0, "eval_loss": 1.9, "eval_acc": 0.3}]
    if status == "running":
        atomic_write_json(folder / "heartbeat.json", {"pid": pid, "host": socket.gethostname(), "phase": "running",
                                                      "step": 10, "time": time.time()})
    else:
        events += [movement(100), {"type": "end", "step": 100, "status": status}]
        atomic_write_json(folder / "summary.json", {"steps": 100, "final": {"eval_acc": 0.9},
                                                    "movement": movement(100)["subsets"]})
    append(folder / "events.jsonl", *events)
    (folder / "worker.log").write_text("worker says hello\n")
    Store(logs).put(record_from_folder(folder))
    return folder


@pytest.fixture
def sleeper():
    """A live process to stand for a running worker (cancel sends it SIGTERM, not to pytest)."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def logs(tmp_path: Path, sleeper) -> Path:
    logs = tmp_path / "logs"
    now = time.time()
    make_run(logs, "done0001", "baseline", "completed", now - 3600)
    make_run(logs, "fail0001", "half-fixed", "failed", now - 1800)
    make_run(logs, "live0001", "half-fixed", "running", now - 60, pid=sleeper.pid)
    return logs


def app_for(logs: Path, run_id: str | None = None) -> WorkbenchApp:
    return WorkbenchApp(logs, logs.parent / "experiments.json", run_id)


def table_ids(app: WorkbenchApp) -> list[str]:
    table = app.screen.query_one("#runs-table", DataTable)
    return [row.key.value for row in table.ordered_rows]


# --- the feed, without the UI -------------------------------------------------------------------
def test_events_tail_reads_only_new_bytes_and_drops_redone_steps(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    tail = EventsTail(path)
    assert not tail.poll()  # no file yet
    append(path, start("r", "e"), movement(0), movement(10), {"type": "eval", "step": 10, "train_loss": 1.0,
                                                               "eval_loss": 0.9, "eval_acc": 0.5})
    assert tail.poll()
    assert tail.series["subset.dist"].steps == [0, 10] and tail.series["fixed.cos"].steps == [0, 10]
    assert tail.series["eval_acc"].values == [0.5]
    first = tail.offset
    assert not tail.poll() and tail.offset == first  # nothing new: nothing read
    with open(path, "a") as file:
        file.write(json.dumps(movement(20)) + "\n" + '{"type": "movement", "st')  # a line still being written
    assert tail.poll() and tail.series["subset.dist"].steps == [0, 10, 20] and tail.step == 20
    with open(path, "a") as file:
        file.write('ep": 30, "subsets": {}}\n')
    tail.poll()
    # resumed from step 10: what the earlier attempt wrote after step 10 is dropped
    append(path, {"type": "end", "step": 20, "status": "cancelled"}, start("r", "e", step=10, resumed_from=10), movement(20, 0.5))
    tail.poll()
    assert tail.series["subset.dist"].steps == [0, 10, 20]
    assert tail.series["subset.dist"].values[-1] == pytest.approx(10.0)  # the new attempt's value
    assert tail.end is None and tail.latest_movement["step"] == 20
    assert tail.series["eval_acc"].steps == [10]
    # restarted from scratch: everything goes
    append(path, start("r", "e", step=0, resumed_from=0), movement(0))
    tail.poll()
    assert tail.series["subset.dist"].steps == [0] and tail.series["eval_acc"].steps == []


def whole_file_fold(path: Path) -> tuple:
    """What the runs list needs from events.jsonl, folded from every event run_events keeps."""
    from engine.events import run_events
    from workbench.records import lifecycle

    events = run_events(path)
    movements = [e for e in events if e.get("type") == "movement"]
    first_start = next((e for e in events if e.get("type") == "start"), {})
    return lifecycle(events), first_start, movements[-1] if movements else None


def test_records_read_only_the_new_bytes_of_a_live_run(tmp_path: Path, monkeypatch):
    """record_from_folder (the runs list re-reads every live run each second) folds only what
    was appended since its last read, and agrees with folding the whole file every time."""
    from workbench import records

    reads: list[tuple[int, int]] = []  # (from offset, to offset) of every read of events.jsonl

    def spy(path, offset=0):
        events, end = read_events(path, offset)
        reads.append((offset, end))
        return events, end

    from engine.events import read_events

    monkeypatch.setattr(records, "read_events", spy)
    logs = tmp_path / "logs"
    folder = make_run(logs, "live0001", "baseline", "running", time.time())
    path = folder / "events.jsonl"

    def check() -> None:
        fold = records.fold_events(path)
        assert ((fold.status, fold.start, fold.end), fold.first_start, fold.movement) == whole_file_fold(path)

    check()
    chunks = [
        [movement(20), movement(30)],
        [{"type": "end", "step": 30, "status": "cancelled"}, {"type": "queued", "time": 1.0}],
        [start("live0001", "baseline", step=30, resumed_from=30), movement(40, 0.5)],  # keeps 30
        [{"type": "end", "step": 40, "status": "failed", "error": "boom"}],
        [start("live0001", "baseline", step=20, resumed_from=20)],  # drops 30 and 40: back to 20
        [movement(30, 0.7), {"type": "eval", "step": 30, "train_loss": 1.0, "eval_loss": 1.0, "eval_acc": 0.5}],
        [start("live0001", "baseline", step=0, resumed_from=0)],  # from scratch: no movement stands
        [movement(0), {"type": "end", "step": 0, "status": "completed"}],
    ]
    for chunk in chunks:
        size = path.stat().st_size
        reads.clear()
        append(path, *chunk)
        check()
        assert reads[0][0] == size  # read from where the last read stopped, not from 0
    record = records.record_from_folder(folder)
    assert record["status"] == "completed" and record["subset_dist"] == 0.0

    # nothing appended: nothing read; a line being written: read up to its start only
    reads.clear()
    check()
    assert reads == []
    size = path.stat().st_size
    with open(path, "a") as file:
        file.write(json.dumps(movement(10)) + "\n" + '{"type": "movem')
    check()
    assert reads == [(size, size + len(json.dumps(movement(10))) + 1)]
    with open(path, "a") as file:
        file.write('ent", "step": 11, "subsets": {}}\n')
    check()
    assert records.fold_events(path).movement["step"] == 11

    # replaced by a shorter file (or truncated): folded again from the top
    path.write_text(json.dumps(start("live0001", "baseline")) + "\n")
    reads.clear()
    check()
    assert reads == [(0, path.stat().st_size)] and records.fold_events(path).movement is None
    replacement = tmp_path / "other.jsonl"
    replacement.write_text("".join(json.dumps(e) + "\n" for e in (start("live0001", "baseline"), movement(5), movement(6))))
    replacement.replace(path)  # a new file (new inode), longer than the old one
    reads.clear()
    check()
    assert reads[0][0] == 0 and records.fold_events(path).movement["step"] == 6


def test_log_tail_and_filters(tmp_path: Path):
    log = LogTail(tmp_path / "worker.log", limit=3)
    assert log.poll() == []
    (tmp_path / "worker.log").write_text("a\nb\npart")
    assert log.poll() == ["a", "b"]
    with open(tmp_path / "worker.log", "a") as file:
        file.write("ial\nc\nd\n")
    assert log.poll() == ["partial", "c", "d"] and log.lines == ["partial", "c", "d"]
    record = {"run_id": "abc12345", "experiment": "half-fixed", "status": "running", "device": "cuda:0"}
    assert matches(record, "HALF cuda") and not matches(record, "baseline")
    assert matches(record, "", "running") and not matches(record, "", "failed")
    assert progress_bar(60, 100) == "▰▰▰▱▱ 60/100" and progress_bar(0, None) == "0/-"


# --- the app ----------------------------------------------------------------------------------
@sync
async def test_runs_table_lists_runs_newest_first_and_filters(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        assert isinstance(app.screen, RunsScreen)
        assert table_ids(app) == ["live0001", "fail0001", "done0001"]
        table = app.screen.query_one("#runs-table", DataTable)
        assert str(table.get_cell("live0001", "status")) == "running"
        assert str(table.get_cell("done0001", "step")).endswith("100/100")
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"half")
        assert table_ids(app) == ["live0001", "fail0001"]
        await pilot.press("enter")  # back to the table
        assert isinstance(app.focused, DataTable)
        await pilot.press("s")  # status: running
        assert table_ids(app) == ["live0001"]
        await pilot.press("s")  # queued
        assert table_ids(app) == []
        await pilot.press("slash", *["backspace"] * 4, "escape")
        await pilot.press(*["s"] * 6)  # round to "all" again (completed, failed, cancelled, lost, corrupt)
        assert table_ids(app) == ["live0001", "fail0001", "done0001"]


@sync
async def test_run_screen_follows_appended_events_and_runs_table_updates(logs: Path, sleeper):
    app = app_for(logs)
    events = logs / "live0001" / "events.jsonl"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        table = app.screen.query_one("#runs-table", DataTable)
        assert str(table.get_cell("live0001", "step")).endswith("10/100")
        await pilot.press("enter")  # the newest run is highlighted
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "live0001"
        screen = app.screen
        await settle(pilot, lambda: len(screen.tail.series["subset.dist"]) == 2)
        assert screen.query_one("#chart-dist").points == 4  # subset + fixed, 2 points each
        assert "running" in str(screen.query_one("#run-header").render())
        append(events, movement(20), movement(30))
        await settle(pilot, lambda: len(screen.tail.series["subset.dist"]) == 4, timeout=60)
        await settle(pilot, lambda: screen.query_one("#chart-dist").points == 8)
        assert screen.query_one("#run-layers", DataTable).row_count == 4  # subset/fixed: all + 1 layer
        await pilot.press("3")
        assert "worker says hello" in "\n".join(strip.text for strip in screen.query_one("#run-log").lines)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await settle(pilot, lambda: str(table.get_cell("live0001", "step")).endswith("30/100"))
        assert table_ids(app)[0] == "live0001" and table.cursor_row == 0
        await pilot.press("q")
    assert app.return_code == 0
    assert sleeper.poll() is None  # quitting the TUI leaves the run's process alone


@sync
async def test_run_screen_shows_every_pane_at_once_when_wide(logs: Path):
    """80x24: one pane at a time, chosen by the tab bar (keys 1 2 3); 160x48: the charts, the
    per-layer table and the log all at once, no tab bar."""
    def shown(screen) -> list[str]:
        return [pane.id for pane in screen.query(".run-pane") if pane.display and pane.region.area]

    app = app_for(logs, run_id="done")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen) and not screen.wide
        assert screen.query_one("#run-tabs").display and shown(screen) == ["run-charts"]
        await pilot.press("2")
        await pilot.pause()
        assert shown(screen) == ["run-layers"]
        await pilot.press("3")
        await pilot.pause()
        assert shown(screen) == ["run-log"]
    app = app_for(logs, run_id="done")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.wide and not screen.query_one("#run-tabs").display
        assert shown(screen) == ["run-charts", "run-layers", "run-log"]
        charts, layers, log = (screen.query_one(f"#run-{p}").region for p in ("charts", "layers", "log"))
        assert charts.right <= layers.x and layers.bottom <= log.y  # charts left, table over log right
        assert charts.width >= 90 and charts.height >= 40
        await pilot.press("2")
        assert app.focused is screen.query_one("#run-layers") and len(shown(screen)) == 3


@sync
async def test_l_charts_each_layer_of_subset_then_fixed_then_whole_subsets_again(logs: Path):
    app = app_for(logs, run_id="done")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        dist, speed = screen.query_one("#chart-dist"), screen.query_one("#chart-speed")
        await settle(pilot, lambda: list(dist.lines) == ["subset", "fixed"])
        await pilot.press("l")
        assert list(dist.lines) == ["conv1.weight"] and dist.chart_title == "dist from init: subset by layer"
        assert dist.lines["conv1.weight"].steps == [0, 10, 100]
        assert dist.lines["conv1.weight"].values == pytest.approx([0.0, 0.05, 0.5])  # the subset's layer: x / 2
        assert speed.lines["conv1.weight"].values == pytest.approx([0.1] * 3)
        await pilot.press("l")
        assert dist.lines["conv1.weight"].values == pytest.approx([0.0, 0.025, 0.25])  # the fixed layer's
        assert "fixed by layer" in dist.chart_title
        await pilot.press("l")
        assert list(dist.lines) == ["subset", "fixed"] and dist.chart_title == "dist from init"
        assert ("l", "Layer") in app.screen_keys()
        assert any(c.title.startswith("Layer (l)") for c in app.get_system_commands(screen))


@sync
async def test_cancel_asks_first_then_writes_the_request_and_q_quits(logs: Path, sleeper):
    from workbench.tui.screens.confirm import ConfirmScreen

    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        await pilot.press("down")  # a failed run: nothing to cancel, nothing asked
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)
        assert not (logs / "fail0001" / "cancel.request").exists()
        await pilot.press("up", "c")
        assert isinstance(app.screen, ConfirmScreen) and "live0001" in app.screen.question
        await pilot.press("n")  # a stray `c` cancels nothing
        assert isinstance(app.screen, RunsScreen) and not (logs / "live0001" / "cancel.request").exists()
        await pilot.press("enter", "c", "escape")  # the Run screen asks too
        assert isinstance(app.screen, RunScreen) and not (logs / "live0001" / "cancel.request").exists()
        await pilot.press("escape", "c", "y")
        assert (logs / "live0001" / "cancel.request").exists()
        await pilot.press("question_mark")
        assert "HelpScreen" == type(app.screen).__name__
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("q")
    assert app.return_code == 0 and not app.is_running
    sleeper.wait(timeout=5)  # it was the "worker": cancel sent it SIGTERM


@sync
async def test_resume_starts_workbench_resume_in_its_own_session(logs: Path, monkeypatch):
    from workbench.tui.screens import actions

    started = record_popen(monkeypatch, actions)
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 3)
        await pilot.press("r")  # the running run: not resumable
        assert started == []
        await pilot.press("down", "r")
    (args, kwargs), = started
    assert args == [str(Path(sys.executable).parent / "workbench"), "resume", "fail0001", "--logs-dir", str(logs)]
    assert kwargs["start_new_session"] is True and kwargs["stdout"] == subprocess.DEVNULL


@sync
async def test_opening_on_a_run_id(logs: Path):
    app = app_for(logs, run_id="done")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "done0001"
        await settle(pilot, lambda: "completed" in str(app.screen.query_one("#run-header").render()))


def test_the_tui_imports_no_torch():
    code = "import workbench.tui, workbench.tui.app, sys; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


@sync
async def test_rerun_with_changes_opens_compose_on_the_runs_spec(logs: Path, tmp_path: Path):
    from workbench.tui.screens.compose import ComposeScreen
    from workbench.tui.spec_form import SpecForm

    spec = json.loads((logs / "done0001" / "spec.json").read_text())
    app = app_for(logs, run_id="done")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        await pilot.press("e")
        await settle(pilot, lambda: isinstance(app.screen, ComposeScreen))
        values = app.screen.query_one(SpecForm).value()
        for key in ("seed", "freeze"):
            assert values[key] == spec[key]
        assert values["partition"]["strategy"] == spec["partition"]["strategy"]
        assert values["train"]["steps"] == spec["train"]["steps"]


@sync
async def test_a_pruned_mutant_charts_its_size_and_an_ensemble_its_members(logs: Path):
    """A pruning run tracks no movement: its charts show parameters and channels per layer
    over steps; an ensemble's loss chart adds each member's accuracy on the accuracy axis."""
    folder = logs / "live0001"
    append(folder / "events.jsonl",
           start("live0001", "mutant", step=0, params=1000, widths={"features.conv1": 8, "features.conv2": 16}),
           {"type": "prune", "step": 20, "params_after": 700, "widths": {"features.conv1": 6, "features.conv2": 12}},
           {"type": "eval", "step": 20, "eval_acc": 0.5, "member_acc": [0.4, 0.45]})
    app = app_for(logs, run_id="live")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        dist, speed, cos, loss = (screen.query_one(f"#chart-{c}") for c in ("dist", "speed", "cos", "loss"))
        await settle(pilot, lambda: "params" in dist.lines)
        assert dist.chart_title.startswith("parameters") and dist.lines["params"].values == [1000, 700]
        assert speed.lines["features.conv2"].steps == [0, 20] and speed.lines["features.conv2"].values == [16, 12]
        assert cos.points == 0 and "not tracked" in cos.chart_title
        assert loss.lines["member 1 acc"].values == [0.45] and "member 1 acc" in loss.right
        assert loss.colours["member 0 acc"] != loss.colours["eval_acc"]


@sync
async def test_f_fuses_the_marked_runs_with_the_chosen_mode(logs: Path, monkeypatch):
    """`f` asks how to fuse the marked runs and hands them to `workbench fuse` (which checks
    them); what it queued, or the one sentence saying why not, comes back as a notification."""
    import subprocess

    from workbench.tui.screens.fuse import FuseScreen

    calls, answers = [], [
        subprocess.CompletedProcess([], 0, stdout='{"run_ids": ["fuse0001"]}\n', stderr=""),
        subprocess.CompletedProcess([], 2, stdout="", stderr="error: run fail0001 has no checkpoint 'final' to fuse\n"),
    ]

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return answers[len(calls) - 1]

    monkeypatch.setattr("workbench.tui.screens.actions.subprocess.run", fake_run)
    ensemble = make_run(logs, "ens00001", "ensemble-2", "completed", time.time() - 30)  # the newest: on top
    atomic_write_json(ensemble / "spec.json", {**SPEC, "ensemble": {"members": 2}})
    app = app_for(logs)
    messages = lambda: [str(n.message) for n in app._notifications]  # noqa: E731
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(table_ids(app)) == 4)
        await pilot.press("down", "f")  # live0001, running: the bug was a Fuse dialog here
        assert isinstance(app.screen, RunsScreen) and any("live0001 not completed" in m for m in messages())
        await pilot.press("space", "down", "space", "f")  # live0001 and fail0001: neither completed
        assert isinstance(app.screen, RunsScreen) and any("fail0001 not completed" in m for m in messages())
        await pilot.press("space", "up", "space", "g", "space", "G", "space", "f")  # unmarked; ens00001, done0001
        assert isinstance(app.screen, FuseScreen) and app.screen.run_ids == ["ens00001", "done0001"]
        await pilot.press("down", "enter")  # the second mode: head
        await settle(pilot, lambda: any("fuse0001" in m for m in messages()))
        command = calls[0]
        assert Path(command[0]).name == "workbench" and command[1:6] == ["fuse", "ens00001", "done0001", "--mode", "head"]
        assert command[command.index("--logs-dir") + 1] == str(logs) and isinstance(app.screen, RunsScreen)
        assert app.screen.marked_ids() == []  # done with: unmarked
        await pilot.press("f")  # none marked, done0001 highlighted: one run that is no ensemble
        assert isinstance(app.screen, RunsScreen) and any("not an ensemble" in m for m in messages())
        await pilot.press("g", "f", "enter")  # the completed ensemble run alone: its members, mutant
        await settle(pilot, lambda: any("no checkpoint 'final'" in m for m in messages()))
        assert calls[1][1:5] == ["fuse", "ens00001", "--mode", "mutant"]
        await pilot.press("f", "escape")
        assert isinstance(app.screen, RunsScreen) and len(calls) == 2
