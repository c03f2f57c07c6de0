"""The training loop: a resolved spec -> a run folder full of events, masks and checkpoints.

Read top to bottom: `prepare` does everything that can fail because of the spec (device,
data, model, partition) before a single file is written; `train` runs the steps.

Pairing: weights are initialised on the CPU from `seed`, the data order comes from its
own generator seeded with `seed`, and masks come from `partition.seed` (or from `seed` when
that is "run"). `freeze` enters
none of these, so a frozen run and its baseline start from the same weights, see the
same batches and track the same coordinates.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from engine.construction import check_fits, construct
from engine.data import DeviceData, load_data
from engine.devices import resolve_device
from engine.easgd import ElasticAveraging
from engine.elastic import ElasticPull
from engine.events import EventWriter, run_events
from engine.features import Checkpoints, Evaluation, Freezing, Pruning, Tracking
from engine.freezing import trainable
from engine.loop import BatchOrder, Hook, TrainState, call, run_steps, training_loss  # noqa: F401 (re-exported)
from engine.models import Layer, build_model, model_layers, param_count
from engine.basin import Basin
from engine.init_run import CarriedOptimizer, start_from_run
from engine.phases import Phases
from engine.weight_snapshots import SNAPSHOTS_FILE, WeightSnapshots
from engine.partition_context import PartitionContext
from engine.optimizers import make_optimizer  # noqa: F401 - moved to the optimizer registry; callers import it here
from engine.provenance import code_provenance
from engine.resumed_masks import saved_masks
from engine.pruning import widths
from engine.run_folder import RunFolder, atomic_write_json, failure_reason
from engine.soft_sharing import SoftWeightSharing
from engine.spec import ExperimentSpec, SpecError
from engine.subsets import Masks, partition_masks, subset_sizes
from engine.tracking import MovementTracker


@dataclass
class Prepared:
    spec: ExperimentSpec
    device: torch.device
    data: DeviceData
    model: nn.Module
    layers: list[Layer]
    masks: Masks
    notes: dict = field(default_factory=dict)  # how the model was built, for the start event
    files: dict = field(default_factory=dict)  # more run-folder files from the partition (hessian.pt)


def prepare(spec: ExperimentSpec, runs_dir: Path | None = None, resuming: RunFolder | None = None) -> Prepared:
    """Everything that can fail because of the spec, done before any file is written.

    `runs_dir` is where other runs live (the logs directory): seeded groups and fusions
    read their checkpoints from there. `resuming`: the run's own folder when it resumes: its
    masks.pt is the partition (engine/resumed_masks.py).
    """
    device = resolve_device(spec.device)
    # The spec records the device the run really used ("auto" becomes "cpu" or "cuda:0").
    spec = spec.model_copy(update={"device": str(device)})
    data = load_data(spec.data, device)
    return assemble(spec, data, device, runs_dir, resuming=resuming)


def assemble(
    spec: ExperimentSpec, data: DeviceData, device: torch.device, runs_dir: Path | None, measure: bool = True,
    resuming: RunFolder | None = None,
) -> Prepared:
    """The model and partition of `spec` over `data`, with the checks that need them built.
    `measure` False (preflight): a strategy that measures the model only checks it can."""
    check_fits(spec, data.input_shape, data.num_classes, device)
    built = construct(spec, data.input_shape, data.num_classes, device, runs_dir)
    model, spec = built.model, built.spec
    notes = dict(built.notes)
    if spec.init.run:  # continue another run's weights (a converged model), checked before any folder
        notes.update(start_from_run(model, spec, runs_dir))
    layers = model_layers(model)
    if spec.fusion.prune.every:
        widths(model)  # SpecError unless the model's channels can be pruned (not resnet, not grouped)
    context = PartitionContext(model, data, device, runs_dir, measure)
    masks = saved_masks(resuming, dict(model.named_parameters())) if resuming else None
    if masks is None:
        masks = partition_masks(dict(model.named_parameters()), layers, spec.partition, spec.seed, context)
    if spec.freeze is True and subset_sizes(masks)["subset"] == 0:
        raise SpecError("this partition fixes every parameter, so nothing would train; lower partition.fraction")
    notes = {**notes, **context.notes, "params": param_count(model)}
    return Prepared(spec, device, data, model.to(device), layers, masks, notes, context.files)




def _remeasure(prep: Prepared, model: nn.Module) -> PartitionContext:
    """What a resampled Hessian strategy measures at a phase's start: a plain model of the
    spec (the training model carries the freezing machinery) holding the training model's
    current weights and BatchNorm statistics; no cache (the weights never repeat)."""
    plain = build_model(prep.spec.model, prep.data.input_shape, prep.data.num_classes)
    current = model.state_dict()
    plain.load_state_dict({key: current[key] for key in plain.state_dict()})
    return PartitionContext(plain, prep.data, prep.device, None)


def train(
    prep: Prepared,
    folder: RunFolder,
    *,
    experiment: str,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Run the steps, writing events, checkpoints and the summary into `folder`.

    Returns the summary. `should_stop()` turning true (see engine.stopping) ends the run
    as `cancelled` at the next step boundary; so does a KeyboardInterrupt. Any other
    exception is recorded as `failed` in the events and re-raised for the caller to log.

    `resume`: go on from the folder's training state (saved at cancel and every
    `checkpoint.every` steps), or from step 0 if it has none. Model, optimizer, data
    position, RNGs and the tracker are restored, so the weights end bit-identical to an
    uninterrupted run on the same device. `hooks`: more features, called after the
    built-in ones (engine.loop.Hook).
    """
    spec, model, data = prep.spec, prep.model, prep.data
    saved = load_train_state(folder) if resume else None
    if not resume:
        folder.write_spec(spec.model_dump(mode="json"))
    # The run folder contract promises masks.pt and init.pt. A run killed before it wrote
    # them (while queued, preparing, or mid-write) writes them when resumed: both are
    # functions of the spec, and the prepared model still holds the initial weights here.
    for name, tensors in prep.files.items():  # e.g. hessian.pt: what chose the masks (before masks.pt: resumed_masks.py)
        if not resume or not (folder.path / name).exists():
            if name.endswith(".json"):  # plain data for readers without torch (hessian.json)
                atomic_write_json(folder.path / name, tensors)
            else:
                folder.save_tensors(folder.path / name, tensors)
    if not resume or not folder.masks_path.exists():
        folder.save_tensors(folder.masks_path, prep.masks)
    if not resume or not folder.checkpoint_path("init").exists():
        folder.save_tensors(folder.checkpoint_path("init"), model.state_dict())

    features: list[Hook] = []
    if spec.freeze is True:
        features.append(Freezing(model, prep.layers, prep.masks["fixed"]))
    elif spec.elastic and spec.elastic.rho > 0:  # rho 0 pulls nothing: the plain run, bit for bit
        features.append(ElasticPull(model, prep.masks["fixed"], spec.elastic.rho))
    # A changing partition switches masks right after freezing's copy-back, before anything is saved.
    features += [Phases(prep.layers, prep.masks, folder, partial(_remeasure, prep))] if spec.schedule.every else []
    pruning = Pruning(model, spec.fusion.prune, saved) if spec.fusion.prune.every else None
    features += [pruning] if pruning else []
    # Movement needs fixed tensor shapes; a pruned model's shrink, so pruning runs log widths instead.
    tracker = None if pruning else MovementTracker(dict(model.named_parameters()), prep.layers, prep.masks)
    features += [Tracking(tracker, spec.train.steps, spec.track.every)] if tracker else []
    features += [CarriedOptimizer(folder.path.parent)] if spec.init.run and spec.init.optimizer == "carry" else []
    easgd = sharing = None
    if spec.ensemble.coupling.mode == "easgd":  # couples after the optimizer step (records see coupled weights)
        features.append(easgd := ElasticAveraging(model, spec.ensemble.coupling, spec.model, data, folder))
    if spec.regularizer.name == "soft_weight_sharing":  # after tracking: recorded gradient norms stay the loss's
        features.append(sharing := SoftWeightSharing(model, spec.regularizer, prep.masks, folder))
    extras = tuple(hook.score for hook in (easgd, sharing) if hook)
    if spec.track.snapshots and not pruning:  # weights over time (engine/weight_snapshots.py)
        features.append(
            WeightSnapshots(model, prep.layers, prep.masks, spec.track.snapshots, folder.path / SNAPSHOTS_FILE, prep.device)
        )
    features += [Evaluation(data.test_x, data.test_y, fusion=spec.fusion.mode != "none", extras=extras)]
    features += [Basin(data.train_x, data.train_y, folder)] if spec.init.run else []  # did it leave the converged basin?
    features += [Checkpoints(folder), *hooks]

    events = EventWriter(folder.events_path)

    def emit(event: dict) -> None:
        events.write(event)
        if on_event:
            on_event(event)

    state = TrainState(
        spec=spec,
        device=prep.device,
        model=model,
        # Weights fixed whole (by freezing or by construction) are not handed to the optimizer;
        # with a changing partition they all are (engine/phases.py: one state layout in every phase).
        optimizer=make_optimizer(list(model.parameters()) if spec.schedule.every else trainable(model), spec.optimizer),
        order=BatchOrder(len(data.train_y), spec.data.batch_size, spec.seed, prep.device),
        masks=prep.masks,
        emit=emit,
        tracker=tracker,
        hooks=features,
    )
    if saved is not None:
        state.restore(saved)
    emit(
        {
            "type": "start",
            "step": state.step,
            **({"resumed_from": state.step} if resume else {}),
            "run_id": folder.run_id,
            "experiment": experiment,
            "digest": spec.digest(),
            "device": str(prep.device),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "subset_sizes": subset_sizes(prep.masks),
            "provenance": code_provenance(),  # which engine code, git commit, torch and CUDA made this
            **prep.notes,
            **(pruning.start_notes(model) if pruning else {}),
        }
    )
    state.started = time.monotonic()
    call(state, "on_start", saved is None)
    try:
        run_steps(state, data, on_step, should_stop)
    except Exception as exc:
        error = failure_reason(exc)  # a full disk: "no space left on <file>"
        emit({"type": "end", "step": state.step, "status": "failed", "error": error})
        events.close()
        raise

    # The summary is written last: its presence says the run's files are complete.
    elapsed, step = state.elapsed(), state.step
    summary = {
        "run_id": folder.run_id,
        "experiment": experiment,
        "status": state.status,
        "steps": step,
        "planned_steps": spec.train.steps,
        "digest": spec.digest(),
        "movement": tracker.last_event["subsets"] if tracker else None,
        "final": state.last_eval or {"train_loss": None, "eval_loss": None, "eval_acc": None},
        "wall_seconds": round(elapsed, 3),
        "steps_per_second": round(step / elapsed, 2) if elapsed > 0 else None,
        "params": param_count(state.model),
        **({"phases": run_events(folder.events_path, "phase_movement")} if spec.schedule.every else {}),
        **({"resumed": True} if resume else {}),
    }
    folder.write_summary(summary)
    emit({"type": "end", "step": step, "status": state.status})
    events.close()
    return summary


def load_train_state(folder: RunFolder) -> dict | None:
    """The training state saved in `folder` (None: the run resumes from step 0)."""
    if not folder.train_state_path.exists():
        return None
    state = folder.load_tensors(folder.train_state_path)
    spec = ExperimentSpec.model_validate(folder.spec())
    if state.get("digest") != spec.digest():
        raise SpecError(f"{folder.train_state_path} was saved by a different spec than {folder.spec_path}; cannot resume")
    return state
