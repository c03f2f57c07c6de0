"""A run on disk: the folder layout DESIGN.md fixes, and writes that are never half done.

    <logs dir>/<run_id>/
      spec.json            the fully resolved spec
      events.jsonl         append-only events (engine.events)
      masks.pt             {"subset": {param: bool tensor}, "fixed": {...}}
      checkpoints/init.pt  state_dict at step 0
      checkpoints/final.pt state_dict at the end (plus periodic step_NNNNNN.pt)
      checkpoints/train_state.pt  the latest resumable state (optimizer, RNG, data position...)
      summary.json         final metrics, written last
      worker.log           what the run printed, tracebacks included

Every file other than the events log is written to a temporary name and renamed into
place, so a crash at any moment leaves either the old file or the new one. torch is
imported only by the functions that need it: the CLI reads folders without it.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from pathlib import Path
from typing import Any

from engine.events import EVENTS_FILE
from engine.spec import SpecError

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8


def _file_mode() -> int:
    # mkstemp creates files 0600; a run folder on a shared GPU server should read like any
    # other file the user writes, so apply the usual 0666 & ~umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path: Path, write) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, logs_dir: str | Path) -> RunFolder:
        """A new folder with a fresh short id (8 lowercase letters/digits)."""
        logs_dir = Path(logs_dir)
        logs_dir.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
            try:
                (logs_dir / run_id).mkdir()  # exclusive: two processes never share an id
            except FileExistsError:
                continue
            folder = cls(logs_dir / run_id)
            folder.checkpoints.mkdir()
            return folder

    # paths -------------------------------------------------------------------------
    spec_path = property(lambda self: self.path / "spec.json")
    events_path = property(lambda self: self.path / EVENTS_FILE)
    masks_path = property(lambda self: self.path / "masks.pt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    train_state_path = property(lambda self: self.path / "checkpoints" / "train_state.pt")
    summary_path = property(lambda self: self.path / "summary.json")
    log_path = property(lambda self: self.path / "worker.log")

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    # reading (torch-free) ----------------------------------------------------------
    def spec(self) -> dict[str, Any] | None:
        return read_json(self.spec_path)

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.summary_path)

    # writing -----------------------------------------------------------------------
    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_json(self.spec_path, spec)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def save_tensors(self, path: Path, obj: Any) -> None:
        import torch

        atomic_write(path, lambda f: torch.save(obj, f))

    def load_tensors(self, path: Path) -> Any:
        """A checkpoint, masks or training state: tensors and plain containers only.

        weights_only: a checkpoint may come from someone else, and unpickling runs code. A
        file torch refuses is a SpecError naming it: torch's own text advises
        weights_only=False, which is exactly the unsafe way to open it.
        """
        import pickle

        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise  # not readable at all (missing, permissions, the disk): not about its contents
        except Exception as exc:
            # weights_only refusals are UnpicklingErrors; torch's zip reader and unpickler raise
            # RuntimeError, EOFError, KeyError... for files cut short or of another format.
            if isinstance(exc, pickle.UnpicklingError) and _written_like_torch(path):
                what = (
                    "is not a plain tensor checkpoint (it holds Python objects other than tensors and "
                    "plain containers, and unpickling those could run code)"
                )
            else:
                what = "is not a torch checkpoint (truncated, or not written by torch.save)"
            raise SpecError(f"{path} {what}; it was not loaded") from None


def _written_like_torch(path: Path) -> bool:
    """torch.save writes a zip archive, torch before 1.6 a bare pickle (starting with PROTO, 0x80)."""
    with open(path, "rb") as f:
        return f.read(4).startswith((b"PK\x03\x04", b"\x80"))
