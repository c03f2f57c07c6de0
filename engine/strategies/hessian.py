"""`hessian_interaction` and `obd`: kernel partitions chosen from the loss's Hessian.

Both measure every partitioned layer (S and the OBD saliency from one Gauss-Newton pass,
engine/gauss_newton.py, and with matrix absolute / saliency diagonal the per-coordinate sums
under the budget; cached per study, engine/hessian_cache.py) and express
their choice as a kernel ranking (the fixed kernels first), so the masks come from the
same fix-the-top-k path as `first_kernels`. The measurement is a function of the initial
weights (the run's `seed`, or hessian.at's checkpoint), the first `samples` training
examples and float64 arithmetic, never of `freeze`: the frozen and reference arms of a
study compute the same partition. What was measured goes to hessian.pt in the run folder.
"""

from __future__ import annotations

import copy

import torch

from engine.choices import PARTITIONS
from engine.construction import _run_checkpoint
from engine.gauss_newton import gauss_newton
from engine.hessian import HessianProbe, layer_size, per_coordinate
from engine.hessian_cache import cached, measurement_key
from engine.hessian_spec import HessianSpec, needs_per_coordinate
from engine.hessian_summary import hessian_note
from engine.kernel_split import split_kernels
from engine.models import Layer
from engine.partition_context import PartitionContext
from engine.spec import PartitionSpec, SpecError
from engine.strategies import partitioned_layers
from engine.strategies.kernel_scores import fix_top_kernels, fixed_kernel_count

HESSIAN_FILE = "hessian.pt"
HESSIAN_JSON = "hessian.json"


def _checked_layers(strategy: str, params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec,
                    context: PartitionContext | None) -> list[Layer]:
    """Everything the measurement would refuse, checked before it starts (and in preflight)."""
    if context is None:
        raise ValueError(f"partition.strategy {strategy!r} measures the model: pass a PartitionContext")
    hessian = spec.hessian
    available = len(context.data.train_y)
    if hessian.samples > available:
        raise SpecError(
            f"partition.hessian.samples {hessian.samples:,} is more than the {available:,} training examples of "
            f"{context.data.name}; use at most {available:,}"
        )
    if hessian.device == "run" and context.device.type == "mps":
        raise SpecError("partition.hessian.device 'run': MPS has no float64; use partition.hessian.device 'cpu'")
    chosen = partitioned_layers(layers, spec)
    for layer in chosen:
        if strategy == "hessian_interaction" and layer.kernels < 2:
            raise SpecError(
                f"partition.strategy 'hessian_interaction': layer {layer.name!r} has 1 kernel, nothing to split; "
                "raise model.width (or use obd)"
            )
        size = layer_size(layer, params)
        if needs_per_coordinate(hessian, strategy) and size > hessian.budget:
            what = "partition.hessian.saliency 'diagonal'" if hessian.saliency == "diagonal" else "partition.hessian.matrix 'absolute'"
            raise SpecError(
                f"{what} needs one HVP per coordinate, and layer {layer.name!r} has {size:,} coordinates, over "
                f"partition.hessian.budget {hessian.budget:,}; raise the budget or use the K-HVP form "
                "(matrix 'signed', saliency 'block')"
            )
    return chosen


def _weights_at(hessian: HessianSpec, context: PartitionContext) -> torch.nn.Module:
    """The model whose Hessian is taken: the run's own initial weights, or hessian.at's checkpoint."""
    if hessian.at is None:
        return context.model
    state = _run_checkpoint(hessian.at.run, hessian.at.checkpoint, context.runs_dir, "partition.hessian.at")
    mine = context.model.state_dict()
    bad = sorted(set(mine) ^ set(state)) or [k for k in mine if tuple(mine[k].shape) != tuple(state[k].shape)]
    if bad:
        raise SpecError(
            f"partition.hessian.at: run {hessian.at.run}'s checkpoint {hessian.at.checkpoint!r} does not fit this model "
            f"(first difference: {bad[0]!r}); it must come from a run of the same model"
        )
    model = copy.deepcopy(context.model)
    model.load_state_dict(state)
    return model


