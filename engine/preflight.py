"""Every check `prepare` makes, for runs that will train later in another process.

`workbench run --headless` prepares its run before it writes anything, so every spec
error is one sentence and no folder. A background run (submit, study, fuse, resume, the
TUI's launch) prepares in its worker, long after the command returned: without this, a
missing dataset or a member run with no final checkpoint would show up as a `failed`
run minutes later. `preflight` runs the same checks in the submitting command, before
its first folder: the device must exist, the data must load, the model must build and
fit in the device's memory, the partition must leave something to train.

It builds on the CPU and keeps nothing but the loaded data (shared by every spec of one
command, since a study's runs differ in seed and partition, not data): the run's own
worker builds the real thing on the real device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.data import DeviceData, load_data
from engine.devices import resolve_device
from engine.spec import ExperimentSpec
from engine.train import assemble
from engine.construction import check_fits


class Preflight:
    """Checks specs one by one, loading each distinct dataset once."""

    def __init__(self, runs_dir: Path | None) -> None:
        self.runs_dir = runs_dir
        self._data: dict[str, DeviceData] = {}

    def check(self, spec: ExperimentSpec) -> None:
        """Raise SpecError for anything that would make `spec`'s run fail before its first step."""
        device = resolve_device(spec.device)
        cpu = torch.device("cpu")
        data = self._load(spec)
        check_fits(spec, data.input_shape, data.num_classes, device)
        if spec.ensemble.implementation == "auto":  # measured by the worker on its device, not here
            spec = spec.model_copy(update={"ensemble": spec.ensemble.model_copy(update={"implementation": "sequential"})})
        assemble(spec.model_copy(update={"device": "cpu"}), data, cpu, self.runs_dir, measure=False)

    def _load(self, spec: ExperimentSpec) -> DeviceData:
        key = json.dumps(spec.data.model_dump(mode="json"), sort_keys=True)
        if key not in self._data:
            self._data[key] = load_data(spec.data, "cpu")
        return self._data[key]


def preflight(specs: list[ExperimentSpec], runs_dir: Path | None) -> None:
    """Check every spec before any is queued: a command queues all its runs or none."""
    checker = Preflight(runs_dir)
    for spec in specs:
        checker.check(spec)
