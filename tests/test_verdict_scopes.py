"""The verdict by coordinate scope (partitioned layers, kinds, layers) and its statistics,
on run folders written by hand whose per-layer movement is known (tests/verdict_runs.py):
geometric means and log-scale intervals are recomputed here by hand, p-values with scipy
on the same numbers."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from scipy import stats

from verdict_runs import CONV1, CONV2, FC1, FC2, write_run
from workbench.scopes import at_step, figures, layer_kind, partitioned_layers, scope_series
from workbench.verdict import study_verdict, verdict_table
from workbench.verdict_stats import detectable_ratio, geometric_summary

T975 = {2: 4.3027, 3: 3.1824, 4: 2.7764}  # t_{0.975, df}


def by_hand(ratios: list[float]) -> tuple[float, list[float]]:
    """Geometric mean and exp(mean log +- t * sd(log) / sqrt(n))."""
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return math.exp(mean), [math.exp(mean - half), math.exp(mean + half)]


def make_pairs(root: Path, arm_speeds, ref_speeds, seeds, **kwargs) -> dict[str, dict[int, Path]]:
    """baseline (nothing frozen) and half-fixed runs per seed; `*_speeds(seed)` gives the
    per-side, per-layer speeds of that seed's run."""
    runs: dict[str, dict[int, Path]] = {"baseline": {}, "half-fixed": {}}
    for seed in seeds:
        runs["baseline"][seed] = write_run(root, f"base{seed:04d}", seed, freeze=False, speeds=ref_speeds(seed), **kwargs)
        runs["half-fixed"][seed] = write_run(root, f"half{seed:04d}", seed, freeze=True, speeds=arm_speeds(seed), **kwargs)
    return runs


REF = {"subset": {CONV1: 1.0, CONV2: 2.0, FC1: 0.5, FC2: 0.1}, "fixed": {CONV1: 1.0, CONV2: 1.0}}
CONV1_RATIOS = [1.5, 1.2, 1.8, 1.4]
CONV2_RATIOS = [0.9, 1.1, 1.0, 1.3]
FC1_RATIOS = [2.0, 2.5, 1.5, 3.0]


def known_study(root: Path, **kwargs) -> dict[str, dict[int, Path]]:
    def arm(seed: int) -> dict:
        return {"subset": {CONV1: CONV1_RATIOS[seed], CONV2: 2.0 * CONV2_RATIOS[seed], FC1: 0.5 * FC1_RATIOS[seed], FC2: 0.1},
                "fixed": {CONV1: 0.0, CONV2: 0.0}}

    return make_pairs(root, arm, lambda seed: REF, range(4), **kwargs)


# ---------------------------------------------------------------------------------------
# scopes


def test_known_per_layer_ratios_are_recovered_with_geometric_means(tmp_path):
    verdict = json.loads(json.dumps(study_verdict("s", known_study(tmp_path), "baseline"), allow_nan=False))
    for layer, ratios in ((CONV1, CONV1_RATIOS), (CONV2, CONV2_RATIOS), (FC1, FC1_RATIOS)):
        entry = verdict["layers"][layer]["subset"]
        mean, ci = by_hand(ratios)
        assert entry["ratio"] == pytest.approx(mean) and entry["ci"] == pytest.approx(ci, rel=1e-4)
        assert [p["ratio"] for p in entry["per_seed"]] == pytest.approx(ratios)
        assert entry["mean"] == "geometric" and entry["n"] == 4 and entry["metric"] == "dist"
    assert verdict["layers"][FC2]["subset"]["ratio"] == pytest.approx(1.0)
    assert verdict["layers"][CONV1]["fixed"]["ratio"] == 0.0  # frozen: it never moved
    assert verdict["layers"][FC1]["kind"] == "fc" and "fixed" not in verdict["layers"][FC1]  # FC not partitioned
    assert not any("coordinates, the reference's" in note for note in verdict["notes"])  # same subsets: like for like

    # the headline: the conv layers' coordinates together, dist adding in squares
    headline = [math.hypot(a * 1.0, b * 2.0) / math.hypot(1.0, 2.0) for a, b in zip(CONV1_RATIOS, CONV2_RATIOS)]
    mean, ci = by_hand(headline)
    assert verdict["headline"]["scope"] == "partitioned" and verdict["headline"]["layers"] == [CONV1, CONV2]
    assert verdict["headline"]["subset"]["ratio"] == pytest.approx(mean)
    assert verdict["headline"]["subset"]["ci"] == pytest.approx(ci, rel=1e-4)
    assert verdict["kinds"]["conv"]["subset"]["ratio"] == pytest.approx(mean)
    assert set(verdict["kinds"]) == {"conv", "fc"} and set(verdict["kinds"]["fc"]) == {"layers", "subset"}
    fc = [math.hypot(0.5 * r, 0.1) / math.hypot(0.5, 0.1) for r in FC1_RATIOS]
    assert verdict["kinds"]["fc"]["subset"]["ratio"] == pytest.approx(by_hand(fc)[0])
    assert f"conv kernels that kept training moved {mean:.2f}x as far when the rest was frozen" in verdict["answer"]
    assert verdict["comparisons"][0]["headline"] == verdict["headline"]


