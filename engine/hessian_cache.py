"""A Hessian measurement computed once per study, not once per run.

Both arms of a pair (frozen and reference), and hessian-decouple / hessian-couple (same S)
or obd-low / obd-high (same saliency) at one seed, measure the identical quantities: the
measurement is a function of the weights it is taken at, the examples, and what is
computed, never of `freeze`, `fraction`, `objective` or `fix`. So it is kept in the logs
dir under a content address, `<logs>/.cache/hessian/<key>.pt`, the key a sha256 over:
- the weights and buffers it is taken at (the run's initial weights, or hessian.at's
  checkpoint), byte for byte;
- the examples' bytes and labels (the first `samples` training examples) and batch_size
  (it fixes the summation order, so the bits);
- the layers measured (include_fc), and whether the per-coordinate pass runs and in which
  saliency form;
- the device type and dtype, torch's version and the engine's code (engine_hash).
A file is written atomically (engine.run_folder.atomic_write) under a file lock, so two
runs starting together compute it once: the second waits and reads. A file that cannot be
read, or whose contents do not match its key and layers, is ignored and recomputed, never
trusted. Deleting the folder is always safe: it only costs the recomputation. Each run
folder still gets its own complete hessian.pt.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import nn

from engine.models import Layer
from engine.provenance import current_engine_hash
from engine.run_folder import atomic_write

CACHE_DIR = Path(".cache") / "hessian"
Measured = dict[str, dict[str, torch.Tensor]]


def _update(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def measurement_key(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[Layer], what: dict, device: torch.device
) -> str:
    """The content address of one measurement (see the module's docstring for what it covers)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + b"\0")
        _update(digest, tensor)
    _update(digest, x)
    _update(digest, y)
    settings = {**what, "layers": [layer.name for layer in layers], "device": torch.device(device).type,
                "dtype": "float64", "torch": torch.__version__, "engine": current_engine_hash()}
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:32]


def _complete(saved, key: str, layers: list[Layer], names: tuple[str, ...]) -> bool:
    """Whether a cache file's contents are a whole measurement of these layers under this key."""
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("layers"), dict):
        return False
    for layer in layers:
        record = saved["layers"].get(layer.name)
        if not isinstance(record, dict) or set(record) != set(names):
            return False
        for name, tensor in record.items():
            shape = (layer.kernels,) if name == "saliency" else (layer.kernels, layer.kernels)
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float64 or tuple(tensor.shape) != shape:
                return False
    return set(saved["layers"]) == {layer.name for layer in layers}


def _read(path: Path, key: str, layers: list[Layer], names: tuple[str, ...]) -> Measured | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, cut short, not torch's, not plain tensors: recompute
        return None
    return saved["layers"] if _complete(saved, key, layers, names) else None


def cached(logs_dir: Path | None, key: str, layers: list[Layer], names: tuple[str, ...],
           compute: Callable[[], Measured]) -> Measured:
    """The measurement under `key` from the cache, or `compute()`d once and stored there.
    `names`: the tensors each layer's record holds (S, saliency, A)."""
    if logs_dir is None:  # a run prepared outside a logs dir (tests, benchmarks): nothing to share
        return compute()
    path = Path(logs_dir) / CACHE_DIR / f"{key}.pt"
    found = _read(path, key, layers, names)
    if found is not None:
        return found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError:  # a read-only logs dir: compute for this run alone
        return compute()
    try:
        found = _read(path, key, layers, names)  # another run may have written it while we waited
        if found is not None:
            return found
        measured = compute()
        buffer = io.BytesIO()
        torch.save({"key": key, "layers": measured}, buffer)
        try:
            atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        except OSError:
            pass  # a full disk: the run has its measurement, the next one recomputes
        return measured
    finally:
        lock.release()
