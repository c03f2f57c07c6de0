"""Channel pruning of a plain LeNet or VGG (network slimming, Liu et al. 2017).

Pruning physically removes channels: every pruned conv layer, the BatchNorm after it,
the next conv's input channels and, after the last conv, the matching columns of fc1
are rebuilt as smaller modules holding the kept slices. A channel whose every outgoing
effect is exactly zero can be removed without changing the model's function.

Scores per output channel of each conv layer:
- bn_scale: |scale| of the BatchNorm after the conv (network slimming). LeNet has no
  BatchNorm, so there bn_scale falls back to channel_norm.
- channel_norm: the L2 norm of the channel's kernel and bias together (VGG convs have
  no bias: the kernel alone).

Conv layers are named as in `model_layers` (`features.conv1`, ...). ResNet is not
supported: its shortcuts tie the channels of several layers together.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.models import ResNet, param_count
from engine.choices import PRUNE_CRITERIA
from engine.spec import PruneSpec, SpecError

Slices = dict[str, list[tuple[int, torch.Tensor]]]  # param/buffer name -> (dim, kept indices) applied in order


def _conv_chain(model: nn.Module) -> tuple[list[tuple[str, str | None]], str]:
    """The (conv, BatchNorm after it or None) names in forward order, and the name of fc1."""
    if isinstance(model, ResNet):
        raise SpecError("channel pruning supports lenet and vgg, not resnet")
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        raise SpecError(f"channel pruning supports lenet and vgg, not {type(model).__name__}")
    chain: list[tuple[str, str | None]] = []
    for name, module in features.named_children():
        full = f"features.{name}"
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            chain.append((full, None))
        elif isinstance(module, nn.BatchNorm2d) and chain and chain[-1][1] is None:
            chain[-1] = (chain[-1][0], full)
        elif not isinstance(module, (nn.ReLU, nn.MaxPool2d)):
            # Grouped or split layers keep channels in more than one tensor: not a plain model.
            kind = type(module).__name__
            raise SpecError(f"channel pruning needs a plain model (model.groups=1); {full} is a {kind}")
    fc1 = next((f"classifier.{n}" for n, m in classifier.named_children() if isinstance(m, nn.Linear)), None)
    if not chain or fc1 is None:
        raise SpecError(f"channel pruning found no conv layers followed by a linear layer in {type(model).__name__}")
    return chain, fc1


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every prunable conv layer."""
    chain, _ = _conv_chain(model)
    return {conv: model.get_submodule(conv).out_channels for conv, _ in chain}


@torch.no_grad()
def channel_scores(model: nn.Module, criterion: str) -> dict[str, torch.Tensor]:
    """A score per output channel of every conv layer; low scores are pruned first."""
    if criterion not in PRUNE_CRITERIA:
        raise SpecError(f"prune criterion {criterion!r}: allowed: {', '.join(PRUNE_CRITERIA.names)}")
    chain, _ = _conv_chain(model)
    scores = {}
    for conv_name, bn_name in chain:
        if criterion == "bn_scale" and bn_name is not None and model.get_submodule(bn_name).affine:
            scores[conv_name] = model.get_submodule(bn_name).weight.detach().abs().float().cpu()
            continue
        conv = model.get_submodule(conv_name)
        squares = conv.weight.detach().flatten(1).float().square().sum(1)
        if conv.bias is not None:
            squares = squares + conv.bias.detach().float().square()
        scores[conv_name] = squares.sqrt().cpu()
    return scores


def plan_pruning(
    model: nn.Module, criterion: str, fraction: float, min_channels: dict[str, int]
) -> dict[str, torch.Tensor]:
    """The channels to keep per conv layer (ascending indices).

    Removes round(fraction * channels) of each layer's lowest-scored channels, but never
    leaves fewer than `min_channels[layer]` (at least 1). Ties go to the lower index.
    """
    if not 0 <= fraction < 1:
        raise SpecError(f"prune fraction {fraction}: must be at least 0 and below 1")
    keep = {}
    for name, scores in channel_scores(model, criterion).items():
        channels = len(scores)
        kept = max(channels - round(fraction * channels), min_channels.get(name, 1), 1)
        kept = min(kept, channels)
        order = torch.argsort(scores, descending=True, stable=True)
        keep[name] = order[:kept].sort().values
    return keep


def _factory(module: nn.Module) -> dict:
    return {"device": module.weight.device, "dtype": module.weight.dtype}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


