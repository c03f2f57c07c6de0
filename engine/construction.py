"""The model a run trains, built from its spec: plain, with seeded kernel groups, an
ensemble of members trained as one, or a fusion of trained runs.

Every construction happens on the CPU under the run's `seed` (so the initial weights do
not depend on the device) and before any file is written: a bad run id or a member
that does not fit fails here, as a SpecError naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.choices import FUSION_MODES
from engine.grouped import split_group
from engine.models import build_model
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec, ModelSpec, SpecError


@dataclass
class Construction:
    model: nn.Module  # on the CPU
    spec: ExperimentSpec  # with choices made here resolved (the ensemble implementation)
    notes: dict = field(default_factory=dict)  # what the start event should say about the construction


def construct(
    spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, device: torch.device, runs_dir: Path | None
) -> Construction:
    if spec.fusion.mode != "none":
        return _fused(spec, input_shape, num_classes, runs_dir)
    if spec.ensemble.members > 1:
        return _ensemble(spec, input_shape, num_classes, device)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(spec.seed)
        model = build_model(spec.model, input_shape, num_classes)
    notes = {}
    if spec.seeding.groups:
        _seed_groups(model, spec, input_shape, num_classes, runs_dir)
        notes["seeded_groups"] = spec.seeding.groups
    return Construction(model, spec, notes)


TRAINING_COPIES = 6  # weights, gradients, two optimizer moments, the tracker's initial copy, a checkpoint in flight


def check_fits(spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, device: torch.device) -> None:
    """Refuse a model too large to train on `device` before allocating it: the model is
    built on the meta device (no memory) and its float32 training footprint compared with
    the device's memory. (An absurd width would otherwise end in an allocator error, or
    in the OOM killer halfway through a run.)"""
    from engine.models import param_count

    with torch.device("meta"):
        params = param_count(build_model(spec.model, input_shape, num_classes))
    copies = max(spec.ensemble.members, len(spec.fusion.runs) or 1)
    need = params * copies * 4 * TRAINING_COPIES
    have = _device_memory(device)
    if have and need > have:
        raise SpecError(
            f"model.width {spec.model.width} makes a {spec.model.name} of {params * copies:,} parameters, which needs "
            f"about {need / 2**30:,.1f} GiB to train; {device} has {have / 2**30:,.1f} GiB. Lower model.width"
        )


def _device_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None  # not knowable here (not POSIX): no check


def _seed_groups(
    model: nn.Module, spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, runs_dir: Path | None
) -> None:
    from engine.seeding import seed_groups, seeded_source

    seeding = spec.seeding
    if seeding.run:
        source = _run_checkpoint(seeding.run, seeding.checkpoint, runs_dir, "seeding.run")
    else:
        source = seeded_source(spec.model, input_shape, num_classes, seeding.seed)
    seed_groups(model, source, seeding.groups)


def _ensemble(
    spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, device: torch.device
) -> Construction:
    from engine.ensemble import build_ensemble, pick_implementation

    members, implementation = spec.ensemble.members, spec.ensemble.implementation
    notes: dict = {}
    if implementation == "auto":
        # Measured on this device, not assumed: which one wins depends on the hardware.
        implementation, times = pick_implementation(
            spec.model, input_shape, num_classes, members, spec.data.batch_size, device
        )
        notes["implementation_step_seconds"] = {name: round(t, 6) for name, t in times.items()}
    notes["implementation"] = implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_ensemble(spec.model, input_shape, num_classes, members, implementation)
    resolved = spec.model_copy(update={"ensemble": spec.ensemble.model_copy(update={"implementation": implementation})})
    return Construction(model, resolved, notes)


def _fused(
    spec: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int, runs_dir: Path | None
) -> Construction:
    fusion = spec.fusion
    runs = _check_members(spec, runs_dir)
    states = [
        state
        for run, member in zip(fusion.runs, runs)
        for state in _member_states(_run_checkpoint(run, fusion.checkpoint, runs_dir, "fusion.runs"), member,
                                    input_shape, num_classes)
    ]
    notes = {"fused_runs": fusion.runs, "mode": fusion.mode, "members": len(states)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # the only fresh weights: the head of `head` mode
        model = FUSION_MODES.implementation(fusion.mode)(states, spec, input_shape, num_classes, notes)
    return Construction(model, spec, notes)


def _average(states, spec: ExperimentSpec, input_shape, num_classes, notes: dict) -> nn.Module:
    from engine.ensemble import build_ensemble, load_members

    model = build_ensemble(spec.model, input_shape, num_classes, len(states), "sequential")
    load_members(model, states)
    return model


def _head(states, spec: ExperimentSpec, input_shape, num_classes, notes: dict) -> nn.Module:
    from engine.fusion import head_fusion

    return head_fusion(states, spec.model, input_shape, num_classes, spec.fusion.train_trunks)


def _mutant(states, spec: ExperimentSpec, input_shape, num_classes, notes: dict) -> nn.Module:
    from engine.fusion import mutant_state

    wide, state = mutant_state(states, spec.model, input_shape, num_classes)
    model = build_model(wide, input_shape, num_classes)
    model.load_state_dict(state)
    notes["width"] = wide.width
    return model


# Fusion modes: (member states, spec, input shape, classes, notes to add to) -> the fused model.
FUSION_MODES.implement("average", _average)
FUSION_MODES.implement("head", _head)
FUSION_MODES.implement("mutant", _mutant)


def _check_members(spec: ExperimentSpec, runs_dir: Path | None) -> list[ExperimentSpec]:
    """The specs of `fusion.runs`: each a single model, or an ensemble of them, of the fused
    run's family, width and data."""
    specs = []
    for run in spec.fusion.runs:
        member = ExperimentSpec.model_validate(RunFolder(_run_path(run, runs_dir, "fusion.runs")).spec())
        if member.model != spec.model or member.fusion.mode != "none":
            raise SpecError(
                f"fusion.runs: run {run} is a {_describe_model(member.model)} model; every member must be a single "
                f"{_describe_model(spec.model)} model or an ensemble of them"
            )
        if member.data.name != spec.data.name:
            raise SpecError(f"fusion.runs: run {run} trained on {member.data.name}, not {spec.data.name}")
        specs.append(member)
    return specs


