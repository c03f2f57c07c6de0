"""Which code made a run: the engine's code identity and the torch/CUDA versions (imports no torch).

`engine_hash` is a hash of the bytes of every engine/*.py: two runs with equal spec digests
and equal engine hashes were computed by the same training code. Studies re-use a run only
when both match (workbench.study.gather), so a verdict never silently pairs a run of
yesterday's engine with one of today's. The spec digest stays what it was, so old runs keep
their digests; the engine hash is a second key beside it.

The git commit and a dirty flag (engine/ differs from that commit) are recorded too when
engine/ lies in a git checkout; without git they are None, never an error.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

ENGINE_DIR = Path(__file__).resolve().parent
GIT_SECONDS = 5  # a hung git (network filesystem) must not hold a run's start up for long


def engine_hash(directory: Path = ENGINE_DIR) -> str:
    """sha256 over the names and bytes of the directory's *.py files, sorted by name (16 hex)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def current_engine_hash() -> str:
    """The hash of the engine this process runs (computed once: its source does not change under it
    as far as this process is concerned, since its modules are already imported)."""
    return engine_hash(ENGINE_DIR)


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=GIT_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def code_provenance() -> dict[str, Any]:
    """engine_hash, git_commit, git_dirty (None where there is no git checkout), torch, cuda.

    For the start event of a run; imports torch (the training process has it already)."""
    import torch

    commit = _git(ENGINE_DIR, "rev-parse", "HEAD")
    status = _git(ENGINE_DIR, "status", "--porcelain", "--", ".") if commit else None
    return {
        "engine_hash": current_engine_hash(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


MIXED = "mixed"  # a run resumed under other engine code than it started with


def run_engine_hash(first_start: dict[str, Any], start: dict[str, Any], launch: dict[str, Any]) -> str | None:
    """The engine hash of a run from its first and newest start events and launch.json: None
    when unknown (a run from before provenance was recorded), MIXED when a resume ran other
    code than the start. A queued run has no start yet: its launch.json says what submitted it."""
    first = (first_start.get("provenance") or {}).get("engine_hash")
    newest = (start.get("provenance") or {}).get("engine_hash")
    if first and newest and first != newest:
        return MIXED
    if first_start and not first:  # started before provenance existed
        return None
    return newest or first or launch.get("engine_hash")


def describe(provenance: dict[str, Any] | None) -> tuple[str, str]:
    """(code, versions): two short lines for `workbench show`."""
    if not provenance:
        return "unknown (run made before code provenance was recorded)", "unknown"
    commit = provenance.get("git_commit")
    git = "no git" if not commit else commit[:10] + (" (engine/ dirty)" if provenance.get("git_dirty") else "")
    cuda = provenance.get("cuda") or "none"
    return f"engine {provenance.get('engine_hash')}, git {git}", f"torch {provenance.get('torch')}, CUDA {cuda}"
