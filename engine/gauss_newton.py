"""S and the OBD saliency of every partitioned layer from one pass over the examples:
the Hessian over the per-kernel lifts as Gauss-Newton plus its exact (diagonal) remainder.

The lifts are engine/hessian.py's: `shift` (d/dt_k = 1_k, giving S) and `scale`
(d/dt_k = w masked to C_k, giving the OBD saliency). With f the logits and CE the loss,
the chain rule splits the Hessian in t of the mean loss over N examples:

    D^T H D = (1/N) sum_n J_n^T H_CE,n J_n  +  (1/N) sum_n sum_c dCE_n/df_c * d2 f_c/dt2
    J_n = df(x_n)/dt (10 x K),   H_CE,n = diag(p_n) - p_n p_n^T   (p_n: softmax of the logits)

The second term (the remainder) is zero off the diagonal and usually zero on it:
- Every model of the family is piecewise linear after a layer's own block (ReLU, max- and
  average-pooling, eval-mode BatchNorm, residual sums, linear layers: their second
  derivatives are zero, in autograd as in exact arithmetic), so d2f/dt2 is the block
  output's second derivative carried forward linearly.
- t_k moves only kernel k's coordinates, which feed only output channel k of the block:
  d2 y / dt_i dt_j = 0 for i != j, so the remainder is diagonal.
- When the layer's parameters all belong to one module (a conv or linear layer's weight
  and bias) the block output is linear in t: the remainder is zero. When the kernel group
  spans a conv and its BatchNorm (scale times conv output) it is not; its diagonal is then
  H 1 - GN 1, one HVP along the all-ones direction per lift instead of K.

Why: K HVPs per layer and lift cost K forward-and-backward passes with tangents through
everything after the layer (for LeNet's conv1, K = 32 full conv2 passes for S and 32 more for
the saliency); the per-example Jacobians cost ten backward passes (one per class) for every
layer and both lifts together. Same quantities to float64 rounding (tests/test_hessian.py
checks both against the full Hessian).
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, vmap

from engine.hessian import HessianProbe
from engine.models import Layer, per_kernel

# Per-example Jacobians of every class w.r.t. every lifted coordinate are materialised during
# the backward pass (examples x classes x coordinates doubles): examples per vmap pass are
# chosen to keep that within this many entries (memory and page faults, not the result).
JACOBIAN_ENTRIES = 1 << 21  # lenet w32, conv layers: 4 examples per pass (2 to 8 measure alike)


def _lifted(probe: HessianProbe, layers: list[Layer]):
    """logits(x_n) at theta + shift lift(t_shift) + scale lift(t_scale), per layer name."""
    own = {layer.name: {name: probe.params[name] for name in layer.params} for layer in layers}

    def logits(t_shift: dict[str, torch.Tensor], t_scale: dict[str, torch.Tensor], x: torch.Tensor):
        values = {}
        for layer_name, params in own.items():
            for name, p in params.items():
                values[name] = p + per_kernel(t_shift[layer_name], p.shape) + p * per_kernel(t_scale[layer_name], p.shape)
        out = functional_call(probe.model, values, (x.unsqueeze(0),)).squeeze(0)
        return out, out  # (differentiated, aux: the logits themselves)

    return logits


def _single_module(layer: Layer) -> bool:
    """Whether all of the layer's parameters belong to one module (output linear in t)."""
    return len({name.rsplit(".", 1)[0] for name in layer.params}) == 1


def gauss_newton(probe: HessianProbe, layers: list[Layer]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (S, OBD block saliency), S[i, j] = 1_i^T H 1_j and s_k = 1/2 w_k^T H_kk w_k."""
    dtype, device = torch.float64, probe.device
    zeros = {layer.name: torch.zeros(layer.kernels, dtype=dtype, device=device) for layer in layers}
    shift_gn = {layer.name: torch.zeros(layer.kernels, layer.kernels, dtype=dtype, device=device) for layer in layers}
    scale_gn = {layer.name: torch.zeros(layer.kernels, layer.kernels, dtype=dtype, device=device) for layer in layers}
    per_example = vmap(jacrev(_lifted(probe, layers), argnums=(0, 1), has_aux=True), in_dims=(None, None, 0))
    coordinates = sum(probe.params[name].numel() for layer in layers for name in layer.params)
    with torch.no_grad():
        classes = functional_call(probe.model, {}, (probe.x[:1],)).shape[1]
    chunk = max(1, min(probe.batch_size, JACOBIAN_ENTRIES // (classes * coordinates)))
    for start in range(0, probe.samples, chunk):
        # H_CE needs no labels: the curvature of cross-entropy in the logits is the same whatever the label.
        (shift_j, scale_j), logits = per_example(zeros, zeros, probe.x[start : start + chunk])  # J: (n, classes, K)
        p = torch.softmax(logits, dim=1)
        curvature = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # H_CE per example
        for layer in layers:
            for gn, jac in ((shift_gn, shift_j), (scale_gn, scale_j)):
                gn[layer.name] += torch.einsum("nck,ncd,ndl->kl", jac[layer.name], curvature, jac[layer.name])
    result = {}
    for layer in layers:
        s = shift_gn[layer.name] / probe.samples
        scale = scale_gn[layer.name] / probe.samples
        if not _single_module(layer):  # the diagonal remainder: one HVP along 1 per lift
            ones = torch.ones(1, layer.kernels, dtype=dtype, device=device)
            s = s + torch.diag(probe.products(probe.shift(layer), layer.kernels, ones)[:, 0] - s.sum(1))
            scale = scale + torch.diag(probe.products(probe.scale(layer), layer.kernels, ones)[:, 0] - scale.sum(1))
        result[layer.name] = (s, 0.5 * scale.diagonal().clone())
    return result
