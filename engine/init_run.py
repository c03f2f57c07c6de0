"""Starting from another run's weights (spec.init): continue a converged model, e.g. with
part of it frozen, to see whether a smaller trainable set escapes its minimum.

`start_from_run` (called while the model is built, so `prepare` and engine/preflight.py
refuse a bad `init` before any folder exists) copies the checkpoint into the model; it
requires the same model spec and dataset, and names the difference otherwise. The
partition's masks, the data order and everything else still come from the new run's own
spec and seed; movement is measured from the loaded weights (`dist` = distance from the
converged model).

`init.optimizer`:
- fresh: a new optimizer state (the default: the lr, and even the optimizer, may differ);
- carry: the source run's optimizer state at that checkpoint (its train_state.pt, which a
  completed run saves at its last step), mapped parameter by parameter by name. The source's
  optimizer must have held every parameter (a run with nothing frozen whole: freeze false,
  or a changing partition), so that its state is known for each of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from engine.construction import _describe_model, _run_checkpoint, _run_path
from engine.loop import Hook, TrainState
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec, SpecError

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # a folder name under the logs dir, never a path


def source_spec(spec: ExperimentSpec, runs_dir: Path | None) -> ExperimentSpec:
    """The spec of `init.run`, after checking that its model can start this one."""
    run = spec.init.run
    if not _RUN_ID.match(run or ""):
        raise SpecError(f"init.run {run!r}: must be a run id (letters and digits, see `workbench runs`)")
    source = ExperimentSpec.model_validate(RunFolder(_run_path(run, runs_dir, "init.run")).spec())
    if source.model != spec.model:
        raise SpecError(
            f"init.run: run {run} is a {_describe_model(source.model)} model but this spec asks for "
            f"{_describe_model(spec.model)}; init needs the same model spec"
        )
    if source.data.name != spec.data.name:
        raise SpecError(f"init.run: run {run} trained on {source.data.name}, not {spec.data.name}; init needs the same data")
    if source.ensemble.members != 1 or source.fusion.mode != "none":
        raise SpecError(f"init.run: run {run} is an ensemble or a fusion; init starts from a single model's run")
    if spec.init.optimizer == "carry" and source.freeze is True and not source.schedule.every and source.partition.strategy != "none":
        raise SpecError(
            f"init.optimizer 'carry': run {run} froze part of its model, so its optimizer state does not cover every "
            "parameter; use init.optimizer 'fresh' or a source run with freeze false"
        )
    return source


def start_from_run(model: nn.Module, spec: ExperimentSpec, runs_dir: Path | None) -> dict:
    """Load `init.run`'s checkpoint into `model` (on the CPU); returns notes for the start event."""
    source_spec(spec, runs_dir)
    state = _run_checkpoint(spec.init.run, spec.init.checkpoint, runs_dir, "init.run")
    if spec.init.optimizer == "carry":
        _carried_state(spec, runs_dir, state)  # refused now, not at the first step
    with torch.no_grad():
        model.load_state_dict(state)
    return {"init_run": spec.init.run, "init_checkpoint": spec.init.checkpoint}


def _carried_state(spec: ExperimentSpec, runs_dir: Path | None, weights: dict[str, torch.Tensor]) -> dict:
    """The source's saved training state, if it was saved at the checkpoint's weights."""
    folder = RunFolder(_run_path(spec.init.run, runs_dir, "init.run"))
    saved = folder.load_tensors(folder.train_state_path) if folder.train_state_path.exists() else None
    same = saved is not None and all(torch.equal(saved["model"][k], v) for k, v in weights.items() if k in saved["model"])
    if not same:
        raise SpecError(
            f"init.optimizer 'carry': run {spec.init.run} has no optimizer state saved at checkpoint "
            f"{spec.init.checkpoint!r} (only runs that completed with this engine save it at their end); "
            "use init.optimizer 'fresh'"
        )
    return saved


class CarriedOptimizer(Hook):
    """init.optimizer carry: a fresh run's optimizer starts with the source run's state."""

    def __init__(self, runs_dir: Path | None) -> None:
        self.runs_dir = runs_dir

    def on_start(self, state: TrainState, fresh: bool) -> None:
        if not fresh:
            return  # a resume restores this run's own optimizer state
        spec = state.spec
        weights = {k: v.cpu() for k, v in state.model.state_dict().items()}
        saved = _carried_state(spec, self.runs_dir, weights)["optimizer"]["state"]
        # The source's optimizer held every parameter in model order: index i is the i-th named parameter.
        by_name = {name: saved[i] for i, (name, _) in enumerate(state.model.named_parameters()) if i in saved}
        held = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
        for name, param in state.model.named_parameters():
            if id(param) in held and name in by_name:
                state.optimizer.state[param] = {
                    key: value.to(param.device) if isinstance(value, torch.Tensor) and value.dim() else value
                    for key, value in by_name[name].items()
                }
