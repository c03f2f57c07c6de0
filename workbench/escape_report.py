"""The escape part of a study report (a study with `continues`): the sentence and figures
per arm, and the 21-point loss line from the converged weights to each arm's end weights."""

from __future__ import annotations

from typing import Any

from workbench.verdict import fmt_ci, fmt_p, fmt_ratio


def plot_interpolation(verdict: dict[str, Any]):
    """Training loss along the straight line start -> end weights, mean over seeds per arm (None: no escape figures)."""
    entries = [e for e in verdict.get("escape", []) if e.get("interpolation")]
    if not entries:
        return None
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.6))
    for entry in entries:
        line = entry["interpolation"]
        alphas = [i / (len(line) - 1) for i in range(len(line))]
        ax.plot(alphas, line, marker="o", markersize=3, label=f"{entry['arm']} ({entry['frozen']:.0%} frozen)")
    ax.set_xlabel("a: (1 - a) converged weights + a final weights")
    ax.set_ylabel("train loss (whole training split)")
    ax.set_title("loss on the line from the converged start to the end, mean over seeds")
    ax.legend(fontsize=8)
    return figure


def escape_markdown(verdict: dict[str, Any]) -> list[str]:
    entries = verdict.get("escape") or []
    if not entries:
        return []
    lines = ["## Escaping the converged minimum", ""]
    lines += [f"- **{e['arm']}**: {e['sentence']}." for e in entries]
    lines += ["", "| arm | frozen | best train loss ratio | 95% CI | p | lower in | left the basin | distance ratio | 95% CI | barrier (mean) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        best, dist = e["best_train_loss"], e["distance"]
        cells = [e["arm"], f"{e['frozen']:.0%}", _r(best["ratio"]), _ci(best["ci"]), fmt_p(best.get("p")),
                 f"{e['lower_in']} of {e['n']}", f"{e['escaped']} of {e['n']}", _r(dist["ratio"]), _ci(dist["ci"]),
                 "-" if e["barrier"]["mean"] is None else f"{e['barrier']['mean']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    rise = entries[0]["escape_rise"]
    lines += ["", f"Per arm against the control (continuing with everything trained), runs paired by seed and starting "
              "from the same converged run. Best train loss: the lowest training loss on the whole training split after "
              "the start; ratio arm / control, geometric mean over seeds with a 95% t interval; lower in: seeds where the "
              f"arm's best was lower. Left the basin: the loss rose more than {rise} above the start, then fell below it. "
              "Distance: from the converged weights at the end, over every tracked coordinate. Barrier: the highest loss "
              "on the straight line between start and end weights above the higher end (0: none).", ""]
    return lines


def _r(value: float | None) -> str:
    return "-" if value is None else fmt_ratio(value)


def _ci(ci: list[float] | None) -> str:
    return "-" if ci is None else fmt_ci(ci)
