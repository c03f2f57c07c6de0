"""The escape verdict: continuing a converged model with part of it frozen vs with everything
trained (a study with `continues`; engine/init_run.py, engine/basin.py). Torch-free.

Every arm's run for seed s starts from the same converged run (the `continues`
experiment's run with seed s) and is paired with the control arm's run for that seed (the
reference: nothing frozen). Per arm, over seeds:
- `best_train_loss`: the lowest training loss it reached after its start (whole training
  split, the `basin` records), as an S (verdict_stats: geometric mean of the per-seed
  ratios arm / control, 95% t interval on the log ratios, paired t p) and `lower_in`: in
  how many seeds the arm's best was below the control's;
- `escaped`: in how many seeds the run left the basin: its training loss rose above the
  start by more than ESCAPE_RISE, then fell below the start;
- `distance`: an S of the distance from the converged weights at the end (every tracked
  coordinate: sqrt(subset dist^2 + fixed dist^2));
- `barrier`: per seed, the highest loss on the straight line from start to end weights
  above the higher of its two ends (0: no barrier on that line), and the mean line.
Final train / eval loss and accuracy as paired differences are the comparison's `final`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.events import run_events
from workbench.scoped_verdict import summary
from workbench.verdict_stats import finite, mean_ci, ratio

ESCAPE_RISE = 0.05  # nats above the starting training loss that count as leaving the basin


def basin_curve(path: Path) -> list[tuple[int, float]]:
    return [(e["step"], float(e["train_loss"])) for e in run_events(Path(path) / "events.jsonl", "basin")
            if finite(e.get("train_loss")) is not None]


def interpolation(path: Path) -> list[float] | None:
    found = run_events(Path(path) / "events.jsonl", "interpolation")
    return [float(x) for x in found[-1]["train_loss"]] if found else None


def escaped(curve: list[tuple[int, float]], rise: float = ESCAPE_RISE) -> bool:
    """Whether the loss rose above the start by more than `rise`, then fell below the start."""
    if not curve:
        return False
    start, risen = curve[0][1], False
    for _, loss in curve[1:]:
        risen = risen or loss > start + rise
        if risen and loss < start:
            return True
    return False


def best_after_start(curve: list[tuple[int, float]]) -> float | None:
    later = [loss for step, loss in curve if step > curve[0][0]] if curve else []
    return min(later) if later else None


def barrier(line: list[float] | None) -> float | None:
    if not line:
        return None
    return max(0.0, max(line) - max(line[0], line[-1]))


def distance_from_start(movement: dict[str, Any] | None) -> float | None:
    """Every tracked coordinate's distance from the start: the subsets' dists added in squares."""
    dists = [finite((movement or {}).get(side, {}).get("dist")) for side in ("subset", "fixed")]
    return math.sqrt(sum(d * d for d in dists)) if all(d is not None for d in dists) else None


def frozen_share(spec: dict[str, Any]) -> float:
    """The share of each partitioned layer frozen in an arm (0 when it freezes nothing)."""
    return float((spec.get("partition") or {}).get("fraction", 0.0)) if spec.get("freeze") else 0.0


def escape_comparison(arm: str, control: str, pairs: list[tuple[int, dict, dict]]) -> dict[str, Any]:
    """pairs: (seed, arm run, control run), each run {"path", "spec", "summary"} -> the arm's escape figures."""
    best, dist, lines, barriers, lower, escapes = [], [], [], [], 0, 0
    for seed, a, c in pairs:
        curves = [basin_curve(run["path"]) for run in (a, c)]
        bests = [best_after_start(curve) for curve in curves]
        best.append({"seed": seed, "arm": bests[0], "reference": bests[1], "ratio": ratio(*bests)})
        lower += bests[0] is not None and bests[1] is not None and bests[0] < bests[1]
        escapes += escaped(curves[0])
        moved = [distance_from_start(run["summary"].get("movement")) for run in (a, c)]
        dist.append({"seed": seed, "arm": moved[0], "reference": moved[1], "ratio": ratio(*moved)})
        line = interpolation(a["path"])
        if line:
            lines.append(line)
        barriers.append({"seed": seed, "barrier": barrier(line), "control_barrier": barrier(interpolation(c["path"]))})
    best_s = summary(best, "lowest training loss after the start (whole training split)")
    share = frozen_share(pairs[0][1]["spec"]) if pairs else 0.0
    mean_barrier, barrier_ci = mean_ci(b["barrier"] for b in barriers if b["barrier"] is not None)
    return {
        "arm": arm,
        "control": control,
        "frozen": share,
        "best_train_loss": best_s,
        "lower_in": lower,
        "n": len(pairs),
        "escaped": escapes,
        "escape_rise": ESCAPE_RISE,
        "distance": summary(dist, "distance from the converged weights at the end (every tracked coordinate)"),
        "barrier": {"mean": mean_barrier, "ci": barrier_ci, "per_seed": barriers},
        "interpolation": [sum(values) / len(values) for values in zip(*lines)] if lines else None,
        "sentence": escape_sentence(share, lower, len(pairs), best_s),
    }


def escape_sentence(share: float, lower: int, n: int, best: dict[str, Any]) -> str:
    """The one line per fraction that the report, `study --json` and the Studies screen give."""
    what = f"continuing with {share:.0%} frozen" if share else "continuing with nothing frozen"
    figures = "no ratio" if best["ratio"] is None else f"ratio {best['ratio']:.3g}"
    if best.get("ci"):
        figures += f", 95% CI {best['ci'][0]:.3g}-{best['ci'][1]:.3g}"
    return (f"{what} reached a train loss lower than continuing with everything trained in {lower} of {n} seeds "
            f"({figures}; best train loss, arm / control, geometric mean over seeds)")


def escape_verdict(runs: dict[str, dict[int, Path]], control: str, specs: dict[str, dict], summaries: dict[str, dict]) -> list[dict]:
    """One escape comparison per arm other than the control; `specs` / `summaries`: run path (str) -> its JSON."""
    out = []
    for arm, by_seed in runs.items():
        if arm == control:
            continue
        pairs = [(seed, _run(path, specs, summaries), _run(runs[control][seed], specs, summaries))
                 for seed, path in sorted(by_seed.items()) if seed in runs[control]]
        out.append(escape_comparison(arm, control, pairs))
    return out


def _run(path: Path, specs: dict[str, dict], summaries: dict[str, dict]) -> dict:
    return {"path": Path(path), "spec": specs.get(str(path), {}), "summary": summaries.get(str(path), {})}
