"""Snapshots of every screen (pytest-textual-snapshot) at the smallest terminal the TUI must
work in (80x24) and a wide one (160x48), plus the Runs and Run screens in the light theme.

The data is fixed: completed runs of a two-arm study written with fixed times, the clock the
ages are measured from is fixed, and paths are relative (the test runs in its tmp folder),
so a snapshot changes only when what a screen shows changes. After a deliberate change:
`pytest tests/test_tui_snapshots.py --snapshot-update`, then look at the SVGs.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.widgets import DataTable, Input

from engine.provenance import current_engine_hash
from engine.run_folder import atomic_write_json
from engine.spec import Experiments
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.app import WorkbenchApp
from workbench.tui.devices import DeviceChoice
from workbench.tui.screens.compare import CompareChart, CompareScreen
from workbench.tui.screens.compose import ComposeScreen
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.run import RunScreen
from workbench.tui.screens.runs import RunsScreen
from workbench.tui.screens.studies import StudiesScreen

from tui_support import pair_experiments, settle

NOW = 1_700_000_000.0  # the clock every age is measured from
SMALL, WIDE = (80, 24), (160, 48)
EXPERIMENTS = pair_experiments("cpu")
STEPS = (0, 25, 50, 75, 100)


def movement(step: int, scale: float) -> dict:
    def figures(x: float) -> dict:
        layers = {name: {"dist": x * share, "rel": x * share / 10, "speed": share / 100, "path": x * share, "cos": 1 - x * share / 10}
                  for name, share in (("conv1.weight", 0.3), ("conv2.weight", 0.7))}
        return {"dist": x, "rel": x / 10, "speed": x / max(step, 1), "path": x * 1.2, "cos": 1 - x / 10, "layers": layers}

    grow = scale * step * (1.5 - step / 200)  # a bend, so curves are curves
    return {"type": "movement", "step": step, "subsets": {"subset": figures(grow), "fixed": figures(grow / 3)}}


def weights_snapshot(step: int, scale: float, seed: int) -> dict:
    """A snapshots.jsonl line: 8 conv1 kernels of 1x5x5 (the first 4 fixed), growing with the step."""
    grow = 1 + scale * step
    kernels = [[[[round(math.sin(k + x * 0.7 - y * (0.4 + seed / 10)) * (grow if k >= 4 else 1) / 4, 4)
                  for x in range(5)] for y in range(5)]] for k in range(8)]
    hist = lambda spread: [round(40 * math.exp(-((b - 11.5) / spread) ** 2)) for b in range(24)]  # noqa: E731
    return {"step": step, "bins": 24, "edges": {"conv1.weight": [-1, 1], "conv2.weight": [-1, 1]},
            "kernels": {"layer": "conv1.weight", "param": "conv1.weight.weight", "values": kernels,
                        "fixed_kernels": [k < 4 for k in range(8)]},
            "hist": {"subset": {"conv1.weight": hist(3 * grow)}, "fixed": {"conv1.weight": hist(3)}},
            "proj": [round(scale * step * math.cos(step / 40 + seed), 4), round(scale * step * math.sin(step / 40), 4)]}


def make_run(logs: Path, run_id: str, arm: str, seed: int, scale: float, created: float, spec: dict) -> None:
    """A completed run of `arm` with seed `seed` whose subset dist grows `scale` per step."""
    folder = logs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "spec.json", spec)
    atomic_write_json(folder / "launch.json", {"pid": 1, "host": socket.gethostname(), "submitted": created,
                                               "experiment": arm})
    events = [{"type": "queued", "time": created},
              {"type": "start", "provenance": {"engine_hash": current_engine_hash()}, "step": 0, "run_id": run_id, "experiment": arm, "digest": "d", "device": "cpu",
               "pid": 1, "host": socket.gethostname(), "time": created, "subset_sizes": {"subset": 156, "fixed": 155}}]
    for step in STEPS:
        events.append(movement(step, scale))
        if step:
            events.append({"type": "eval", "step": step, "train_loss": 2.3 - step / 60 - seed / 10,
                           "eval_loss": 2.3 - step / 70, "eval_acc": 0.1 + step / 130})
    events.append({"type": "end", "step": 100, "status": "completed", "time": created + 90})
    with open(folder / "events.jsonl", "w") as file:
        file.writelines(json.dumps(e) + "\n" for e in events)
    atomic_write_json(folder / "summary.json", {"steps": 100, "status": "completed",
                                                "final": {"eval_acc": 0.87, "eval_loss": 0.9, "train_loss": 0.6},
                                                "movement": movement(100, scale)["subsets"]})
    (folder / "worker.log").write_text(f"run {run_id}: {arm} seed {seed}\nstep 100: completed\n")
    with open(folder / "snapshots.jsonl", "w") as file:  # the weights over time (track.snapshots)
        file.writelines(json.dumps(weights_snapshot(step, scale, seed)) + "\n" for step in STEPS)
    Store(logs).put(record_from_folder(folder))


@pytest.fixture
def app(tmp_path: Path, monkeypatch) -> WorkbenchApp:
    """The app over a study's four completed runs (half-fixed moving 2x as far), from tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("workbench.tui.feed.time", SimpleNamespace(time=lambda: NOW))
    monkeypatch.setattr("workbench.tui.spec_form.available_devices",
                        lambda: [DeviceChoice("auto", "auto"), DeviceChoice("cpu", "cpu")])
    experiments = Path("experiments.json")
    experiments.write_text(json.dumps(EXPERIMENTS))
    study = Experiments.load(experiments).study("pair")
    logs = Path("logs")
    for n, (arm, seed) in enumerate([("baseline", 0), ("baseline", 1), ("half-fixed", 0), ("half-fixed", 1)]):
        scale = (0.01 if arm == "baseline" else 0.02) * (1 + seed / 10)
        spec = study.specs[arm][seed].model_dump(mode="json")
        make_run(logs, f"{arm[:4]}000{seed}", arm, seed, scale, NOW - 3600 + n * 600, spec)
    return WorkbenchApp(logs, experiments)


