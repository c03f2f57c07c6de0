"""Movement normalised by time and by gradient: whether freezing changes the gradient a
subset gets, or what the optimizer makes of the same gradient.

From one run's series of a scope (workbench/scopes.py `scope_series`: per record the
step, the gap since the previous record, the speed, the running path and the gradient
norm `grad` of the step recorded), up to the step the verdict compares at:

- `speed_mean`   path / steps: the mean update size per step over the whole run (the
                 record's `speed` only covers the last gap, e.g. the last 10 steps).
- `speed_thirds` the same over the first, middle and last third of the recorded steps:
                 path difference / step difference, the path linearly interpolated at the
                 boundaries (exact: within a gap the recorded speed is the gap's mean).
- `grad`         the step-weighted mean gradient norm: sum_r grad_r * gap_r / sum_r gap_r
                 (grad_r, measured at record r's step, stands for the gap before it).
- `path_per_grad` path / (lr * sum_r grad_r * gap_r): distance travelled per unit of
                 lr-scaled gradient; 1 for plain SGD whose gradients all point one way,
                 above 1 where momentum adds up, below where steps cancel. `lr` is the
                 spec's constant `optimizer.lr`.

`grad` and `path_per_grad` are None for runs whose records carry no `grad` (recorded
before the engine measured it); the speeds need only the path.
"""

from __future__ import annotations

from typing import Any

from workbench.scopes import at_step

THIRDS = ("first", "middle", "last")


def rates(series: list[dict[str, Any]], lr: float | None) -> dict[str, Any]:
    """speed_mean, speed_thirds ({first, middle, last}), grad and path_per_grad of one run."""
    out: dict[str, Any] = {"speed_mean": None, "speed_thirds": dict.fromkeys(THIRDS), "grad": None, "path_per_grad": None}
    if len(series) < 2 or series[-1]["path"] is None:
        return out
    start, end = series[0]["step"], series[-1]["step"]
    steps = end - start
    if steps <= 0:
        return out
    path = series[-1]["path"] - series[0]["path"]
    out["speed_mean"] = path / steps
    bounds = [start + steps * k / 3 for k in range(4)]
    paths = [at_step(series, "path", b) for b in bounds]
    if None not in paths:
        out["speed_thirds"] = {name: (paths[k + 1] - paths[k]) / (steps / 3) for k, name in enumerate(THIRDS)}
    weighted = [(r["grad"], r["gap"]) for r in series if r["gap"] > 0]
    if weighted and all(grad is not None for grad, _ in weighted):
        total = sum(grad * gap for grad, gap in weighted)
        out["grad"] = total / sum(gap for _, gap in weighted)
        if lr and total > 0:
            out["path_per_grad"] = path / (lr * total)
    return out
