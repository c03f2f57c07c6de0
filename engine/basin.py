"""Did a run that continued a converged model leave its basin? (runs with spec.init.run)

Two records, both on the whole training split in eval mode (one forward pass, no
minibatch noise, so the start is comparable with every later point):
- `basin` events: step, train_loss at step 0, every `train.eval_every` steps and at the
  end: the curve an escape is read from (the loss rose above the start, then fell below it).
- one `interpolation` event at the end of a completed run: the training loss along the
  straight line w(a) = (1 - a) w_start + a w_end between the converged weights it started
  from and its final weights, at INTERPOLATION_POINTS evenly spaced a in [0, 1] (BatchNorm
  running statistics interpolated too): a bump between the ends is a barrier crossed.
"""

from __future__ import annotations

import torch

from engine.features import evaluate
from engine.loop import Hook, TrainState
from engine.run_folder import RunFolder

INTERPOLATION_POINTS = 21


class Basin(Hook):
    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, folder: RunFolder) -> None:
        self.x, self.y, self.folder = train_x, train_y, folder

    def record(self, state: TrainState) -> None:
        state.emit({"type": "basin", "step": state.step, "train_loss": evaluate(state.model, self.x, self.y)["eval_loss"]})

    def on_start(self, state: TrainState, fresh: bool) -> None:
        if fresh:
            self.record(state)

    def on_eval(self, state: TrainState) -> None:
        self.record(state)

    def on_end(self, state: TrainState) -> None:
        if state.status != "completed":
            return
        self.record(state)
        start = self.folder.load_tensors(self.folder.checkpoint_path("init"))  # the converged weights it began from
        end = {name: value.detach().clone() for name, value in state.model.state_dict().items()}
        alphas = [i / (INTERPOLATION_POINTS - 1) for i in range(INTERPOLATION_POINTS)]
        losses = []
        with torch.no_grad():
            live = state.model.state_dict()
            for alpha in alphas:
                for name, value in live.items():
                    if value.is_floating_point():
                        value.copy_(torch.lerp(start[name].to(value.device), end[name], alpha))
                losses.append(evaluate(state.model, self.x, self.y)["eval_loss"])
            state.model.load_state_dict(end)  # back to the final weights, bit for bit
        state.emit({"type": "interpolation", "step": state.step, "alpha": alphas, "train_loss": losses})
