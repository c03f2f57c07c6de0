"""`python -m workbench.worker RUN_DIR ...`: one background run, one process.

Started by workbench.runner in a session of its own, so a closed terminal or a dropped
SSH connection (SIGHUP to the terminal's session) does not reach it. It waits for a slot
on its device (workbench.queue) before importing torch, so a long queue costs little
memory, then trains. SIGTERM, or a `cancel.request` file in the run folder (which works
across hosts sharing the logs dir), stops it cleanly at the next step boundary.

It lives in `workbench`, not `engine` as DESIGN.md first sketched, because it keeps the
store record up to date and engine never imports workbench.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from engine.events import run_events
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec
from workbench.execution import execute, record_failure
from workbench.heartbeat import Heartbeat
from workbench.liveness import RunLock, lock_owner
from workbench.queue import DeviceQueue
from workbench.records import record_from_folder
from workbench.store import Store

CANCEL_FILE = "cancel.request"
CANCEL_CHECK_SECONDS = 0.5  # how often the cancel file is looked for (a stat, off the per-step path)


class CancelRequested:
    """True once a signal arrived or the run folder holds a cancel request."""

    def __init__(self, folder: Path, signalled) -> None:
        self.path = folder / CANCEL_FILE
        self.signalled = signalled
        self._checked = 0.0
        self._seen = False

    def __call__(self) -> bool:
        if self.signalled() or self._seen:
            return True
        now = time.monotonic()
        if now - self._checked > CANCEL_CHECK_SECONDS:
            self._checked = now
            self._seen = self.path.exists()
        return self._seen


def _set_cpu_threads(device: str, max_per_device: int, threads: int | None = None) -> None:
    # Runs sharing the CPU split its cores instead of each taking all of them (oversubscribed
    # torch threads slow every run down far more than the split does). Under Ray, `threads`:
    # the CPUs Ray reserved for the run.
    if device == "cpu":
        import torch

        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max_per_device))


class FreeSlot:
    """The slot of a run that a cluster scheduler placed: it already holds its resources."""

    def release(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--max-per-device", type=int, default=2)
    parser.add_argument("--submitted-ns", type=int, default=0, help="queue position: earlier submissions start first")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--lock-fd", type=int, help="the run folder's lock, taken by the submitting process")
    parser.add_argument("--no-slot-queue", action="store_true", help="placed by a cluster scheduler (Ray): no local queue")
    parser.add_argument("--threads", type=int, help="CPU threads for a CPU run (default: the cores / --max-per-device)")
    args = parser.parse_args(argv)

    from engine.stopping import stop_on_signals

    folder = RunFolder(args.run_dir.resolve())
    # Own the folder before touching it: a second worker on one run would interleave two
    # trainings in one events log. The lock is held until this process ends.
    lock = RunLock.inherited(folder.path, args.lock_fd) if args.lock_fd is not None else RunLock(folder.path)
    if args.lock_fd is None and not lock.acquire():
        owner = lock_owner(folder.path).get("pid", "unknown")
        print(f"run {folder.run_id} is already owned by pid {owner}; this worker leaves it alone", flush=True)
        return 1
    lock.write_owner(os.getpid())
    store = Store(folder.path.parent)
    spec = ExperimentSpec.model_validate(folder.spec())
    log = sys.stdout  # the runner points it at worker.log
    with Heartbeat(folder.path, "queued") as heartbeat, stop_on_signals() as signalled:
        should_stop = CancelRequested(folder.path, signalled)
        if args.no_slot_queue:
            slot = None if should_stop() else FreeSlot()
        else:
            queue = DeviceQueue(folder.path.parent, spec.device, args.max_per_device)
            slot = queue.wait(folder.run_id, args.submitted_ns or time.time_ns(), should_stop)
        if slot is None:
            return _cancelled_while_queued(folder, store, log)
        try:
            _set_cpu_threads(spec.device, args.max_per_device, args.threads)
            from engine.train import prepare

            prepared = prepare(spec, runs_dir=folder.path.parent, resuming=folder if args.resume else None)
        except Exception as exc:
            record_failure(folder, store, log, exc, step=_resume_step(folder))
            return 1
        outcome = execute(
            prepared, folder, store, args.experiment, log, heartbeat, should_stop=should_stop, resume=args.resume
        )
        slot.release()
    return 0 if outcome.status != "failed" else 1


def _resume_step(folder: RunFolder) -> int:
    starts = run_events(folder.events_path, "start")
    return starts[-1]["step"] if starts else 0


def _cancelled_while_queued(folder: RunFolder, store: Store, log) -> int:
    from engine.events import EventWriter

    step = _resume_step(folder)
    with EventWriter(folder.events_path) as events:
        events.write({"type": "end", "step": step, "status": "cancelled"})
    log.write("cancelled while queued\n")
    store.put(record_from_folder(folder.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
