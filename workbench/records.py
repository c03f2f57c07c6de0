"""Store records of runs: what the index keeps about a run, derived from its folder.

One function builds a record from a run folder (spec.json, the events' start and end,
summary.json), used both when a run finishes and when the store is rebuilt, so the two
can never disagree. Liveness (workbench.liveness) is applied to every record built: a
record that says `running` whose process is gone is reported `lost`, never running forever.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.events import EVENTS_FILE, read_events, survives_resume
from engine.provenance import run_engine_hash
from engine.run_folder import ID_LENGTH, RunFolder, read_json, unless_corrupt
from engine.vocabulary import METRICS, SUBSETS
from workbench.heartbeat import read_heartbeat
from workbench.liveness import ACTIVE, process_alive, with_liveness  # noqa: F401 (process_alive: re-exported)

ENDED = ("completed", "cancelled", "failed")  # the statuses an end event may carry
CORRUPT = "corrupt"  # a run file that does not hold what the folder layout says; `error` says which
LAUNCH_FILE = "launch.json"  # written by the runner: experiment, pid, host, submitted time


def _figure(summary: dict[str, Any], *path: str) -> Any:
    node: Any = summary
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def summary_figures(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The summary numbers the index keeps (the per-step series stay in events.jsonl)."""
    summary = summary or {}
    figures = {
        "step": summary.get("steps"),
        "eval_acc": _figure(summary, "final", "eval_acc"),
        "eval_loss": _figure(summary, "final", "eval_loss"),
        "train_loss": _figure(summary, "final", "train_loss"),
    }
    for subset in SUBSETS:
        for metric in METRICS:
            figures[f"{subset}_{metric}"] = _figure(summary, "movement", subset, metric)
    return figures


def spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec values a researcher scans a run table by."""
    return {
        "seed": spec.get("seed"),
        "freeze": spec.get("freeze"),
        "strategy": _figure(spec, "partition", "strategy"),
        "fraction": _figure(spec, "partition", "fraction"),
        "model": _figure(spec, "model", "name"),
        "data": _figure(spec, "data", "name"),
        "steps": _figure(spec, "train", "steps"),
    }


Lifecycle = tuple[str, dict[str, Any], dict[str, Any] | None]


def lifecycle(events: list[dict[str, Any]], before: Lifecycle = ("queued", {}, None)) -> Lifecycle:
    """(status, newest start event, end event or None) from a run's events (following on
    from `before`, the lifecycle of the events before them). The newest of `queued`
    (written at submit and at resume), `start` and `end` decides. An end event without one
    of the ENDED statuses makes the run `corrupt` (end_problem says why)."""
    status, start, end = before
    for event in events:
        kind = event.get("type")
        if kind == "queued":  # the process of an earlier start is not this attempt's
            status, start, end = "queued", {}, None
        elif kind == "start":
            status, start, end = "running", event, None
        elif kind == "end":
            status, end = (event["status"] if event.get("status") in ENDED else CORRUPT), event
    return status, start, end


def end_problem(end: dict[str, Any]) -> str | None:
    """Why an end event makes its run corrupt, or None when it is a proper end."""
    found = end.get("status")
    if found in ENDED:
        return None
    said = "no status" if found is None else f"the status {found!r}"
    return f"{EVENTS_FILE}: the end event at step {end.get('step')} has {said}, not one of {', '.join(ENDED)}"


@dataclass(frozen=True)
class EventsFold:
    """What a record needs from a run's events.jsonl, folded up to byte `offset`: read once,
    then only the bytes appended since (the runs list re-reads every live run each second).
    `inode` and `offset` tell a replaced or truncated file, which is folded again from 0."""

    inode: int = 0
    offset: int = 0
    status: str = "queued"
    start: dict[str, Any] = field(default_factory=dict)  # newest start
    end: dict[str, Any] | None = None
    first_start: dict[str, Any] = field(default_factory=dict)
    movement: dict[str, Any] | None = None  # newest movement still standing after resumes

    def take(self, events: list[dict[str, Any]]) -> EventsFold | None:
        """This fold with `events` (the next ones in the file) added; None when a resume
        drops the newest movement read before and the one before it is needed (not kept)."""
        status, start, end = self.status, self.start, self.end
        first_start, older = self.first_start, self.movement
        movements: list[dict[str, Any]] = []  # this batch's, in file order
        for event in events:
            kind = event.get("type")
            if kind == "start" and event.get("resumed_from") is not None:
                cut = event["resumed_from"]
                movements = [m for m in movements if survives_resume(m.get("step", 0), cut)]
                if older is not None and not survives_resume(older.get("step", 0), cut):
                    return None
            if kind == "movement":
                movements.append(event)
            elif kind == "start":
                first_start = first_start or event
        status, start, end = lifecycle(events, (status, start, end))
        return replace(self, status=status, start=start, end=end, first_start=first_start,
                       movement=movements[-1] if movements else older)


_FOLDS: dict[str, EventsFold] = {}  # by events.jsonl path
_FOLDS_LOCK = threading.Lock()
_FOLDS_KEPT = 4096  # a store rebuild over more runs than this just folds the oldest again


def fold_events(path: Path) -> EventsFold:
    """The fold of the events file `path`, reading only what was appended since the last
    call for `path` (from any thread). The same figures as folding engine.events.run_events."""
    key = str(Path(path).absolute())
    try:
        stat = os.stat(key)
    except FileNotFoundError:
        with _FOLDS_LOCK:
            _FOLDS.pop(key, None)
        return EventsFold()
    with _FOLDS_LOCK:
        fold = _FOLDS.get(key)
    if fold is None or fold.inode != stat.st_ino or stat.st_size < fold.offset:
        fold = EventsFold(inode=stat.st_ino)  # new, replaced or truncated: from the top
    if stat.st_size == fold.offset:
        return fold
    events, offset = read_events(key, fold.offset)
    folded = fold.take(events)
    if folded is None:  # a resume reached back past what the fold keeps: fold the file again
        events, offset = read_events(key, 0)
        folded = EventsFold(inode=stat.st_ino).take(events)
    folded = replace(folded, offset=offset)
    with _FOLDS_LOCK:
        _FOLDS.pop(key, None)
        _FOLDS[key] = folded
        while len(_FOLDS) > _FOLDS_KEPT:
            del _FOLDS[next(iter(_FOLDS))]
    return folded


def record_from_folder(path: Path) -> dict[str, Any] | None:
    """The store record of the run in `path`, or None when `path` is not a run folder."""
    folder = RunFolder(path)
    if not path.is_dir() or len(path.name) != ID_LENGTH or not folder.spec_path.exists():
        return None
    problems: list[str] = []  # what makes the run corrupt, first found first
    spec = unless_corrupt(folder.spec, problems) or {}
    launch = read_json(path / LAUNCH_FILE) or {}
    fold = fold_events(folder.events_path)
    status, start, end, first_start = fold.status, fold.start, fold.end, fold.first_start
    if end and end_problem(end):
        problems.append(end_problem(end))
    summary = unless_corrupt(folder.summary, problems) if end else None  # a summary from before a resume is stale
    beat = read_heartbeat(path) if status in ACTIVE else None
    movement = {"steps": fold.movement["step"], "movement": fold.movement.get("subsets")} if fold.movement else {}
    figures = summary_figures(summary or movement)
    if beat and beat.get("phase") == "running":
        figures["step"] = max(figures.get("step") or 0, beat.get("step") or 0)
    record = {
        "run_id": folder.run_id,
        "experiment": start.get("experiment", launch.get("experiment")),
        "status": status,
        "digest": start.get("digest") or launch.get("digest"),
        "engine": run_engine_hash(first_start, start, launch),  # studies re-use runs of this code only
        "device": start.get("device", spec.get("device")),
        "pid": (beat or {}).get("pid") or start.get("pid") or launch.get("pid"),
        "host": (beat or {}).get("host") or start.get("host") or launch.get("host"),
        "created": launch.get("submitted") or first_start.get("time"),
        "launched": launch.get("launched"),  # the latest submit or resume: a sign of life before the first beat
        "heartbeat": (beat or {}).get("time"),
        "run_dir": str(path.resolve()),
        "error": end.get("error") if end else None,
        **spec_fields(spec),
        **figures,
    }
    if problems:  # told in `runs` and `show`; the other runs are listed as usual
        record.update(status=CORRUPT, error="; ".join(problems))
    return with_liveness(record)
