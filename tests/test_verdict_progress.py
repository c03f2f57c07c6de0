"""Normalised ratios (speed over the run and its thirds, gradient norms, path per gradient)
and loss-matched ratios, on hand-written runs whose movement, `grad` records and loss
curves are known (tests/verdict_runs.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from verdict_runs import CONV1, FC1, write_run
from workbench.loss_matched import BEFORE_FIRST_EVAL, NOT_REACHED, first_reaches, loss_curve
from workbench.verdict import study_verdict

LR = 0.05


def ref_speed(step: int) -> float:
    """1, 2, 3 per step over the thirds (0, 30], (30, 60], (60, 90]."""
    return 1.0 if step <= 30 else 2.0 if step <= 60 else 3.0


def speeds(conv1, fc1) -> dict:
    return {"subset": {CONV1: conv1, FC1: fc1}, "fixed": {CONV1: 1.0}}


def grads(conv1: float) -> dict:
    # FC moves and gets gradients too: outside the headline scope, it must not count
    return {"subset": {CONV1: conv1, FC1: 100.0}, "fixed": {CONV1: 0.0}}


def normalised_study(root: Path, *, with_grad: bool = True) -> dict[str, dict[int, Path]]:
    """Reference conv1: speed 1, 2, 3 over the thirds (path 180 in 90 steps), grad 4; arm
    conv1: speed 2 throughout (path 180), grad 2; FC1 moves 7x faster in the arm."""
    runs: dict[str, dict[int, Path]] = {"baseline": {}, "half-fixed": {}}
    for seed in range(3):
        runs["baseline"][seed] = write_run(root, f"base{seed}", seed, freeze=False, speeds=speeds(ref_speed, 1.0),
                                           grads=grads(4.0) if with_grad else None, steps=90, lr=LR)
        runs["half-fixed"][seed] = write_run(root, f"half{seed}", seed, freeze=True, speeds=speeds(2.0, 7.0),
                                             grads=grads(2.0) if with_grad else None, steps=90, lr=LR)
    return runs


def test_normalised_ratios_separate_gradient_from_what_the_optimizer_makes_of_it(tmp_path):
    verdict = json.loads(json.dumps(study_verdict("s", normalised_study(tmp_path), "baseline"), allow_nan=False))
    normalized = verdict["normalized"]
    assert normalized["speed_mean"]["ratio"] == pytest.approx(1.0)  # 180 / 90 in both
    assert normalized["speed_mean"]["per_seed"][0]["reference"] == pytest.approx(2.0)
    thirds = normalized["speed_thirds"]
    assert [thirds[t]["ratio"] for t in ("first", "middle", "last")] == pytest.approx([2.0, 1.0, 2 / 3])
    assert normalized["grad"]["ratio"] == pytest.approx(0.5)
    assert normalized["grad"]["per_seed"][0]["arm"] == pytest.approx(2.0)
    # path / (lr * sum grad * gap): the arm makes twice the movement of each unit of gradient
    assert normalized["path_per_grad"]["per_seed"][0]["arm"] == pytest.approx(180 / (LR * 2.0 * 90))
    assert normalized["path_per_grad"]["ratio"] == pytest.approx(2.0)
    assert normalized["path_per_grad"]["ci"] == pytest.approx([2.0, 2.0]) and normalized["path_per_grad"]["n"] == 3
    assert not any("grad" in note for note in verdict["notes"])


def test_runs_without_grad_give_no_gradient_ratios_and_say_so(tmp_path):
    verdict = study_verdict("s", normalised_study(tmp_path, with_grad=False), "baseline")
    normalized = verdict["normalized"]
    assert normalized["grad"]["ratio"] is None and normalized["grad"]["n"] == 0 and normalized["grad"]["skipped"] == 3
    assert normalized["path_per_grad"]["ratio"] is None and normalized["path_per_grad"]["n"] == 0
    assert normalized["speed_mean"]["ratio"] == pytest.approx(1.0)  # needs no gradient
    assert any("without `grad`" in note for note in verdict["notes"])


# ---------------------------------------------------------------------------------------
# loss-matched


def halving(every: float, start: int = 0):
    """eval events every 100 steps from `start` whose eval loss halves every `every` steps
    from 2 (no train loss)."""
    return lambda steps: [{"type": "eval", "step": s, "train_loss": None, "eval_loss": 2 * 0.5 ** (s / every),
                           "eval_acc": 0.5} for s in range(start, steps + 1, 100)]


def test_loss_matched_ratios_compare_dist_at_equal_loss(tmp_path):
    # the arm's loss halves every 50 steps, the reference's every 100: the arm reaches each
    # threshold in half the steps; its conv1 moves 3 per step (the reference's 1), so at
    # equal loss it has moved 3 * 50 / (1 * 100) = 1.5x as far; seed 2's reference stops
    # at step 500, before its loss reaches 0.03 (at step 606)
    runs: dict[str, dict[int, Path]] = {"baseline": {}, "half-fixed": {}}
    for seed in range(3):
        steps = 500 if seed == 2 else 1000
        runs["baseline"][seed] = write_run(tmp_path, f"b{seed}", seed, freeze=False, speeds=speeds(1.0, 1.0),
                                           steps=steps, evals=halving(100)(steps))
        runs["half-fixed"][seed] = write_run(tmp_path, f"h{seed}", seed, freeze=True, speeds=speeds(3.0 + seed, 9.0),
                                             steps=1000, evals=halving(50)(1000))
    verdict = json.loads(json.dumps(study_verdict("s", runs, "baseline"), allow_nan=False))
    assert verdict["loss_key"] == "eval_loss"  # no train loss recorded
    matched = {entry["loss"]: entry for entry in verdict["loss_matched"]}
    assert list(matched) == [1.0, 0.3, 0.1, 0.03]
    for threshold, entry in matched.items():
        per_seed = entry["subset"]["per_seed"]
        assert per_seed[0]["arm_step"] == pytest.approx(50 * math.log2(2 / threshold))
        assert per_seed[0]["reference_step"] == pytest.approx(100 * math.log2(2 / threshold))
        assert per_seed[0]["ratio"] == pytest.approx(3 * 50 / 100)
        assert per_seed[1]["ratio"] == pytest.approx(4 * 50 / 100)
    assert matched[0.1]["subset"]["n"] == 3 and matched[0.1]["not_reached"] == []
    assert matched[0.03]["not_reached"] == [2] and matched[0.03]["subset"]["n"] == 2
    assert matched[0.03]["subset"]["per_seed"][2]["reference_step"] is None
    assert matched[0.03]["subset"]["ratio"] == pytest.approx(math.sqrt(1.5 * 2.0))  # geometric mean of seeds 0, 1
    assert all(entry["before_first_eval"] == [] for entry in matched.values())

    # evals from step 100 on: the arm is already below 1.0 there (0.5), so where it crossed is unknown
    for seed in range(3):
        for folder in (runs["half-fixed"][seed],):
            lines = (folder / "events.jsonl").read_text().splitlines()
            kept = [line for line in lines if json.loads(line).get("type") != "eval" or json.loads(line)["step"] > 0]
            (folder / "events.jsonl").write_text("\n".join(kept) + "\n")
    late = {e["loss"]: e for e in study_verdict("s", runs, "baseline")["loss_matched"]}
    assert late[1.0]["before_first_eval"] == [0, 1, 2] and late[1.0]["subset"]["n"] == 0
    assert late[0.3]["subset"]["n"] == 3  # 0.3 is first reached between steps 100 and 200


def test_train_loss_is_smoothed_over_steps_not_over_eval_events():
    # a loss that drops from 2 to 1 at step 100: after 50 more steps the EMA has closed
    # 1 - 1/e of the gap, whether evals come every 5 or every 10 steps
    def evals(every: int) -> dict[int, dict]:
        return {s: {"train_loss": 2.0 if s <= 100 else 1.0} for s in range(every, 301, every)}

    for every in (5, 10):
        curve = dict(loss_curve(evals(every), "train_loss"))
        assert curve[100] == pytest.approx(2.0)
        assert curve[150] == pytest.approx(1.0 + math.exp(-1))
        assert curve[300] == pytest.approx(1.0 + math.exp(-4))
    # first crossing, log-linear between the evals either side; never reached: None
    assert first_reaches([(100, 2.0), (200, 0.5)], 1.0) == pytest.approx(150.0)
    assert first_reaches([(0, 0.5)], 1.0) == 0.0
    assert first_reaches([(100, 0.5)], 1.0) == BEFORE_FIRST_EVAL  # somewhere in steps 1..100: unknown
    assert first_reaches([(100, 2.0), (200, 1.5)], 1.0) == NOT_REACHED
