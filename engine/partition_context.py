"""What a partition strategy that measures the model gets besides the parameters.

Most strategies need only the parameters' shapes (and a seeded generator). The
Hessian-guided ones differentiate the loss, so they need the built model, the training
data, the run's device and where other runs live (hessian.at reads another run's
checkpoint). They also leave a file for the run folder (hessian.pt) and a note for the
start event. A strategy says it takes this with a `measures_model = True` attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.data import DeviceData


@dataclass
class PartitionContext:
    model: nn.Module  # built, at its initial weights, on the CPU (a resampled phase: the training model)
    data: DeviceData
    device: torch.device  # the run's
    runs_dir: Path | None
    # False in preflight (a command that queues runs for later): check everything the
    # measurement would refuse, compute nothing costly; the worker measures.
    measure: bool = True
    files: dict[str, Any] = field(default_factory=dict)  # run-folder file name -> tensors to save
    notes: dict[str, Any] = field(default_factory=dict)  # for the start event
