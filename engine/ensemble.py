"""Ensembles: K independent models trained as one, each with its own loss on the same batch.

Three ways to run the K members, all with the same initial weights (K plain models built
one after another from the caller's RNG) and the same training:
- sequential: a Python loop over the members (`members` ModuleList);
- vmap:       the same `members`, run as one batched call (torch.func.vmap over their
              parameters stacked per forward); parameter names, optimizer state and
              checkpoints are those of sequential;
- grouped:    one wide grouped model (engine.models, groups=K, head='members') whose
              group k is member k: grouped convolutions and block-diagonal linears.

Every forward returns logits [batch, K, classes]. The loss is the sum over members of
each member's mean cross-entropy, so each member's gradient is the one it would get
training alone; the ensemble's prediction is the mean of the members' logits.
Which implementation is fastest depends on the device and the model: `pick_implementation`
measures them.
"""

from __future__ import annotations

import inspect
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from engine.choices import ENSEMBLE_IMPLEMENTATIONS
from engine.grouped import split_group
from engine.models import build_model
from engine.spec import ModelSpec

# The ones that build a model (auto picks among them), the reference first.
IMPLEMENTATIONS = ("sequential", *(n for n in ENSEMBLE_IMPLEMENTATIONS.names if n not in ("auto", "sequential")))


