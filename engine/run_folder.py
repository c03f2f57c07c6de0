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
place, so a crash at any moment leaves either the old file or the new one. A temporary
name carries its writer's pid and host (`.<name>.<pid>@<host>.<random>.tmp`), so the next
write into the folder can tell the leftovers of a killed writer and removes them. torch is
imported only by the functions that need it: the CLI reads folders without it.

A file that is there but does not hold what the layout says (not JSON, not an object)
raises CorruptFile, a SpecError naming the file: readers mark the run `corrupt` with that
reason instead of crashing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import socket
import string
import tempfile
from pathlib import Path
from typing import Any, Callable

from engine.events import EVENTS_FILE
from engine.spec import SpecError

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8
LOG_FILE = "worker.log"  # the worker's stdout and stderr


def _file_mode() -> int:
    # mkstemp creates files 0600; a run folder on a shared GPU server should read like any
    # other file the user writes, so apply the usual 0666 & ~umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


# The host part of temporary names: a writer on another host sharing the logs dir has pids
# that mean nothing here, so only this host's leftovers are judged by their pid.
HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.tmp$")


def process_alive(pid: int | None) -> bool:
    """Whether process `pid` of this host exists (a zombie, exited but not yet reaped, is dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True  # no /proc (macOS): existence is all we can know


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files in `folder` whose writer (a process on this host) is dead:
    what a kill -9 in the middle of atomic_write leaves behind. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMP_NAME.match(entry.name)
        if found and found["host"] == HOST_TAG and not process_alive(int(found["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # another writer cleaned it first, or the folder is read-only: not this write's problem
    return removed


def atomic_write(path: Path, write) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, then rename it over `path`.
    An OSError on the way (a full disk, a read-only folder) names `path`, not the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{HOST_TAG}.", suffix=".tmp")
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(exc: BaseException) -> str | None:
    """One sentence for a write that the disk refused (full, read-only, not permitted), or None."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_FULL + NOT_WRITABLE:
        return None
    where = exc.filename if exc.filename is not None else "the disk"
    if exc.errno in DISK_FULL:
        return f"no space left on {where}"
    return f"cannot write to {where}" + (f" ({exc.strerror.lower()})" if exc.strerror else "")


def failure_reason(exc: BaseException) -> str:
    """The `error` of a failed run: the sentence of a user error or a refused write, else the
    exception's type and message (the traceback goes to worker.log)."""
    if isinstance(exc, SpecError):
        return str(exc)
    return write_error(exc) or f"{type(exc).__name__}: {exc}"


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode()))


class CorruptFile(SpecError):
    """A run file that is there but does not hold what the folder layout says."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.reason = f"{self.path.name} {problem}"  # short: the error column of `runs`
        super().__init__(f"{self.path} {problem}")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is no such file; CorruptFile when there
    is one that is not text, not JSON or not an object."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CorruptFile(path, "is a directory, not a file") from None
    except OSError as exc:  # e.g. no read permission: the run cannot be read either way
        raise CorruptFile(path, f"cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFile(path, "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CorruptFile(path, f"is not valid JSON (line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise CorruptFile(path, "is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise CorruptFile(path, f"is not a JSON object (it holds {_json_kind(data)})")
    return data


def _json_kind(data: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")


def unless_corrupt(read: Callable[[], Any], problems: list[str] | None = None) -> Any:
    """`read()` (e.g. RunFolder.summary), or None when the file is corrupt, its reason added
    to `problems`: for readers that show what they can of a damaged run."""
    try:
        return read()
    except CorruptFile as exc:
        if problems is not None:
            problems.append(exc.reason)
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or corrupt (for readers to which
    the file is optional, like launch.json, or a spec shown beside others')."""
    try:
        return read_json_object(path)
    except CorruptFile:
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
    log_path = property(lambda self: self.path / LOG_FILE)

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    # reading (torch-free) ----------------------------------------------------------
    def spec(self) -> dict[str, Any] | None:
        """spec.json (None: missing); CorruptFile when it holds no JSON object."""
        return read_json_object(self.spec_path)

    def summary(self) -> dict[str, Any] | None:
        """summary.json (None: missing, the run has not ended); CorruptFile when it holds no JSON object."""
        return read_json_object(self.summary_path)

    # writing -----------------------------------------------------------------------
    def write_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_json(self.spec_path, spec)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def save_tensors(self, path: Path, obj: Any) -> None:
        import torch

        # torch's zip writer turns an OSError from the file (a full disk) into a RuntimeError
        # ("unexpected pos ...") that has lost the errno: serialize in memory, then write the
        # bytes ourselves, so a full disk is an OSError that names the file.
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))

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
