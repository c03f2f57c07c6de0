"""The Studies screen, driven by a pilot at 80x24 over hand-made run folders whose spec.json
is the study's resolved arm spec (no worker, no torch)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from engine.provenance import current_engine_hash
from engine.run_folder import atomic_write_json
from engine.spec import Experiments
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens import studies as studies_module
from workbench.tui.screens.studies import StudiesScreen, StudyMatcher

from tui_support import SIZE, pair_experiments, record_popen, settle, sync

EXPERIMENTS = pair_experiments(
    "auto", longer={"arms": ["baseline", "half-fixed"], "seeds": 2, "set": {"train.steps": 200}}
)
STEPS = (0, 50, 100)


def movement(step: int, scale: float) -> dict:
    figures = lambda x: {"dist": x, "rel": x / 10, "speed": x / max(step, 1), "path": x, "cos": 1 - x / 100}  # noqa: E731
    return {"type": "movement", "step": step, "subsets": {"subset": figures(scale * step), "fixed": figures(scale * step)}}


def make_study_run(logs: Path, run_id: str, study: str, arm: str, seed: int, scale: float, experiments: Path) -> None:
    """A completed run of `arm` x `seed` of `study`; its subset dist is `scale` x step."""
    resolved = Experiments.load(experiments).study(study)
    spec = resolved.specs[arm][seed].model_dump(mode="json")
    spec["device"] = "cpu"  # what "auto" became where it ran
    folder = logs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "spec.json", spec)
    now = time.time()
    atomic_write_json(folder / "launch.json", {"pid": 1, "host": socket.gethostname(), "submitted": now,
                                               "experiment": resolved.experiments[arm]})
    events = [{"type": "queued", "time": now},
              {"type": "start", "provenance": {"engine_hash": current_engine_hash()}, "step": 0, "run_id": run_id, "experiment": resolved.experiments[arm], "digest": "d",
               "device": "cpu", "pid": 1, "host": socket.gethostname(), "time": now}]
    events += [movement(step, scale) for step in STEPS]
    events += [{"type": "eval", "step": 100, "train_loss": 1.0, "eval_loss": 1.0, "eval_acc": 0.5},
               {"type": "end", "step": 100, "status": "completed"}]
    with open(folder / "events.jsonl", "w") as file:
        file.writelines(json.dumps(e) + "\n" for e in events)
    atomic_write_json(folder / "summary.json", {"steps": 100, "status": "completed", "final": {"eval_acc": 0.5},
                                                "movement": movement(100, scale)["subsets"]})
    Store(logs).put(record_from_folder(folder))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    experiments = tmp_path / "experiments.json"
    experiments.write_text(json.dumps(EXPERIMENTS))
    logs = tmp_path / "logs"
    for seed in (0, 1):  # "pair": every run, half-fixed moving 2x as far as baseline
        make_study_run(logs, f"base000{seed}", "pair", "baseline", seed, 0.01, experiments)
        make_study_run(logs, f"half000{seed}", "pair", "half-fixed", seed, 0.02, experiments)
    make_study_run(logs, "long0000", "longer", "baseline", 0, 0.01, experiments)  # "longer": 1 of 4
    return experiments, logs


def list_rows(screen: StudiesScreen) -> list[str]:
    return [row.key.value for row in screen.query_one("#studies-table", DataTable).ordered_rows]


def table_rows(screen: StudiesScreen, table_id: str) -> list[list[str]]:
    table = screen.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row(row.key)] for row in table.ordered_rows]


async def open_studies(pilot, app) -> StudiesScreen:
    await pilot.press("t")
    await settle(pilot, lambda: isinstance(app.screen, StudiesScreen) and len(list_rows(app.screen)) == 2)
    return app.screen


def test_matcher_ignores_device_when_auto_and_leaves_other_specs_out(setup):
    experiments, logs = setup
    matcher = StudyMatcher(experiments, logs)
    states, error = matcher.poll()
    assert error == ""
    pair, longer = states
    assert {arm: {s: r["run_id"] for s, r in seeds.items()} for arm, seeds in pair.runs.items()} == {
        "baseline": {0: "base0000", 1: "base0001"}, "half-fixed": {0: "half0000", 1: "half0001"}}
    assert pair.complete and pair.verdict["comparisons"][0]["subsets"]["subset"]["dist"]["ratio"] == pytest.approx(2.0)
    # train.steps 200 differs: the "pair" runs are not the "longer" study's
    assert longer.runs["baseline"][0]["run_id"] == "long0000"
    assert longer.runs["baseline"][1] is None and longer.runs["half-fixed"] == {0: None, 1: None}
    assert not longer.complete and longer.verdict is None


@sync
async def test_studies_screen_lists_studies_and_shows_the_verdict(setup):
    experiments, logs = setup
    app = WorkbenchApp(logs, experiments)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot, app)
        assert list_rows(screen) == ["pair", "longer"]
        assert table_rows(screen, "#studies-table")[0] == ["pair", "4/4", "4/4", "0", "0", "2", "baseline, half-fixed"]
        assert table_rows(screen, "#studies-table")[1][1:5] == ["1/4", "1/4", "0", "0"]
        await settle(pilot, lambda: screen.query_one("#study-verdict", DataTable).row_count > 0)
        runs = table_rows(screen, "#study-runs")
        assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
            ("baseline", "0", "base0000", "completed"), ("baseline", "1", "base0001", "completed"),
            ("half-fixed", "0", "half0000", "completed"), ("half-fixed", "1", "half0001", "completed")]
        assert runs[0][4].endswith("100/100")
        verdict = table_rows(screen, "#study-verdict")
        # these runs have no per-layer records: the headline is the whole subset, said so;
        # the same 2x on both seeds: no spread, so no p
        assert verdict[0] == ["all", "subset", "2.00", "2.00 to 2.00", "-", "2"]
        answer = str(screen.query_one("#study-answer", Static).render())
        assert "subset moved 2.00x" in answer
        chart = screen.query_one("#study-chart")
        assert chart.display and chart.points == 4 * 2  # ratio, lo, hi at steps 50 and 100, and the line at 1
        colours = chart.colours  # each of its own, the CI band alike and apart from the ratio
        assert set(colours) == {"ratio", "lo", "hi", "1"} and colours["lo"] == colours["hi"]
        assert len({colours["ratio"], colours["lo"], colours["1"]}) == 3 and "default" not in colours.values()
        await pilot.press("down")  # "longer": one run, three missing, no verdict
        assert screen.selected == "longer"
        runs = table_rows(screen, "#study-runs")
        assert runs[0][2:4] == ["long0000", "completed"]
        assert [r[3] for r in runs[1:]] == ["missing"] * 3
        assert not screen.query_one("#study-verdict").display and not screen.query_one("#study-chart").display
        assert "no verdict" in str(screen.query_one("#study-answer", Static).render())
        await pilot.press("escape")
        assert not isinstance(app.screen, StudiesScreen)


@sync
async def test_l_launches_workbench_study_in_its_own_session(setup, monkeypatch):
    experiments, logs = setup
    started = record_popen(monkeypatch, studies_module)
    app = WorkbenchApp(logs, experiments)
    async with app.run_test(size=SIZE) as pilot:
        await open_studies(pilot, app)
        await pilot.press("down", "l")
    (args, kwargs), = started
    assert args == [str(Path(sys.executable).parent / "workbench"), "study", "longer", "--experiments", str(experiments),
                    "--logs-dir", str(logs), "--json"]
    assert kwargs["start_new_session"] is True and kwargs["stdout"] == subprocess.DEVNULL


@sync
async def test_a_bad_experiments_file_says_so(tmp_path: Path):
    experiments = tmp_path / "experiments.json"
    experiments.write_text("{not json")
    app = WorkbenchApp(tmp_path / "logs", experiments)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, StudiesScreen)
        await settle(pilot, lambda: "cannot read" in str(screen.query_one("#study-header", Static).render()))
        assert not (tmp_path / "logs").exists()  # looking creates nothing


@sync
async def test_t_is_in_help_and_the_palette(setup):
    experiments, logs = setup
    app = WorkbenchApp(logs, experiments)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert ("t", "Studies") in app.screen_keys()
        assert any(c.title.startswith("Studies") for c in app.get_system_commands(app.screen))
        await pilot.press("t")
        assert isinstance(app.screen, StudiesScreen)
        assert ("l", "Launch study") in app.screen_keys()


@sync
async def test_a_study_runs_screen_overlays_its_paired_reference_run(setup):
    """half0001 is the half-fixed arm's seed-1 run of "pair": its movement charts also draw
    the reference arm's seed-1 run (base0001), in dimmer colours, labelled with the arm."""
    from workbench.tui.screens.run import RunScreen
    from workbench.tui.widgets.chart import line_colour

    experiments, logs = setup
    app = WorkbenchApp(logs, experiments, run_id="half0001")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        dist = screen.query_one("#chart-dist")
        await settle(pilot, lambda: len(dist.lines) == 4)
        assert list(dist.lines) == ["subset", "fixed", "subset (baseline)", "fixed (baseline)"]
        reference = dist.lines["subset (baseline)"]
        assert reference.steps == list(STEPS) and reference.values == pytest.approx([0.01 * s for s in STEPS])
        assert dist.lines["subset"].values == pytest.approx([0.02 * s for s in STEPS])
        assert line_colour("subset (baseline)") != line_colour("subset")
        assert set(screen.query_one("#chart-cos").lines) == set(dist.lines)
        assert list(screen.query_one("#chart-loss").lines) == ["train_loss", "eval_loss", "eval_acc"]  # the run's own
        assert "vs base0001" in str(screen.query_one("#run-header").render())
        # no per-layer records: the whole subset, as the verdict falls back; 2x as far and as fast
        await settle(pilot, lambda: "dist 2.00x" in str(screen.query_one("#run-header").render()))
        assert "subset (all layers) ÷ baseline, step 100" in str(screen.query_one("#run-header").render())
        assert "speed 2.00x" in str(screen.query_one("#run-header").render())
    for run_id in ("base0001", "long0000"):  # the reference arm itself; a run without its reference
        app = WorkbenchApp(logs, experiments, run_id=run_id)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            dist = app.screen.query_one("#chart-dist")
            await settle(pilot, lambda: len(dist.lines) == 2)
            await pilot.pause(0.3)
            assert list(dist.lines) == ["subset", "fixed"], run_id