def no_blink(app: WorkbenchApp) -> None:
    for widget in app.screen.query(Input):
        widget.cursor_blink = False


def runs_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await settle(pilot, lambda: isinstance(app.screen, RunsScreen)
                     and app.screen.query_one("#runs-table", DataTable).row_count == 4)
        no_blink(app)
    return run_before


def run_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await runs_loaded(app)(pilot)
        await pilot.press("enter")  # the newest run: half0001
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query_one("#chart-dist").points >= 10)
        await pilot.pause(0.1)
    return run_before


def compose_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await runs_loaded(app)(pilot)
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.pause(0.1)
        no_blink(app)
    return run_before


def studies_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await runs_loaded(app)(pilot)
        await pilot.press("t")
        await settle(pilot, lambda: isinstance(app.screen, StudiesScreen)
                     and app.screen.query_one("#study-verdict", DataTable).row_count > 0)
        await pilot.pause(0.1)
    return run_before


def compare_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await runs_loaded(app)(pilot)
        await pilot.press("space", "down", "down", "space", "m")  # half0001 and base0001
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen)
                     and len(app.screen.query_one("#cmp-subset-dist", CompareChart).labels) == 2
                     and app.screen.query_one("#cmp-spec", DataTable).row_count > 0)
        await pilot.pause(0.1)
    return run_before


def help_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await runs_loaded(app)(pilot)
        await pilot.press("question_mark")
        await settle(pilot, lambda: isinstance(app.screen, HelpScreen))
    return run_before


def weights_loaded(app: WorkbenchApp):
    async def run_before(pilot) -> None:
        await run_loaded(app)(pilot)
        await pilot.press("4")
        await settle(pilot, lambda: "step 100" in str(app.screen.query_one("#weights-step").render())
                     and app.screen.query_one("#weights-trajectory").tracks.__len__() == 2)
        await pilot.pause(0.1)
    return run_before


SCREENS = {"runs": runs_loaded, "run": run_loaded, "compose": compose_loaded, "studies": studies_loaded,
           "compare": compare_loaded, "help": help_loaded, "weights": weights_loaded}


@pytest.mark.parametrize("size", [SMALL, WIDE], ids=["80x24", "160x48"])
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(app: WorkbenchApp, screen: str, size: tuple[int, int], snap_compare):
    assert snap_compare(app, terminal_size=size, run_before=SCREENS[screen](app))


@pytest.mark.parametrize("screen", ["runs", "run"])
def test_light_theme_snapshot(app: WorkbenchApp, screen: str, snap_compare):
    async def run_before(pilot) -> None:
        app.theme = "textual-light"
        await SCREENS[screen](app)(pilot)

    assert snap_compare(app, terminal_size=WIDE, run_before=run_before)


@pytest.mark.parametrize("screen", [s for s in SCREENS if s != "help"])  # help's is the screen's below
def test_every_footer_key_fits_in_80_columns(app: WorkbenchApp, screen: str):
    """No key of a screen's footer is cut off or hidden under the command palette's key."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    async def check() -> None:
        async with app.run_test(size=SMALL) as pilot:
            await SCREENS[screen](app)(pilot)
            # Wait for the footer's layout to settle (two equal reads), however slow the machine.
            footer, regions = None, None
            for _ in range(400):
                await pilot.pause(0.05)
                footer = app.screen.query_one(Footer)
                keys = list(footer.query(FooterKey))
                now = [(k.key, k.region) for k in keys]
                if keys and all(k.region.width for k in keys) and now == regions:
                    break
                regions = now
            palette = [k for k in keys if k.has_class("-command-palette")]
            right = palette[0].region.x if palette else SMALL[0]
            shown = [k for k in keys if k not in palette]
            assert shown, "an empty footer"
            for key in shown:
                assert key.region.width and key.region.right <= right, f"{key.description or key.key} is cut off"

    import asyncio

    asyncio.run(check())
