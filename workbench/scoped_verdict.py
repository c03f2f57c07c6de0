"""One arm against the reference, scope by scope: the headline (the partitioned layers),
each layer kind, each layer, the whole subset; then normalised and loss-matched ratios.

Every figure here is an `S`: per-seed ratios arm / reference of one quantity, summarised
by verdict_stats.geometric_summary (geometric mean, 95% t interval on log ratios, paired
t and Wilcoxon p, detectable ratio), with the quantity (`metric`) and the per-seed values
beside it. Movement ratios are of `dist` at the last step both runs of a pair recorded
(the same step the whole-subset verdict uses); scopes are defined in workbench/scopes.py.

The headline's layers are those both arms' partitions split, by name over the layers
either arm's runs recorded; each run contributes the ones it has, so an arm of another
model (two half-width models against one) compares its conv layers with the reference's.
Where that leaves nothing to compare (no per-layer records in older runs, or no layers in
common), the headline is the whole tracked subset (scope `all`), and a note says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.loss_matched import BEFORE_FIRST_EVAL, NOT_REACHED, THRESHOLDS, first_reaches, loss_curve, loss_key
from workbench.normalized import THIRDS, rates
from workbench.scopes import KINDS, SIDES, at_step, describe, figures, layer_kind, partitioned_layers, record_layers, scope_series
from workbench.verdict_stats import finite, geometric_summary, ratio

if TYPE_CHECKING:
    from workbench.verdict import RunSeries

Pairs = list[tuple[int, "RunSeries", "RunSeries"]]  # (seed, arm run, reference run)
Finals = dict[int, tuple[Any, dict, dict]]  # seed -> (step, arm record, reference record)


def summary(per_seed: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """An S: the geometric summary of `per_seed` ratios, the metric and the per-seed values."""
    return {"metric": metric, **geometric_summary([p["ratio"] for p in per_seed]), "per_seed": per_seed}


def scoped_comparison(pairs: Pairs, finals: Finals, shared_steps: list[int], notes: list[str], arm: str) -> dict[str, Any]:
    """headline, all, kinds, layers, normalized, loss_matched (and loss_key) of one comparison."""
    runs = [run for _, a, r in pairs for run in (a, r)]
    seen = record_layers([record for run in runs for record in (*run.movement.values(), run.summary.get("movement") or {})])
    spec = _partition_spec(pairs)
    partitioned = [name for name in partitioned_layers(spec, seen)
                   if all(name in partitioned_layers(run.spec, seen) for run in runs[:2])]
    whole = {side: _final(pairs, finals, side, None) for side in SIDES}
    scope, words, layers = "partitioned", describe(spec, partitioned), partitioned
    if not partitioned or (whole["subset"]["n"] and not _final(pairs, finals, "subset", partitioned)["n"]):
        # no per-layer records (older runs), or arms of different models whose layers do not pair up
        scope, words, layers = "all", "whole subset", None
        if pairs:
            why = ("no per-layer movement records" if not any(seen.values()) else
                   "no partitioned layers recorded" if not partitioned else
                   "the arms' partitioned layers do not pair up (different models?)")
            notes.append(f"{arm}: {why}, so the headline covers the whole tracked subset (every layer)")
    _note_unequal_subsets(pairs, notes, arm)
    headline = {"scope": scope, "description": words, "layers": layers, "metric": "dist",
                **{side: _final(pairs, finals, side, layers) for side in SIDES},
                "over_steps": {metric: _over_steps(pairs, shared_steps, layers, metric) for metric in ("dist", "speed")}}
    every = list(dict.fromkeys([*seen["subset"], *seen["fixed"]]))
    kinds = {}
    for kind in KINDS:
        members = [name for name in every if layer_kind(name) == kind]
        if members:
            kinds[kind] = {"layers": members, **_sides(pairs, finals, members, seen)}
    normalized, missing_grad = _normalized(pairs, finals, layers)
    if missing_grad and pairs:
        notes.append(f"{arm}: movement records without `grad` (made before the engine recorded gradient norms): "
                     "no grad or path_per_grad ratios")
    key = loss_key(run.evals for run in runs)
    return {
        "headline": headline,
        "all": whole,
        "kinds": kinds,
        "layers": {name: {"kind": layer_kind(name), **_sides(pairs, finals, [name], seen)} for name in every},
        "normalized": normalized,
        "loss_key": key,
        "loss_matched": [_loss_matched(pairs, finals, layers, key, threshold) for threshold in THRESHOLDS],
    }


def _note_unequal_subsets(pairs: Pairs, notes: list[str], arm: str) -> None:
    """Say so when the arm's subset and the reference's differ in size (another model, another
    fraction): a norm grows with the number of coordinates it covers, so their distance ratio
    is not like for like (twice the coordinates moving alike is sqrt(2) times the distance)."""
    for _, a, r in pairs:
        mine, theirs = a.subset_sizes.get("subset"), r.subset_sizes.get("subset")
        if mine and theirs and mine != theirs:
            notes.append(f"{arm}: its subset has {mine:,} coordinates, the reference's {theirs:,}; movement "
                         f"ratios compare norms over sets of different sizes (equal per-coordinate movement "
                         f"gives sqrt({mine:,}/{theirs:,}) = {(mine / theirs) ** 0.5:.2f}), not like for like")
            return


def _partition_spec(pairs: Pairs) -> dict[str, Any]:
    """The spec that names the partition: the frozen side's, else the reference's."""
    if not pairs:
        return {}
    _, a, r = pairs[0]
    return a.spec if a.spec.get("freeze") else r.spec


def _sides(pairs: Pairs, finals: Finals, layers: list[str], seen: dict[str, list[str]]) -> dict[str, Any]:
    return {side: _final(pairs, finals, side, layers) for side in SIDES if any(name in seen[side] for name in layers)}


def _final(pairs: Pairs, finals: Finals, side: str, layers: list[str] | None) -> dict[str, Any]:
    """S of `dist` of `side`'s coordinates in `layers` (None: all) at each pair's final step."""
    per_seed = []
    for seed, a, r in pairs:
        step, a_record, r_record = finals[seed]
        values = [(figures(record, side, layers) or {}).get("dist") for record in (a_record, r_record)]
        if layers is None and (a.subset_sizes.get(side) == 0 or r.subset_sizes.get(side) == 0):
            values = [None, None]  # an empty subset does not move: no ratio to take
        per_seed.append({"seed": seed, "step": step, "arm": values[0], "reference": values[1], "ratio": ratio(*values)})
    return summary(per_seed, "dist")


def _over_steps(pairs: Pairs, steps: list[int], layers: list[str] | None, metric: str) -> dict[str, list]:
    """The subset's geometric mean ratio of `metric` and its 95% interval at every shared step."""
    out: dict[str, list] = {"step": [], "ratio": [], "lo": [], "hi": [], "n": []}
    for step in steps:
        found = geometric_summary([
            ratio((figures(a.movement[step], "subset", layers) or {}).get(metric),
                  (figures(r.movement[step], "subset", layers) or {}).get(metric))
            for _, a, r in pairs
        ])
        ci = found["ci"] or [None, None]
        for key, value in zip(out, (step, found["ratio"], ci[0], ci[1], found["n"])):
            out[key].append(value)
    return out