def test_the_studies_screen_imports_no_torch():
    code = "import workbench.tui.screens.studies, sys; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


MATCH_BOTH_WAYS = """
import json, sys
from pathlib import Path
from engine.spec import Experiments
from workbench.devices import auto_device
from workbench.study import gather
from workbench.tui.screens.studies import StudyMatcher
experiments, logs = Path(sys.argv[1]), Path(sys.argv[2])
states, _ = StudyMatcher(experiments, logs).poll()
tui = {s.name: {arm: {str(seed): r and r["run_dir"] for seed, r in by.items()} for arm, by in s.runs.items()} for s in states}
catalog = Experiments.load(experiments)
cli = {}
for name in catalog.studies:
    found = gather(catalog.study(name), logs, launch=False)
    cli[name] = {arm: {str(seed): None for seed in by} for arm, by in catalog.study(name).specs.items()}
    for arm, by in found.runs.items():
        cli[name][arm].update({str(seed): str(path) for seed, path in by.items()})
print(json.dumps({"tui": tui, "cli": cli, "torch": "torch" in sys.modules, "here": auto_device()}))
"""


def test_the_cli_and_the_studies_screen_match_the_same_runs_without_torch(setup):
    """One matcher: an "auto" arm's runs on two devices, a failed newer run and other engine
    code give `study`/`report` (gather) and the screen the same runs, and neither imports torch."""
    experiments, logs = setup
    for run_id, source, device, status in (("gpus0000", "base0000", "cuda:0", "completed"),
                                           ("fail0001", "half0001", "cpu", "failed")):
        folder = logs / run_id
        folder.mkdir()
        for name in ("spec.json", "launch.json", "summary.json"):
            (folder / name).write_bytes((logs / source / name).read_bytes())
        spec = json.loads((folder / "spec.json").read_text())
        atomic_write_json(folder / "spec.json", {**spec, "device": device})
        launch = json.loads((folder / "launch.json").read_text())
        atomic_write_json(folder / "launch.json", {**launch, "submitted": launch["submitted"] + 60})  # newer
        lines = (logs / source / "events.jsonl").read_text().splitlines()
        lines[-1] = json.dumps({"type": "end", "step": 100, "status": status, **({"error": "boom"} if status == "failed" else {})})
        (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
        Store(logs).put(record_from_folder(folder))
    done = subprocess.run([sys.executable, "-c", MATCH_BOTH_WAYS, str(experiments), str(logs)],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert not seen["torch"], "matching imported torch"
    assert seen["cli"] == seen["tui"]
    pair = {arm: {seed: path and Path(path).name for seed, path in by.items()} for arm, by in seen["cli"]["pair"].items()}
    # both devices' runs are runs of the "auto" arm: the one on the device "auto" picks here wins
    assert pair["baseline"]["0"] == ("base0000" if seen["here"] == "cpu" else "gpus0000")
    # the failed run is newer, but a completed run is preferred over it
    assert pair["half-fixed"]["1"] == "half0001"
    assert seen["cli"]["longer"]["baseline"] == {"0": str((logs / "long0000").resolve()), "1": None}


def test_the_studies_list_counts_queued_apart_from_running_and_clips_long_arms():
    from workbench.tui.screens.studies import ARMS_WIDTH, StudyState, list_cells

    arms = [f"arm-with-a-long-name-{i}" for i in range(4)]
    state = StudyState("big", arms=arms, seeds=[0],
                       runs={arm: {0: {"status": status}} for arm, status in
                             zip(arms, ("running", "queued", "queued", "completed"))})
    cells = list_cells(state)
    assert [str(c) for c in cells[1:5]] == ["4/4", "1/4", "1", "2"]  # runs, done, running, queued
    assert len(cells[-1]) == ARMS_WIDTH and cells[-1].endswith("…")
