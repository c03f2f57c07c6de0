"""Movement at matched progress: where each run's training loss first reaches a threshold.

Arms that learn at different speeds are compared at equal progress, not at equal steps:
for each threshold, the step at which a run's loss first reaches it (`first_reaches`),
then its scope's `dist` there (interpolated between movement records).

Which loss: the eval events' `train_loss`, the mean minibatch loss since the previous
eval (a window of `train.eval_every` steps), smoothed by an exponential moving average
with a 50-step time constant: each window mean enters with weight 1 - exp(-window / 50),
so short windows (eval every 10 steps) are averaged over about 50 steps and windows of
50 steps or more are taken nearly as they are (they are averages already). A window's
mean stands at its last step. Where the runs' eval events carry no train loss (nothing
trained between evals), the held-out `eval_loss` is used as it is (it is not noisy: the
same fixed split every time). The verdict says which loss it used.

The crossing step is interpolated between the two evals either side, linearly in log
loss (losses fall roughly exponentially). A run whose first eval (after step 0: the
engine evaluates at `eval_every`, not at step 0) is already at or below the threshold
crossed it at a step nobody recorded: that pair is left out of that threshold, and said
so, as is a pair where a run never reaches it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from workbench.verdict_stats import finite

THRESHOLDS = (1.0, 0.3, 0.1, 0.03)
EMA_STEPS = 50


def loss_key(evals_of_runs: Iterable[dict[int, dict[str, Any]]]) -> str:
    """`train_loss` when every run has one at some eval, else `eval_loss`."""
    def has_train_loss(evals: dict[int, dict[str, Any]]) -> bool:
        return any(finite(e.get("train_loss")) is not None for e in evals.values())

    return "train_loss" if all(has_train_loss(evals) for evals in evals_of_runs) else "eval_loss"


def loss_curve(evals: dict[int, dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, loss) per eval event, in step order: train_loss smoothed (EMA, 50 steps), eval_loss as is."""
    curve: list[tuple[int, float]] = []
    for step in sorted(evals):
        found = finite(evals[step].get(key))
        if found is None:
            continue
        if key == "train_loss" and curve:
            weight = 1 - math.exp(-(step - curve[-1][0]) / EMA_STEPS)
            found = weight * found + (1 - weight) * curve[-1][1]
        curve.append((step, found))
    return curve


NOT_REACHED, BEFORE_FIRST_EVAL = "not reached", "reached before the first eval"


def first_reaches(curve: list[tuple[int, float]], threshold: float) -> float | str:
    """The step at which `curve` first reaches `threshold` (or goes below), or why there is
    none: NOT_REACHED, or BEFORE_FIRST_EVAL when the first eval (after step 0) is already
    at or below it, so the crossing lies somewhere before, at a step nobody recorded."""
    for index, (step, loss) in enumerate(curve):
        if loss > threshold:
            continue
        if index == 0:
            return float(step) if step == 0 else BEFORE_FIRST_EVAL
        before, above = curve[index - 1]
        if above > 0 and loss > 0:  # log-linear: where log loss crosses log threshold
            fraction = (math.log(above) - math.log(threshold)) / (math.log(above) - math.log(loss))
        else:
            fraction = (above - threshold) / (above - loss)
        return before + fraction * (step - before)
    return NOT_REACHED
