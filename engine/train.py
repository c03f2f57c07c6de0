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
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.construction import check_fits, construct
from engine.data import DeviceData, load_data
from engine.devices import resolve_device
from engine.ensemble import ensemble_logits, ensemble_loss
from engine.events import EventWriter
from engine.freezing import Freezer
from engine.models import Layer, model_layers, param_count
from engine.optimizers import make_optimizer  # noqa: F401 - moved to the optimizer registry; callers import it here
from engine.provenance import code_provenance
from engine.pruning import prune_step, shrink_to_state, widths
from engine.run_folder import RunFolder, failure_reason
from engine.spec import ExperimentSpec, SpecError
from engine.subsets import Masks, partition_masks, subset_sizes
from engine.tracking import MovementTracker


FLUSH_SECONDS = 1.0  # how often queued movement records reach events.jsonl (one host sync each)
EVAL_BATCH = 1000  # examples per forward pass when evaluating


@dataclass
class Prepared:
    spec: ExperimentSpec
    device: torch.device
    data: DeviceData
    model: nn.Module
    layers: list[Layer]
    masks: Masks
    notes: dict = field(default_factory=dict)  # how the model was built, for the start event


def prepare(spec: ExperimentSpec, runs_dir: Path | None = None) -> Prepared:
    """Everything that can fail because of the spec, done before any file is written.

    `runs_dir` is where other runs live (the logs directory): seeded groups and fusions
    read their checkpoints from there.
    """
    device = resolve_device(spec.device)
    # The spec records the device the run really used ("auto" becomes "cpu" or "cuda:0").
    spec = spec.model_copy(update={"device": str(device)})
    data = load_data(spec.data, device)
    return assemble(spec, data, device, runs_dir)


def assemble(spec: ExperimentSpec, data: DeviceData, device: torch.device, runs_dir: Path | None) -> Prepared:
    """The model and partition of `spec` over `data`, with the checks that need them built."""
    check_fits(spec, data.input_shape, data.num_classes, device)
    built = construct(spec, data.input_shape, data.num_classes, device, runs_dir)
    model, spec = built.model, built.spec
    layers = model_layers(model)
    masks = partition_masks(dict(model.named_parameters()), layers, spec.partition, spec.seed)
    if spec.freeze and subset_sizes(masks)["subset"] == 0:
        raise SpecError("this partition fixes every parameter, so nothing would train; lower partition.fraction")
    notes = {**built.notes, "params": param_count(model)}
    return Prepared(spec, device, data, model.to(device), layers, masks, notes)


def training_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; an ensemble's logits [batch, member, class] give each member its own loss."""
    if logits.dim() == 3:
        return ensemble_loss(logits, labels)
    return F.cross_entropy(logits, labels)


