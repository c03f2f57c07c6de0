"""The step loop: one `TrainState`, a short loop, and the hooks that features register.

The loop only does what every run does (draw a batch, forward, backward, optimizer step,
sum the loss); everything optional (movement tracking, evaluation, checkpoints, pruning,
freezing) is a `Hook` in engine.features, called at fixed moments of a step:

    before_step -> forward/backward -> after_backward -> optimizer.step
    -> after_optimizer_step -> [on_record] -> [on_eval] -> [on_checkpoint] -> after_step

and `on_start` / `on_end` around the steps. Hooks run in the order they were registered:
that order is part of the events contract (tracking flushes its queued records before an
eval or checkpoint event is written). A hook may replace `state.optimizer` or call
`state.replace_masks` mid-run; every hook then hears `on_masks`.

Everything a resume needs lives in `TrainState` and is saved and restored by its
`snapshot` / `restore`, nowhere else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import DeviceData
from engine.ensemble import ensemble_loss
from engine.spec import ExperimentSpec
from engine.subsets import Masks
from engine.tracking import MovementTracker


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


@dataclass(eq=False)
class TrainState:
    """Everything that changes while a run trains; `snapshot()` is the resumable state."""

    spec: ExperimentSpec
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    order: BatchOrder
    masks: Masks
    emit: Callable[[dict], None]  # writes one event (events.jsonl and the caller's on_event)
    tracker: MovementTracker | None = None
    step: int = 0
    loss_sum: torch.Tensor | None = None  # summed on the device since the last eval: no sync per step
    loss_count: int = 0
    last_eval: dict = field(default_factory=dict)
    elapsed_before: float = 0.0  # seconds trained before this process (a resume)
    started: float = field(default_factory=time.monotonic)
    status: str = "completed"  # or "cancelled"
    hooks: list["Hook"] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), device=self.device)

    def take_train_loss(self) -> float | None:
        """The mean training loss since the last call (one host sync), and start a new sum."""
        mean = self.loss_sum.item() / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        return mean

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def replace_masks(self, masks: Masks) -> None:
        """Change which coordinates are fixed from now on (the seam for changing subsets)."""
        self.masks = masks
        for hook in self.hooks:
            hook.on_masks(self)

    def snapshot(self) -> dict:
        """The training state a resume needs (the tracker must be flushed first)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {
            "step": self.step,
            "digest": self.spec.digest(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "order": self.order.state_dict(),
            "tracker": self.tracker.state_dict() if self.tracker else None,
            "rng": {"cpu": torch.get_rng_state(), "cuda": cuda},
            "loss_sum": self.loss_sum.cpu(),
            "loss_count": self.loss_count,
            "last_eval": self.last_eval,
            "elapsed": self.elapsed(),
            # hooks that carry state of their own (an EASGD center), by class name
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks if hasattr(h, "state_dict")},
        }

    def restore(self, saved: dict) -> None:
        """Go on from a `snapshot()` (the model already has the saved shapes)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.order.load_state_dict(saved["order"])
        if self.tracker:
            self.tracker.load_state_dict(saved["tracker"])
        torch.set_rng_state(saved["rng"]["cpu"])
        if self.device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], self.device)
        self.step, self.loss_count = saved["step"], saved["loss_count"]
        self.loss_sum = saved["loss_sum"].to(self.device)
        self.last_eval, self.elapsed_before = saved["last_eval"], saved["elapsed"]
        for hook in self.hooks:
            if hasattr(hook, "load_state_dict") and type(hook).__name__ in saved.get("hooks", {}):
                hook.load_state_dict(saved["hooks"][type(hook).__name__])


class Hook:
    """A feature's part in the loop; every moment is a no-op unless the feature overrides it."""

    def on_start(self, state: TrainState, fresh: bool) -> None: ...
    def before_step(self, state: TrainState) -> None: ...
    def after_backward(self, state: TrainState) -> None: ...
    def after_optimizer_step(self, state: TrainState) -> None: ...
    def on_record(self, state: TrainState) -> None: ...
    def on_eval(self, state: TrainState) -> None: ...
    def on_checkpoint(self, state: TrainState) -> None: ...
    def after_step(self, state: TrainState) -> None: ...
    def on_masks(self, state: TrainState) -> None: ...
    def on_end(self, state: TrainState) -> None: ...


def call(state: TrainState, moment: str, *args) -> None:
    for hook in state.hooks:
        getattr(hook, moment)(state, *args)


def run_steps(
    state: TrainState,
    data: DeviceData,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Train from `state.step` to the spec's last step, or until stopped (then status is
    `cancelled`). Exceptions other than KeyboardInterrupt propagate to the caller."""
    spec = state.spec
    last, record_every, eval_every, ckpt_every = spec.train.steps, spec.track.every, spec.train.eval_every, spec.checkpoint.every
    state.model.train()
    try:
        for step in range(state.step + 1, last + 1):
            state.step = step
            call(state, "before_step")
            index = state.order.next()
            loss = training_loss(state.model(data.train_x[index]), data.train_y[index])
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            call(state, "after_backward")
            state.optimizer.step()
            call(state, "after_optimizer_step")
            state.loss_sum += loss.detach()
            state.loss_count += 1
            if record_every and step % record_every == 0:
                call(state, "on_record")
            # The last step's eval and checkpoint are the run's end (on_end), not periodic ones.
            if eval_every and step % eval_every == 0 and step != last:
                call(state, "on_eval")
            if ckpt_every and step % ckpt_every == 0 and step != last:
                call(state, "on_checkpoint")
            call(state, "after_step")
            if on_step:
                on_step(step)
            if should_stop and should_stop():
                state.status = "cancelled"
                break
    except KeyboardInterrupt:
        state.status = "cancelled"  # inside a step: the features put it right in on_end
    call(state, "on_end")
