"""Which devices a run can go to, found without importing torch (the UI process never does,
and matching runs to a study must not need it either).

GPUs come from `nvidia-smi`; when it is missing, fails or hangs (2 s), there are none.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import dataclass

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.free,memory.total",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class DeviceChoice:
    value: str  # what ExperimentSpec.device takes: auto, cpu, cuda:N, mps
    label: str  # what the picker shows


def parse_nvidia_smi(text: str) -> list[DeviceChoice]:
    """One choice per line of `index, name, free MiB, total MiB`; malformed lines are skipped."""
    choices = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4:
            continue
        index, free, total = parts[0], parts[-2], parts[-1]
        name = ", ".join(parts[1:-2])  # a GPU name could hold a comma
        if not index.isdigit():
            continue
        try:
            free_gib = float(free) / 1024
            total_gib = float(total) / 1024
        except ValueError:
            label = f"cuda:{index}  {name}"
        else:
            label = f"cuda:{index}  {name}  {free_gib:.1f} GiB free of {total_gib:.1f}"
        choices.append(DeviceChoice(f"cuda:{index}", label))
    return choices


def cuda_devices(timeout: float = 2.0) -> list[DeviceChoice]:
    try:
        done = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return parse_nvidia_smi(done.stdout)


def has_mps() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


@functools.cache  # one probe per process: GPUs do not come and go while a study is matched
def auto_device() -> str:
    """What "auto" most likely becomes on this machine (engine.devices.resolve_device's order:
    the first GPU, else mps, else cpu), guessed without torch. Only a preference: a study
    arm on "auto" matches runs on any device, and one on this device first."""
    if cuda_devices():
        return "cuda:0"
    return "mps" if has_mps() else "cpu"
