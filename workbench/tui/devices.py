"""The device picker's choices, found without torch. The probe itself (nvidia-smi, mps) lives
in workbench/devices.py, which study matching uses too."""

from __future__ import annotations

import subprocess  # noqa: F401  (the probe's module object: patching subprocess.run here patches the probe)

from workbench.devices import DeviceChoice, cuda_devices, has_mps, parse_nvidia_smi  # noqa: F401


def available_devices() -> list[DeviceChoice]:
    """auto, cpu, every CUDA GPU nvidia-smi reports, and mps on Apple silicon."""
    choices = [
        DeviceChoice("auto", "auto  (first GPU if any, else CPU)"),
        DeviceChoice("cpu", "cpu"),
        *cuda_devices(),
    ]
    if has_mps():
        choices.append(DeviceChoice("mps", "mps  (Apple GPU)"))
    return choices