def measure_layers(
    strategy: str, params, layers: list[Layer], spec: PartitionSpec, context: PartitionContext
) -> dict[str, dict[str, torch.Tensor]]:
    """Per partitioned layer: S, the saliency of the chosen form and (per-coordinate forms) A."""
    hessian = spec.hessian
    chosen = _checked_layers(strategy, params, layers, spec, context)
    device = context.device if hessian.device == "run" else torch.device("cpu")
    x, y = context.data.train_x[: hessian.samples], context.data.train_y[: hessian.samples]
    model = _weights_at(hessian, context)
    coordinate_pass = needs_per_coordinate(hessian, strategy)

    def compute() -> dict[str, dict[str, torch.Tensor]]:
        probe = HessianProbe(model, x, y, hessian.batch_size, device)
        measured = {}
        every = gauss_newton(probe, chosen)  # S and the block saliency of every layer, one pass
        for layer in chosen:
            interaction, block = every[layer.name]
            record = {"S": interaction.cpu(), "saliency": block.cpu()}
            if coordinate_pass:
                absolute, diagonal = per_coordinate(probe, layer)
                record["A"] = absolute.cpu()
                if hessian.saliency == "diagonal":
                    record["saliency"] = diagonal.cpu()
            measured[layer.name] = record
        return measured

    # What is computed, not what is chosen from it: the study's arms and strategies share it.
    what = {"samples": hessian.samples, "batch_size": hessian.batch_size, "per_coordinate": coordinate_pass,
            "saliency": hessian.saliency if coordinate_pass else "block"}
    key = measurement_key(model, x, y, chosen, what, device)
    return cached(context.runs_dir, key, chosen, ("S", "saliency", "A") if coordinate_pass else ("S", "saliency"), compute)


def _ranking(strategy: str, record: dict[str, torch.Tensor], count: int, hessian: HessianSpec) -> torch.Tensor:
    """The layer's kernels, the ones to fix first."""
    if strategy == "obd":
        return torch.argsort(record["saliency"], descending=hessian.fix == "high", stable=True)
    weights = record["A"] if hessian.matrix == "absolute" else record["S"].abs()
    fixed = torch.from_numpy(split_kernels(weights.numpy(), count, hessian.objective))
    return torch.cat([torch.nonzero(fixed).flatten(), torch.nonzero(~fixed).flatten()])


def hessian_strategy(strategy: str):
    def fixed(params, layers: list[Layer], spec: PartitionSpec, generator: torch.Generator,
              context: PartitionContext | None = None):
        if context is not None and not context.measure:
            _checked_layers(strategy, params, layers, spec, context)
            if spec.hessian.at is not None:
                _weights_at(spec.hessian, context)
            # Preflight: the masks' sizes are those of any kernel ranking; the worker measures.
            return fix_top_kernels(lambda layer, g: torch.arange(layer.kernels))(params, layers, spec, generator)
        measured = measure_layers(strategy, params, layers, spec, context)
        rankings = {}
        for name, record in measured.items():
            kernels = len(record["saliency"])
            count = fixed_kernel_count(spec.fraction, kernels)  # the count fix_top_kernels fixes
            rankings[name] = _ranking(strategy, record, count, spec.hessian)
            record["fixed"] = torch.zeros(kernels, dtype=torch.bool)
            record["fixed"][rankings[name][:count]] = True
        masks = fix_top_kernels(lambda layer, g: rankings[layer.name])(params, layers, spec, generator)
        at = spec.hessian.at.model_dump() if spec.hessian.at else "init"
        saved = {"layers": measured, "strategy": strategy, "samples": spec.hessian.samples, "at": at,
                 "matrix": spec.hessian.matrix, "objective": spec.hessian.objective,
                 "saliency_form": spec.hessian.saliency, "fix": spec.hessian.fix, "dtype": "float64"}
        context.files[HESSIAN_FILE] = saved
        # The same as plain JSON, for readers without torch (the TUI's Hessian tab).
        context.files[HESSIAN_JSON] = {**saved, "layers": {name: {key: value.tolist() for key, value in record.items()}
                                                           for name, record in measured.items()}}
        context.notes["hessian"] = hessian_note(saved)
        return masks

    fixed.measures_model = True  # partition_masks hands it the PartitionContext
    return fixed


PARTITIONS.implement("hessian_interaction", hessian_strategy("hessian_interaction"))
PARTITIONS.implement("obd", hessian_strategy("obd"))
