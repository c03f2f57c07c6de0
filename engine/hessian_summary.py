"""What a researcher reads of a layer's Hessian split, torch-free (numbers, not tensors):
`show` and the TUI read it from the run's start event, `workbench hessian` from hessian.pt.

For a layer's interaction matrix W (|S|, or A with matrix absolute) and the fixed set F
(the rest is `subset`), over pairs of distinct kernels, each pair once:
- cross          = sum of W[i, j] over i in F, j not in F
- within_fixed   = sum of W[i, j] over i < j, both in F
- within_subset  = sum of W[i, j] over i < j, both outside F
- cross_share    = cross / (cross + within_fixed + within_subset)
- self           = sum of S[k, k] (signed: each kernel's own curvature 1_k^T H 1_k)
and the OBD saliency's range, over every kernel and over each set.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def cross_interaction(weights: np.ndarray, fixed: np.ndarray) -> float:
    """Sum of weights[i, j] over i in the fixed set and j outside it (each pair once)."""
    fixed = np.asarray(fixed, dtype=bool)
    return float(np.asarray(weights)[np.ix_(fixed, ~fixed)].sum())


def _within(weights: np.ndarray, members: np.ndarray) -> float:
    block = weights[np.ix_(members, members)]
    return float((block.sum() - np.trace(block)) / 2)


def layer_summary(
    interaction: Sequence[Sequence[float]], saliency: Sequence[float], fixed: Sequence[bool],
    weights: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The figures above for one layer; `weights` defaults to |interaction|."""
    s = np.asarray(interaction, dtype=np.float64)
    w = np.abs(s) if weights is None else np.asarray(weights, dtype=np.float64)
    f = np.asarray(fixed, dtype=bool)
    sal = np.asarray(saliency, dtype=np.float64)
    cross, within_fixed, within_subset = cross_interaction(w, f), _within(w, f), _within(w, ~f)
    total = cross + within_fixed + within_subset
    return {
        "kernels": int(len(f)),
        "fixed_kernels": int(f.sum()),
        "cross": cross,
        "within_fixed": within_fixed,
        "within_subset": within_subset,
        "cross_share": cross / total if total else None,
        "self": float(np.trace(s)),
        "saliency_min": float(sal.min()),
        "saliency_max": float(sal.max()),
        "saliency_fixed_mean": float(sal[f].mean()) if f.any() else None,
        "saliency_subset_mean": float(sal[~f].mean()) if (~f).any() else None,
    }


def record_summary(saved: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """`layer_summary` of one layer of hessian.pt's contents (tensors or lists), on the matrix
    its split was chosen on."""
    weights = record.get("A") if saved.get("matrix") == "absolute" else None
    return layer_summary(record["S"], record["saliency"], record["fixed"], weights)


def hessian_note(saved: dict[str, Any]) -> dict[str, Any]:
    """hessian.pt's contents as the start event's `hessian` note: its settings, and a summary per layer."""
    return {**{k: v for k, v in saved.items() if k != "layers"},
            "layers": {name: record_summary(saved, record) for name, record in saved["layers"].items()}}
