"""The verdict of a study and its report, on run folders written by hand with known movement:
reference dist(t) = a_s * t and arm dist(t) = r_s * a_s * t, so every ratio is known exactly."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from workbench.report import write_report
from workbench.verdict import read_run, study_verdict, t_quantile, verdict_table

STEPS = list(range(0, 101, 10))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def movement(subset_slope: float, fixed_slope: float, step: int, *, rel_null: bool = False) -> dict:
    """The subsets' metrics at `step` when each moves at a constant rate (dist = slope * t)."""

    def figures(slope: float) -> dict:
        return {
            "dist": slope * step,
            "rel": None if rel_null else slope * step / 10.0,
            "speed": slope if step else 0.0,
            "path": slope * step,
            "cos": 1.0 - slope * step / 1000.0,
            "layers": {"conv1": {"dist": slope * step / 2}},
        }

    return {"subset": figures(subset_slope), "fixed": figures(fixed_slope)}


def make_run(
    root: Path,
    run_id: str,
    seed: int,
    *,
    freeze: bool,
    subset_slope: float,
    fixed_slope: float,
    acc: float = 0.9,
    loss: float = 0.3,
    rel_null: bool = False,
    resumed: bool = False,
    movement_events: bool = True,
) -> Path:
    """A completed run folder: spec.json, events.jsonl (movement every 10 steps, eval at 50 and
    100) and summary.json. `resumed`: an earlier attempt wrote wrong records after step 30
    (and one at step 65) before it crashed and the run was resumed from step 30."""
    folder = root / run_id
    folder.mkdir(parents=True)
    spec = {"seed": seed, "freeze": freeze, "partition": {"strategy": "first_kernels", "fraction": 0.5}, "train": {"steps": 100}}
    (folder / "spec.json").write_text(json.dumps(spec))
    start = {"type": "start", "step": 0, "run_id": run_id, "experiment": "x", "subset_sizes": {"subset": 10, "fixed": 10}}
    events = [start]

    def record(step: int, scale: float = 1.0) -> dict:
        return {"type": "movement", "step": step, "subsets": movement(subset_slope * scale, fixed_slope * scale, step, rel_null=rel_null)}

    def evaluation(step: int, scale: float = 1.0) -> dict:
        return {"type": "eval", "step": step, "train_loss": None, "eval_loss": loss * scale * 100 / step, "eval_acc": acc * step / 100 / scale}

    for step in STEPS:
        if resumed and step == 40:
            # the crashed attempt: garbage from step 40 on, then a resume from step 30
            events += [record(40, 7.0), record(50, 7.0), evaluation(50, 3.0), record(60, 7.0), record(65, 7.0)]
            events.append({**start, "step": 30, "resumed_from": 30})
        if movement_events:
            events.append(record(step))
        if step in (50, 100):
            events.append(evaluation(step))
    events.append({"type": "end", "step": 100, "status": "completed"})
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = {
        "run_id": run_id,
        "status": "completed",
        "steps": 100,
        "movement": movement(subset_slope, fixed_slope, 100, rel_null=rel_null),
        "final": {"train_loss": loss * 0.9, "eval_loss": loss, "eval_acc": acc},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def make_study(root: Path, ratios: list[float], *, slopes=None, accs=None, **kwargs) -> dict[str, dict[int, Path]]:
    """baseline (nothing frozen) and half-fixed (the fixed subset frozen: it never moves),
    seeds 0.., the half-fixed subset moving ratios[s] times as far as the baseline one."""
    runs: dict[str, dict[int, Path]] = {"baseline": {}, "half-fixed": {}}
    for seed, r in enumerate(ratios):
        a = (slopes or [0.01 * (s + 1) for s in range(len(ratios))])[seed]
        ref_acc, arm_acc = (accs or [(0.8, 0.85)] * len(ratios))[seed]
        runs["baseline"][seed] = make_run(root, f"base{seed:04d}", seed, freeze=False, subset_slope=a, fixed_slope=0.02, acc=ref_acc, loss=0.5, **kwargs)
        runs["half-fixed"][seed] = make_run(root, f"half{seed:04d}", seed, freeze=True, subset_slope=r * a, fixed_slope=0.0, acc=arm_acc, loss=0.4, **kwargs)
    return runs


def geometric(values: list[float], t: float) -> tuple[float, float, float]:
    """Geometric mean and the 95% interval exp(mean log +- t * sd(log) / sqrt(n)), by hand."""
    logs = [math.log(v) for v in values]
    mean = sum(logs) / len(logs)
    half = half_width(logs, t)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def half_width(values: list[float], t: float) -> float:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return t * sd / math.sqrt(len(values))


# ---------------------------------------------------------------------------------------


def test_t_quantiles_match_the_t_distribution():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(40) == pytest.approx(2.0211, abs=1e-4)
    assert t_quantile(120) == pytest.approx(1.9799, abs=1e-4)
    assert 1.96 < t_quantile(10_000) < 1.961
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_ratio_and_t_interval_over_three_seeds(tmp_path):
    runs = make_study(tmp_path, [1.8, 2.0, 2.2])
    verdict = study_verdict("freeze-half", runs, "baseline")
    half = half_width([1.8, 2.0, 2.2], 4.303)  # 0.497

    dist = verdict["subsets"]["subset"]["dist"]
    assert dist["ratio"] == pytest.approx(2.0)
    assert dist["ci"] == pytest.approx([2.0 - half, 2.0 + half], rel=1e-3)
    assert dist["ci"][0] < 2.0 < dist["ci"][1]  # covers the true ratio
    assert dist["n"] == 3 and dist["skipped"] == 0
    assert [p["ratio"] for p in dist["per_seed"]] == pytest.approx([1.8, 2.0, 2.2])
    assert [p["step"] for p in dist["per_seed"]] == [100, 100, 100]
    # speed is constant per run, so its ratio is the same r_s
    speed = verdict["subsets"]["subset"]["speed"]
    assert speed["ratio"] == pytest.approx(2.0) and speed["ci"] == pytest.approx(dist["ci"])
    # the top level carries the dist verdict of the subset beside the per-metric details
    assert verdict["subsets"]["subset"]["ratio"] == dist["ratio"]
    assert verdict["subsets"]["subset"]["ci"] == dist["ci"]
    # the frozen subset did not move at all in the arm: ratio 0, interval [0, 0]
    fixed = verdict["subsets"]["fixed"]["dist"]
    assert fixed["ratio"] == 0.0 and fixed["ci"] == [0.0, 0.0] and fixed["n"] == 3

    # the answer states the headline: the partitioned (conv) layers, a geometric mean
    gm, lo, hi = geometric([1.8, 2.0, 2.2], 4.303)
    p = stats.ttest_1samp(np.log([1.8, 2.0, 2.2]), 0).pvalue
    assert verdict["answer"] == (
        f"conv kernels that kept training moved {gm:.2f}x farther when the rest was frozen "
        f"(half-fixed vs baseline, geometric mean of 3 seeds, 95% CI {lo:.2f} to {hi:.2f}, p={p:.2g})"
    )
    assert verdict["comparisons"][0]["answer"] == verdict["answer"]


def test_verdict_shape_is_json_with_run_ids_per_arm_and_seed(tmp_path):
    runs = make_study(tmp_path, [1.8, 2.0, 2.2])
    verdict = json.loads(json.dumps(study_verdict("freeze-half", runs, "baseline")))
    assert verdict["study"] == "freeze-half" and verdict["reference"] == "baseline"
    assert verdict["arms"] == ["baseline", "half-fixed"] and verdict["seeds"] == [0, 1, 2]
    assert verdict["runs"] == {
        "baseline": {"0": "base0000", "1": "base0001", "2": "base0002"},
        "half-fixed": {"0": "half0000", "1": "half0001", "2": "half0002"},
    }
    (comparison,) = verdict["comparisons"]
    assert comparison["arm"] == "half-fixed" and comparison["reference"] == "baseline"
    assert set(comparison["subsets"]) == {"subset", "fixed"}
    assert set(comparison["subsets"]["subset"]["over_steps"]) == {"dist", "speed"}
    assert set(comparison["final"]) == {"eval_acc", "eval_loss", "train_loss"}
    assert verdict["subsets"] == comparison["subsets"] and verdict["notes"] == []


def test_ratio_at_matched_steps_is_the_known_ratio_at_every_step(tmp_path):
    runs = make_study(tmp_path, [1.8, 2.0, 2.2])
    over = study_verdict("s", runs, "baseline")["subsets"]["subset"]["over_steps"]
    half = half_width([1.8, 2.0, 2.2], 4.303)
    for metric in ("dist", "speed"):
        assert over[metric]["step"] == STEPS[1:]  # step 0 is 0/0: left out
        assert over[metric]["ratio"] == pytest.approx([2.0] * 10)
        assert over[metric]["lo"] == pytest.approx([2.0 - half] * 10, rel=1e-3)
        assert over[metric]["hi"] == pytest.approx([2.0 + half] * 10, rel=1e-3)
        assert over[metric]["n"] == [3] * 10


def test_final_loss_and_accuracy_differences(tmp_path):
    accs = [(0.80, 0.84), (0.82, 0.87), (0.78, 0.84)]  # differences 0.04, 0.05, 0.06
    runs = make_study(tmp_path, [1.8, 2.0, 2.2], accs=accs)
    final = study_verdict("s", runs, "baseline")["comparisons"][0]["final"]
    acc = final["eval_acc"]
    half = half_width([0.04, 0.05, 0.06], 4.303)
    assert acc["arm"] == pytest.approx((0.84 + 0.87 + 0.84) / 3)
    assert acc["reference"] == pytest.approx(0.80)
    assert acc["difference"] == pytest.approx(0.05)
    assert acc["ci"] == pytest.approx([0.05 - half, 0.05 + half], rel=1e-3)
    assert acc["ratio"] == pytest.approx((0.84 / 0.80 + 0.87 / 0.82 + 0.84 / 0.78) / 3)
    assert acc["n"] == 3
    # eval loss 0.4 in every arm run, 0.5 in every reference run: no spread, a zero-width interval
    assert final["eval_loss"]["difference"] == pytest.approx(-0.1)
    assert final["eval_loss"]["ci"] == pytest.approx([-0.1, -0.1])
    assert final["eval_loss"]["ratio"] == pytest.approx(0.8)
    assert final["train_loss"]["difference"] == pytest.approx(-0.09)


def test_ratios_either_side_of_one_give_no_difference_detected(tmp_path):
    runs = make_study(tmp_path, [0.9, 1.0, 1.2])
    verdict = study_verdict("s", runs, "baseline")
    dist = verdict["subsets"]["subset"]["dist"]
    half = half_width([0.9, 1.0, 1.2], 4.303)
    mean = 3.1 / 3
    assert dist["ratio"] == pytest.approx(mean)
    assert dist["ci"] == pytest.approx([mean - half, mean + half], rel=1e-3)
    assert dist["ci"][0] < 1 < dist["ci"][1]
    gm, lo, hi = geometric([0.9, 1.0, 1.2], 4.303)
    detectable = verdict["headline"]["subset"]["detectable_ratio"]
    assert verdict["detectable_ratio"] == detectable and detectable > hi
    assert verdict["answer"].startswith(
        f"no difference detected: conv kernels that kept training moved {gm:.2f}x as far when the rest was frozen "
        f"(half-fixed vs baseline, geometric mean of 3 seeds, 95% CI {lo:.2f} to {hi:.2f}, p="
    )
    assert verdict["answer"].endswith(f"; 3 seeds detect only ratios beyond {detectable:.2f}x or {1 / detectable:.2f}x)")


def test_ratios_below_one_say_less_far(tmp_path):
    verdict = study_verdict("s", make_study(tmp_path, [0.5, 0.55, 0.6]), "baseline")
    assert verdict["subsets"]["subset"]["ci"][1] < 1
    assert verdict["answer"].startswith("conv kernels that kept training moved less far when the rest was frozen: 0.55x as far (")
    assert "detectable_ratio" not in verdict  # something was detected


def test_one_seed_has_no_interval_and_says_so(tmp_path):
    verdict = study_verdict("s", make_study(tmp_path, [1.8]), "baseline")
    dist = verdict["subsets"]["subset"]["dist"]
    assert dist["ratio"] == pytest.approx(1.8) and dist["ci"] is None and dist["n"] == 1
    assert verdict["subsets"]["subset"]["ci"] is None
    assert verdict["subsets"]["subset"]["over_steps"]["dist"]["lo"] == [None] * 10
    assert verdict["comparisons"][0]["final"]["eval_acc"]["ci"] is None
    assert verdict["answer"] == (
        "conv kernels that kept training moved 1.80x as far when the rest was frozen "
        "(half-fixed vs baseline, 1 seed: no confidence interval; use --seeds 3 or more)"
    )
    json.dumps(verdict, allow_nan=False)


def test_zero_or_missing_denominators_are_skipped_and_counted(tmp_path):
    # seed 1's reference subset never moves: 0/0 at every step, a ratio that means nothing
    runs = make_study(tmp_path, [1.8, 2.0, 2.2], slopes=[0.01, 0.0, 0.03], rel_null=True)
    verdict = study_verdict("s", runs, "baseline", metrics=("dist", "rel"))
    dist = verdict["subsets"]["subset"]["dist"]
    assert dist["n"] == 2 and dist["skipped"] == 1
    assert dist["ratio"] == pytest.approx(2.0)  # (1.8 + 2.2) / 2
    assert dist["ci"] == pytest.approx([2.0 - half_width([1.8, 2.2], 12.706), 2.0 + half_width([1.8, 2.2], 12.706)], rel=1e-3)
    assert [p["ratio"] for p in dist["per_seed"]][1] is None
    assert verdict["subsets"]["subset"]["over_steps"]["dist"]["n"] == [2] * 10
    # rel is null throughout (as for an empty subset): nothing to compare, no crash
    rel = verdict["subsets"]["subset"]["rel"]
    assert rel == {**rel, "ratio": None, "ci": None, "n": 0, "skipped": 3}
    assert verdict["subsets"]["subset"]["over_steps"]["rel"]["ratio"] == [None] * 10
    json.dumps(verdict, allow_nan=False)

    # the other way round (the frozen arm as the reference): its fixed subset is 0 everywhere
    flipped = study_verdict("s", runs, "half-fixed")
    assert flipped["subsets"]["fixed"]["dist"] == {**flipped["subsets"]["fixed"]["dist"], "ratio": None, "n": 0, "skipped": 3}
    assert flipped["subsets"]["subset"]["dist"]["ratio"] == pytest.approx((1 / 1.8 + 1 / 2.2) / 2)


def test_superseded_records_of_a_resumed_run_do_not_distort_the_curve(tmp_path):
    runs = make_study(tmp_path, [1.8, 2.0, 2.2], resumed=True)
    run = read_run(runs["baseline"][0])
    assert sorted(run.movement) == STEPS  # the crashed attempt's step 65 is gone
    assert run.movement[50]["subset"]["dist"] == pytest.approx(0.01 * 50)  # the resumed attempt's value
    assert run.evals[50]["eval_acc"] == pytest.approx(0.8 * 0.5)

    verdict = study_verdict("s", runs, "baseline")
    over = verdict["subsets"]["subset"]["over_steps"]["dist"]
    assert over["step"] == STEPS[1:]
    assert over["ratio"] == pytest.approx([2.0] * 10)
    assert verdict["subsets"]["subset"]["dist"]["ratio"] == pytest.approx(2.0)


def test_falls_back_to_the_summary_without_movement_events(tmp_path):
    runs = make_study(tmp_path, [1.5, 1.5], movement_events=False)
    verdict = study_verdict("s", runs, "baseline")
    dist = verdict["subsets"]["subset"]["dist"]
    assert dist["ratio"] == pytest.approx(1.5) and dist["ci"] == pytest.approx([1.5, 1.5]) and dist["n"] == 2
    assert verdict["subsets"]["subset"]["over_steps"]["dist"]["step"] == []


def test_unpaired_seeds_and_a_second_arm(tmp_path):
    runs = make_study(tmp_path, [1.8, 2.0, 2.2])
    runs["half-size"] = {
        seed: make_run(tmp_path, f"size{seed:04d}", seed, freeze=False, subset_slope=0.01 * (seed + 1) * 0.5, fixed_slope=0.02)
        for seed in (0, 1, 7)
    }
    verdict = study_verdict("s", runs, "baseline")
    assert [c["arm"] for c in verdict["comparisons"]] == ["half-fixed", "half-size"]
    assert verdict["seeds"] == [0, 1, 2, 7]
    size = verdict["comparisons"][1]
    assert size["seeds"] == [0, 1]
    assert size["subsets"]["subset"]["ratio"] == pytest.approx(0.5) and size["subsets"]["subset"]["n"] == 2
    assert size["answer"].startswith("subset conv kernels moved less far in half-size: 0.50x as far (vs baseline, geometric mean of 2 seeds, 95% CI ")
    assert any("seed 7" in note for note in verdict["notes"]) and any("seed 2" in note for note in verdict["notes"])
    assert verdict["answer"] == verdict["comparisons"][0]["answer"]


def test_bad_study_arms_are_refused(tmp_path):
    runs = make_study(tmp_path, [1.8])
    with pytest.raises(ValueError, match="reference"):
        study_verdict("s", runs, "nope")
    with pytest.raises(ValueError, match="no arm"):
        study_verdict("s", {"baseline": runs["baseline"]}, "baseline")


def test_verdict_table_shows_ratios_and_the_answer(tmp_path):
    verdict = study_verdict("freeze-half", make_study(tmp_path, [1.8, 2.0, 2.2]), "baseline")
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(verdict_table(verdict))
    text = console.file.getvalue()
    assert "freeze-half: half-fixed / baseline" in text
    gm, lo, hi = geometric([1.8, 2.0, 2.2], 4.303)
    assert f"{gm:.2f}" in text and f"{lo:.2f} to {hi:.2f}" in text and "eval_acc" in text
    assert verdict["answer"] in " ".join(text.split())  # wrapped at 80 columns


def test_report_names_every_run_and_writes_png_plots(tmp_path):
    runs = make_study(tmp_path / "logs", [1.8, 2.0, 2.2], resumed=True)
    verdict = study_verdict("freeze-half", runs, "baseline")
    path = write_report(verdict, runs, tmp_path / "report")
    assert path.parent == tmp_path / "report" and path.suffix == ".md"
    page = path.read_text()
    assert verdict["answer"] in page
    for arm, by_seed in runs.items():
        for seed, folder in by_seed.items():
            assert f"| {arm} | {seed} | `{folder.name}` | `{folder.name}` |" in page  # relative to the logs dir
    assert str(tmp_path) not in page
    images = [line.split("(")[1].rstrip(")") for line in page.splitlines() if line.startswith("![")]
    assert sorted(images) == ["eval.png", "layers.png", "movement.png", "ratio.png"]
    for name in images:
        data = (path.parent / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
    gm, lo, hi = geometric([1.8, 2.0, 2.2], 4.303)
    assert f"| partitioned | subset | {gm:.2f} | {lo:.2f} to {hi:.2f} | " in page
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_arm_figures_give_each_arm_its_parameters_accuracy_and_step_time(tmp_path: Path):
    runs = make_study(tmp_path, [1.0, 1.0, 1.0], accs=[(0.80, 0.90), (0.82, 0.92), (0.84, 0.94)])
    rates = {"baseline": [100.0, 50.0, 80.0], "half-fixed": [200.0, 100.0, 160.0]}  # steps per second
    for arm, by_seed in runs.items():
        for seed, path in by_seed.items():
            summary = json.loads((path / "summary.json").read_text())
            summary.update(params=1000 if arm == "baseline" else 600, steps_per_second=rates[arm][seed])
            (path / "summary.json").write_text(json.dumps(summary))
    figures = study_verdict("s", runs, "baseline")["arm_figures"]
    assert figures["baseline"]["params"] == 1000 and figures["half-fixed"]["params"] == 600
    assert figures["half-fixed"]["eval_acc"] == pytest.approx(0.92)
    assert figures["baseline"]["step_ms"] == pytest.approx((10 + 20 + 12.5) / 3)
    lo, hi = figures["baseline"]["step_ms_ci"]
    assert lo < figures["baseline"]["step_ms"] < hi and figures["baseline"]["n"] == 3
    text = io.StringIO()
    Console(file=text, width=120).print(verdict_table(study_verdict("s", runs, "baseline")))
    assert "half-fixed" in text.getvalue() and "600" in text.getvalue() and "14.2" in text.getvalue()


def test_an_empty_subset_gives_no_ratio(tmp_path: Path):
    runs = make_study(tmp_path, [1.0, 1.0])
    for path in runs["half-fixed"].values():  # e.g. an ensemble arm: nothing is partitioned off
        events = path / "events.jsonl"
        events.write_text(events.read_text().replace('"fixed": 10}', '"fixed": 0}'))
    comparison = study_verdict("s", runs, "baseline")["comparisons"][0]
    assert comparison["subsets"]["fixed"]["dist"]["n"] == 0 and comparison["subsets"]["fixed"]["ratio"] is None
    assert comparison["subsets"]["subset"]["dist"]["n"] == 2
