"""Launching, cancelling and resuming background runs.

A run is submitted by locking its new folder (workbench.liveness), writing it (spec.json,
a `queued` event, launch.json) and starting a worker (workbench.worker) through a
Launcher, which inherits the folder's lock: the run is owned by a live process from its
first file to its worker's end, and a second worker on it is refused. The Launcher is the one seam
between "what to run" and "where it runs": LocalLauncher starts a detached process on
this machine; a cluster backend (e.g. Ray) implements the same `launch` and leaves the
rest of this module alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.events import EventWriter
from engine.provenance import current_engine_hash
from engine.run_folder import RunFolder, atomic_write_json, read_json
from engine.spec import ExperimentSpec, SpecError
from workbench.heartbeat import HEARTBEAT_FILE
from workbench.queue import DeviceQueue, default_max_per_device
from workbench.liveness import ACTIVE, LIVE_STATUSES, RunLock, lock_owner, process_alive
from workbench.records import LAUNCH_FILE, record_from_folder
from workbench.store import UNWRITABLE_ERRORS, Store
from workbench.worker import CANCEL_FILE

RESUMABLE = ("cancelled", "failed", "lost")


@dataclass
class Launched:
    pid: int | None
    host: str
    backend: str = "local"
    details: dict | None = None  # what the backend needs later (Ray: address and actor name, for cancel)


class Launcher(Protocol):
    slot_queue: bool  # whether its workers wait for a slot of the local per-device queue

    def launch(self, folder: RunFolder, worker_args: list[str], pass_fds: tuple[int, ...] = ()) -> Launched:
        """Start `python -m workbench.worker <folder> <worker_args>` somewhere; return at once.
        `pass_fds`: descriptors the worker inherits (the run folder's lock), where it can."""
        ...

    def checkable(self, spec: ExperimentSpec) -> ExperimentSpec:
        """`spec` as the submitting command's preflight checks it (on the device it can check)."""
        ...


class LocalLauncher:
    """A worker process on this machine, in its own session (immune to the terminal's SIGHUP),
    with no stdin and its output appended to the run's worker.log."""

    slot_queue = True  # the worker waits for a slot of the per-device queue (workbench.queue)
    _children: list[subprocess.Popen] = []

    def launch(self, folder: RunFolder, worker_args: list[str], pass_fds: tuple[int, ...] = ()) -> Launched:
        self._reap()
        with open(folder.log_path, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "workbench.worker", str(folder.path), *worker_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._children.append(child)
        return Launched(child.pid, socket.gethostname())

    def checkable(self, spec: ExperimentSpec) -> ExperimentSpec:
        """The spec as preflight checks it here: on this machine's device, made concrete."""
        return resolve_spec_device(spec)

    @classmethod
    def _reap(cls) -> None:
        # A long-lived parent (the TUI) must collect finished workers, or they linger as zombies.
        cls._children = [child for child in cls._children if child.poll() is None]


def resolve_spec_device(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec with its device made concrete ("auto" -> "cuda:0"/"cpu"); refuses devices this
    machine lacks (SpecError). Imports torch."""
    from engine.devices import resolve_device

    return spec.model_copy(update={"device": str(resolve_device(spec.device))})


def _launch(
    folder: RunFolder, lock: RunLock, experiment: str, store: Store, launcher: Launcher, max_per_device: int, resume: bool
) -> None:
    """Queue the run whose folder `lock` holds and start its worker, which inherits the lock."""
    try:
        submitted = time.time()
        with EventWriter(folder.events_path) as events:
            events.write({"type": "queued", "time": submitted})
        submitted_ns = time.time_ns()
        device = ExperimentSpec.model_validate(folder.spec()).device
        args = ["--experiment", experiment, "--max-per-device", str(max_per_device), "--submitted-ns", str(submitted_ns)]
        args += ["--resume"] if resume else []
        if getattr(launcher, "slot_queue", True):  # a cluster backend schedules runs itself
            DeviceQueue(folder.path.parent, device, max_per_device).enqueue(folder.run_id, submitted_ns)
            args += ["--lock-fd", str(lock.fd)]
        launched = launcher.launch(folder, args, pass_fds=(lock.fd,))
        if launched.pid:
            lock.write_owner(launched.pid, launched.host)
        launch = read_json(folder.path / LAUNCH_FILE) or {}
        atomic_write_json(
            folder.path / LAUNCH_FILE,
            {
                "experiment": experiment,
                "digest": ExperimentSpec.model_validate(folder.spec()).digest(),
                "engine_hash": current_engine_hash(),  # a queued run's code, before its start event says
                "submitted": launch.get("submitted", submitted),  # a resume keeps the run's place in time
                "launched": submitted,
                "pid": launched.pid,
                "host": launched.host,
                "max_per_device": max_per_device,
                **({"backend": launched.backend, launched.backend: launched.details} if launched.details else {}),
            },
        )
    finally:
        lock.release()  # the worker holds its own copy; if none was started, the run reads `lost`
    store.put(record_from_folder(folder.path))


def submit(
    spec: ExperimentSpec,
    experiment: str,
    logs_dir: Path,
    *,
    max_per_device: int | None = None,
    launcher: Launcher | None = None,
    tags: list[str] = (),
) -> RunFolder:
    """Queue one run (its spec's device already concrete) and start its worker; returns at once.
    `tags` (checked ones, workbench/tags.py) are written before the run is indexed."""
    folder = RunFolder.create(logs_dir)
    lock = RunLock(folder.path)
    lock.acquire()  # a new folder: nobody else can hold it
    lock.write_owner(os.getpid())
    folder.write_spec(spec.model_dump(mode="json"))
    if tags:
        from workbench.tags import change_tags

        change_tags(folder.path, tags)
    limit = max_per_device or default_max_per_device()
    _launch(folder, lock, experiment, Store(logs_dir), launcher or LocalLauncher(), limit, False)
    return folder


def cancel(record: dict, logs_dir: Path) -> str:
    """Ask a queued or running run to stop at its next step boundary. Returns what was done."""
    if record["status"] not in ACTIVE:
        return f"{record['run_id']} is {record['status']}: nothing to cancel"
    folder = RunFolder(Path(record["run_dir"]))
    (folder.path / CANCEL_FILE).touch()  # seen by the worker wherever it runs
    if record.get("backend") == "ray":
        from workbench.ray_backend import cancel_in_ray

        try:
            return f"{record['run_id']}: cancel requested ({cancel_in_ray(folder.path)})"
        except SpecError as exc:  # Ray unreachable: the cancel file still stops it at its next step
            return f"{record['run_id']}: cancel requested (through its cancel file only: {exc})"
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and process_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return f"{record['run_id']}: cancel requested"


def wait_until_done(run_dir: Path, timeout: float) -> dict | None:
    """The run's record once it is no longer queued or running (None if `timeout` passes first)."""
    deadline = time.monotonic() + timeout
    while True:
        record = record_from_folder(run_dir)
        if record is None or record["status"] not in ACTIVE:
            return record
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def resume(
    record: dict, logs_dir: Path, *, max_per_device: int | None = None, launcher: Launcher | None = None
) -> RunFolder:
    """Start a cancelled, failed or lost run again from its last saved training state."""
    if record["status"] in ACTIVE:
        raise SpecError(f"run {record['run_id']} is {record['status']} (pid {record.get('pid') or 'unknown'}); cancel it first")
    if record["status"] not in RESUMABLE:
        allowed = ", ".join(RESUMABLE)
        raise SpecError(f"run {record['run_id']} is {record['status']}; only {allowed} runs can be resumed")
    folder = RunFolder(Path(record["run_dir"]))
    spec = ExperimentSpec.model_validate(folder.spec())
    from engine.preflight import preflight

    launcher = launcher or LocalLauncher()
    preflight([launcher.checkable(spec)], logs_dir)  # the device, data and member runs must still be there
    lock = RunLock(folder.path)
    if not lock.acquire():  # its worker is alive after all (or a second resume got there first)
        pid = lock_owner(folder.path).get("pid", "unknown")
        raise SpecError(f"run {record['run_id']} is running (pid {pid}); cancel it first")
    lock.write_owner(os.getpid())
    (folder.path / CANCEL_FILE).unlink(missing_ok=True)
    (folder.path / HEARTBEAT_FILE).unlink(missing_ok=True)  # the dead worker's beat would read as stale
    launch = read_json(folder.path / LAUNCH_FILE) or {}
    experiment = record.get("experiment") or launch.get("experiment") or "?"
    limit = max_per_device or launch.get("max_per_device") or default_max_per_device()
    _launch(folder, lock, experiment, Store(logs_dir), launcher, limit, True)
    return folder


def refresh_active(store: Store) -> list[dict]:
    """Every record, with queued, running and lost ones re-read from their folders (live
    step and movement; `lost` when the process died, `running` again when a run thought
    lost turns out alive) and written back when they changed (unless the logs dir is
    read-only: the index is a cache, and reading must not need a write)."""
    records = store.all()
    changed = []
    for i, record in enumerate(records):
        if record.get("status") not in LIVE_STATUSES:
            continue
        fresh = record_from_folder(Path(record.get("run_dir", "")))
        if fresh is None:
            fresh = {**record, "status": "lost", "error": "run folder is gone"}
        if fresh != record:
            changed.append(fresh)
            records[i] = fresh
    try:
        store.put_many(changed)
    except OSError as exc:  # read-only or full: the index is a cache, listing must not need a write
        if exc.errno not in UNWRITABLE_ERRORS:
            raise
    return records
