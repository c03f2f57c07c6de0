"""The verdict per phase of a changing partition (spec.schedule; engine/phases.py).

For each phase n, per seed: the ratio arm / reference of `dist` of the coordinates that
phase trained (its `subset`), from the phase's start weights to its end (the
`phase_movement` records in each run's summary.json), summarised over seeds as every
other figure is (scoped_verdict.summary: geometric mean, 95% t interval on the log
ratios, paired t p). Both runs of a pair draw the same masks in every phase (same seed,
same schedule), so each ratio compares the same coordinates over the same steps; except
when a Hessian strategy is resampled: each run measures its own weights at the phase's
start, so the arms may train different kernels. Each phase_movement record carries its
masks digest; a phase counts the pairs whose digests differ (`masks_differ`) and the
verdict says so in a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.scoped_verdict import summary
from workbench.verdict_stats import finite, ratio

if TYPE_CHECKING:
    from workbench.scoped_verdict import Pairs


def phase_records(summary_json: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """phase -> its phase_movement record, from a run's summary.json (empty: no schedule)."""
    records = summary_json.get("phases") or []
    return {r["phase"]: r for r in records if isinstance(r, dict) and isinstance(r.get("phase"), int)}


def phase_dist(record: dict[str, Any] | None) -> float | None:
    return finite(((record or {}).get("subsets") or {}).get("subset", {}).get("dist"))


def phase_comparison(pairs: Pairs) -> list[dict[str, Any]]:
    """One S per phase that every pair recorded in both runs, in phase order (empty when
    neither side changed its partition)."""
    by_pair = [(seed, phase_records(a.summary), phase_records(r.summary)) for seed, a, r in pairs]
    phases = sorted(set.union(*(set(a) | set(r) for _, a, r in by_pair))) if by_pair else []
    out = []
    for phase in phases:
        per_seed = []
        for seed, a, r in by_pair:
            values = [phase_dist(a.get(phase)), phase_dist(r.get(phase))]
            steps = (a.get(phase) or r.get(phase) or {})
            digests = [(a.get(phase) or {}).get("masks"), (r.get(phase) or {}).get("masks")]
            per_seed.append({"seed": seed, "steps": [steps.get("start_step"), steps.get("step")],
                             "arm": values[0], "reference": values[1], "ratio": ratio(*values),
                             "same_masks": None if None in digests else digests[0] == digests[1]})
        first = next((p["steps"] for p in per_seed if p["steps"][0] is not None), [None, None])
        out.append({"phase": phase, "start_step": first[0], "step": first[1],
                    "masks_differ": sum(p["same_masks"] is False for p in per_seed),
                    **summary(per_seed, "dist of the coordinates trained in the phase, from its start")})
    return out


def note_phase_masks(phases: list[dict[str, Any]], notes: list[str], arm: str) -> None:
    """A note when the two runs of a pair trained different coordinates in some phase."""
    differ = [(entry["phase"], entry["masks_differ"]) for entry in phases if entry.get("masks_differ")]
    if differ:
        listed = ", ".join(f"phase {phase}: {count}" for phase, count in differ)
        notes.append(f"{arm}: in some phases the arm and its reference trained different coordinates (pairs per phase: "
                     f"{listed}), as a Hessian partition measured again at each run's own weights does; those phases' "
                     "ratios compare what each run chose, not the same coordinates")
