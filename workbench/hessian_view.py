"""A Hessian-guided run's measurements, as a researcher reads them: `workbench hessian RUN`,
the summary in `workbench show`, and the heatmaps of a study's report.

`show` reads the summary from the run's start event (torch-free); `hessian` and the report
read hessian.pt (torch imported on demand, `weights_only`: a run folder may come from
someone else).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from engine.hessian_summary import hessian_note, record_summary
from engine.run_folder import RunFolder
from engine.spec import SpecError

HESSIAN_FILE = "hessian.pt"  # engine/strategies/hessian.py writes it (kept torch-free here)


def load_hessian(folder: RunFolder) -> dict[str, Any]:
    """hessian.pt of `folder`, as plain lists; SpecError naming the run when it has none."""
    path = folder.path / HESSIAN_FILE
    if not path.exists():
        strategy = ((folder.spec() or {}).get("partition") or {}).get("strategy", "?")
        raise SpecError(
            f"run {folder.run_id} has no {HESSIAN_FILE}: its partition.strategy is {strategy!r}; "
            "only hessian_interaction and obd runs measure the Hessian"
        )
    saved = folder.load_tensors(path)
    layers = {
        name: {key: value.tolist() for key, value in record.items()} for name, record in saved["layers"].items()
    }
    return {**{k: v for k, v in saved.items() if k != "layers"}, "layers": layers}


def hessian_json(run_id: str, saved: dict[str, Any], layer: str | None = None) -> dict[str, Any]:
    """What `workbench hessian --json` prints: the settings, and per layer the summary with S,
    the saliencies and the fixed set (only `layer` when given)."""
    layers = _pick(saved, layer)
    out = {k: v for k, v in saved.items() if k != "layers"}
    out["run_id"] = run_id
    out["layers"] = {name: {**record_summary(saved, record), **record} for name, record in layers.items()}
    return out


def _pick(saved: dict[str, Any], layer: str | None) -> dict[str, Any]:
    if layer is None:
        return saved["layers"]
    if layer not in saved["layers"]:
        raise SpecError(f"--layer {layer!r}: this run's Hessian covers the layers {', '.join(saved['layers'])}")
    return {layer: saved["layers"][layer]}


def describe(note: dict[str, Any]) -> str:
    """One line: which strategy, which objective, which weights and data."""
    at = note.get("at")
    where = "the initial weights" if at in (None, "init") else f"run {at['run']}'s {at['checkpoint']!r} checkpoint"
    if note.get("strategy") == "obd":
        choice = f"fix the {note.get('fix')}est OBD saliency ({note.get('saliency_form')})"
    else:
        weights = "A = sums of |H|" if note.get("matrix") == "absolute" else "|S|"
        choice = f"{note.get('objective')} on {weights}"
    return f"{note.get('strategy')}: {choice}; H of the mean loss over the first {note.get('samples'):,} training examples at {where}"


def summary_table(note: dict[str, Any]) -> Table:
    """Per layer: the interaction within and across the two sets, and the saliency range.
    Interaction figures sum |S[i, j]| (or A) over pairs of distinct kernels, each pair once."""
    table = Table(title=describe(note), title_justify="left", box=None, pad_edge=False)
    for column in ("layer", "fixed/K", "cross", "within fixed", "within subset", "cross share",
                   "sum S_kk", "saliency min..max", "mean fixed / subset"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, s in note["layers"].items():
        share = "-" if s["cross_share"] is None else f"{s['cross_share']:.1%}"
        means = f"{_g(s['saliency_fixed_mean'])} / {_g(s['saliency_subset_mean'])}"
        table.add_row(
            name, f"{s['fixed_kernels']}/{s['kernels']}", _g(s["cross"]), _g(s["within_fixed"]), _g(s["within_subset"]), share,
            _g(s["self"]), f"{_g(s['saliency_min'])}..{_g(s['saliency_max'])}", means,
        )
    return table


def matrix_table(name: str, record: dict[str, Any]) -> Table:
    """S of one layer, kernels ordered fixed first (the split's blocks on the diagonal)."""
    order = sorted(range(len(record["fixed"])), key=lambda k: (not record["fixed"][k], k))
    table = Table(title=f"S of {name} (rows/columns: kernels, fixed first, marked *)", title_justify="left", box=None)
    table.add_column("")
    for k in order:
        table.add_column(f"{k}{'*' if record['fixed'][k] else ''}", justify="right")
    for i in order:
        table.add_row(f"{i}{'*' if record['fixed'][i] else ''}", *(_g(record["S"][i][j]) for j in order))
    table.add_row("saliency", *(_g(record["saliency"][k]) for k in order))
    return table


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def interaction_figure(saved: dict[str, Any], run_id: str):
    """One heatmap per layer of S, kernels ordered by the split (fixed first), the fixed block outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    layers = saved["layers"]
    figure, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.4), squeeze=False)
    for ax, (name, record) in zip(axes[0], layers.items()):
        fixed = np.asarray(record["fixed"], dtype=bool)
        order = np.concatenate([np.flatnonzero(fixed), np.flatnonzero(~fixed)])
        s = np.asarray(record["S"])[np.ix_(order, order)]
        limit = float(np.abs(s).max()) or 1.0
        image = ax.imshow(s, cmap="RdBu_r", vmin=-limit, vmax=limit)
        count = int(fixed.sum())
        ax.add_patch(Rectangle((-0.5, -0.5), count, count, fill=False, edgecolor="black", linewidth=1.5))
        ax.set_title(f"{name}: S, fixed {count}/{len(fixed)} first (outlined)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        figure.colorbar(image, ax=ax, fraction=0.046)
    figure.suptitle(f"run {run_id}: {describe(saved)}", fontsize=8)
    return figure


def study_heatmap(folders: list[Path]):
    """The interaction heatmaps of the first of a study's runs that measured the Hessian (None: none did)."""
    first = next((Path(p) for p in folders if (Path(p) / HESSIAN_FILE).exists()), None)
    return None if first is None else interaction_figure(load_hessian(RunFolder(first)), first.name)
