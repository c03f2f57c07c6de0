"""The weights over time in a study's report (runs with `track.snapshots`): for the first seed
of each arm, the first conv layer's kernels at the first and last snapshot (kernels.png), the
histograms of subset and fixed of that layer over time (histograms.png), every arm's 2-D
projection trajectory (trajectory.png: same seed, same initial weights, same random axes),
and the kernels over time as an animated GIF per arm (kernels-ARM.gif, matplotlib frames
joined by Pillow). The colour scale of the kernels is fixed over a run and its frames.
Imports no torch."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from engine.run_folder import atomic_write  # noqa: E402
from engine.weights_record import SNAPSHOTS_FILE, kernel_range, read_snapshots  # noqa: E402

CMAP = "RdBu_r"  # diverging: 0 white, sign by hue; colour-blind safe (blue / red-orange)
GIF_FRAME_MS = 300


def _first_runs(runs: dict[str, dict[int, Path]]) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """Per arm, (seed, snapshots) of its lowest seed that has snapshots."""
    found = {}
    for arm, by_seed in runs.items():
        for seed in sorted(by_seed):
            snapshots = read_snapshots(Path(by_seed[seed]) / SNAPSHOTS_FILE)
            if snapshots:
                found[arm] = (seed, snapshots)
                break
    return found


def _kernel_axes(ax, record: dict[str, Any], reach: float) -> None:
    """The record's kernels (mean over input channels) in a row of tiles; fixed ones dashed."""
    kernels = np.array((record.get("kernels") or {}).get("values") or [[[[0.0]]]], dtype=float).mean(axis=1)
    fixed = (record.get("kernels") or {}).get("fixed_kernels") or [False] * len(kernels)
    count, h, w = kernels.shape
    tiles = np.full((h, count * (w + 1) - 1), np.nan)
    for k in range(count):
        tiles[:, k * (w + 1): k * (w + 1) + w] = kernels[k]
        ax.add_patch(Rectangle((k * (w + 1) - 0.5, -0.5), w, h, fill=False, lw=1.2,
                               ls="--" if fixed[k] else "-", ec="0.4" if fixed[k] else "black"))
    ax.imshow(tiles, cmap=CMAP, vmin=-reach, vmax=reach, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_weights(runs: dict[str, dict[int, Path]], out_dir: Path) -> list[str]:
    """Write the weights' PNGs and GIFs into `out_dir`; the names written ([] without snapshots)."""
    first = _first_runs(runs)
    if not first:
        return []
    out_dir = Path(out_dir)
    written: list[str] = []
    arms = list(first)

    figure, axes = plt.subplots(len(arms), 2, figsize=(10, 1.4 * len(arms) + 0.6), squeeze=False)
    for row, arm in enumerate(arms):
        seed, snapshots = first[arm]
        reach = kernel_range(snapshots)
        for col, record in enumerate((snapshots[0], snapshots[-1])):
            _kernel_axes(axes[row][col], record, reach)
            axes[row][col].set_title(f"{arm} seed {seed}, step {record['step']} (scale ±{reach:.3g}; dashed: fixed)",
                                     fontsize=8)
    figure.suptitle("first conv layer's kernels, first and last snapshot", fontsize=10)
    _write(out_dir / "kernels.png", _png(figure))
    written.append("kernels.png")

    figure, axes = plt.subplots(len(arms), 2, figsize=(10, 2.2 * len(arms) + 0.6), squeeze=False)
    for row, arm in enumerate(arms):
        seed, snapshots = first[arm]
        layer = (snapshots[0].get("kernels") or {}).get("layer") or next(iter(snapshots[0].get("edges") or {}), "")
        low, high = snapshots[0].get("edges", {}).get(layer, (0, 1))
        steps = [s["step"] for s in snapshots]
        for col, subset in enumerate(("subset", "fixed")):
            counts = np.array([s.get("hist", {}).get(subset, {}).get(layer) or [0] * s.get("bins", 1) for s in snapshots],
                              dtype=float)
            ax = axes[row][col]
            ax.imshow(counts, aspect="auto", cmap="viridis", origin="lower", interpolation="nearest",
                      extent=(low, high, steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1))
            ax.set_title(f"{arm} seed {seed}: {layer}, {subset} (count per bin)", fontsize=8)
            ax.set_xlabel("weight value")
            ax.set_ylabel("step")
    figure.tight_layout()
    _write(out_dir / "histograms.png", _png(figure))
    written.append("histograms.png")

    figure, ax = plt.subplots(figsize=(6, 5))
    for n, arm in enumerate(arms):
        seed, snapshots = first[arm]
        points = np.array([s["proj"] for s in snapshots if s.get("proj")], dtype=float)
        if len(points):
            ax.plot(points[:, 0], points[:, 1], "-o", ms=2, color=f"C{n}", label=f"{arm} seed {seed}")
            ax.plot(points[-1, 0], points[-1, 1], "s", color=f"C{n}")
    ax.set_xlabel("projection 1")
    ax.set_ylabel("projection 2")
    ax.set_title("all weights projected to 2-D (fixed Gaussian axes, the same for every arm)", fontsize=9)
    ax.legend(fontsize=8)
    _write(out_dir / "trajectory.png", _png(figure))
    written.append("trajectory.png")

    from PIL import Image

    for arm in arms:
        seed, snapshots = first[arm]
        reach = kernel_range(snapshots)
        frames = []
        for record in snapshots:
            figure, ax = plt.subplots(figsize=(8, 1.3))
            _kernel_axes(ax, record, reach)
            ax.set_title(f"{arm} seed {seed}: kernels at step {record['step']} (scale ±{reach:.3g}; dashed: fixed)",
                         fontsize=8)
            frames.append(Image.open(io.BytesIO(_png(figure))).convert("RGB"))
        size = frames[0].size
        frames = [frame.resize(size) for frame in frames]  # tight bounding boxes can differ by a pixel
        buffer = io.BytesIO()
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
        name = f"kernels-{arm}.gif"
        _write(out_dir / name, buffer.getvalue())
        written.append(name)
    return written
