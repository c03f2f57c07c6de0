"""The optional parts of a run, each a `Hook` on the step loop (engine.loop).

Registered in this order by engine.train (the order fixes the order of events):
freezing, pruning, tracking, evaluation, checkpoints.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from engine.ensemble import ensemble_logits
from engine.freezing import Freezer
from engine.loop import Hook, TrainState
from engine.models import Layer, param_count
from engine.pruning import prune_step, shrink_to_state, widths
from engine.run_folder import RunFolder
from engine.spec import PruneSpec
from engine.tracking import MovementTracker

FLUSH_SECONDS = 1.0  # how often queued movement records reach events.jsonl (one host sync each)
EVAL_BATCH = 1000  # examples per forward pass when evaluating


class Freezing(Hook):
    """Fixed coordinates keep their values: copied back after every optimizer step."""

    def __init__(self, model: nn.Module, layers: list[Layer], fixed: dict[str, torch.Tensor]) -> None:
        self.layers = layers
        self.freezer = Freezer(model, layers, fixed)

    def after_optimizer_step(self, state: TrainState) -> None:
        self.freezer.restore()

    def on_masks(self, state: TrainState) -> None:
        # Newly fixed coordinates keep the values they have now; newly trainable whole
        # tensors join the optimizer (they were never handed to it).
        self.freezer.release()
        self.freezer = Freezer(state.model, self.layers, state.masks["fixed"])
        known = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
        joining = [p for p in self.freezer.trainable() if id(p) not in known]
        if joining:
            state.optimizer.add_param_group({"params": joining})

    def on_end(self, state: TrainState) -> None:
        if state.status == "cancelled":  # interrupted inside a step: it may be half done
            self.freezer.restore()


class Pruning(Hook):
    """Every `settings.every` steps, remove channels and hand the optimizer the narrower model."""

    def __init__(self, model: nn.Module, settings: PruneSpec, saved: dict | None) -> None:
        self.settings = settings
        self.initial_widths = widths(model)  # the widths pruning's floor is relative to
        if saved is not None:
            shrink_to_state(model, saved["model"])  # a pruned checkpoint has fewer channels than the model as built

    def start_notes(self, model: nn.Module) -> dict:
        """What pruning starts from (after a resume: the pruned model), charted over time."""
        return {"params": param_count(model), "widths": widths(model)}

    def after_optimizer_step(self, state: TrainState) -> None:
        if state.step % self.settings.every == 0:
            state.optimizer, report = prune_step(state.model, state.optimizer, self.settings, self.initial_widths)
            state.emit({"type": "prune", "step": state.step, **report})


class Tracking(Hook):
    """Movement records: queued on the device at record steps, written at most every FLUSH_SECONDS."""

    def __init__(self, tracker: MovementTracker, steps: int, every: int) -> None:
        self.tracker, self.steps, self.every = tracker, steps, every
        self.last_flush = time.monotonic()

    def flush(self, state: TrainState) -> None:
        for event in self.tracker.flush():
            state.emit(event)

    def on_start(self, state: TrainState, fresh: bool) -> None:
        if fresh:
            self.tracker.measure(0)
        self.last_flush = time.monotonic()

    def after_backward(self, state: TrainState) -> None:
        step = state.step
        if (self.every and step % self.every == 0) or step == self.steps:
            self.tracker.measure_grad(step)  # this step will be recorded: its gradient, before the update

    def on_record(self, state: TrainState) -> None:
        self.tracker.measure(state.step)

    def on_eval(self, state: TrainState) -> None:
        self.flush(state)  # records before the eval event, in step order

    def on_checkpoint(self, state: TrainState) -> None:
        self.flush(state)  # the saved tracker state must hold no queued records

    def after_step(self, state: TrainState) -> None:
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush(state)
            self.last_flush = time.monotonic()

    def on_end(self, state: TrainState) -> None:
        # One last record of everything (a cancelled run's last step was not a record step).
        if self.tracker.previous_step != state.step:
            self.tracker.measure(state.step)
        self.flush(state)


class Evaluation(Hook):
    """Held-out loss and accuracy every `eval_every` steps and at the end of a completed run."""

    def __init__(self, test_x: torch.Tensor, test_y: torch.Tensor, fusion: bool, extras: tuple = ()) -> None:
        self.test_x, self.test_y, self.fusion = test_x, test_y, fusion
        self.extras = extras  # more scores in the same event, each a callable -> dict (an EASGD center's)

    def run(self, state: TrainState) -> None:
        state.last_eval = {"train_loss": state.take_train_loss(), **evaluate(state.model, self.test_x, self.test_y)}
        for score in self.extras:
            state.last_eval.update(score())
        state.emit({"type": "eval", "step": state.step, **state.last_eval})

    def on_start(self, state: TrainState, fresh: bool) -> None:
        if fresh and self.fusion:
            self.run(state)  # a fusion starts from trained members: its step-0 score is the ensemble's

    def on_eval(self, state: TrainState) -> None:
        self.run(state)

    def on_end(self, state: TrainState) -> None:
        if state.status == "completed" and (state.step != 0 or not state.last_eval):  # a 0-step run was scored at step 0 already
            self.run(state)


class Checkpoints(Hook):
    """Weights every `checkpoint.every` steps plus the resumable state; `final.pt` at the end."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def save(self, state: TrainState) -> None:
        """The checkpoint of the weights at this step, plus everything a resume needs."""
        name = f"step_{state.step:06d}"
        self.folder.save_tensors(self.folder.checkpoint_path(name), state.model.state_dict())
        state.emit({"type": "checkpoint", "step": state.step, "path": f"checkpoints/{name}.pt"})
        self.folder.save_tensors(self.folder.train_state_path, state.snapshot())

    def on_checkpoint(self, state: TrainState) -> None:
        self.save(state)

    def on_end(self, state: TrainState) -> None:
        if state.status == "completed":
            self.folder.save_tensors(self.folder.checkpoint_path("final"), state.model.state_dict())
            # the optimizer state at the end too: a run continuing this one may carry it (engine/init_run.py)
            self.folder.save_tensors(self.folder.train_state_path, state.snapshot())
        else:
            self.save(state)  # a cancelled run resumes from here


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