class BatchOrder:
    """Seeded shuffling of example indices, one permutation per epoch (incomplete batches dropped).

    The permutation is drawn on the CPU (the same order on every device) and copied to the
    device once per epoch, not once per step.
    """

    def __init__(self, size: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.batch_size = min(batch_size, size)
        self.batches_per_epoch = size // self.batch_size
        self.size, self.device = size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.position = self.batches_per_epoch  # start with a fresh permutation
        self.permutation = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if self.position == self.batches_per_epoch:
            self.permutation = torch.randperm(self.size, generator=self.generator).to(self.device)
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self.permutation[start : start + self.batch_size]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "permutation": self.permutation.cpu(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.permutation = state["permutation"].to(self.device)
        self.position = state["position"]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Mean loss and accuracy on a held-out split (BatchNorm in eval mode).

    An ensemble is scored on its members' averaged logits, and each member on its own
    (`member_acc`), so the gain of ensembling is visible in one event.
    """
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    member_correct = None
    for start in range(0, len(x), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        labels = y[start : start + EVAL_BATCH]
        if logits.dim() == 3:
            hits = (logits.argmax(2) == labels.unsqueeze(1)).sum(0)
            member_correct = hits if member_correct is None else member_correct + hits
            logits = ensemble_logits(logits)
        loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train()
    result = {"eval_loss": loss.item() / len(x), "eval_acc": correct.item() / len(x)}
    if member_correct is not None:
        result["member_acc"] = [round(c / len(x), 6) for c in member_correct.tolist()]
    return result


def train(
    prep: Prepared,
    folder: RunFolder,
    *,
    experiment: str,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> dict:
    """Run the steps, writing events, checkpoints and the summary into `folder`.

    Returns the summary. `should_stop()` turning true (see engine.stopping) ends the run
    as `cancelled` at the next step boundary; so does a KeyboardInterrupt. Any other
    exception is recorded as `failed` in the events and re-raised for the caller to log.

    `resume`: go on from the folder's training state (saved at cancel and every
    `checkpoint.every` steps), or from step 0 if it has none. Model, optimizer, data
    position, RNGs and the tracker are restored, so the weights end bit-identical to an
    uninterrupted run on the same device.
    """
    spec, model, data = prep.spec, prep.model, prep.data
    state = load_train_state(folder) if resume else None
    if not resume:
        folder.write_spec(spec.model_dump(mode="json"))
    # The run folder contract promises masks.pt and init.pt. A run killed before it wrote
    # them (while queued, preparing, or mid-write) writes them when resumed: both are
    # functions of the spec, and the prepared model still holds the initial weights here.
    if not resume or not folder.masks_path.exists():
        folder.save_tensors(folder.masks_path, prep.masks)
    if not resume or not folder.checkpoint_path("init").exists():
        folder.save_tensors(folder.checkpoint_path("init"), model.state_dict())

    freezer = Freezer(model, prep.layers, prep.masks["fixed"]) if spec.freeze else None
    pruning = spec.fusion.prune if spec.fusion.prune.every else None
    initial_widths = widths(model) if pruning else None  # the widths pruning's floor is relative to
    if pruning and state is not None:
        # A pruned checkpoint has fewer channels than the model as built: shrink to fit.
        shrink_to_state(model, state["model"])
    # Weights fixed by construction (a fused run's frozen trunks) are not handed to the optimizer.
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], spec.optimizer)
    # Movement needs fixed tensor shapes; a pruned model's shrink, so pruning runs log widths instead.
    tracker = None if pruning else MovementTracker(dict(model.named_parameters()), prep.layers, prep.masks)
    order = BatchOrder(len(data.train_y), spec.data.batch_size, spec.seed, prep.device)
    events = EventWriter(folder.events_path)

    def emit(event: dict) -> None:
        events.write(event)
        if on_event:
            on_event(event)

    def flush_movement() -> None:
        for event in tracker.flush() if tracker else ():
            emit(event)

    first_step = 0
    loss_sum, loss_count = torch.zeros((), device=prep.device), 0  # summed on the device: no sync per step
    last_eval: dict = {}
    elapsed_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order.load_state_dict(state["order"])
        if tracker:
            tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["rng"]["cpu"])
        if prep.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], prep.device)
        first_step, loss_count = state["step"], state["loss_count"]
        loss_sum = state["loss_sum"].to(prep.device)
        last_eval, elapsed_before = state["last_eval"], state["elapsed"]

    emit(
        {
            "type": "start",
            "step": first_step,
            **({"resumed_from": first_step} if resume else {}),
            "run_id": folder.run_id,
            "experiment": experiment,
            "digest": spec.digest(),
            "device": str(prep.device),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "subset_sizes": subset_sizes(prep.masks),
            "provenance": code_provenance(),  # which engine code, git commit, torch and CUDA made this
            **prep.notes,
            # what pruning starts from (after a resume: the pruned model), charted over time
            **({"params": param_count(model), "widths": widths(model)} if pruning else {}),
        }
    )
    if state is None and tracker:
        tracker.measure(0)
    every, eval_every, ckpt_every = spec.track.every, spec.train.eval_every, spec.checkpoint.every
    step, status, error = first_step, "completed", None
    started = last_flush = time.monotonic()
    model.train()

    def save_state(step: int) -> None:
        """The checkpoint of the weights at `step`, plus everything a resume needs."""
        flush_movement()
        _save_checkpoint(folder, model, step, emit)
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(prep.device) if prep.device.type == "cuda" else None}
        folder.save_tensors(
            folder.train_state_path,
            {
                "step": step,
                "digest": spec.digest(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "order": order.state_dict(),
                "tracker": tracker.state_dict() if tracker else None,
                "rng": rng,
                "loss_sum": loss_sum.cpu(),
                "loss_count": loss_count,
                "last_eval": last_eval,
                "elapsed": elapsed_before + time.monotonic() - started,
            },
        )

    def run_eval() -> None:
        nonlocal loss_sum, loss_count, last_eval
        train_loss = loss_sum.item() / loss_count if loss_count else None
        last_eval = {"train_loss": train_loss, **evaluate(model, data.test_x, data.test_y)}
        emit({"type": "eval", "step": step, **last_eval})
        loss_sum, loss_count = torch.zeros((), device=prep.device), 0

    if state is None and spec.fusion.mode != "none":
        run_eval()  # a fusion starts from trained members: its step-0 score is the ensemble's
    try:
        for step in range(first_step + 1, spec.train.steps + 1):
            index = order.next()
            loss = training_loss(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tracker and ((every and step % every == 0) or step == spec.train.steps):
                tracker.measure_grad(step)  # this step will be recorded: its gradient, before the update
            optimizer.step()
            if freezer:
                freezer.restore()
            loss_sum += loss.detach()
            loss_count += 1

            if pruning and step % pruning.every == 0:
                optimizer, report = prune_step(model, optimizer, pruning, initial_widths)
                emit({"type": "prune", "step": step, **report})
            if tracker and every and step % every == 0:
                tracker.measure(step)
            if eval_every and step % eval_every == 0 and step != spec.train.steps:
                flush_movement()
                run_eval()
            if ckpt_every and step % ckpt_every == 0 and step != spec.train.steps:
                save_state(step)
            if time.monotonic() - last_flush > FLUSH_SECONDS:
                flush_movement()
                last_flush = time.monotonic()
            if on_step:
                on_step(step)
            if should_stop and should_stop():
                status = "cancelled"
                break
    except KeyboardInterrupt:
        # Interrupted inside a step: put fixed coordinates back, the step may be half done.
        status = "cancelled"
        if freezer:
            freezer.restore()
    except Exception as exc:
        status, error = "failed", failure_reason(exc)  # a full disk: "no space left on <file>"
        emit({"type": "end", "step": step, "status": status, "error": error})
        events.close()
        raise

    # The end of the run: one last record of everything, then the summary, written last.
    if tracker and tracker.previous_step != step:
        tracker.measure(step)
    flush_movement()
    if status == "completed":
        if step != 0 or not last_eval:  # a 0-step run was scored at step 0 already
            run_eval()
        folder.save_tensors(folder.checkpoint_path("final"), model.state_dict())
    else:
        save_state(step)
    elapsed = elapsed_before + time.monotonic() - started
    movement = tracker.last_event["subsets"] if tracker else None
    summary = {
        "run_id": folder.run_id,
        "experiment": experiment,
        "status": status,
        "steps": step,
        "planned_steps": spec.train.steps,
        "digest": spec.digest(),
        "movement": movement,
        "final": last_eval or {"train_loss": None, "eval_loss": None, "eval_acc": None},
        "wall_seconds": round(elapsed, 3),
        "steps_per_second": round(step / elapsed, 2) if elapsed > 0 else None,
        "params": param_count(model),
        **({"resumed": True} if resume else {}),
    }
    folder.write_summary(summary)
    emit({"type": "end", "step": step, "status": status})
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


def _save_checkpoint(folder: RunFolder, model: nn.Module, step: int, emit: Callable[[dict], None]) -> None:
    name = f"step_{step:06d}"
    folder.save_tensors(folder.checkpoint_path(name), model.state_dict())
    emit({"type": "checkpoint", "step": step, "path": f"checkpoints/{name}.pt"})
