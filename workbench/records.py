"""Store records of runs: what the index keeps about a run, derived from its folder.

One function builds a record from a run folder (spec.json, the events' start and end,
summary.json), used both when a run finishes and when the store is rebuilt, so the two
can never disagree. Liveness lives here too: a record that says `running` whose process
is gone is reported `lost`, never running forever.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.events import run_events
from engine.run_folder import ID_LENGTH, RunFolder, read_json
from workbench.heartbeat import STALE_SECONDS, read_heartbeat

ACTIVE = ("queued", "running")
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
    for subset in ("subset", "fixed"):
        for metric in ("dist", "rel", "speed", "path", "cos"):
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


def lifecycle(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(status, newest start event, end event or None) from a run's events. The newest of
    `queued` (written at submit and at resume), `start` and `end` decides."""
    status, start, end = "queued", {}, None
    for event in events:
        kind = event.get("type")
        if kind == "queued":  # the process of an earlier start is not this attempt's
            status, start, end = "queued", {}, None
        elif kind == "start":
            status, start, end = "running", event, None
        elif kind == "end":
            status, end = event["status"], event
    return status, start, end


def latest_movement(events: list[dict[str, Any]]) -> dict[str, Any]:
    """`movement` as a summary holds it, from the newest movement record."""
    for event in reversed(events):
        if event.get("type") == "movement":
            return {"steps": event["step"], "movement": event["subsets"]}
    return {}


def record_from_folder(path: Path) -> dict[str, Any] | None:
    """The store record of the run in `path`, or None when `path` is not a run folder."""
    folder = RunFolder(path)
    if not path.is_dir() or len(path.name) != ID_LENGTH or not folder.spec_path.exists():
        return None
    spec = folder.spec() or {}
    launch = read_json(path / LAUNCH_FILE) or {}
    events = run_events(folder.events_path)
    status, start, end = lifecycle(events)
    first_start = next((e for e in events if e.get("type") == "start"), {})
    summary = folder.summary() if end else None  # a summary from before a resume is stale
    beat = read_heartbeat(path) if status in ACTIVE else None
    figures = summary_figures(summary or latest_movement(events))
    if beat and beat.get("phase") == "running":
        figures["step"] = max(figures.get("step") or 0, beat.get("step") or 0)
    record = {
        "run_id": folder.run_id,
        "experiment": start.get("experiment", launch.get("experiment")),
        "status": status,
        "digest": start.get("digest") or launch.get("digest"),
        "device": start.get("device", spec.get("device")),
        "pid": (beat or {}).get("pid") or start.get("pid") or launch.get("pid"),
        "host": (beat or {}).get("host") or start.get("host") or launch.get("host"),
        "created": launch.get("submitted") or first_start.get("time"),
        "heartbeat": (beat or {}).get("time"),
        "run_dir": str(path.resolve()),
        "error": end.get("error") if end else None,
        **spec_fields(spec),
        **figures,
    }
    return with_liveness(record)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a zombie (exited, not yet reaped by its parent) is dead too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True  # no /proc (macOS): existence is all we can know


def with_liveness(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """`queued`/`running` only while its process is alive: on this host the process must
    exist; on any host the heartbeat must be fresh."""
    if record.get("status") not in ACTIVE:
        return record
    if record.get("host") == socket.gethostname() and record.get("pid") and not process_alive(record["pid"]):
        return {**record, "status": "lost"}
    last_sign = record.get("heartbeat") or record.get("created")
    if last_sign and (now or time.time()) - last_sign > STALE_SECONDS:
        return {**record, "status": "lost"}
    return record