def _normalized(pairs: Pairs, finals: Finals, layers: list[str] | None) -> tuple[dict[str, Any], bool]:
    """S of speed_mean, each third's speed, grad and path_per_grad of the headline scope's
    `subset` coordinates (workbench/normalized.py), and whether any run lacked `grad`."""
    per_run = {}
    for seed, a, r in pairs:
        until = finals[seed][0]
        per_run[seed] = [rates(scope_series(run.movement, "subset", layers, until if isinstance(until, int) else None),
                               finite((run.spec.get("optimizer") or {}).get("lr")))
                         for run in (a, r)]

    def over_seeds(pick) -> dict[str, Any]:
        per_seed = []
        for seed, (a_rates, r_rates) in per_run.items():
            values = [pick(a_rates), pick(r_rates)]
            per_seed.append({"seed": seed, "arm": values[0], "reference": values[1], "ratio": ratio(*values)})
        return per_seed

    out = {name: summary(over_seeds(lambda found, name=name: found[name]), name)
           for name in ("grad", "path_per_grad", "speed_mean")}
    out["speed_thirds"] = {
        third: summary(over_seeds(lambda found, third=third: found["speed_thirds"][third]), f"speed ({third} third)")
        for third in THIRDS
    }
    missing = any(found["grad"] is None and found["speed_mean"] is not None for both in per_run.values() for found in both)
    return out, missing


