"""Split a layer's kernels in two sets of fixed sizes by their interaction graph.

The graph has a node per kernel and edge weights W[i, j] (|S| or A, diagonal ignored); the
cross-set interaction of a split is the sum of W[i, j] over i fixed, j not. `decouple`
looks for the split of least cross-set interaction, `couple` for the most:
1. spectral ordering: kernels sorted by an eigenvector of the graph Laplacian (the Fiedler
   vector for decouple, the top eigenvector, the spectral max-cut heuristic, for couple);
   the fixed set is the first or the last `count` kernels, whichever is better;
2. refinement: Kernighan-Lin pair swaps (networkx), which keep both sets' sizes; for couple
   on the negated weights, so that lowering the cut raises the interaction.
Deterministic: the same W gives the same split (eigenvector signs are made canonical).
"""

from __future__ import annotations

from typing import Literal

import networkx as nx
import numpy as np
import scipy.linalg
from scipy.sparse.csgraph import laplacian

from engine.hessian_summary import cross_interaction

Objective = Literal["decouple", "couple"]


def split_kernels(weights: np.ndarray, count: int, objective: Objective) -> np.ndarray:
    """A bool vector marking the `count` kernels to fix."""
    weights = np.array(weights, dtype=np.float64)
    kernels = len(weights)
    if count <= 0 or count >= kernels:
        return np.arange(kernels) < count
    np.fill_diagonal(weights, 0.0)
    better = min if objective == "decouple" else max
    start = better(_spectral_candidates(weights, count, objective), key=lambda f: cross_interaction(weights, f))
    refined = _kernighan_lin(weights, start, objective)
    # KL only takes improving swaps, but keep the guarantee explicit.
    return better((refined, start), key=lambda f: cross_interaction(weights, f))


def _spectral_candidates(weights: np.ndarray, count: int, objective: Objective) -> list[np.ndarray]:
    _, vectors = scipy.linalg.eigh(laplacian(weights))
    vector = vectors[:, 1] if objective == "decouple" else vectors[:, -1]
    vector = vector * (1.0 if vector[np.argmax(np.abs(vector))] >= 0 else -1.0)  # eigh's sign is arbitrary
    order = np.argsort(vector, kind="stable")
    head, tail = np.zeros(len(weights), bool), np.zeros(len(weights), bool)
    head[order[:count]], tail[order[-count:]] = True, True
    return [head, tail]


def _kernighan_lin(weights: np.ndarray, fixed: np.ndarray, objective: Objective) -> np.ndarray:
    sign = 1.0 if objective == "decouple" else -1.0
    graph = nx.Graph()
    graph.add_nodes_from(range(len(weights)))
    rows, cols = np.triu_indices(len(weights), k=1)
    graph.add_weighted_edges_from(
        (int(i), int(j), sign * float(weights[i, j])) for i, j in zip(rows, cols) if weights[i, j] != 0
    )
    start = ({int(i) for i in np.flatnonzero(fixed)}, {int(i) for i in np.flatnonzero(~fixed)})
    one, other = nx.community.kernighan_lin_bisection(graph, partition=start, weight="weight")
    # The sets come back unordered: the fixed one is the one of the fixed size (the one
    # overlapping the start most when both sizes are equal).
    candidates = [s for s in (one, other) if len(s) == int(fixed.sum())]
    chosen = max(candidates, key=lambda s: (len(s & start[0]), -min(s)))
    result = np.zeros(len(weights), bool)
    result[sorted(chosen)] = True
    return result
