"""Executing one run in this process: shared by `run --headless` and background workers.

Around engine.train: the heartbeat, human-readable lines in worker.log, the store record
kept in step with the run's start and end, and a Python exception turned into a `failed`
run whose error is in its events, its record and its log.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TextIO

from engine.events import EventWriter, describe_event
from engine.run_folder import RunFolder, failure_reason
from workbench.heartbeat import Heartbeat
from workbench.records import record_from_folder
from workbench.store import Store

if TYPE_CHECKING:
    from engine.train import Prepared


@dataclass
class RunOutcome:
    folder: RunFolder
    status: str
    summary: dict | None
    error: str | None = None


def execute(
    prepared: Prepared,
    folder: RunFolder,
    store: Store,
    experiment: str,
    log: TextIO,
    heartbeat: Heartbeat,
    *,
    on_step: Callable[[int], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> RunOutcome:
    from engine.train import train

    heartbeat.phase = "running"
    ended = False  # whether train wrote this attempt's end event

    def handle(event: dict) -> None:
        nonlocal ended
        ended = ended or event["type"] == "end"
        line = describe_event(event)
        if line:
            log.write(line + "\n")
            log.flush()
        if event["type"] == "start":
            store.put(record_from_folder(folder.path))
        if on_event:
            on_event(event)

    def step(n: int) -> None:
        heartbeat.on_step(n)
        if on_step:
            on_step(n)

    try:
        summary = train(
            prepared, folder, experiment=experiment, on_step=step, on_event=handle, should_stop=should_stop, resume=resume
        )
    except Exception as exc:
        if not ended:  # failed outside the steps (writing init.pt, final.pt, the summary): end it here
            return record_failure(folder, store, log, exc, step=heartbeat.step)
        log.write(traceback.format_exc())
        log.flush()
        store.put(record_from_folder(folder.path))
        return RunOutcome(folder, "failed", None, failure_reason(exc))
    store.put(record_from_folder(folder.path))
    return RunOutcome(folder, summary["status"], summary)


def record_failure(folder: RunFolder, store: Store, log: TextIO, exc: BaseException, step: int = 0) -> RunOutcome:
    """A run that failed before training began (e.g. its dataset is missing): say so everywhere."""
    error = failure_reason(exc)
    log.write((traceback.format_exc() if exc.__class__.__name__ != "SpecError" else "") + f"error: {error}\n")
    log.flush()
    with EventWriter(folder.events_path) as events:
        events.write({"type": "end", "step": step, "status": "failed", "error": error})
    store.put(record_from_folder(folder.path))
    return RunOutcome(folder, "failed", None, error)
