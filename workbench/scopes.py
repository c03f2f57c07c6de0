"""Coordinate scopes of a verdict: which layers' coordinates a number covers.

A movement record has, per subset (`subset`, `fixed`), whole-subset figures and one entry
per layer (`layers`: {layer name: {dist, speed, path, grad, ...}}; a layer with no
coordinates in that subset has no entry). A *scope* is a set of layers; its figures for
one subset are those of the union of the layers' coordinates in that subset:

- `dist`, `grad`: L2 norms, so over a union they add in squares: sqrt(sum of squares).
- `speed`: the norm of the update since the last record over the record gap, gap times
  speed is a norm too, and the gap is shared: sqrt(sum of squared per-layer speeds).
- `path`: the distance travelled, a sum of per-record update norms; over a union it is
  the running sum of gap x the union's speed (`scope_series`), NOT the sum of per-layer
  paths (norms do not add up).
- `rel` and `cos` need ||w(0)|| per layer, which records do not carry: not aggregated.

Scopes a verdict reports:
- `partitioned` (the headline): the layers the partition actually splits. For kernel and
  element strategies (`first_kernels`, `random_kernels`, `random_elements`) and for
  `layers` and `none`: the conv layers, plus the FC layers with `partition.include_fc`
  (the layers the strategy chooses coordinates in; `layers` picks whole layers among
  them). For `groups`: the layers holding coordinates of both subsets (a fixed group's
  tensors beside trainable ones; the head, never fixed, is out).
- each layer kind: `conv`, `fc`, `norm`, told from the layer's name (engine/models.py
  names modules after what they are: conv1, fc1, bn1). `model_layers` folds a
  BatchNorm's scale and shift into the conv layer before it, so today's records carry
  no `norm` layers and that kind is empty.
- each layer.
- `all`: the whole tracked subset, from the records' whole-subset figures.

Imports no torch (the TUI reads verdicts).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from workbench.verdict_stats import finite

SIDES = ("subset", "fixed")
KINDS = ("conv", "fc", "norm")
_KIND = re.compile(r"^(conv|fc|bn|norm)")
_KIND_NAMES = {"conv": "conv", "fc": "fc", "bn": "norm", "norm": "norm"}
# how the coordinates a strategy splits are named in the one-line answer
UNITS = {
    "first_kernels": "kernels", "random_kernels": "kernels", "random_elements": "weights",
    "layers": "layers", "groups": "kernel groups", "none": "weights",
    "hessian_interaction": "kernels", "obd": "kernels",
}  # fmt: skip


def layer_kind(name: str) -> str:
    """`conv`, `fc` or `norm` from a layer name's last part (`features.conv1` -> conv), else `other`."""
    found = _KIND.match(name.rsplit(".", 1)[-1])
    return _KIND_NAMES[found.group(1)] if found else "other"


def record_layers(records: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Per subset, the layer names its records carry, in first-seen order."""
    names: dict[str, dict[str, None]] = {side: {} for side in SIDES}
    for record in records:
        for side in SIDES:
            names[side].update(dict.fromkeys(((record.get(side) or {}).get("layers") or {})))
    return {side: list(found) for side, found in names.items()}


def partitioned_layers(spec: dict[str, Any], layers: dict[str, list[str]]) -> list[str]:
    """The layers the partition of `spec` splits (see the module doc), among the recorded
    `layers` ({subset: names})."""
    partition = spec.get("partition") or {}
    every = list(dict.fromkeys([*layers.get("subset", []), *layers.get("fixed", [])]))
    if partition.get("strategy") == "groups":
        both = set(layers.get("subset", [])) & set(layers.get("fixed", []))
        return [name for name in every if name in both]
    kinds = {"conv", "fc"} if partition.get("include_fc") else {"conv"}
    return [name for name in every if layer_kind(name) in kinds]


def describe(spec: dict[str, Any], layers: list[str]) -> str:
    """What the partitioned scope is in words: "conv kernels", "conv and FC weights"."""
    kinds = [kind for kind in ("conv", "fc") if any(layer_kind(name) == kind for name in layers)]
    unit = UNITS.get((spec.get("partition") or {}).get("strategy", "first_kernels"), "weights")
    return f"{' and '.join(k if k == 'conv' else k.upper() for k in kinds) or 'partitioned'} {unit}"


def figures(record: dict[str, Any], side: str, layers: list[str] | None) -> dict[str, float | None] | None:
    """dist, speed and grad of `side`'s coordinates in `layers` (None: the whole subset)
    at one record; None when the record has nothing for them. `grad` is None unless every
    layer present carries it (runs recorded before the engine measured gradients)."""
    entry = record.get(side) or {}
    if layers is None:
        if not entry:
            return None
        return {metric: finite(entry.get(metric)) for metric in ("dist", "speed", "grad")}
    per_layer = entry.get("layers") or {}
    present = [per_layer[name] for name in layers if name in per_layer]
    if not present:
        return None  # no coordinates of `side` in these layers, or no per-layer records
    return {metric: _root_sum_squares([finite(layer.get(metric)) for layer in present])
            for metric in ("dist", "speed", "grad")}


def scope_series(movement: dict[int, dict[str, Any]], side: str, layers: list[str] | None,
                 until: int | None = None) -> list[dict[str, float | None]]:
    """Per record up to step `until` (in step order): step, gap since the previous record,
    dist, speed, grad and `path`, the running sum of gap x speed (the distance travelled
    by the scope's coordinates). Records without figures for the scope are left out."""
    series, previous, path = [], None, 0.0
    for step in sorted(movement):
        if until is not None and step > until:
            break
        found = figures(movement[step], side, layers)
        if found is None:
            continue
        gap = step - (previous if previous is not None else 0)
        previous = step
        if path is not None:
            path = None if found["speed"] is None else path + gap * found["speed"]
        series.append({"step": step, "gap": gap, **found, "path": path})
    return series


def _root_sum_squares(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return math.sqrt(sum(v * v for v in values))



def at_step(series: list[dict[str, Any]], key: str, step: float) -> float | None:
    """`key` of `series` at `step`, linearly interpolated between the records either side
    (None outside the recorded steps or where a value is missing)."""
    for before, after in zip(series, series[1:]):
        if before["step"] <= step <= after["step"]:
            low, high = before[key], after[key]
            if low is None or high is None:
                return None
            span = after["step"] - before["step"]
            return low if span == 0 else low + (high - low) * (step - before["step"]) / span
    if len(series) == 1 and series[0]["step"] == step:
        return series[0][key]
    return None