def _take(tensor: torch.Tensor, slices: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    for dim, index in slices:
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


@torch.no_grad()
def prune_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> dict:
    """Remove every channel not in `keep` (conv name -> kept indices; a missing layer keeps all).

    Rebuilds the convs, their BatchNorms and fc1 in place as new, smaller modules (same
    device, dtype and requires_grad). Returns the new `widths`, `removed` channels per
    layer, `params_before`/`params_after`, and `slices`: for each parameter and buffer
    name, the (dim, kept indices) that map an old tensor of that name to the new one
    (what an optimizer's per-parameter state needs).
    """
    chain, fc1_name = _conv_chain(model)
    unknown = set(keep) - {conv for conv, _ in chain}
    if unknown:
        raise ValueError(f"no prunable conv layers named {sorted(unknown)}; layers: {[c for c, _ in chain]}")
    params_before, old_widths = param_count(model), widths(model)
    slices: Slices = {}
    previous: torch.Tensor | None = None  # kept input channels of the current conv
    for conv_name, bn_name in chain:
        conv = model.get_submodule(conv_name)
        out = keep.get(conv_name, torch.arange(conv.out_channels, device="cpu")).long().cpu()
        if len(out) == 0 or (out.numel() and (out.min() < 0 or out.max() >= conv.out_channels)):
            raise ValueError(f"{conv_name}: keep indices must be within 0..{conv.out_channels - 1} and not empty")
        in_ = previous if previous is not None else torch.arange(conv.in_channels, device="cpu")
        weight_slices = [(0, out), (1, in_)]
        new = nn.Conv2d(len(in_), len(out), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        bias=conv.bias is not None, padding_mode=conv.padding_mode, **_factory(conv))
        new.weight.copy_(_take(conv.weight, weight_slices))
        new.weight.requires_grad_(conv.weight.requires_grad)
        slices[f"{conv_name}.weight"] = weight_slices
        if conv.bias is not None:
            new.bias.copy_(_take(conv.bias, [(0, out)]))
            new.bias.requires_grad_(conv.bias.requires_grad)
            slices[f"{conv_name}.bias"] = [(0, out)]
        _set_module(model, conv_name, new)
        if bn_name is not None:
            bn = model.get_submodule(bn_name)
            new_bn = nn.BatchNorm2d(len(out), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                    device=conv.weight.device)
            for key, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
                target = getattr(new_bn, key)
                if tensor.dim() == 0:  # num_batches_tracked
                    target.copy_(tensor)
                    continue
                target.data = _take(tensor, [(0, out)]).clone()
                if isinstance(target, nn.Parameter):
                    target.requires_grad_(tensor.requires_grad)
                slices[f"{bn_name}.{key}"] = [(0, out)]
            _set_module(model, bn_name, new_bn)
        previous = out

    # fc1 reads the last conv's output flattened channel-major: each channel is a block of H*W inputs.
    fc1 = model.get_submodule(fc1_name)
    last = chain[-1][0]
    positions = fc1.in_features // old_widths[last]
    columns = (previous[:, None] * positions + torch.arange(positions, device="cpu")).flatten()
    new_fc = nn.Linear(len(columns), fc1.out_features, bias=fc1.bias is not None, **_factory(fc1))
    new_fc.weight.copy_(_take(fc1.weight, [(1, columns)]))
    new_fc.weight.requires_grad_(fc1.weight.requires_grad)
    slices[f"{fc1_name}.weight"] = [(1, columns)]
    if fc1.bias is not None:
        new_fc.bias.copy_(fc1.bias)
        new_fc.bias.requires_grad_(fc1.bias.requires_grad)
    _set_module(model, fc1_name, new_fc)

    new_widths = widths(model)
    return {
        "widths": new_widths,
        "removed": {name: old_widths[name] - new_widths[name] for name in new_widths},
        "params_before": params_before,
        "params_after": param_count(model),
        "slices": slices,
    }


def prune_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, spec: PruneSpec, initial_widths: dict[str, int]
) -> tuple[torch.optim.Optimizer, dict]:
    """Prune `spec.fraction` of each conv layer's channels and carry the optimizer over.

    A layer never drops below ceil(spec.min_fraction * its width at step 0). Returns a new
    optimizer of the same type and hyperparameters over the new parameters, its state
    (SGD momentum buffers, Adam moments; Adam's step counts as they were) sliced to the
    kept channels, and a JSON-ready report (widths, removed, params_before, params_after).
    Every parameter the optimizer holds must be a parameter of `model`.
    """
    min_channels = {name: max(1, math.ceil(spec.min_fraction * width)) for name, width in initial_widths.items()}
    keep = plan_pruning(model, spec.criterion, spec.fraction, min_channels)
    names = {id(p): name for name, p in model.named_parameters()}
    order = [p for group in optimizer.param_groups for p in group["params"]]
    missing = [i for i, p in enumerate(order) if id(p) not in names]
    if missing:
        raise ValueError(f"the optimizer holds {len(missing)} tensors that are not parameters of the model")
    old_names = [names[id(p)] for p in order]
    saved = optimizer.state_dict()  # state keyed by position in `order`
    group_names = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]

    result = prune_channels(model, keep)

    shapes = {name: tuple(p.shape) for name, p in zip(old_names, order)}
    state = {}
    for index, values in saved["state"].items():
        name = old_names[index]
        state[index] = {
            key: _take(value, result["slices"][name])
            if isinstance(value, torch.Tensor) and tuple(value.shape) == shapes[name] and name in result["slices"]
            else value
            for key, value in values.items()
        }
    params = dict(model.named_parameters())
    new = type(optimizer)([{"params": [params[n] for n in group]} for group in group_names])
    new.load_state_dict({"state": state, "param_groups": saved["param_groups"]})  # hyperparameters come back too
    new.defaults = dict(optimizer.defaults)
    report = {key: value for key, value in result.items() if key != "slices"}
    return new, report


@torch.no_grad()
def shrink_to_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink a freshly built model's layers to a pruned checkpoint's widths, then load it.

    Which channels were kept does not matter here: the checkpoint's values replace them.
    """
    chain, _ = _conv_chain(model)
    keep = {}
    for conv, _ in chain:
        key = f"{conv}.weight"
        if key not in state_dict:
            raise ValueError(f"state dict has no {key!r}: not a checkpoint of this model")
        keep[conv] = torch.arange(state_dict[key].shape[0], device="cpu")
    prune_channels(model, keep)
    model.load_state_dict(state_dict)
    return model
