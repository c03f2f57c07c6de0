"""The report of a study: a markdown page with the answer, the verdict tables, plots and the
list of every run it used, so that a reader can check each number against a run folder.

The page leads with the headline (the partitioned layers, workbench/scopes.py), then all
layers, each layer kind and each layer, then the normalised and loss-matched ratios, the
final loss and accuracy, the arms' costs, the plots and the runs (folders named relative
to the logs dir: a report can be moved or committed without naming a machine's paths).

Plots (PNG, matplotlib's Agg backend: no display needed on a server over SSH); lines with
few points carry markers, so a reader sees where the records are:
    movement.png  dist and speed of the partitioned layers' coordinates over steps, per
                  subset and arm: mean over seeds, min-max band
    ratio.png     the partitioned layers' subset dist and speed, arm / reference at matched
                  steps: geometric mean over seeds with its 95% CI band, log axis, line at 1
    layers.png    the final dist ratio per scope (partitioned, kinds, layers) with its 95%
                  CI, log axis, line at 1
    eval.png      eval loss and accuracy over steps, per arm: mean over seeds, min-max band
    rho.png       elastic freezing: the headline ratio against the pull rho (workbench/elastic_report.py)
    mixture.png   soft weight sharing: the prior over the covered weights' histogram (workbench/mixture_report.py)
Only the plots that have something to show are written, and the page links exactly those.

Every file is written to a temporary name and renamed into place, so a report folder
never holds half a page or half an image. Imports no torch.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a GPU server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

from engine.run_folder import atomic_write  # noqa: E402
from workbench.elastic_report import plot_rho  # noqa: E402
from workbench.escape_report import escape_markdown, plot_interpolation  # noqa: E402
from workbench.best_single import best_single_markdown  # noqa: E402
from workbench.mixture_report import plot_mixture  # noqa: E402
from workbench.scoped_verdict import scope_rows  # noqa: E402
from workbench.scopes import SIDES, scope_series  # noqa: E402
from workbench.verdict import RunSeries, arm_cells, fmt_ci, fmt_p, fmt_ratio, read_run  # noqa: E402
from workbench.hessian_view import study_heatmap  # noqa: E402

REPORT_FILE = "README.md"
FEW_POINTS = 30  # lines with fewer points than this get markers


def write_report(verdict: dict[str, Any], runs: dict[str, dict[int, Path]], out_dir: Path,
                 *, logs_dir: Path | None = None) -> Path:
    """Write README.md and the PNG plots of `verdict` into `out_dir`; returns the markdown path.
    Run folders are named relative to `logs_dir` (default: the folder that holds them all)."""
    out_dir = Path(out_dir)
    loaded = {arm: {int(seed): read_run(path) for seed, path in sorted(by_seed.items())} for arm, by_seed in runs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)  # after reading: a corrupt run leaves no empty report folder
    folders = [run.path for by_seed in loaded.values() for run in by_seed.values()]
    if logs_dir is None and folders:
        logs_dir = Path(os.path.commonpath([str(p.resolve().parent) for p in folders]))
    headline = _first_headline(verdict)
    figures = {
        "movement.png": plot_movement(loaded, headline),
        "ratio.png": plot_ratios(verdict),
        "layers.png": plot_scopes(verdict),
        "eval.png": plot_eval(loaded),
        "interpolation.png": plot_interpolation(verdict),  # a study continuing converged runs
        "rho.png": plot_rho(verdict, loaded),  # studies of elastic freezing only
        "hessian.png": study_heatmap(folders),  # Hessian-guided partitions: the first run's S per layer
        "mixture.png": plot_mixture(loaded),  # soft weight sharing: the prior over the weights' histogram
    }
    written = []
    for name, figure in figures.items():
        if figure is not None:
            _save(figure, out_dir / name)
            written.append(name)
    from workbench.weights_report import write_weights  # runs with track.snapshots: the weights over time

    written += write_weights(runs, out_dir)
    page = markdown(verdict, loaded, written, logs_dir)
    path = out_dir / REPORT_FILE
    atomic_write(path, lambda f: f.write(page.encode()))
    return path


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _first_headline(verdict: dict[str, Any]) -> dict[str, Any] | None:
    comparisons = verdict.get("comparisons") or []
    return comparisons[0].get("headline") if comparisons else None


# ---------------------------------------------------------------------------------------
# Plots


def _marker(count: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if count < FEW_POINTS else {}


def _band(ax, steps: np.ndarray, values: np.ndarray, label: str, color, **style) -> None:
    """Mean over seeds as a line, min-max over seeds as a band."""
    keep = ~np.all(np.isnan(values), axis=0) if values.size else np.zeros(0, bool)
    if not keep.any():
        return
    steps, values = steps[keep], values[:, keep]
    ax.plot(steps, np.nanmean(values, axis=0), color=color, label=label, **_marker(len(steps)), **style)
    if values.shape[0] > 1:
        ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.2, linewidth=0)


def _seed_matrix(per_run: list[dict[float, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Steps every run has, and a [runs, steps] array of the runs' values (NaN: missing)."""
    step_sets = [set(values) for values in per_run]
    steps = sorted(set.intersection(*step_sets)) if step_sets else []
    matrix = [[np.nan if values[s] is None else values[s] for s in steps] for values in per_run]
    return np.array(steps, dtype=float), np.array(matrix, dtype=float).reshape(len(per_run), len(steps))


