"""Quantizing a soft-weight-sharing run: every covered weight snapped to its component's mean.

After training with `regularizer.name: soft_weight_sharing` (engine/soft_sharing.py), each
weight the prior covered is replaced by the mean of its most probable component
(argmax_j pi_j N(w | mu_j, sigma_j^2)); component 0's mean is exactly 0, so those weights
become prunable zeros. The snapped model is evaluated on the held-out split, and saved as
`checkpoints/quantized.pt` with its figures in `quantize.json`. Figures, over the covered
weights only (as Ullrich et al. 2017 report theirs, here without their sparse-index and
Huffman storage details):
- zero_share:    share of covered weights snapped to 0;
- index_bits:    ceil(log2(components in use)), bits per weight of a fixed-length code;
- entropy_bits:  entropy of the component assignments, bits per weight of an ideal code;
- compression:   32 / entropy_bits against float32 (the J-entry codebook not counted).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from engine.features import evaluate
from engine.freezing import Freezer
from engine.run_folder import RunFolder, atomic_write_json
from engine.soft_sharing import PRIOR_CHECKPOINT, MixturePrior, coverage, covered
from engine.spec import ExperimentSpec, SpecError
from engine.train import prepare

QUANTIZED_CHECKPOINT = "quantized"
FIGURES_FILE = "quantize.json"


@torch.no_grad()
def snap(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None], prior: MixturePrior) -> torch.Tensor:
    """Snap the covered coordinates of `params` in place; returns each one's component."""
    assignment = prior.assign(covered(params, masks))
    _, mu, _ = prior.mixture()
    values, start = mu[assignment], 0
    for name, param in params.items():
        mask = masks[name]
        count = param.numel() if mask is None else int(mask.sum())
        piece = values[start : start + count]
        if mask is None:
            param.copy_(piece.view_as(param))
        else:
            param[mask] = piece
        start += count
    return assignment


def figures(assignment: torch.Tensor, components: int) -> dict:
    counts = torch.bincount(assignment, minlength=components).double()
    shares = counts[counts > 0] / counts.sum()
    entropy = float(-(shares * shares.log2()).sum())
    return {
        "covered_weights": int(counts.sum()),
        "zero_share": float(counts[0] / counts.sum()),
        "components_used": int((counts > 0).sum()),
        "index_bits": math.ceil(math.log2(int((counts > 0).sum()))) if (counts > 0).sum() > 1 else 0,
        "entropy_bits": entropy,
        "compression": 32 / entropy if entropy > 0 else None,
    }


def quantize_run(run_dir: Path, runs_dir: Path | None = None, device: str | None = None) -> dict:
    """Snap, evaluate and save; returns the figures (also written to quantize.json)."""
    folder = RunFolder(run_dir)
    spec = ExperimentSpec.model_validate(folder.spec())
    if spec.regularizer.name != "soft_weight_sharing":
        raise SpecError(
            f"run {folder.run_id} has regularizer.name {spec.regularizer.name!r}; quantize needs a run trained "
            "with 'soft_weight_sharing' (its learned mixture)"
        )
    for name in ("final", PRIOR_CHECKPOINT):
        if not folder.checkpoint_path(name).exists():
            raise SpecError(f"run {folder.run_id} has no checkpoints/{name}.pt; quantize a completed run")
    prep = prepare(spec.model_copy(update={"device": device or spec.device}), runs_dir)
    model = prep.model
    model.load_state_dict(folder.load_tensors(folder.checkpoint_path("final")))
    if spec.freeze is True:  # what trained with the prior: frozen tensors are left out, as in training
        Freezer(model, prep.layers, prep.masks["fixed"])
    settings = spec.regularizer
    prior = MixturePrior(settings.components, settings.pi_zero, 0.0, 1.0).to(prep.device)
    prior.load_state_dict(folder.load_tensors(folder.checkpoint_path(PRIOR_CHECKPOINT)))
    masks = {n: m if m is None else m.to(prep.device) for n, m in coverage(model, settings, prep.masks).items()}
    params = {n: p for n, p in model.named_parameters() if n in masks}
    before = evaluate(model, prep.data.test_x, prep.data.test_y)
    assignment = snap(params, masks, prior)
    after = evaluate(model, prep.data.test_x, prep.data.test_y)
    result = {
        "run_id": folder.run_id,
        "eval_acc_before": before["eval_acc"],
        "eval_acc": after["eval_acc"],
        "eval_loss": after["eval_loss"],
        "components": settings.components,
        "covers": settings.on,
        **figures(assignment.cpu(), settings.components),
        "mixture": prior.summary(),
    }
    folder.save_tensors(folder.checkpoint_path(QUANTIZED_CHECKPOINT), model.state_dict())
    atomic_write_json(folder.path / FIGURES_FILE, result)
    return result