def test_swapping_arm_and_reference_inverts_ratio_and_interval_exactly(tmp_path):
    runs = known_study(tmp_path)
    forward = study_verdict("s", runs, "baseline")
    backward = study_verdict("s", runs, "half-fixed")
    assert backward["comparisons"][0]["arm"] == "baseline"
    for pick in (lambda v: v["headline"]["subset"], lambda v: v["layers"][CONV1]["subset"], lambda v: v["kinds"]["fc"]["subset"]):
        there, back = pick(forward), pick(backward)
        assert back["ratio"] == pytest.approx(1 / there["ratio"])
        assert back["ci"] == pytest.approx([1 / there["ci"][1], 1 / there["ci"][0]])
        assert back["p"] == pytest.approx(there["p"]) and back["p_wilcoxon"] == pytest.approx(there["p_wilcoxon"])


def test_the_headline_leaves_out_layers_the_partition_does_not_split(tmp_path):
    # FC layers move 10x as far in the arm, conv layers exactly as far: the answer is 1x
    def arm(seed: int) -> dict:
        return {"subset": {CONV1: 1.0, CONV2: 2.0, FC1: 5.0, FC2: 1.0}, "fixed": {CONV1: 0.0, CONV2: 0.0}}

    runs = make_pairs(tmp_path, arm, lambda seed: REF, range(3))
    verdict = study_verdict("s", runs, "baseline")
    assert verdict["headline"]["subset"]["ratio"] == pytest.approx(1.0)
    assert verdict["headline"]["subset"]["ci"] == pytest.approx([1.0, 1.0])
    # the whole subset, FC and all, says otherwise
    assert verdict["all"]["subset"]["ratio"] == pytest.approx(math.sqrt((1 + 4 + 25 + 1) / (1 + 4 + 0.25 + 0.01)))
    assert verdict["kinds"]["fc"]["subset"]["ratio"] == pytest.approx(10.0)
    assert verdict["answer"].startswith("no difference detected: conv kernels that kept training moved 1.00x as far")

    # with partition.include_fc the FC layers are split too, and join the headline
    included = make_pairs(tmp_path / "fc", arm, lambda seed: REF, range(3),
                          partition={"strategy": "first_kernels", "fraction": 0.5, "include_fc": True})
    with_fc = study_verdict("s", included, "baseline")
    assert with_fc["headline"]["layers"] == [CONV1, CONV2, FC1, FC2]
    assert with_fc["headline"]["subset"]["ratio"] == pytest.approx(with_fc["all"]["subset"]["ratio"])
    assert with_fc["answer"].startswith("conv and FC kernels that kept training moved ")


def test_partitioned_layers_per_strategy_and_layer_kinds():
    recorded = {"subset": [CONV1, CONV2, FC1, FC2], "fixed": [CONV1, FC1]}
    assert partitioned_layers({"partition": {"strategy": "random_elements"}}, recorded) == [CONV1, CONV2]
    assert partitioned_layers({"partition": {"strategy": "layers", "include_fc": True}}, recorded) == [CONV1, CONV2, FC1, FC2]
    # groups: the layers holding coordinates of both subsets (the head is never fixed)
    assert partitioned_layers({"partition": {"strategy": "groups", "groups": [0]}}, recorded) == [CONV1, FC1]
    assert [layer_kind(n) for n in ("stage2.shortcut.conv", "conv1", "fc", "classifier.fc2", "bn1", "features.norm", "proj")] == [
        "conv", "conv", "fc", "fc", "norm", "norm", "other"]
    # speed and dist of a union add in squares; grad only when every layer has it
    record = {"subset": {"layers": {CONV1: {"dist": 3.0, "speed": 1.0, "grad": 2.0}, CONV2: {"dist": 4.0, "speed": 1.0}}}}
    assert figures(record, "subset", [CONV1, CONV2]) == {"dist": 5.0, "speed": math.sqrt(2), "grad": None}
    assert figures(record, "subset", [CONV1])["grad"] == 2.0
    assert figures(record, "fixed", [CONV1]) is None


