"""Turning a device name from a spec (`cpu`, `cuda`, `cuda:N`, `mps`, `auto`) into a torch device.

Asking for a device this machine does not have is a user error, told in one sentence
before anything is written, never a CUDA traceback from deep inside training.
"""

from __future__ import annotations

import torch

from engine.spec import SpecError


def available_devices() -> list[str]:
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    allowed = ", ".join(available_devices())
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise SpecError(f"device 'mps' is not available on this machine; allowed: {allowed}, auto")
        return torch.device("mps")
    index = int(name.partition(":")[2] or 0)  # spec validation guarantees cuda or cuda:N
    count = torch.cuda.device_count()
    if index >= count:
        have = "no CUDA devices" if count == 0 else f"{count} CUDA device{'s' if count > 1 else ''}"
        raise SpecError(f"device {name!r} is not available: this machine has {have}; allowed: {allowed}, auto")
    return torch.device("cuda", index)