def _member_states(
    state: dict[str, torch.Tensor], run: ExperimentSpec, input_shape: tuple[int, int, int], num_classes: int
) -> list[dict[str, torch.Tensor]]:
    """A run's checkpoint as plain member state dicts: itself, or an ensemble's K members
    (whichever implementation saved it: sequential and vmap hold `members.k.*`, grouped
    `*_g{k}` tensors)."""
    if run.ensemble.members == 1 or not any(key.startswith("members.") or split_group(key)[1] is not None for key in state):
        return [state]  # a plain model's state: a single run's, or an EASGD ensemble's center (center_final)
    from engine.ensemble import build_ensemble, member_states

    implementation = "sequential" if any(key.startswith("members.") for key in state) else "grouped"
    with torch.random.fork_rng(devices=[]):  # its init is overwritten: leave the caller's RNG alone
        model = build_ensemble(run.model, input_shape, num_classes, run.ensemble.members, implementation)
    model.load_state_dict(state)
    return member_states(model)


def _describe_model(model: ModelSpec) -> str:
    grouped = f", {model.groups} {model.connectivity} groups" if model.groups > 1 else ""
    return f"{model.name} width {model.width}{grouped}"


def _run_path(run: str, runs_dir: Path | None, key: str) -> Path:
    if runs_dir is None:
        raise SpecError(f"{key}: run {run} cannot be found without a logs directory")
    path = runs_dir / run
    if not (path / "spec.json").exists():
        raise SpecError(f"{key}: no run {run!r} in {runs_dir} (see `workbench runs`)")
    return path


def _run_checkpoint(run: str, checkpoint: str, runs_dir: Path | None, key: str) -> dict[str, torch.Tensor]:
    folder = RunFolder(_run_path(run, runs_dir, key))
    path = folder.checkpoint_path(checkpoint)
    if not path.exists():
        found = sorted(p.stem for p in folder.checkpoints.glob("*.pt") if p.stem != "train_state")
        raise SpecError(f"{key}: run {run} has no checkpoint {checkpoint!r}; it has: {', '.join(found) or 'none'}")
    return folder.load_tensors(path)
