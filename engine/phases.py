"""Phases of a changing partition: every `schedule.every` steps the fixed coordinates change.

Phase n trains steps n*k+1 .. (n+1)*k (k = schedule.every). After the optimizer step that
ends a phase, the `Phases` hook records how far the phase moved its coordinates, draws
the next phase's masks (engine/phase_masks.py) and hands them to `state.replace_masks`:
the Freezing hook then fixes the new set at the values it has now, so during a phase every
coordinate fixed in it stays bit-identical, whatever the optimizer.

The optimizer holds every parameter for the whole run (a tensor fixed whole has no
gradient, so torch's optimizers skip it: no momentum, no weight decay), so its state has
one layout in every phase and a resume loads it whatever the phase. Its state follows
`schedule.optimizer_state`:
- keep: a fixed coordinate's momentum buffer / Adam moments are held at their values from
  the moment it was fixed (copied back after each step, like its weight; a tensor fixed
  whole is simply skipped) and it goes on with them when it trains again; a coordinate
  fixed from step 0 starts training with zero state. Adam's step count is per tensor and
  goes on counting.
- reset: the whole optimizer state is dropped at every phase switch (as a fresh optimizer).

Per phase, on disk: `masks/phase_NNN.pt` (its masks), `checkpoints/phase_NNN.pt` (the
weights at its start) and, when a Hessian strategy is resampled, `masks/phase_NNN.hessian.pt`
(what it measured at those weights, as hessian.pt is for phase 0); in events.jsonl: a `phase` event when it starts (step, phase, masks
digest) and a `phase_movement` event when it ends: for each subset *of that phase's masks*
(`subset` = the coordinates it trained), overall and per layer, `dist` = ||w(end) -
w(start)|| over those coordinates and `speed` = dist / the phase's steps. The phase of a
saved training state is its step // k (a switch happens before any save at its step), so
a resume picks the phase's masks and start weights up from the folder.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.loop import Hook, TrainState
from engine.models import Layer
from engine.partition_context import PartitionContext
from engine.phase_masks import masks_digest, phase_masks
from engine.run_folder import RunFolder
from engine.strategies.hessian import HESSIAN_FILE
from engine.subsets import SUBSETS, Masks, measures_model


def phase_masks_path(folder: RunFolder, phase: int):
    return folder.path / "masks" / f"phase_{phase:03d}.pt"


def phase_hessian_path(folder: RunFolder, phase: int):
    return folder.path / "masks" / f"phase_{phase:03d}.hessian.pt"


def phase_start_name(phase: int) -> str:
    """The checkpoint name of the weights a phase started from."""
    return f"phase_{phase:03d}"


class Phases(Hook):
    """Switches the masks at phase boundaries and records each phase's movement."""

    def __init__(self, layers: list[Layer], masks0: Masks, folder: RunFolder,
                 context: Callable[[nn.Module], PartitionContext] | None = None) -> None:
        # context: a PartitionContext over the training model, for a resampled strategy that measures it
        self.layers, self.masks0, self.folder, self.context = layers, masks0, folder, context
        self.digest = ""  # the current phase's masks digest (its phase and phase_movement events)
        self.phase, self.start_step = 0, 0
        self.start_weights: dict[str, torch.Tensor] = {}
        # keep: (state tensor's param, its key, flat indices of fixed coordinates, held values or None = zeros)
        self.held: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]] = []

    # --- the moments of a step -----------------------------------------------------------
    def on_start(self, state: TrainState, fresh: bool) -> None:
        if fresh:
            self._begin(state, 0, state.masks)
            return
        every = state.spec.schedule.every
        phase = min(state.step // every, (state.spec.train.steps - 1) // every)
        path = phase_masks_path(self.folder, phase)
        masks = self.folder.load_tensors(path) if path.exists() else self._masks(state, phase)[0]
        self.phase, self.start_step, self.digest = phase, phase * every, masks_digest(masks)
        start = self.folder.checkpoint_path(phase_start_name(phase))
        saved = self.folder.load_tensors(start if start.exists() else self.folder.checkpoint_path("init"))
        params = dict(state.model.named_parameters())
        self.start_weights = {name: saved[name].to(params[name].device) for name in params}
        state.replace_masks(masks)  # freezing takes the restored weights of the fixed coordinates
        self._hold(state)

    def after_optimizer_step(self, state: TrainState) -> None:
        self._restore_held(state)
        if self._at_boundary(state):
            self._switch(state)

    def on_end(self, state: TrainState) -> None:
        if state.status == "completed":
            self._record_movement(state)
        elif self._at_boundary(state):  # stopped inside a boundary step, before its switch
            self._switch(state)

    # --- phases ----------------------------------------------------------------------------
    def _at_boundary(self, state: TrainState) -> bool:
        every, step = state.spec.schedule.every, state.step
        return step % every == 0 and step < state.spec.train.steps and self.phase < step // every

    def _masks(self, state: TrainState, phase: int) -> tuple[Masks, dict | None]:
        """The phase's masks, and what a resampled Hessian strategy measured to choose them (else None)."""
        params = {name: p.detach() for name, p in state.model.named_parameters()}
        context = None
        if state.spec.schedule.mode == "resample" and measures_model(state.spec.partition.strategy):
            context = self.context(state.model)
        masks = phase_masks(self.masks0, params, self.layers, state.spec, phase, context)
        return masks, context.files.get(HESSIAN_FILE) if context else None

    def _switch(self, state: TrainState) -> None:
        self._record_movement(state)
        masks, measured = self._masks(state, self.phase + 1)
        if state.spec.schedule.optimizer_state == "reset":
            state.optimizer.state.clear()
        state.replace_masks(masks)
        self._begin(state, self.phase + 1, masks, measured)
        self._hold(state)

    def _begin(self, state: TrainState, phase: int, masks: Masks, measured: dict | None = None) -> None:
        self.phase, self.start_step = phase, state.step
        self.folder.save_tensors(phase_masks_path(self.folder, phase), masks)
        if measured is not None:  # (phase 0's measurement is the run's own hessian.pt)
            self.folder.save_tensors(phase_hessian_path(self.folder, phase), measured)
        weights = {name: p.detach().clone() for name, p in state.model.named_parameters()}
        self.folder.save_tensors(self.folder.checkpoint_path(phase_start_name(phase)), weights)
        self.start_weights = weights
        fixed = int(sum(int(m.sum()) for m in masks["fixed"].values()))
        self.digest = masks_digest(masks)
        state.emit({"type": "phase", "step": state.step, "phase": phase, "masks": self.digest, "fixed": fixed})

    @torch.no_grad()
    def _record_movement(self, state: TrainState) -> None:
        """The `phase_movement` event of the current phase, from its start to this step."""
        steps = state.step - self.start_step
        params = dict(state.model.named_parameters())
        squares, sizes = [], []  # [layer][subset]
        for layer in self.layers:
            row = torch.zeros(len(SUBSETS), dtype=torch.float64, device=state.device)
            for name in layer.params:
                moved_sq = (params[name] - self.start_weights[name]).double().square()
                for s, subset in enumerate(SUBSETS):
                    row[s] += moved_sq.mul(state.masks[subset][name].to(moved_sq.device)).sum()
            squares.append(row)
            sizes.append([int(sum(int(state.masks[subset][name].sum()) for name in layer.params)) for subset in SUBSETS])
        per_layer = torch.stack(squares).cpu().tolist()  # one host sync per phase

        def figures(square: float) -> dict:
            dist = square**0.5
            return {"dist": dist, "speed": dist / steps if steps else None}

        subsets = {}
        for s, subset in enumerate(SUBSETS):
            entry = figures(sum(row[s] for row in per_layer))
            entry["size"] = sum(count[s] for count in sizes)
            entry["layers"] = {
                layer.name: figures(per_layer[i][s]) for i, layer in enumerate(self.layers) if sizes[i][s] > 0
            }
            subsets[subset] = entry
        state.emit({"type": "phase_movement", "step": state.step, "phase": self.phase, "start_step": self.start_step,
                    "masks": self.digest, "subsets": subsets})  # fmt: skip

    # --- optimizer state while fixed (schedule.optimizer_state keep) -------------------------
    def _hold(self, state: TrainState) -> None:
        self.held = []
        if state.spec.schedule.optimizer_state != "keep" or not state.spec.freeze:
            return  # (with freeze false the "fixed" coordinates train: their state must go on)
        for name, param in state.model.named_parameters():
            mask = state.masks["fixed"][name]
            if not mask.any() or mask.all():  # wholly trained, or fixed whole (no gradient: skipped)
                continue
            index = mask.flatten().nonzero().flatten().to(param.device)
            current = state.optimizer.state.get(param)
            values = {key: t.view(-1)[index].clone() for key, t in current.items() if _per_coordinate(t, param)} if current else None
            self.held.append((param, index, values))

    @torch.no_grad()
    def _restore_held(self, state: TrainState) -> None:
        for entry_index, (param, index, values) in enumerate(self.held):
            current = state.optimizer.state.get(param)
            if not current:
                continue
            if values is None:  # fixed since before the optimizer had state: it holds zeros
                values = {key: torch.zeros(len(index), dtype=t.dtype, device=t.device)
                          for key, t in current.items() if _per_coordinate(t, param)}  # fmt: skip
                self.held[entry_index] = (param, index, values)
            for key, held in values.items():
                current[key].view(-1).index_copy_(0, index, held)


def _per_coordinate(value: object, param: torch.Tensor) -> bool:
    """An optimizer state entry with one value per coordinate (not Adam's step count)."""
    return isinstance(value, torch.Tensor) and value.shape == param.shape
