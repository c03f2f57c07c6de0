"""Store records of runs: what the index keeps about a run, derived from its folder.

One function builds a record from a run folder (spec.json, the events' start and end,
summary.json), used both when a run finishes and when the store is rebuilt, so the two
can never disagree. Liveness lives here too: a record that says `running` whose process
is gone is reported `lost`, never running forever.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from engine.events import iter_events, last_event
from engine.run_folder import ID_LENGTH, RunFolder

ACTIVE = ("running",)


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


def record_from_folder(path: Path) -> dict[str, Any] | None:
    """The store record of the run in `path`, or None when `path` is not a run folder."""
    folder = RunFolder(path)
    if not path.is_dir() or len(path.name) != ID_LENGTH or not folder.spec_path.exists():
        return None
    spec = folder.spec() or {}
    start = next(iter_events(folder.events_path, "start"), {})
    end = last_event(folder.events_path, "end")
    summary = folder.summary()
    status = end["status"] if end else "running"
    record = {
        "run_id": folder.run_id,
        "experiment": start.get("experiment"),
        "status": status,
        "digest": start.get("digest"),
        "device": start.get("device", spec.get("device")),
        "pid": start.get("pid"),
        "host": start.get("host"),
        "created": start.get("time"),
        "run_dir": str(path.resolve()),
        "error": end.get("error") if end else None,
        **spec_fields(spec),
        **summary_figures(summary),
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
    return True


def with_liveness(record: dict[str, Any]) -> dict[str, Any]:
    """`running` only while its process is alive (checked where that can be known: this host)."""
    if record.get("status") in ACTIVE and record.get("host") == socket.gethostname():
        if not process_alive(record.get("pid")):
            return {**record, "status": "lost"}
    return record