def _grid(rows: int, cols: int):
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    return figure, axes


def plot_movement(loaded: dict[str, dict[int, RunSeries]], headline: dict[str, Any] | None):
    """Rows: dist, speed; columns: subset, fixed (the headline scope's coordinates); one
    line (and seed band) per arm."""
    if headline is None:
        return None
    layers = headline["layers"]
    series = {arm: {side: [scope_series(run.movement, side, layers) for run in by_seed.values()] for side in SIDES}
              for arm, by_seed in loaded.items()}
    if not any(s for by_side in series.values() for runs in by_side.values() for s in runs):
        return None
    figure, axes = _grid(2, len(SIDES))
    for row, metric in enumerate(("dist", "speed")):
        for col, side in enumerate(SIDES):
            ax = axes[row][col]
            for index, (arm, by_side) in enumerate(series.items()):
                # the step-0 record has no update before it: its speed (0) says nothing
                per_run = [{r["step"]: r[metric] for r in run if metric == "dist" or r["step"] > 0} for run in by_side[side]]
                _band(ax, *_seed_matrix(per_run), arm, f"C{index}")
            ax.set_title(f"{side}, {headline['scope']} layers: {metric}")
            ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_ratios(verdict: dict[str, Any]):
    """dist and speed ratio of the headline scope's subset at matched steps, per comparison:
    geometric mean over seeds with its 95% CI, on a log axis with a line at 1."""
    comparisons = [c for c in verdict.get("comparisons", []) if c.get("headline")]
    overs = [(c, c["headline"]["over_steps"]) for c in comparisons]
    if not any(over[metric]["step"] for _, over in overs for metric in over):
        return None
    figure, axes = _grid(1, 2)
    for ax, metric in zip(axes[0], ("dist", "speed")):
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        for comparison, over in overs:
            if over[metric]["step"]:
                color = f"C{verdict['arms'].index(comparison['arm'])}"  # the arm's colour in movement.png
                _ratio_line(ax, over[metric], f"{comparison['arm']} / {comparison['reference']}", color)
        _log_axis(ax.yaxis, ax.set_yscale)
        ax.set_title(f"subset, {comparisons[0]['headline']['scope']} layers: {metric} ratio")
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def _log_axis(axis, set_scale) -> None:
    """A log scale for ratios (r and 1/r equally far from 1), ticks as plain numbers."""
    set_scale("log")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # minor ticks (2..9 x a decade) labelled only while the axis spans under a decade: over more, they overlap
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _ratio_line(ax, over: dict[str, list], label: str, color) -> None:
    as_array = lambda key: np.array([np.nan if v is None else v for v in over[key]], dtype=float)  # noqa: E731
    steps = np.array(over["step"], dtype=float)
    ax.plot(steps, as_array("ratio"), color=color, label=label, **_marker(len(steps)))
    ax.fill_between(steps, as_array("lo"), as_array("hi"), color=color, alpha=0.2, linewidth=0)