def test_runs_without_per_layer_records_fall_back_to_the_whole_subset(tmp_path):
    runs = known_study(tmp_path)
    for by_seed in runs.values():
        for folder in by_seed.values():
            events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
            for event in events:
                for entry in (event.get("subsets") or {}).values():
                    entry.pop("layers")
            (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
            summary = json.loads((folder / "summary.json").read_text())
            for entry in summary["movement"].values():
                entry.pop("layers")
            (folder / "summary.json").write_text(json.dumps(summary))
    verdict = study_verdict("s", runs, "baseline")
    assert verdict["headline"]["scope"] == "all" and verdict["headline"]["layers"] is None
    assert verdict["headline"]["subset"]["ratio"] == pytest.approx(verdict["all"]["subset"]["ratio"])
    assert verdict["answer"].startswith("the whole subset moved ")
    assert any("no per-layer movement records" in note for note in verdict["notes"])


# ---------------------------------------------------------------------------------------
# statistics


def test_p_values_match_scipy_on_the_same_log_ratios():
    ratios = [1.3, 0.9, 1.6, 1.2, 1.1, 1.45]
    logs = [math.log(r) for r in ratios]
    found = geometric_summary(ratios)
    assert found["p"] == pytest.approx(stats.ttest_1samp(logs, 0).pvalue)
    assert found["p_wilcoxon"] == pytest.approx(stats.wilcoxon(logs, method="exact").pvalue)
    assert found["p_wilcoxon"] == pytest.approx(2 * 3 / 2**6)  # one negative, of rank 2: P(T <= 2) = 3 / 64
    assert geometric_summary(ratios * 2)["p_wilcoxon"] is None  # n = 12: the t test alone
    # a ratio of None (nothing to compare) is skipped and counted
    assert geometric_summary([*ratios, None])["n"] == 6 and geometric_summary([*ratios, None])["skipped"] == 1


def test_the_detectable_ratio_shrinks_as_seeds_are_added():
    spread = [1.25, 0.8, 1.1, 0.9]  # the same spread of log ratios, repeated
    found = [geometric_summary(spread * k)["detectable_ratio"] for k in (1, 2, 4, 8)]
    assert found == sorted(found, reverse=True) and len(set(found)) == 4
    assert all(d > 1 for d in found)
    # close to the textbook approximation exp((t_{0.975} + t_{0.8}) * sd / sqrt(n)) for larger n
    sd = math.sqrt(sum(math.log(r) ** 2 for r in spread * 8) / 31 - 32 / 31 * (sum(math.log(r) for r in spread) / 4) ** 2)
    approx = math.exp((stats.t.ppf(0.975, 31) + stats.t.ppf(0.8, 31)) * sd / math.sqrt(32))
    assert found[-1] == pytest.approx(approx, rel=0.01)
    # power 0.8 by simulation-free check: at that ratio the noncentral t rejects 80% of the time
    n, d = 4, found[0]
    nc = math.log(d) / (stats.tstd([math.log(r) for r in spread]) / math.sqrt(n))
    crit = stats.t.ppf(0.975, n - 1)
    assert stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8, abs=1e-6)
    assert detectable_ratio(0.0, 5) is None and detectable_ratio(0.3, 1) is None


def test_accuracy_difference_interval_is_shown_within_its_range(tmp_path):
    runs: dict[str, dict[int, Path]] = {"baseline": {}, "half-fixed": {}}
    for seed, (ref_acc, arm_acc) in enumerate([(0.05, 0.95), (0.9, 0.1), (0.02, 0.99)]):
        runs["baseline"][seed] = write_run(tmp_path, f"b{seed}", seed, freeze=False, speeds=REF, acc=ref_acc)
        runs["half-fixed"][seed] = write_run(tmp_path, f"h{seed}", seed, freeze=True, speeds=REF, acc=arm_acc)
    acc = study_verdict("s", runs, "baseline")["comparisons"][0]["final"]["eval_acc"]
    assert acc["ci"][0] < -1 and acc["ci"][1] > 1  # the raw t interval overshoots
    assert acc["ci_shown"] == [-1.0, 1.0]


# ---------------------------------------------------------------------------------------
# the JSON shape and the printed table