class SequentialEnsemble(nn.Module):
    """The members one after another: the reference the other implementations must match."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members], dim=1)


class VmapEnsemble(SequentialEnsemble):
    """The members as one vmapped call over their stacked parameters and buffers.

    The stacks are rebuilt every forward (torch.stack keeps autograd to the members' own
    parameters, so the optimizer sees sequential's parameters). BatchNorm in train mode
    updates the stacked running stats in place; they are copied back into the members.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self.members[0]
        params = _stacked([dict(m.named_parameters()) for m in self.members])
        buffers = _stacked([dict(m.named_buffers()) for m in self.members])

        def member(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (x,))

        logits = vmap(member, in_dims=(0, 0, None), out_dims=1)(params, buffers, x)
        if self.training and buffers:
            with torch.no_grad():  # BatchNorm's running-stat updates landed in the stacks
                for k, m in enumerate(self.members):
                    for name, buffer in m.named_buffers():
                        buffer.copy_(buffers[name][k])
        return logits


def _stacked(per_member: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([tensors[name] for tensors in per_member]) for name in per_member[0]}


def grouped_spec(model_spec: ModelSpec, members: int) -> ModelSpec:
    """The one wide model whose K groups are the K members (each `model_spec.width` wide)."""
    raw = model_spec.model_dump() | {
        "width": members * model_spec.width,
        "groups": members,
        "connectivity": "grouped",
        "head": "members",
    }
    return ModelSpec.model_validate(raw)


def build_ensemble(
    model_spec: ModelSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
    members: int,
    implementation: str,
) -> nn.Module:
    """K members built one after another from the caller's RNG; forward gives [B, K, classes].

    Build on the CPU under the caller's seed (as build_model): every implementation then
    starts from the same weights and leaves the caller's RNG in the same state.
    """
    if model_spec.groups != 1:
        raise ValueError(f"ensemble members are plain models: model.groups must be 1, not {model_spec.groups}")
    build = ENSEMBLE_IMPLEMENTATIONS.implementation(implementation)  # "auto" is resolved before this
    return build(model_spec, input_shape, num_classes, [build_model(model_spec, input_shape, num_classes) for _ in range(members)])


def _grouped(model_spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int, plain: list[nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # its own init is overwritten; keep the caller's RNG as the others do
        grouped = build_model(grouped_spec(model_spec, len(plain)), input_shape, num_classes)
    load_members(grouped, [m.state_dict() for m in plain])
    return grouped


# Implementations: (model spec, input shape, classes, the members built as plain models) -> one module.
ENSEMBLE_IMPLEMENTATIONS.implement("sequential", lambda model_spec, input_shape, num_classes, plain: SequentialEnsemble(plain))
ENSEMBLE_IMPLEMENTATIONS.implement("vmap", lambda model_spec, input_shape, num_classes, plain: VmapEnsemble(plain))
ENSEMBLE_IMPLEMENTATIONS.implement("grouped", _grouped)


def member_states(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The members as plain state dicts (loadable into build_model(model_spec)), copied."""
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in model.members]
    state = model.state_dict()
    count = _group_count(state)
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
    for name, tensor in state.items():
        base, group = split_group(name)  # grouped models name group k's tensors `weight_g{k}`
        if group is not None:
            states[group][base] = tensor.detach().clone()
        elif tensor.dim() == 0:  # num_batches_tracked: one count shared by all groups
            for member in states:
                member[name] = tensor.detach().clone()
        else:  # BatchNorm running stats of all groups' channels, group k's block k
            for member, block in zip(states, tensor.detach().chunk(count)):
                member[name] = block.clone()
    return states


def load_members(model: nn.Module, states: list[dict[str, torch.Tensor]]) -> None:
    """The inverse of member_states: member k's weights and buffers from states[k]."""
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        if len(states) != len(model.members):
            raise ValueError(f"{len(states)} member states for an ensemble of {len(model.members)}")
        for member, state in zip(model.members, states):
            member.load_state_dict(state)
        return
    own = model.state_dict()
    if len(states) != _group_count(own):
        raise ValueError(f"{len(states)} member states for a grouped model of {_group_count(own)} groups")
    full: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        base, group = split_group(name)
        if group is not None:
            full[name] = states[group][base]
        elif tensor.dim() == 0:
            full[name] = states[0][name]
        else:
            full[name] = torch.cat([state[name] for state in states])
    model.load_state_dict(full)


def _group_count(state: dict[str, torch.Tensor]) -> int:
    # A one-group model keeps plain tensor names: it is its single member as it stands.
    indices = {group for _, group in map(split_group, state) if group is not None}
    return max(indices, default=0) + 1


def ensemble_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over members of each member's mean cross-entropy: each gets its solo gradient."""
    batch, members, _ = logits.shape
    targets = labels.unsqueeze(1).expand(batch, members)
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum") / batch


def ensemble_logits(logits: torch.Tensor) -> torch.Tensor:
    """The ensemble's prediction: the members' logits averaged."""
    return logits.mean(dim=1)


def measure_step_times(
    model_spec: ModelSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
    members: int,
    batch_size: int,
    device: torch.device | str,
    implementations: tuple[str, ...] | list[str] = IMPLEMENTATIONS,
    steps: int = 10,  # timed SGD steps per repeat
    repeats: int = 3,  # the median of these is reported
    warmup: int = 3,  # untimed steps first: allocator, kernel selection, caches
) -> dict[str, float]:
    """Seconds per SGD training step of each implementation that works on `device`.

    Implementations are interleaved over the repeats, so drift on a shared machine hits
    them alike. One that fails to build or step on the device is left out, not fatal.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG
        torch.manual_seed(0)
        x = torch.randn(batch_size, *input_shape).to(device)
        y = torch.randint(num_classes, (batch_size,)).to(device)
        steppers = {}
        for name in dict.fromkeys(implementations):
            try:
                steppers[name] = _stepper(model_spec, input_shape, num_classes, members, name, device, x, y)
                for _ in range(warmup):
                    steppers[name]()
                _synchronize(device)
            except Exception:  # noqa: BLE001 - e.g. vmap or grouped kernels unsupported on this device
                steppers.pop(name, None)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _synchronize(device)  # time finished work, not queued kernels
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def _stepper(model_spec, input_shape, num_classes, members, implementation, device, x, y):
    model = build_ensemble(model_spec, input_shape, num_classes, members, implementation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        ensemble_loss(model(x), y).backward()
        optimizer.step()

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_implementation(*args, **kwargs) -> tuple[str, dict[str, float]]:
    """The fastest implementation measured on the device, and every measured step time.
    Takes measure_step_times' arguments (one signature, not two copies of it).

    Sequential is always measured, so the pick is never slower than it (as measured).
    """
    call = inspect.signature(measure_step_times).bind(*args, **kwargs)
    call.apply_defaults()
    asked = call.arguments["implementations"]
    call.arguments["implementations"] = ["sequential", *(name for name in asked if name != "sequential")]
    times = measure_step_times(*call.args, **call.kwargs)
    if not times:
        raise RuntimeError(f"no ensemble implementation ran on {call.arguments['device']}, not even sequential")
    return min(times, key=times.__getitem__), times
