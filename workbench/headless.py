"""One run in the foreground of this process: `workbench run --headless`.

Prepare first (all spec errors surface here, before a folder exists), then create the
run folder and execute (workbench.execution); Ctrl-C / SIGTERM stop cleanly at the next
step boundary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec
from workbench.execution import RunOutcome, execute
from workbench.heartbeat import Heartbeat
from workbench.liveness import RunLock
from workbench.store import Store

__all__ = ["RunOutcome", "run_headless"]


def run_headless(
    spec: ExperimentSpec,
    experiment: str,
    logs_dir: Path,
    *,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> RunOutcome:
    from engine.stopping import stop_on_signals
    from engine.train import prepare  # torch is imported here, not at CLI start-up

    prepared = prepare(spec, runs_dir=logs_dir)  # raises SpecError: nothing has been written yet
    store = Store(logs_dir)
    folder = RunFolder.create(logs_dir)
    lock = RunLock(folder.path)  # this process owns the run until it returns (workbench.liveness)
    lock.acquire()
    lock.write_owner(os.getpid())
    try:
        with open(folder.log_path, "a", encoding="utf-8") as log, Heartbeat(folder.path, "running") as heartbeat:
            with stop_on_signals() as stop:
                return execute(
                    prepared, folder, store, experiment, log, heartbeat, on_step=on_step, on_event=on_event, should_stop=stop
                )
    finally:
        lock.release()
