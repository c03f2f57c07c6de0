"""The answer where the user looks: a frozen run's Run screen shows its subset's movement over
its paired reference run's (same spec and seed, nothing frozen; here in no study), for the
partitioned layers in the header and per layer in the Layers tab, by the verdict's
definitions (workbench/scopes.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from test_tui import SPEC, append, app_for, start
from tui_support import SIZE, settle, sync
from engine.run_folder import atomic_write_json
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.live_ratio import live_ratio
from workbench.tui.screens.run import RunScreen

STEPS = (0, 50, 100)


def movement(step: int, conv: float, fc: float) -> dict:
    """conv1 moves `conv` x step, fc1 `fc` x step; the whole subset their root-sum-square."""
    layers = {"features.conv1": {"dist": conv * step, "speed": conv}, "classifier.fc1": {"dist": fc * step, "speed": fc}}
    whole = {"dist": ((conv * step) ** 2 + (fc * step) ** 2) ** 0.5, "speed": (conv ** 2 + fc ** 2) ** 0.5}
    return {"type": "movement", "step": step, "subsets": {"subset": {**whole, "layers": layers},
                                                          "fixed": {**whole, "layers": layers}}}


def make_pair_run(logs: Path, run_id: str, freeze: bool, conv: float, fc: float, created: float) -> None:
    folder = logs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "spec.json", {**SPEC, "freeze": freeze})
    atomic_write_json(folder / "launch.json", {"pid": 1, "submitted": created, "experiment": run_id})
    append(folder / "events.jsonl", {"type": "queued", "time": created}, start(run_id, run_id),
           *(movement(step, conv, fc) for step in STEPS), {"type": "end", "step": 100, "status": "completed"})
    Store(logs).put(record_from_folder(folder))


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    make_pair_run(logs, "ref00001", False, 0.01, 0.02, time.time() - 100)
    make_pair_run(logs, "frz00001", True, 0.03, 0.02, time.time() - 50)  # conv moves 3x, fc the same
    return logs


def test_the_ratio_covers_the_partitioned_layers_by_the_verdicts_definitions():
    own = [movement(s, 0.03, 0.02) for s in STEPS]
    reference = [movement(s, 0.01, 0.02) for s in (0, 50)]  # the reference is behind: step 50
    ratio = live_ratio(SPEC, own, reference)
    assert ratio.step == 50 and ratio.scope == "conv kernels"  # first_kernels, FC not partitioned
    assert ratio.ratios["dist"] == pytest.approx(3.0) and ratio.ratios["speed"] == pytest.approx(3.0)
    assert ratio.layers["classifier.fc1"]["dist"] == pytest.approx(1.0)


@sync
async def test_the_run_screen_shows_the_live_ratio_and_per_layer_ratios(pair: Path):
    app = app_for(pair, "frz00001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.ratio.step == 100)
        screen = app.screen
        assert screen.reference_run == "ref00001"
        await settle(pilot, lambda: "dist 3.00x" in str(screen.query_one("#run-header").render()))
        header = str(screen.query_one("#run-header").render())
        assert "subset (conv kernels) ÷ unfrozen, step 100" in header and "speed 3.00x" in header
        await pilot.press("2")
        table = screen.query_one("#run-layers", DataTable)
        await settle(pilot, lambda: table.row_count > 0 and any(
            str(table.get_row_at(i)[-2]) for i in range(table.row_count)))
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        fixed_at = next(i for i, row in enumerate(rows) if row[0] == "fixed")
        subset = {row[1]: row[-2:] for row in rows[:fixed_at]}
        assert subset["features.conv1"] == ["3.00x", "3.00x"] and subset["classifier.fc1"] == ["1.00x", "1.00x"]
        assert all(row[-2:] == ["", ""] for row in rows[fixed_at:])  # the fixed side: not a ratio the question asks
    app = app_for(pair, "ref00001")  # the reference itself has no reference
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.end)
        await pilot.pause(0.3)
        assert app.screen.reference is None and "÷" not in str(app.screen.query_one("#run-header").render())
