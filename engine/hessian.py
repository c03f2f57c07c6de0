"""The Hessian of the loss within one layer, from Hessian-vector products (HVPs).

Every quantity here is the Hessian of the loss over a *lift*: a linear map from a few
numbers t to a change of one layer's parameters, theta_L + D t. Its Hessian in t is
D^T H_LL D, and column j costs one HVP (forward-over-reverse: `jvp` of `grad`), with a
block of columns batched by `torch.func.vmap`:
- `shift`:       D = [1_1 .. 1_K]        -> S[i, j] = 1_i^T H 1_j          (K HVPs)
- `scale`:       D = [w*1_1 .. w*1_K]    -> diagonal = w_k^T H_kk w_k     (K HVPs)
The engine gets S and the OBD saliency from one pass of per-example Jacobians instead
(engine/gauss_newton.py, the same quantities, far fewer passes); the HVPs here give the
remainder it needs for layers with a BatchNorm, the per-coordinate sums, and the benchmark's
direct definition.
- `coordinates`: D = identity            -> every H_ab of the layer        (one HVP per coordinate)
Only the layer's own block H_LL is ever needed (1_k, w*1_k live in layer L), so only that
layer's parameters are differentiated: the layers before it are computed once, without
tangents. Kernels are grouped as `first_kernels` groups them (engine.models.per_kernel).

H is the Hessian of the mean cross-entropy over the first N training examples (a sum of
per-batch Hessians, each weighted by its share of N), model in eval mode (BatchNorm uses its
running statistics, as PyHessian does), in float64.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from engine.models import Layer, per_kernel

Lift = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # t -> the layer's parameters at theta_L + D t

# HVPs computed together by vmap: as many as keep vectors x examples within this, so that
# memory (activations of every example for every vector) stays bounded; not the result.
TANGENT_EXAMPLES = 2048
COORDINATES_PER_PASS = 256  # per-coordinate columns are summed into K x K as they come


class HessianProbe:
    """A float64, eval-mode copy of a model and the examples whose mean loss it differentiates."""

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
        batched: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(device=self.device, dtype=torch.float64).eval()
        # torch.func differentiates the lifts alone: no autograd graph over the model's own weights.
        self.model.requires_grad_(False)
        self.x = x.to(device=self.device, dtype=torch.float64)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.batched = batched  # False: one HVP at a time (the benchmark's comparison)
        self.params = {name: p.detach() for name, p in self.model.named_parameters()}

    @property
    def samples(self) -> int:
        return len(self.y)

    def columns(self, lift: Lift, dim: int, indices: torch.Tensor) -> torch.Tensor:
        """Columns `indices` of the Hessian over t (dim x len(indices)), at t = 0."""
        units = torch.zeros(len(indices), dim, dtype=torch.float64, device=self.device)
        units[torch.arange(len(indices)), indices.to(self.device)] = 1.0
        return self.products(lift, dim, units)

    def products(self, lift: Lift, dim: int, vectors: torch.Tensor) -> torch.Tensor:
        """H_t v for each row v of `vectors` (m x dim), as columns (dim x m), at t = 0."""
        out = torch.zeros(dim, len(vectors), dtype=torch.float64, device=self.device)
        origin = torch.zeros(dim, dtype=torch.float64, device=self.device)
        for start in range(0, self.samples, self.batch_size):
            x, y = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]

            def loss(t: torch.Tensor) -> torch.Tensor:
                # A sum over the batch / N: the batches' Hessians add up to the mean loss's.
                logits = functional_call(self.model, lift(t), (x,))
                return F.cross_entropy(logits, y, reduction="sum") / self.samples

            gradient = grad(loss)

            def hvp(v: torch.Tensor) -> torch.Tensor:
                return jvp(gradient, (origin,), (v,))[1]

            per_pass = max(1, TANGENT_EXAMPLES // len(y))
            for first in range(0, len(vectors), per_pass):
                chunk = vectors[first : first + per_pass]
                block = vmap(hvp)(chunk) if self.batched else torch.stack([hvp(v) for v in chunk])
                out[:, first : first + len(chunk)] += block.T
        return out

    # lifts -------------------------------------------------------------------------
    def shift(self, layer: Layer) -> Lift:
        """t_k adds to every coordinate of kernel k: d/dt_k = 1_k."""
        own = {name: self.params[name] for name in layer.params}
        return lambda t: {name: p + per_kernel(t, p.shape) for name, p in own.items()}

    def scale(self, layer: Layer) -> Lift:
        """t_k scales kernel k by (1 + t_k): d/dt_k = w masked to C_k."""
        own = {name: self.params[name] for name in layer.params}
        return lambda t: {name: p + p * per_kernel(t, p.shape) for name, p in own.items()}

    def coordinates(self, layer: Layer) -> Lift:
        own = {name: self.params[name] for name in layer.params}
        sizes = [p.numel() for p in own.values()]

        def lift(t: torch.Tensor) -> dict[str, torch.Tensor]:
            parts = torch.split(t, sizes)
            return {name: p + part.view(p.shape) for (name, p), part in zip(own.items(), parts)}

        return lift

    def kernel_of(self, layer: Layer) -> torch.Tensor:
        """The kernel index of each of the layer's coordinates, in `coordinates` order."""
        index = torch.arange(layer.kernels, device=self.device)
        return torch.cat([per_kernel(index, self.params[name].shape).reshape(-1) for name in layer.params])


def layer_size(layer: Layer, params: dict[str, torch.Tensor]) -> int:
    """Coordinates of the layer (what the per-coordinate budget counts)."""
    return sum(params[name].numel() for name in layer.params)


def interaction(probe: HessianProbe, layer: Layer) -> torch.Tensor:
    """S[i, j] = 1_i^T H 1_j over the layer's kernels (K x K, symmetric, signed)."""
    every = torch.arange(layer.kernels)
    return probe.columns(probe.shift(layer), layer.kernels, every)


def per_coordinate(probe: HessianProbe, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, diagonal saliency): A[i, j] = sum of |H_ab| over a in C_i, b in C_j, and
    s_k = 1/2 sum over a in C_k of H_aa w_a^2; one HVP per coordinate of the layer."""
    kernel_of = probe.kernel_of(layer)
    size = len(kernel_of)
    weights = torch.cat([probe.params[name].reshape(-1) for name in layer.params])
    absolute = torch.zeros(layer.kernels, layer.kernels, dtype=torch.float64, device=probe.device)
    diagonal = torch.zeros(size, dtype=torch.float64, device=probe.device)
    lift = probe.coordinates(layer)
    for first in range(0, size, COORDINATES_PER_PASS):
        chunk = torch.arange(first, min(size, first + COORDINATES_PER_PASS), device=probe.device)
        cols = probe.columns(lift, size, chunk)  # size x len(chunk)
        rows = torch.zeros(layer.kernels, len(chunk), dtype=torch.float64, device=probe.device)
        rows.index_add_(0, kernel_of, cols.abs())
        absolute.index_add_(1, kernel_of[chunk], rows)
        diagonal[chunk] = cols[chunk, torch.arange(len(chunk), device=probe.device)]
    saliency = torch.zeros(layer.kernels, dtype=torch.float64, device=probe.device)
    saliency.index_add_(0, kernel_of, 0.5 * diagonal * weights**2)
    return absolute, saliency
