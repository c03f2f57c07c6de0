"""Whether a run's worker is alive: the run-folder lock first, the heartbeat second.

A run folder is locked (`<run>/run.lock`, an exclusive flock) from the moment it is
created until its worker process ends. The submitting process takes the lock before it
writes anything and hands it to the worker it starts (an inherited file descriptor), so
there is no moment in a run's life when it is unowned. The kernel releases a flock when
its last holder dies, however it dies (kill -9, OOM, a dropped SSH session), so on this
host a lock that is not held means the run's process is gone: its status reads `lost`,
and a held lock means it is alive, whatever its heartbeat says. The lock also makes a
second worker on the same folder impossible: `resume` and a worker that finds the lock
held refuse.

flocks are only trustworthy between processes of one host (over NFS they may not be
seen), so a run that another host owns is judged by its heartbeat's age. Runs written
before the lock existed have no lock file; they are judged by pid and heartbeat, as
before.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.run_folder import process_alive  # noqa: F401 (re-exported: the queue and runner use it)
from workbench.heartbeat import STALE_SECONDS

LOCK_FILE = "run.lock"
ACTIVE = ("queued", "running")
LIVE_STATUSES = (*ACTIVE, "lost")  # re-judged on every read: a `lost` run may turn out to be alive
ACQUIRE_PATIENCE = 2.0  # seconds: a reader's probe holds the lock for microseconds; a worker holds it for hours


class RunLock:
    """The exclusive lock on one run folder, held by the process that owns the run."""

    def __init__(self, run_dir: Path, fd: int | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd = fd

    @classmethod
    def inherited(cls, run_dir: Path, fd: int) -> RunLock:
        """The lock the submitting process took and passed to this worker as file descriptor `fd`."""
        os.set_inheritable(fd, False)  # held by this process alone from here on
        return cls(run_dir, fd)

    def acquire(self) -> bool:
        """Take the lock (False when another process holds it). Retries for a moment, since a
        reader checking liveness holds it for a few microseconds."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + ACQUIRE_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)

    def write_owner(self, pid: int, host: str | None = None) -> None:
        """Record which process holds the lock (read by `owner`, for messages only)."""
        data = json.dumps({"pid": pid, "host": host or socket.gethostname()}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Close this process's hold (a worker that inherited the lock keeps it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_state(run_dir: str | Path) -> str:
    """`held`, `free`, or `absent` (no lock file: a run from before locks, or not a run)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return "absent"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError:  # a filesystem without flocks: judge by the heartbeat instead
        return "absent"
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return "free"


def lock_owner(run_dir: str | Path) -> dict[str, Any]:
    try:
        owner = json.loads((Path(run_dir) / LOCK_FILE).read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def worker_alive(record: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that owns the run of `record` is alive (see the module doc)."""
    if record.get("backend") == "ray" and not record.get("node") and record.get("status") == "queued":
        # Waiting in Ray's queue: Ray holds it (a detached actor, independent of any process of
        # ours) until a node has its resources; the actor then owns the run like a local worker.
        # The waiting keeper beats for it meanwhile (workbench/ray_waiting.py): a run Ray dropped
        # unstarted gets no more beats and is lost once the newest is stale. (No keeper: a run
        # launched before it existed, or where it could not start: waiting as long as it has not started.)
        waiting = record.get("ray_waiting")
        return waiting is None or (now or time.time()) - waiting <= STALE_SECONDS
    host = record.get("host")
    here = host in (None, socket.gethostname())
    state = lock_state(record["run_dir"]) if record.get("run_dir") else "absent"
    if state == "held":
        return True
    if here and state == "free":
        return False
    if here and record.get("pid") and not process_alive(record["pid"]):
        return False
    last_sign = record.get("heartbeat") or record.get("launched") or record.get("created")
    return not (last_sign and (now or time.time()) - last_sign > STALE_SECONDS)


def with_liveness(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """`queued`/`running` only while the run's process is alive; `lost` otherwise."""
    if record.get("status") not in ACTIVE or worker_alive(record, now):
        return record
    return {**record, "status": "lost"}
