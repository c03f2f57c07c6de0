"""What runs on a Ray node for one run: the run's Ray actor, a thin shell around the same
`python -m workbench.worker` process a local run uses.

The actor is created by workbench.ray_backend as a *detached* actor, so it outlives the
`submit` that created it (a normal task or actor dies with its driver). Ray starts it on a
node once the run's resources are free there; it then

1. takes the run folder's lock (workbench.liveness) and hands it to the worker process it
   starts, exactly as a local submit does, so the run is owned by a live process on this
   node until the worker ends;
2. writes `ray.json` (node id, its address, the host) so `runs` and `workbench cluster`
   tell where the run is, and so a run that Ray started is judged by its lock and
   heartbeat like any other, not as still waiting in Ray;
3. ends itself when the worker ends, which gives its resources back to Ray.

The worker dies with the actor (PR_SET_PDEATHSIG): a node whose raylet dies takes its Ray
workers and so its runs with it, and they read `lost` at once on that host and once their
heartbeat is stale (30 s) everywhere else, never running forever. Imports neither torch
nor ray at module level (ray pickles this class by reference; nodes import it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.run_folder import atomic_write_json, read_json
from workbench.liveness import RunLock

RAY_FILE = "ray.json"  # written by the run's actor when Ray starts it: which node, since when
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child, before exec: the kernel sends SIGKILL when the actor process dies, so a
    # dead node (or a killed actor) never leaves a worker training unseen.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the worker outlives a killed actor, its heartbeat still tells
        pass


def _acquire_patiently(lock: RunLock, patience: float = 30.0) -> bool:
    # The submitting command holds the lock until it has written launch.json, a few
    # milliseconds after handing the actor to Ray; an actor that starts at once waits for that.
    deadline = time.monotonic() + patience
    while not lock.acquire():
        if time.monotonic() > deadline:
            return False
    return True


def node_of(run_dir: str | Path) -> dict:
    """What the run's actor wrote about its node ({} while the run waits in Ray)."""
    return read_json(Path(run_dir) / RAY_FILE) or {}


class RunActor:
    """One run on one Ray node (made a Ray actor class by workbench.ray_backend)."""

    def __init__(self, run_dir: str, worker_args: list[str], threads: int) -> None:
        import ray

        self.folder = Path(run_dir)
        context = ray.get_runtime_context()
        lock = RunLock(self.folder)
        if not _acquire_patiently(lock):  # a second worker (a resume elsewhere) got there first: leave it alone
            self.child = None
            self._end_soon()
            return
        host = socket.gethostname()
        lock.write_owner(os.getpid(), host)
        atomic_write_json(
            self.folder / RAY_FILE,
            {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "host": host,
             "actor": context.get_actor_name(), "started": time.time()},
        )
        with open(self.folder / "worker.log", "ab") as log:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "workbench.worker", str(self.folder), *worker_args,
                 "--lock-fd", str(lock.fd), "--threads", str(threads), "--no-slot-queue"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(lock.fd,), preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        lock.release()  # the worker holds its own copy
        threading.Thread(target=self._end_with_worker, daemon=True).start()

    def stop(self) -> bool:
        """Ray-side cancel: SIGTERM makes the worker stop cleanly at its next step (status
        `cancelled`, training state kept for resume). False when it had already ended."""
        if self.child is None or self.child.poll() is not None:
            return False
        self.child.send_signal(signal.SIGTERM)
        return True

    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def finish(self) -> None:
        """End this actor (Ray's graceful exit), which gives the run's CPUs/GPUs back to Ray: a
        detached actor would otherwise hold them forever. Not restarted: max_restarts=0."""
        import ray

        ray.actor.exit_actor()

    def _end_with_worker(self) -> None:
        self.child.wait()
        self._end_soon()

    def _end_soon(self) -> None:
        # Called from a thread: the exit must run as one of the actor's own tasks.
        import ray

        ray.get_runtime_context().current_actor.finish.remote()