def test_study_json_keeps_its_keys_and_adds_the_scoped_verdict(tmp_path):
    verdict = json.loads(json.dumps(study_verdict("s", known_study(tmp_path), "baseline"), allow_nan=False))
    assert {"study", "reference", "arms", "seeds", "metrics", "runs", "comparisons", "arm_figures", "subsets",
            "answer", "notes"} <= set(verdict)
    assert verdict["subsets"]["subset"]["dist"]["mean"] == "arithmetic"  # the older whole-subset summary, labelled
    for where in (verdict, verdict["comparisons"][0]):
        assert where["headline"]["scope"] == "partitioned"
        s = where["headline"]["subset"]
        assert {"ratio", "ci", "p", "n", "mean", "per_seed"} <= set(s) and s["mean"] == "geometric"
        assert set(where["kinds"]["conv"]) >= {"subset", "fixed"}
        assert set(where["layers"]) == {CONV1, CONV2, FC1, FC2}
        assert {"grad", "path_per_grad", "speed_mean"} <= set(where["normalized"])
        assert [entry["loss"] for entry in where["loss_matched"]] == [1.0, 0.3, 0.1, 0.03]
        assert all("subset" in entry for entry in where["loss_matched"])


def test_printed_table_fits_80_columns_and_leads_with_the_headline(tmp_path):
    verdict = study_verdict("a-study-name", known_study(tmp_path), "baseline")
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(verdict_table(verdict))
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line.split() for line in lines if line.split()[:1] in (["partitioned"], ["all"], ["conv"], [CONV1])]
    assert [row[0] for row in rows][:3] == ["partitioned", "partitioned", "all"]
    mean, ci = by_hand([math.hypot(a, 2 * b) / math.hypot(1, 2) for a, b in zip(CONV1_RATIOS, CONV2_RATIOS)])
    assert rows[0][:6] == ["partitioned", "subset", f"{mean:.2f}", f"{ci[0]:.2f}", "to", f"{ci[1]:.2f}"]


def test_arms_of_other_models_compare_their_own_conv_layers_or_the_whole_subset(tmp_path):
    # e.g. two half-width models against one model: other layer names. Their conv layers
    # are the counterpart of the reference's partitioned conv layers.
    def other_model(layers: dict) -> dict[str, dict[int, Path]]:
        runs = make_pairs(tmp_path / str(len(layers)) / next(iter(layers)), lambda seed: {"subset": layers, "fixed": {}},
                          lambda seed: REF, range(3))
        for folder in runs["half-fixed"].values():  # not frozen, nothing partitioned off
            spec = json.loads((folder / "spec.json").read_text())
            (folder / "spec.json").write_text(json.dumps({**spec, "freeze": False, "partition": {"strategy": "none"}}))
        return runs

    verdict = study_verdict("s", other_model({"members.0.conv1": 1.5, "members.1.conv1": 1.5}), "baseline")
    assert verdict["headline"]["scope"] == "partitioned"
    assert set(verdict["headline"]["layers"]) == {CONV1, CONV2, "members.0.conv1", "members.1.conv1"}
    assert verdict["headline"]["subset"]["ratio"] == pytest.approx(math.hypot(1.5, 1.5) / math.hypot(1.0, 2.0))
    assert verdict["answer"].startswith("subset conv kernels moved ")

    # no conv layers named in the other model: nothing pairs up, the whole subset is compared, said so
    verdict = study_verdict("s", other_model({"members.0.block": 1.5, "members.1.block": 1.5}), "baseline")
    assert verdict["headline"]["scope"] == "all" and verdict["headline"]["subset"]["n"] == 3
    assert verdict["headline"]["subset"]["ratio"] == pytest.approx(math.hypot(1.5, 1.5) / math.hypot(1.0, 2.0, 0.5, 0.1))
    assert verdict["answer"].startswith("the whole subset moved ")
    assert any("do not pair up" in note for note in verdict["notes"])
    # 2 layers' coordinates against 4: the ratio is over sets of different sizes, and a note says so
    assert any("20 coordinates, the reference's 40" in note and "sqrt(20/40) = 0.71" in note for note in verdict["notes"])


def test_the_path_of_a_union_of_layers_is_travelled_by_the_union_not_the_sum_of_paths():
    # two layers moving at 3 and 4 per step along orthogonal directions: the union moves
    # 5 per step (not 7); records every 10 steps, the last gap 20
    movement = {step: {"subset": {"layers": {CONV1: {"dist": 3.0 * step, "speed": 3.0 if step else 0.0},
                                             CONV2: {"dist": 4.0 * step, "speed": 4.0 if step else 0.0}}}}
                for step in (0, 10, 20, 40)}
    series = scope_series(movement, "subset", [CONV1, CONV2])
    assert [r["gap"] for r in series] == [0, 10, 10, 20]
    assert [r["path"] for r in series] == pytest.approx([0.0, 50.0, 100.0, 200.0])
    assert [r["dist"] for r in series] == pytest.approx([0.0, 50.0, 100.0, 200.0])
    assert scope_series(movement, "subset", [CONV1, CONV2], until=20)[-1]["step"] == 20
    assert at_step(series, "dist", 30) == pytest.approx(150.0) and at_step(series, "dist", 50) is None
