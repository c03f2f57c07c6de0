"""One run in the foreground of this process: `workbench run --headless`.

Glue between the engine and the user: prepare (all spec errors surface here, before a
folder exists), create the run folder, keep the store record in step with the run's
start and end, log human-readable lines to worker.log, and turn Ctrl-C / SIGTERM into a
clean stop at the next step boundary.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.events import describe_event
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec
from workbench.records import record_from_folder
from workbench.store import Store


@dataclass
class RunOutcome:
    folder: RunFolder
    status: str
    summary: dict | None
    error: str | None = None


def run_headless(
    spec: ExperimentSpec,
    experiment: str,
    logs_dir: Path,
    *,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> RunOutcome:
    from engine.stopping import stop_on_signals
    from engine.train import prepare, train  # torch is imported here, not at CLI start-up

    prepared = prepare(spec)  # raises SpecError: nothing has been written yet
    store = Store(logs_dir)
    folder = RunFolder.create(logs_dir)

    with open(folder.log_path, "a", encoding="utf-8") as log:

        def handle(event: dict) -> None:
            line = describe_event(event)
            if line:
                log.write(line + "\n")
                log.flush()
            if event["type"] == "start":
                store.put(record_from_folder(folder.path))
            if on_event:
                on_event(event)

        try:
            with stop_on_signals() as stop:
                summary = train(prepared, folder, experiment=experiment, on_step=on_step, on_event=handle, should_stop=stop)
        except Exception as exc:
            log.write(traceback.format_exc())
            store.put(record_from_folder(folder.path))
            return RunOutcome(folder, "failed", None, f"{type(exc).__name__}: {exc}")
    store.put(record_from_folder(folder.path))
    return RunOutcome(folder, summary["status"], summary)
