"""The answer on the Run screen: how far and how fast this run's subset moves against its
paired reference run (same seed and partition, everything trained), at the latest step both
have recorded.

The definitions are the verdict's (workbench/scopes.py): the headline scope is the layers the
partition splits, a scope's dist and speed are root-sum-squares of its layers' figures, and
a ratio is this run's figure over the reference's at the same step (interpolated where one
run recorded a step the other did not). One pair, one seed: no interval; the Studies screen
has the verdict over seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.scopes import at_step, describe, partitioned_layers, record_layers, scope_series

METRICS = ("dist", "speed")


@dataclass
class LiveRatio:
    step: int | None = None  # the step the ratios are taken at
    scope: str = ""  # which coordinates, in words ("conv kernels")
    ratios: dict[str, float | None] = field(default_factory=dict)  # metric -> this run / reference
    layers: dict[str, dict[str, float | None]] = field(default_factory=dict)  # each layer -> metric -> ratio


def movement_by_step(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """{step: {subset: figures}} of a run's standing movement events (the verdict's input shape)."""
    return {event["step"]: event.get("subsets") or {} for event in events if isinstance(event.get("step"), int)}


def _ratio(own: float | None, reference: float | None) -> float | None:
    if own is None or reference is None or reference <= 0:
        return None
    return own / reference


def live_ratio(spec: dict[str, Any], own: list[dict[str, Any]], reference: list[dict[str, Any]]) -> LiveRatio:
    """Ratios of the `subset` side of the partitioned layers (and of each layer) of the run
    with movement events `own` against its reference's, at the latest step both reached."""
    mine, theirs = movement_by_step(own), movement_by_step(reference)
    if not mine or not theirs:
        return LiveRatio()
    step = min(max(mine), max(theirs))
    recorded = record_layers([*mine.values(), *theirs.values()])
    layers = partitioned_layers(spec, recorded)
    result = LiveRatio(step=step, scope=describe(spec, layers) if layers else "all layers")

    def at(movement: dict[int, dict[str, Any]], scope: list[str] | None, metric: str) -> float | None:
        return at_step(scope_series(movement, "subset", scope), metric, step)

    scope = layers or None  # no per-layer records: the whole subset, as the verdict falls back
    result.ratios = {m: _ratio(at(mine, scope, m), at(theirs, scope, m)) for m in METRICS}
    result.layers = {layer: {m: _ratio(at(mine, [layer], m), at(theirs, [layer], m)) for m in METRICS}
                     for layer in recorded["subset"]}  # every layer: the Layers tab lists them all
    return result


PAIRING_IGNORES = ("freeze", "description", "device")  # what may differ between a run and its reference


def paired_reference(record: dict[str, Any], spec: dict[str, Any], records: list[dict[str, Any]],
                     read_spec) -> dict[str, Any] | None:
    """Outside any study: the newest run that is this frozen run with nothing frozen (the
    same spec, seed and partition, `freeze` false), or None. `read_spec(record)` reads a
    candidate's spec.json; only runs whose indexed fields already match are read."""
    if not spec.get("freeze"):
        return None
    keys = ("seed", "strategy", "fraction", "model", "data", "steps")
    candidates = [r for r in records if r["run_id"] != record["run_id"] and r.get("freeze") is False
                  and all(r.get(k) == record.get(k) for k in keys) and r.get("status") not in ("failed", "corrupt")]
    mine = {k: v for k, v in spec.items() if k not in PAIRING_IGNORES}
    for candidate in sorted(candidates, key=lambda r: r.get("created") or 0, reverse=True):
        theirs = read_spec(candidate) or {}
        if {k: v for k, v in theirs.items() if k not in PAIRING_IGNORES} == mine:
            return candidate
    return None
