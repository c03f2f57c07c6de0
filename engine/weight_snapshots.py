"""Weights over time, in a compact form (`track.snapshots: k`): every k steps, one JSON line
in `snapshots.jsonl` of the run folder holding

- `kernels`: the first conv layer's weight tensor whole ([out][in][h][w]) and which of its
  kernels are fixed (`fixed_kernels`): small enough to keep at every snapshot;
- `hist`: per subset (`subset`, `fixed`) and layer, the counts of that subset's coordinates
  of the layer's weights in `bins` equal bins over a range fixed at step 0 (`edges`: the
  layer's [low, high]: +-2 x its largest initial |w|; values beyond go to the end bins),
  so that one layer's histograms are comparable over time;
- `proj`: every weight projected to 2-D by a fixed Gaussian matrix (seed PROJECTION_SEED,
  the same for every run of the same model, so the two arms of a pair share the axes),
  scaled by 1/sqrt(n): by Johnson-Lindenstrauss, distances between snapshots are kept
  on average. Computed on the run's device, one host copy per snapshot.

The TUI and reports read the file without torch. A resume appends: a reader keeps, per
step, the line written last (engine.events.survives_resume drops later steps of the
attempt before, as for events).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.loop import Hook, TrainState
from engine.models import Layer
from engine.weights_record import SNAPSHOTS_FILE  # noqa: F401  (train.py names the file from here)
BINS = 24
PROJECTION_SEED = 20_240_917  # fixed: the projection is a property of the model's shape, not of the run


def first_conv(model: nn.Module, layers: list[Layer]) -> tuple[str, str] | None:
    """(layer name, parameter name) of the first conv layer's first 4-D weight, or None."""
    params = dict(model.named_parameters())
    for layer in layers:
        if layer.kind == "conv":
            for name in layer.params:
                if name in params and params[name].dim() == 4:
                    return layer.name, name
    return None


def bin_index(values: torch.Tensor, low: float, high: float, bins: int = BINS) -> torch.Tensor:
    """Each value's bin of `bins` equal bins over [low, high] (in float64, so a value on an
    edge lands where exact arithmetic puts it); values beyond go to the end bins."""
    width = (high - low) / bins
    position = values.detach().to(torch.float64, copy=True).sub_(low).div_(width)  # a copy: never the weights themselves
    return position.clamp_(0, bins - 1).long()  # truncation is the floor here: nothing is negative after the clamp


def histogram(values: torch.Tensor, low: float, high: float, bins: int = BINS) -> list[int]:
    """Counts of `values` in `bins` equal bins over [low, high]; values beyond go to the end bins."""
    if values.numel() == 0:
        return [0] * bins
    return torch.bincount(bin_index(values.flatten(), low, high, bins), minlength=bins).tolist()


def layer_histograms(params: dict[str, torch.Tensor], layer: Layer, masks: dict[str, dict[str, torch.Tensor]],
                     low: float, high: float, bins: int = BINS) -> dict[str, list[int]]:
    """Per subset, the counts of `layer`'s values that the subset's mask selects (weights and
    per-kernel biases alike: what the subset holds). The layer is binned once and each subset
    counted with a mask-weighted bincount: boolean indexing of a large FC layer per subset
    was most of a snapshot's time."""
    names = [name for name in layer.params if name in params]
    if not names:
        return {subset: [0] * bins for subset in masks}
    index = bin_index(torch.cat([params[name].detach().flatten() for name in names]), low, high, bins)
    counts = {}
    for subset, mask in masks.items():
        selected = torch.cat([(mask[name].to(index.device) if name in mask
                               else torch.zeros_like(params[name], dtype=torch.bool)).flatten() for name in names])
        counts[subset] = [round(c) for c in torch.bincount(index, weights=selected.double(), minlength=bins).tolist()]
    return counts


class WeightSnapshots(Hook):
    def __init__(self, model: nn.Module, layers: list[Layer], masks: dict[str, dict[str, torch.Tensor]],
                 every: int, path: Path, device: torch.device) -> None:
        self.model, self.layers, self.masks, self.every, self.path = model, layers, masks, every, Path(path)
        self.conv = first_conv(model, layers)
        params = dict(model.named_parameters())
        self.edges = {}
        for layer in layers:  # the histogram range, from the initial weights
            values = torch.cat([params[n].detach().flatten() for n in layer.params if n in params])
            reach = 2 * float(values.abs().max()) if values.numel() else 1.0
            self.edges[layer.name] = (-(reach or 1.0), reach or 1.0)
        generator = torch.Generator(device=device).manual_seed(PROJECTION_SEED)
        total = sum(p.numel() for p in params.values())
        self.scale = 1 / math.sqrt(max(total, 1))
        # one (2, numel) Gaussian block per parameter, in name order: the same for every run of the model
        self.projection = {name: torch.randn(2, p.numel(), generator=generator, device=device)
                           for name, p in sorted(params.items())}
        self.last_step = -1

    def snapshot(self, step: int) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        record: dict[str, Any] = {"step": step, "bins": BINS, "edges": {k: list(v) for k, v in self.edges.items()}}
        if self.conv:
            layer, name = self.conv
            fixed = self.masks.get("fixed", {}).get(name)
            kernels = params[name].detach()
            record["kernels"] = {"layer": layer, "param": name,
                                 "values": [[[[round(v, 5) for v in row] for row in channel] for channel in kernel]
                                            for kernel in kernels.float().cpu().tolist()],
                                 "fixed_kernels": ([bool(k.any()) for k in fixed.cpu()] if fixed is not None
                                                   else [False] * kernels.shape[0])}
        by_layer = {layer.name: layer_histograms(params, layer, self.masks, *self.edges[layer.name]) for layer in self.layers}
        record["hist"] = {subset: {name: counts[subset] for name, counts in by_layer.items()} for subset in self.masks}
        point = sum(self.projection[name] @ p.detach().flatten().float() for name, p in params.items()
                    if name in self.projection)
        record["proj"] = [round(v * self.scale, 6) for v in point.cpu().tolist()]
        return record

    def write(self, step: int) -> None:
        if step == self.last_step:
            return
        self.last_step = step
        line = json.dumps(self.snapshot(step)) + "\n"
        with open(self.path, "a") as file:  # one whole line per write: a reader skips a torn last line
            file.write(line)
            file.flush()

    def on_start(self, state: TrainState, fresh: bool) -> None:
        if fresh:
            self.write(state.step)

    def after_step(self, state: TrainState) -> None:
        if state.step % self.every == 0:
            self.write(state.step)

    def on_end(self, state: TrainState) -> None:
        self.write(state.step)