def plot_scopes(verdict: dict[str, Any]):
    """Final dist ratio (geometric mean, 95% CI) of the subset per scope: partitioned, each
    kind, each layer; one row of points per scope and comparison, log axis, line at 1."""
    points = []
    for index, comparison in enumerate(verdict.get("comparisons", [])):
        for section, scope, side, figures in scope_rows(comparison):
            if side == "subset" and section in ("headline", "kind", "layer") and figures["ratio"]:
                points.append((f"{scope} ({comparison['arm']})" if len(verdict["comparisons"]) > 1 else scope,
                               figures, f"C{verdict['arms'].index(comparison['arm'])}"))
    if not points:
        return None
    figure, ax = plt.subplots(figsize=(6.0, 0.4 * len(points) + 1.2))
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    for row, (label, figures, color) in enumerate(points):
        ci = figures["ci"]
        if ci and ci[0] > 0:
            ax.plot(ci, [row, row], color=color, linewidth=2)
        ax.plot([figures["ratio"]], [row], "o", color=color)
    ax.set_yticks(range(len(points)), [label for label, _, _ in points])
    ax.invert_yaxis()
    _log_axis(ax.xaxis, ax.set_xscale)
    ax.set_xlabel("subset dist ratio at the end, arm / reference (geometric mean, 95% CI)")
    figure.tight_layout()
    return figure


def plot_eval(loaded: dict[str, dict[int, RunSeries]]):
    """Eval loss and accuracy over steps, one line (and seed band) per arm."""
    if not any(run.evals for by_seed in loaded.values() for run in by_seed.values()):
        return None
    figure, axes = _grid(1, 2)
    for ax, key in zip(axes[0], ("eval_loss", "eval_acc")):
        for index, (arm, by_seed) in enumerate(loaded.items()):
            per_run = [{step: event.get(key) for step, event in run.evals.items()} for run in by_seed.values()]
            _band(ax, *_seed_matrix(per_run), arm, f"C{index}")
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------
# Markdown

SECTIONS = {
    "all": "All layers (the whole tracked subset)",
    "kind": "Per layer kind",
    "layer": "Per layer",
    "normalized": "Normalised (the headline scope's subset)",
    "loss-matched": "Loss-matched (the headline scope's subset dist where each run's loss first reaches a threshold)",
    # a changing partition (spec.schedule; workbench/phase_verdict.py)
    "phase": "Per phase (dist of the coordinates each phase trained, from the phase's start weights to its end)",
}
S_HEADER = ["| {first} | side | ratio | 95% CI | p (t) | p (Wilcoxon) | n |", "|---|---|---:|---:|---:|---:|---:|"]


def markdown(verdict: dict[str, Any], loaded: dict[str, dict[int, RunSeries]], images: list[str],
             logs_dir: Path | None = None) -> str:
    lines = [f"# Study `{verdict['study']}`", ""]
    for comparison in verdict["comparisons"]:
        lines += [f"**{comparison['answer']}**", ""]
    lines += escape_markdown(verdict)
    lines += best_single_markdown(verdict)  # a study with ensemble arms: the one model to keep
    for comparison in verdict["comparisons"]:
        lines += _comparison_tables(comparison)
    if verdict.get("arm_figures"):
        lines += ["## Arms", "", "| arm | params | eval acc | 95% CI | ms/step | 95% CI | seeds |", "|---|---:|---:|---:|---:|---:|---:|"]
        for arm, figures in verdict["arm_figures"].items():
            label = f"{arm} (reference)" if arm == verdict["reference"] else arm
            lines.append("| " + " | ".join([label, *arm_cells(figures)]) + " |")
        lines.append("")
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{name[:-4]}]({name})" for name in images]
        lines += [""]
    lines += ["## Runs", "", "| arm | seed | run id | run folder (in the logs dir) |", "|---|---:|---|---|"]
    for arm, by_seed in loaded.items():
        for seed, run in by_seed.items():
            lines.append(f"| {arm} | {seed} | `{run.run_id}` | `{_relative(run.path, logs_dir)}` |")
    lines.append("")
    if verdict.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict["notes"]] + [""]
    lines += [
        "Ratios are arm / reference per seed (runs paired by seed: same initial weights and data "
        "order) of the `dist` (distance from the initial weights) of the scope's coordinates, at the "
        "last step both runs recorded, unless the row names another quantity. They are summarised as "
        "the geometric mean over seeds with a 95% t interval on the log ratios (so swapping arm and "
        "reference inverts ratio and interval exactly); p (t): the paired t test on the log ratios; "
        "p (Wilcoxon): the exact signed-rank test on the same, for fewer than 10 seeds; n: seeds "
        "compared (of all, where some had nothing to compare). Over a set of layers, dist and speed "
        "add in squares. Final loss and accuracy: mean paired difference with a 95% t interval, shown "
        "within the range the difference can take.",
        "",
    ]
    return "\n".join(lines)