def _loss_matched(pairs: Pairs, finals: Finals, layers: list[str] | None, key: str, threshold: float) -> dict[str, Any]:
    """S of the subset's dist where each run's loss first reaches `threshold`; pairs where a
    run never reaches it, or had reached it before its first eval, are listed, not compared."""
    per_seed, left_out = [], {NOT_REACHED: [], BEFORE_FIRST_EVAL: []}
    for seed, a, r in pairs:
        crossing = [first_reaches(loss_curve(run.evals, key), threshold) for run in (a, r)]
        for why in {c for c in crossing if isinstance(c, str)}:
            left_out[why].append(seed)
        steps = [None if isinstance(c, str) else c for c in crossing]
        dists = [None if step is None else at_step(scope_series(run.movement, "subset", layers), "dist", step)
                 for run, step in zip((a, r), steps)]
        per_seed.append({"seed": seed, "arm_step": steps[0], "reference_step": steps[1],
                         "arm": dists[0], "reference": dists[1], "ratio": ratio(*dists)})
    return {"loss": threshold, "key": key, "subset": summary(per_seed, "dist"),
            "not_reached": left_out[NOT_REACHED], "before_first_eval": left_out[BEFORE_FIRST_EVAL]}


# ---------------------------------------------------------------------------------------
# Rows, in reading order, for the CLI table, the report and the TUI

THIRD_LABELS = {"first": "speed, 1st third", "middle": "speed, 2nd third", "last": "speed, 3rd third"}


def scope_rows(comparison: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(section, scope, side, S) for every S of a comparison, the headline first; sections:
    headline, all, kind, layer, normalized, loss-matched."""
    headline = comparison.get("headline")
    if not headline:
        return []
    rows = [("headline", headline["scope"], side, headline[side]) for side in SIDES]
    rows += [("all", "all layers", side, comparison["all"][side]) for side in SIDES]
    rows += [("kind", kind, side, entry[side]) for kind, entry in comparison["kinds"].items() for side in SIDES if side in entry]
    rows += [("layer", name, side, entry[side])
             for name, entry in comparison["layers"].items() for side in SIDES if side in entry]
    normalized = comparison["normalized"]
    rows += [("normalized", label, "subset", normalized[key])
             for key, label in (("speed_mean", "speed, mean"), ("grad", "grad"), ("path_per_grad", "path per grad"))]
    rows += [("normalized", THIRD_LABELS[third], "subset", entry) for third, entry in normalized["speed_thirds"].items()]
    short = "train" if comparison.get("loss_key") == "train_loss" else "eval"
    rows += [("loss-matched", f"{short} loss <= {entry['loss']:g}", "subset", entry["subset"])
             for entry in comparison["loss_matched"]]
    # a changing partition: dist of the coordinates each phase trained, over that phase (workbench/phase_verdict.py)
    rows += [("phase", f"phase {entry['phase']} (steps {entry['start_step']}-{entry['step']})", "subset", entry)
             for entry in comparison.get("phases", [])]
    return rows
