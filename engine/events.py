"""Run events: one JSON object per line in `events.jsonl`, append-only (imports no torch).

Kinds of event (field `type`):
    queued    written by the runner when a run is submitted or resumed (no step)
    start     step 0 (or the step resumed from, with `resumed_from`): run_id, experiment,
              digest, device, pid, host, time, subset sizes, and `provenance`: {engine_hash
              (sha256 of engine/*.py, 16 hex), git_commit, git_dirty (None without git),
              torch, cuda} (engine/provenance.py; absent in runs made before it existed).
              The learning rate is the spec's `optimizer.lr` (spec.json).
    movement  step, subsets: {subset: {dist, rel, speed, path, cos, grad, layers: {layer: {...}}}};
              `grad` = ||loss gradient of that step|| over the subset's (layer's) coordinates,
              before the optimizer step, without weight decay (engine/tracking.py); absent
              where not measured (step 0, a cancelled run's last record, old runs)
    eval      step, train_loss (mean minibatch loss since the last eval), eval_loss, eval_acc
    checkpoint step, path (relative to the run folder)
    end       step, status (completed | cancelled | failed), error (when failed)

Lines are flushed as written, so a reader (the CLI, the TUI, another process) sees every
complete record; a line cut short by a crash, or any line that is not an event (not UTF-8,
not JSON, not an object, a step that is not a whole number), is skipped by the reader,
never fatal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

EVENTS_FILE = "events.jsonl"
STEPPED = ("start", "movement", "eval", "checkpoint", "end", "prune")  # kinds that carry a `step`


class EventWriter:
    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        event.setdefault("time", time.time())
        self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte `offset` on, and the offset to continue from (for tailing)."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return [], offset
    events = []
    end = data.rfind(b"\n") + 1  # a trailing partial line is a write in progress (or a crash)
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
            continue  # a torn line from a crash mid-write, or garbage: skip it, keep the rest
        if well_formed(event):
            events.append(event)
    return events, offset + end


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def well_formed(event: Any) -> bool:
    """Whether a decoded line is an event every reader can take: an object whose `step` (in
    the kinds that carry one) and `resumed_from` are whole numbers. Readers index these
    fields directly, so a line without them is skipped here, once, for all of them."""
    if not isinstance(event, dict):
        return False
    if event.get("type") in STEPPED and not _whole(event.get("step")):
        return False
    return event.get("resumed_from") is None or _whole(event["resumed_from"])


def iter_events(path: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    events, _ = read_events(path)
    return (event for event in events if kind is None or event.get("type") == kind)


def survives_resume(step: int, cut: int) -> bool:
    """Whether a record of `step` stands after the run resumed from step `cut`: resumed from
    saved state at step N, the records up to N stand; restarted from scratch (N = 0), step
    0 is recorded again too. The one rule every reader of a resumed run's events applies."""
    return step < cut or 0 < cut == step


def run_events(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The events of the run as it stands: when a run was resumed from step N, what an
    earlier attempt wrote after step N was computed again, so only the newer copy is kept."""
    events, _ = read_events(path)
    kept: list[dict[str, Any]] = []
    for event in events:
        if event.get("type") == "start" and event.get("resumed_from") is not None:
            cut = event["resumed_from"]
            kept = [
                e for e in kept
                if e.get("type") == "start" or (e.get("type") != "end" and survives_resume(e.get("step", 0), cut))
            ]
        kept.append(event)
    return [event for event in kept if kind is None or event.get("type") == kind]


def last_event(path: str | Path, kind: str) -> dict[str, Any] | None:
    found = None
    for found in iter_events(path, kind):
        pass
    return found


def describe_event(event: dict) -> str | None:
    """A log line for the events worth a line (movement records stay in events.jsonl)."""
    kind, step = event.get("type"), event.get("step")
    if kind == "start":
        sizes = event["subset_sizes"]
        verb = f"resume run {event['run_id']} at step {step}" if event.get("resumed_from") is not None else f"start run {event['run_id']}"
        return (
            f"{verb} ({event['experiment']}) on {event['device']}: "
            f"{sizes['subset']} coordinates in subset, {sizes['fixed']} fixed"
        )
    if kind == "eval":
        train = "n/a" if event["train_loss"] is None else f"{event['train_loss']:.4f}"
        return f"step {step}: train_loss {train} eval_loss {event['eval_loss']:.4f} eval_acc {event['eval_acc']:.4f}"
    if kind == "checkpoint":
        return f"step {step}: checkpoint {event['path']}"
    if kind == "end":
        return f"step {step}: {event['status']}" + (f": {event['error']}" if event.get("error") else "")
    return None