def _relative(path: Path, logs_dir: Path | None) -> str:
    if logs_dir is None:
        return path.name
    relative = os.path.relpath(Path(path).resolve(), Path(logs_dir).resolve())
    return path.name if relative.startswith("..") else relative


def _s_row(first: str, side: str, figures: dict[str, Any]) -> str:
    r = "-" if figures["ratio"] is None else fmt_ratio(figures["ratio"])
    ci = "-" if figures["ci"] is None else fmt_ci(figures["ci"])
    n = str(figures["n"]) + (f" of {figures['n'] + figures['skipped']}" if figures["skipped"] else "")
    return f"| {first} | {side} | {r} | {ci} | {fmt_p(figures['p'])} | {fmt_p(figures.get('p_wilcoxon'))} | {n} |"


def _comparison_tables(comparison: dict[str, Any]) -> list[str]:
    lines = [f"## {comparison['arm']} vs {comparison['reference']}", ""]
    rows = scope_rows(comparison)
    headline = comparison.get("headline")
    if headline:
        layers = ", ".join(f"`{name}`" for name in headline["layers"]) if headline["layers"] else "every layer"
        lines += [f"### Headline: {headline['description']} ({headline['scope']} layers: {layers})", ""]
        lines += [S_HEADER[0].format(first="scope"), S_HEADER[1]]
        lines += [_s_row(scope, side, figures) for section, scope, side, figures in rows if section == "headline"]
        lines.append("")
        detectable = comparison.get("detectable_ratio")
        if detectable:
            lines += [f"No difference detected. With {headline['subset']['n']} seeds and this spread, a paired t test "
                      f"(alpha 0.05, power 0.8) detects ratios beyond {fmt_ratio(detectable)}x or "
                      f"{fmt_ratio(1 / detectable)}x.", ""]
    for section, title in SECTIONS.items():
        chosen = [row for row in rows if row[0] == section]
        if not chosen:
            continue
        first = {"normalized": "quantity", "loss-matched": "quantity", "phase": "phase"}.get(section, "scope")
        lines += [f"### {title}", "", S_HEADER[0].format(first=first), S_HEADER[1]]
        lines += [_s_row(scope, side, figures) for _, scope, side, figures in chosen]
        if section == "loss-matched":
            lines.append("")
            for entry in comparison["loss_matched"]:
                for key, why in (("not_reached", "never reached by the arm run, the reference run or both"),
                                 ("before_first_eval", "already reached at the first eval (crossing step unknown)")):
                    if entry.get(key):
                        seeds = ", ".join(map(str, entry[key]))
                        lines.append(f"- {entry['key']} <= {entry['loss']:g}: {why} in seed(s) {seeds}; left out")
        lines.append("")
    lines += [
        "### Final loss and accuracy",
        "",
        f"| final | {comparison['arm']} | {comparison['reference']} | difference | 95% CI | ratio | n |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, f in comparison["final"].items():
        shown = f.get("ci_shown", f["ci"])
        ci = "-" if shown is None else f"{_num(shown[0], True)} to {_num(shown[1], True)}"
        lines.append(
            f"| {key} | {_num(f['arm'])} | {_num(f['reference'])} | {_num(f['difference'], True)} | {ci} "
            f"| {'-' if f['ratio'] is None else fmt_ratio(f['ratio'])} | {f['n']} |"
        )
    return lines + [""]


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"
