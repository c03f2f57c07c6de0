"""The escape verdict (workbench/escape_verdict.py) on synthetic run folders: basin curves,
loss lines and movement written by hand, so every figure is known in advance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.events import EventWriter
from workbench.escape import escape_section
from workbench.escape_report import escape_markdown
from workbench.escape_verdict import ESCAPE_RISE, barrier, escaped


def fake_run(root: Path, name: str, *, freeze: bool, curve: list[float], line: list[float], dist: tuple[float, float]) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "spec.json").write_text(json.dumps({"freeze": freeze, "partition": {"fraction": 0.75}}))
    movement = {"subset": {"dist": dist[0]}, "fixed": {"dist": dist[1]}}
    (path / "summary.json").write_text(json.dumps({"status": "completed", "movement": movement}))
    with EventWriter(path / "events.jsonl") as events:
        for index, loss in enumerate(curve):
            events.write({"type": "basin", "step": index * 10, "train_loss": loss})
        events.write({"type": "interpolation", "step": 10 * (len(curve) - 1), "alpha": [0, 0.5, 1], "train_loss": line})
    return path


def test_escape_means_rising_past_the_threshold_then_falling_below_the_start():
    assert escaped([(0, 0.2), (10, 0.2 + ESCAPE_RISE * 2), (20, 0.19)])
    assert not escaped([(0, 0.2), (10, 0.2 + ESCAPE_RISE / 2), (20, 0.1)])  # never left: just went down
    assert not escaped([(0, 0.2), (10, 0.5), (20, 0.21)])  # left but did not come back below the start
    assert not escaped([(0, 0.2), (10, 0.1), (20, 0.5)])  # below first, then up: not an escape
    assert barrier([0.2, 0.6, 0.1]) == pytest.approx(0.4) and barrier([0.3, 0.2, 0.1]) == 0


def test_per_arm_best_loss_escapes_distance_and_barrier_against_the_control(tmp_path):
    # control: the loss creeps down to 0.18, 0.16 in two seeds; frozen: 0.09 in seed 0 (after a
    # climb: an escape), 0.2 in seed 1 (no better than the control)
    runs = {
        "control": {0: fake_run(tmp_path, "c0", freeze=False, curve=[0.2, 0.19, 0.18], line=[0.2, 0.19, 0.18], dist=(3, 4)),
                    1: fake_run(tmp_path, "c1", freeze=False, curve=[0.2, 0.17, 0.16], line=[0.2, 0.18, 0.16], dist=(6, 8))},
        "frozen-75": {0: fake_run(tmp_path, "f0", freeze=True, curve=[0.2, 0.5, 0.09], line=[0.2, 0.7, 0.09], dist=(10, 0)),
                      1: fake_run(tmp_path, "f1", freeze=True, curve=[0.2, 0.21, 0.2], line=[0.2, 0.2, 0.2], dist=(5, 0))},
    }
    (entry,) = escape_section(runs, "control")
    assert entry["arm"] == "frozen-75" and entry["frozen"] == 0.75 and entry["n"] == 2
    assert entry["lower_in"] == 1 and entry["escaped"] == 1
    best = entry["best_train_loss"]
    assert [p["ratio"] for p in best["per_seed"]] == pytest.approx([0.09 / 0.18, 0.2 / 0.16])
    assert best["ratio"] == pytest.approx(math.sqrt(0.09 / 0.18 * 0.2 / 0.16)) and best["ci"] is not None
    assert [p["ratio"] for p in entry["distance"]["per_seed"]] == pytest.approx([10 / 5, 5 / 10])
    assert [b["barrier"] for b in entry["barrier"]["per_seed"]] == pytest.approx([0.5, 0.0])
    assert entry["interpolation"] == pytest.approx([0.2, 0.45, 0.145])
    assert entry["sentence"].startswith(
        "continuing with 75% frozen reached a train loss lower than continuing with everything trained in 1 of 2 seeds (ratio "
    )
    page = "\n".join(escape_markdown({"escape": [entry]}))
    assert entry["sentence"] in page and "| frozen-75 | 75% |" in page and "1 of 2" in page
