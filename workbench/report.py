"""The report of a study: a markdown page with the answer, the verdict table, plots and the
list of every run it used, so that a reader can check each number against a run folder.

Plots (PNG, matplotlib's Agg backend: no display needed on a server over SSH):
    movement.png  dist and speed of each subset over steps, per arm: mean over seeds, min-max band
    ratio.png     arm / reference at matched steps, with the 95% CI band and a line at 1
    eval.png      eval loss and accuracy over steps, per arm: mean over seeds, min-max band

Every file is written to a temporary name and renamed into place, so a report folder
never holds half a page or half an image. Imports no torch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a GPU server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.run_folder import atomic_write  # noqa: E402
from workbench.verdict import RunSeries, arm_cells, fmt_ci, fmt_ratio, read_run, value  # noqa: E402

REPORT_FILE = "README.md"


def write_report(verdict: dict[str, Any], runs: dict[str, dict[int, Path]], out_dir: Path) -> Path:
    """Write README.md and the PNG plots of `verdict` into `out_dir`; returns the markdown path."""
    out_dir = Path(out_dir)
    loaded = {arm: {int(seed): read_run(path) for seed, path in sorted(by_seed.items())} for arm, by_seed in runs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)  # after reading: a corrupt run leaves no empty report folder
    subsets = list(verdict["subsets"]) or sorted({s for by_seed in loaded.values() for run in by_seed.values() for s in run.subsets})
    metrics = verdict.get("metrics") or ["dist", "speed"]
    images = {
        "movement.png": plot_movement(loaded, subsets, metrics),
        "ratio.png": plot_ratios(verdict, subsets, metrics),
        "eval.png": plot_eval(loaded),
    }
    for name, figure in images.items():
        if figure is not None:
            _save(figure, out_dir / name)
    page = markdown(verdict, loaded, [name for name, figure in images.items() if figure is not None])
    path = out_dir / REPORT_FILE
    atomic_write(path, lambda f: f.write(page.encode()))
    return path


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


# ---------------------------------------------------------------------------------------
# Plots


def _seed_matrix(by_seed: dict[int, RunSeries], series) -> tuple[np.ndarray, np.ndarray]:
    """Steps every seed recorded, and a [seeds, steps] array of `series(run, step)` (NaN: missing)."""
    step_sets = [set(keys) for keys in (series.steps(run) for run in by_seed.values())]
    steps = sorted(set.intersection(*step_sets)) if step_sets else []
    values = [[np.nan if (v := series(run, step)) is None else v for step in steps] for run in by_seed.values()]
    return np.array(steps, dtype=float), np.array(values, dtype=float).reshape(len(by_seed), len(steps))


def _band(ax, steps: np.ndarray, values: np.ndarray, label: str, color) -> None:
    """Mean over seeds as a line, min-max over seeds as a band."""
    keep = ~np.all(np.isnan(values), axis=0) if values.size else np.zeros(0, bool)
    if not keep.any():
        return
    steps, values = steps[keep], values[:, keep]
    ax.plot(steps, np.nanmean(values, axis=0), color=color, label=label)
    if values.shape[0] > 1:
        ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.2, linewidth=0)


class _Movement:
    def __init__(self, subset: str, metric: str) -> None:
        self.subset, self.metric = subset, metric

    def steps(self, run: RunSeries):
        return run.movement

    def __call__(self, run: RunSeries, step: int) -> float | None:
        return value(run.movement[step], self.subset, self.metric)


class _Eval:
    def __init__(self, key: str) -> None:
        self.key = key

    def steps(self, run: RunSeries):
        return run.evals

    def __call__(self, run: RunSeries, step: int) -> float | None:
        found = run.evals[step].get(self.key)
        return None if found is None else float(found)


def _grid(rows: int, cols: int):
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    return figure, axes


def plot_movement(loaded: dict[str, dict[int, RunSeries]], subsets: list[str], metrics: list[str]):
    """Rows: metrics; columns: subsets; one line (and seed band) per arm."""
    if not subsets:
        return None
    figure, axes = _grid(len(metrics), len(subsets))
    for row, metric in enumerate(metrics):
        for col, subset in enumerate(subsets):
            ax = axes[row][col]
            for index, (arm, by_seed) in enumerate(loaded.items()):
                _band(ax, *_seed_matrix(by_seed, _Movement(subset, metric)), arm, f"C{index}")
            ax.set_title(f"{subset}: {metric}")
            ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_ratios(verdict: dict[str, Any], subsets: list[str], metrics: list[str]):
    """Rows: metrics; columns: subsets; arm / reference at matched steps with its 95% CI."""
    if not subsets or not verdict["comparisons"]:
        return None
    figure, axes = _grid(len(metrics), len(subsets))
    for row, metric in enumerate(metrics):
        for col, subset in enumerate(subsets):
            ax = axes[row][col]
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
            for comparison in verdict["comparisons"]:
                over = comparison["subsets"].get(subset, {}).get("over_steps", {}).get(metric)
                if over and over["step"]:
                    color = f"C{verdict['arms'].index(comparison['arm'])}"  # the arm's colour in movement.png
                    _ratio_line(ax, over, f"{comparison['arm']} / {comparison['reference']}", color)
            ax.set_title(f"{subset}: {metric} ratio")
            ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def _ratio_line(ax, over: dict[str, list], label: str, color) -> None:
    as_array = lambda key: np.array([np.nan if v is None else v for v in over[key]], dtype=float)  # noqa: E731
    steps = np.array(over["step"], dtype=float)
    ax.plot(steps, as_array("ratio"), color=color, label=label)
    ax.fill_between(steps, as_array("lo"), as_array("hi"), color=color, alpha=0.2, linewidth=0)


def plot_eval(loaded: dict[str, dict[int, RunSeries]]):
    """Eval loss and accuracy over steps, one line (and seed band) per arm."""
    if not any(run.evals for by_seed in loaded.values() for run in by_seed.values()):
        return None
    figure, axes = _grid(1, 2)
    for ax, key in zip(axes[0], ("eval_loss", "eval_acc")):
        for index, (arm, by_seed) in enumerate(loaded.items()):
            _band(ax, *_seed_matrix(by_seed, _Eval(key)), arm, f"C{index}")
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------
# Markdown


def markdown(verdict: dict[str, Any], loaded: dict[str, dict[int, RunSeries]], images: list[str]) -> str:
    lines = [f"# Study `{verdict['study']}`", ""]
    for comparison in verdict["comparisons"]:
        lines += [f"**{comparison['answer']}**", ""]
    if verdict.get("arm_figures"):
        lines += ["## Arms", "", "| arm | params | eval acc | 95% CI | ms/step | 95% CI | seeds |", "|---|---:|---:|---:|---:|---:|---:|"]
        for arm, figures in verdict["arm_figures"].items():
            label = f"{arm} (reference)" if arm == verdict["reference"] else arm
            lines.append("| " + " | ".join([label, *arm_cells(figures)]) + " |")
        lines.append("")
    for comparison in verdict["comparisons"]:
        lines += _comparison_tables(comparison, verdict.get("metrics") or ["dist", "speed"])
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{name[:-4]}]({name})" for name in images]
        lines += [""]
    lines += ["## Runs", "", "| arm | seed | run id | run folder |", "|---|---:|---|---|"]
    for arm, by_seed in loaded.items():
        for seed, run in by_seed.items():
            lines.append(f"| {arm} | {seed} | `{run.run_id}` | `{run.path}` |")
    lines.append("")
    if verdict.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict["notes"]] + [""]
    lines += [
        "Ratios are arm / reference per seed (runs paired by seed: same initial weights and data "
        "order), at the last step both runs recorded; mean over seeds with a 95% t interval. "
        "Ratios whose reference value is 0 or missing are skipped.",
        "",
    ]
    return "\n".join(lines)


def _comparison_tables(comparison: dict[str, Any], metrics: list[str]) -> list[str]:
    lines = [
        f"## {comparison['arm']} vs {comparison['reference']}",
        "",
        "| subset | metric | ratio | 95% CI | n | skipped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for subset, entry in comparison["subsets"].items():
        for metric in metrics:
            f = entry[metric]
            r = "-" if f["ratio"] is None else fmt_ratio(f["ratio"])
            ci = "-" if f["ci"] is None else fmt_ci(f["ci"])
            lines.append(f"| {subset} | {metric} | {r} | {ci} | {f['n']} | {f['skipped']} |")
    lines += [
        "",
        f"| final | {comparison['arm']} | {comparison['reference']} | difference | 95% CI | ratio | n |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, f in comparison["final"].items():
        ci = "-" if f["ci"] is None else f"{_num(f['ci'][0], True)} to {_num(f['ci'][1], True)}"
        lines.append(
            f"| {key} | {_num(f['arm'])} | {_num(f['reference'])} | {_num(f['difference'], True)} | {ci} "
            f"| {'-' if f['ratio'] is None else fmt_ratio(f['ratio'])} | {f['n']} |"
        )
    return lines + [""]


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"
