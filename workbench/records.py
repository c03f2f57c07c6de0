"""Store records of runs: what the index keeps about a run, derived from its folder.

One function builds a record from a run folder (spec.json, the events' start and end,
summary.json), used both when a run finishes and when the store is rebuilt, so the two
can never disagree. Liveness (workbench.liveness) is applied to every record built: a
record that says `running` whose process is gone is reported `lost`, never running forever.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

# CORRUPT: a run file that does not hold what the folder layout says (an end event without
# one of the ENDED statuses, among others); `error` says which. lifecycle: re-exported.
from engine.events import CORRUPT, ENDED, EVENTS_FILE, EventsFold, lifecycle, read_events  # noqa: F401
from engine.provenance import run_engine_hash
from engine.run_folder import ID_LENGTH, RunFolder, read_json, unless_corrupt
from engine.vocabulary import METRICS, SUBSETS
from workbench.heartbeat import read_heartbeat
from workbench.liveness import ACTIVE, process_alive, with_liveness  # noqa: F401 (process_alive: re-exported)
from workbench.ray_node import node_of
from workbench.ray_waiting import waiting_beat
from workbench.tags import read_tags

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


def end_problem(end: dict[str, Any]) -> str | None:
    """Why an end event makes its run corrupt, or None when it is a proper end."""
    found = end.get("status")
    if found in ENDED:
        return None
    said = "no status" if found is None else f"the status {found!r}"
    return f"{EVENTS_FILE}: the end event at step {end.get('step')} has {said}, not one of {', '.join(ENDED)}"


_FOLDS: dict[str, EventsFold] = {}  # by events.jsonl path
_FOLDS_LOCK = threading.Lock()
_FOLDS_KEPT = 4096  # a store rebuild over more runs than this just folds the oldest again


def fold_events(path: Path) -> EventsFold:
    """The fold of the events file `path` (status, newest start, end, first start, newest
    standing movement), reading only what was appended since the last call for `path`
    (from any thread). Only the newest event of each kind is kept: a record needs no series."""
    key = str(Path(path).absolute())
    with _FOLDS_LOCK:
        fold = _FOLDS.get(key) or _FOLDS.setdefault(key, EventsFold(key, whole=()))
    with fold.lock:  # a fold is polled by one thread at a time; callers get a copy
        fold.poll(read=read_events)  # the name looked up here, so a test can count the reads
        found = fold.copy()
    with _FOLDS_LOCK:
        _FOLDS[key] = _FOLDS.pop(key, fold)  # the newest used last: the oldest go first
        while len(_FOLDS) > _FOLDS_KEPT:
            del _FOLDS[next(iter(_FOLDS))]
    return found


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
        "tags": read_tags(path),  # the researcher's labels (workbench/tags.py), kept in the folder
        **spec_fields(spec),
        **figures,
    }
    if launch.get("backend") == "ray":  # which node Ray put it on (none yet: waiting in Ray's queue)
        record.update(backend="ray", node=node_of(path).get("node_id"))
        if (launch.get("ray") or {}).get("keeper"):  # the newest sign that Ray still holds it (workbench/ray_waiting.py)
            record["ray_waiting"] = max(t for t in (waiting_beat(path), launch.get("launched"), 0.0) if t is not None)
    if problems:  # told in `runs` and `show`; the other runs are listed as usual
        record.update(status=CORRUPT, error="; ".join(problems))
    return with_liveness(record)
