"""The training loop: a resolved spec -> a run folder full of events, masks and checkpoints.

Read top to bottom: `prepare` does everything that can fail because of the spec (device,
data, model, partition) before a single file is written; `train` runs the steps.

Pairing: weights are initialised on the CPU from `seed`, the data order comes from its
own generator seeded with `seed`, and masks come from `partition.seed`. `freeze` enters
none of these, so a frozen run and its baseline start from the same weights, see the
same batches and track the same coordinates.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import DeviceData, load_data
from engine.devices import resolve_device
from engine.events import EventWriter
from engine.freezing import Freezer
from engine.models import Layer, build_model, model_layers
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec, OptimizerSpec, SpecError
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


def prepare(spec: ExperimentSpec) -> Prepared:
    """Everything that can fail because of the spec, done before any file is written."""
    device = resolve_device(spec.device)
    data = load_data(spec.data, device)
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(spec.seed)
        model = build_model(spec.model, data.input_shape, data.num_classes)
    layers = model_layers(model)
    masks = partition_masks(dict(model.named_parameters()), layers, spec.partition)
    if spec.freeze and subset_sizes(masks)["subset"] == 0:
        raise SpecError("this partition fixes every parameter, so nothing would train; lower partition.fraction")
    return Prepared(spec, device, data, model.to(device), layers, masks)


def make_optimizer(params: list[torch.Tensor], spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
        )
    if spec.name == "adam":  # coupled: weight decay is added to the gradient
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)  # decoupled


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


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy on a held-out split (BatchNorm in eval mode)."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for start in range(0, len(x), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        labels = y[start : start + EVAL_BATCH]
        loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train()
    return loss.item() / len(x), correct.item() / len(x)


def train(
    prep: Prepared,
    folder: RunFolder,
    *,
    experiment: str,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Run the steps, writing events, checkpoints and the summary into `folder`.

    Returns the summary. `should_stop()` turning true (see engine.stopping) ends the run
    as `cancelled` at the next step boundary; so does a KeyboardInterrupt. Any other
    exception is recorded as `failed` in the events and re-raised for the caller to log.
    """
    spec, model, data = prep.spec, prep.model, prep.data
    folder.write_spec(spec.model_dump(mode="json"))
    folder.save_tensors(folder.masks_path, prep.masks)
    folder.save_tensors(folder.checkpoint_path("init"), model.state_dict())

    freezer = Freezer(model, prep.layers, prep.masks["fixed"]) if spec.freeze else None
    optimizer = make_optimizer(freezer.trainable() if freezer else list(model.parameters()), spec.optimizer)
    tracker = MovementTracker(dict(model.named_parameters()), prep.layers, prep.masks)
    order = BatchOrder(len(data.train_y), spec.data.batch_size, spec.seed, prep.device)
    events = EventWriter(folder.events_path)

    def emit(event: dict) -> None:
        events.write(event)
        if on_event:
            on_event(event)

    def flush_movement() -> None:
        for event in tracker.flush():
            emit(event)

    emit(
        {
            "type": "start",
            "step": 0,
            "run_id": folder.run_id,
            "experiment": experiment,
            "digest": spec.digest(),
            "device": str(prep.device),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "subset_sizes": subset_sizes(prep.masks),
        }
    )
    tracker.measure(0)
    every, eval_every, ckpt_every = spec.track.every, spec.train.eval_every, spec.checkpoint.every
    loss_sum, loss_count = torch.zeros((), device=prep.device), 0  # summed on the device: no sync per step
    last_eval: dict = {}
    step, status, error = 0, "completed", None
    started = last_flush = time.monotonic()
    model.train()

    def run_eval() -> None:
        nonlocal loss_sum, loss_count, last_eval
        eval_loss, eval_acc = evaluate(model, data.test_x, data.test_y)
        train_loss = loss_sum.item() / loss_count if loss_count else None
        last_eval = {"train_loss": train_loss, "eval_loss": eval_loss, "eval_acc": eval_acc}
        emit({"type": "eval", "step": step, **last_eval})
        loss_sum, loss_count = torch.zeros((), device=prep.device), 0

    try:
        for step in range(1, spec.train.steps + 1):
            index = order.next()
            loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if freezer:
                freezer.restore()
            loss_sum += loss.detach()
            loss_count += 1

            if every and step % every == 0:
                tracker.measure(step)
            if eval_every and step % eval_every == 0 and step != spec.train.steps:
                flush_movement()
                run_eval()
            if ckpt_every and step % ckpt_every == 0 and step != spec.train.steps:
                _save_checkpoint(folder, model, step, emit)
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
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        emit({"type": "end", "step": step, "status": status, "error": error})
        events.close()
        raise

    # The end of the run: one last record of everything, then the summary, written last.
    if tracker.previous_step != step:
        tracker.measure(step)
    flush_movement()
    if status == "completed":
        run_eval()
        folder.save_tensors(folder.checkpoint_path("final"), model.state_dict())
    else:
        _save_checkpoint(folder, model, step, emit)
    elapsed = time.monotonic() - started
    movement = tracker.last_event["subsets"]
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
    }
    folder.write_summary(summary)
    emit({"type": "end", "step": step, "status": status})
    events.close()
    return summary


def _save_checkpoint(folder: RunFolder, model: nn.Module, step: int, emit: Callable[[dict], None]) -> None:
    name = f"step_{step:06d}"
    folder.save_tensors(folder.checkpoint_path(name), model.state_dict())
    emit({"type": "checkpoint", "step": step, "path": f"checkpoints/{name}.pt"})
