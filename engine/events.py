"""Run events: one JSON object per line in `events.jsonl`, append-only (imports no torch).

Kinds of event (field `type`; each has a TypedDict below, registered in KINDS):
    queued    written by the runner when a run is submitted or resumed (no step): time
    start     step 0 (or the step resumed from, with `resumed_from`): run_id, experiment,
              digest, device, pid, host, time, subset_sizes {subset, fixed}; a pruned run
              adds `params` and `widths` {conv layer: channels}; and `provenance`:
              {engine_hash (sha256 of engine/*.py, 16 hex), git_commit, git_dirty (None
              without git), torch, cuda} (engine/provenance.py; absent in runs made before
              it existed). The learning rate is the spec's `optimizer.lr` (spec.json).
    movement  step, subsets: {subset: {dist, rel, speed, path, cos, grad, layers: {layer: {...}}}};
              `grad` = ||loss gradient of that step|| over the subset's (layer's) coordinates,
              before the optimizer step, without weight decay (engine/tracking.py); absent
              where not measured (step 0, a cancelled run's last record, old runs)
    eval      step, train_loss (mean minibatch loss since the last eval), eval_loss, eval_acc;
              an ensemble adds member_acc [one per member]; an EASGD ensemble center_loss and
              center_acc (engine/easgd.py); soft weight sharing prior_nll, mixture {pi, mu,
              log_var} and weights_hist {low, high, counts, n}: the covered weights' counts in
              equal bins over [low, high] (engine/soft_sharing.py)
    checkpoint step, path (relative to the run folder)
    prune     step, params_before, params_after, widths {conv layer: channels}, and what the
              pruner reports (engine/pruning.py)
    end       step, status (completed | cancelled | failed), error (when failed)
    phase     step, phase, masks (digest), fixed: a phase of a changing partition starts
              (engine/phases.py; spec.schedule)
    phase_movement  step, phase, start_step, subsets: {subset: {dist, speed, size, layers}}: how far
              the phase moved the coordinates of each subset of its own masks, from its start
    basin     step, train_loss (whole training split): a run continuing another (spec.init.run)
    interpolation  step, alpha [21], train_loss [21]: the loss on the line from its start to its
              end weights (engine/basin.py)
Every event also carries `time` (seconds since the epoch, set by EventWriter).

Lines are flushed as written, so a reader (the CLI, the TUI, another process) sees every
complete record; a line cut short by a crash, or any line that is not an event (not UTF-8,
not JSON, not an object, a step that is not a whole number), is skipped by the reader,
never fatal. A kind not listed here (a newer engine's, or an older one's) is passed
through untouched.

One reader: `EventsFold` follows a file incrementally and applies the resume rule
(`survives_resume`); the store records (workbench.records), the TUI's charts
(workbench.tui.feed.EventsTail) and the verdict (run_events) all read through it.

A new kind of event is added here, in one place: write a TypedDict for it (with `step` if
it has one: the fold then checks it is a whole number and drops it when a resume redoes
its step) and register it in KINDS. Every reader then sees it: `fold.standing(kind)`,
`run_events(path, kind)`; the TUI draws a series of it once EventsTail.take names it.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypedDict

EVENTS_FILE = "events.jsonl"
ENDED = ("completed", "cancelled", "failed")  # the statuses an end event may carry
CORRUPT = "corrupt"  # the status of a run whose end event carries none of ENDED


# --- the kinds of event (typed records; the events themselves stay plain dicts) ----------------
class Queued(TypedDict, total=False):
    type: str
    time: float


class Stepped(TypedDict):
    type: str
    step: int  # a whole number, checked by well_formed


class Start(Stepped, total=False):
    time: float
    resumed_from: int  # the step resumed from (0: restarted from scratch)
    run_id: str
    experiment: str
    digest: str
    device: str
    pid: int
    host: str
    subset_sizes: dict[str, int]
    params: int
    widths: dict[str, int]
    provenance: dict[str, Any]  # engine_hash, git_commit, git_dirty, torch, cuda


class Movement(Stepped, total=False):
    time: float
    subsets: dict[str, dict[str, Any]]  # subset -> dist, rel, speed, path, cos, grad, layers


class Eval(Stepped, total=False):
    time: float
    train_loss: float | None
    eval_loss: float
    eval_acc: float
    member_acc: list[float]
    center_loss: float
    center_acc: float
    prior_nll: float
    mixture: dict[str, list[float]]
    weights_hist: dict[str, Any]  # low, high, counts, n


class Checkpoint(Stepped, total=False):
    time: float
    path: str


class Prune(Stepped, total=False):
    time: float
    params_before: int
    params_after: int
    widths: dict[str, int]


class End(Stepped, total=False):
    time: float
    status: str  # one of ENDED
    error: str


class Phase(Stepped, total=False):
    time: float
    phase: int  # 0, 1, ...: which phase of a changing partition starts at `step`
    masks: str  # engine.phase_masks.masks_digest of its masks (masks/phase_NNN.pt)
    fixed: int  # how many coordinates it fixes


class PhaseMovement(Stepped, total=False):
    time: float
    phase: int  # the phase that ends at `step`
    start_step: int  # the step its start weights were taken at (it trained start_step+1 .. step)
    subsets: dict[str, dict[str, Any]]  # subset of the phase's masks -> dist, speed, size, layers


class Basin(Stepped, total=False):
    time: float
    train_loss: float  # on the whole training split, eval mode (engine/basin.py)


class Interpolation(Stepped, total=False):
    time: float
    alpha: list[float]  # 0 .. 1: the start (converged) weights .. the final weights
    train_loss: list[float]  # on the whole training split at each alpha


KINDS: dict[str, type] = {
    "queued": Queued, "start": Start, "movement": Movement, "eval": Eval,
    "checkpoint": Checkpoint, "prune": Prune, "end": End,
    "phase": Phase, "phase_movement": PhaseMovement, "basin": Basin, "interpolation": Interpolation,
}


def stepped(kind: Any) -> bool:
    """Whether events of `kind` carry a `step` (their TypedDict requires one)."""
    record = KINDS.get(kind)
    return record is not None and "step" in record.__required_keys__


Lifecycle = tuple[str, dict[str, Any], dict[str, Any] | None]


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
    if stepped(event.get("type")) and not _whole(event.get("step")):
        return False
    return event.get("resumed_from") is None or _whole(event["resumed_from"])


def iter_events(path: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Every well-formed event in file order, of every attempt (no resume rule): for tests
    and tools that inspect what was written. Readers of the run as it stands use run_events."""
    events, _ = read_events(path)
    return (event for event in events if kind is None or event.get("type") == kind)


def survives_resume(step: int, cut: int) -> bool:
    """Whether a record of `step` stands after the run resumed from step `cut`: resumed from
    saved state at step N, the records up to N stand; restarted from scratch (N = 0), step
    0 is recorded again too. The one rule every reader of a resumed run's events applies."""
    return step < cut or 0 < cut == step


def lifecycle(events: Iterable[dict[str, Any]], before: Lifecycle = ("queued", {}, None)) -> Lifecycle:
    """(status, newest start event, end event or None) from a run's events (following on
    from `before`, the lifecycle of the events before them). The newest of `queued`
    (written at submit and at resume), `start` and `end` decides. An end event without one
    of the ENDED statuses makes the run CORRUPT."""
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


class EventsFold:
    """A run's events.jsonl followed incrementally: the one place that reads the file.

    `poll()` reads only the bytes appended since the last poll (a replaced file, told by its
    inode, or a truncated one is folded again from the top) and hands each event to
    `take`, and each resume (a start with `resumed_from` N) to `cut(N)` before its start.
    The base fold keeps the run as it stands: `kept` is every event that survives the
    resumes, in file order (`standing(kind)`, `newest(kind)`), or, for kinds not in
    `whole`, only the newest (the runs list folds thousands of runs and needs the newest
    movement only; when a resume drops it, the file is folded again from the top). Plus
    the lifecycle (status, newest start, end) and the first start ever written.
    Subclasses (the TUI's EventsTail) extend `take`, `cut` and `reset`."""

    def __init__(self, path: str | Path, whole: Iterable[str] | None = None) -> None:
        path = Path(path)
        self.path = path / EVENTS_FILE if path.is_dir() else path
        self.whole = None if whole is None else frozenset(whole)  # None: every kind whole
        self.version = 0  # grows whenever anything changed
        self.lock = threading.Lock()  # for a caller that polls one fold from several threads
        self.reset()

    def reset(self) -> None:
        self.inode, self.offset = 0, 0
        self.kept: list[dict[str, Any]] = []  # the standing events, in file order
        self.trimmed: set[str] = set()  # kinds whose older standing events were let go
        self.status, self.start, self.end = lifecycle(())
        self.first_start: dict[str, Any] = {}

    def copy(self) -> EventsFold:
        """A snapshot that later polls of this fold leave as it is."""
        found = copy.copy(self)
        found.kept, found.trimmed = list(self.kept), set(self.trimmed)
        return found

    @property
    def movement(self) -> dict[str, Any] | None:
        """The newest movement record that stands (the figures a run's record shows)."""
        return self.newest("movement")

    def standing(self, kind: str) -> list[dict[str, Any]]:
        """The events of `kind` that stand after every resume, in file order."""
        return [event for event in self.kept if event.get("type") == kind]

    def newest(self, kind: str) -> dict[str, Any] | None:
        return next((event for event in reversed(self.kept) if event.get("type") == kind), None)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        self.status, self.start, self.end = lifecycle((event,), (self.status, self.start, self.end))
        if kind == "start":
            self.first_start = self.first_start or event
        self.kept.append(event)

    def cut(self, cut: int) -> bool:
        """Drop what an earlier attempt wrote after step `cut` (every start stands, no end
        does). False when a kind kept only its newest event and lost it: an older one may
        stand again, so the file must be folded from the top."""
        kept, lost = [], set()
        for event in self.kept:
            kind = event.get("type")
            step = event.get("step", 0)
            step = step if _whole(step) else 0  # a kind not in KINDS may carry any step
            if kind == "start" or (kind != "end" and survives_resume(step, cut)):
                kept.append(event)
            else:
                lost.add(kind)
        if lost & self.trimmed - {"end"}:  # an end never stands after a resume, nor an older one
            return False
        self.kept = kept
        return True

    def _fold(self, events: list[dict[str, Any]]) -> bool:
        for event in events:
            if event.get("type") == "start" and event.get("resumed_from") is not None:
                if not self.cut(event["resumed_from"]):
                    return False
            self.take(event)
        if self.whole is not None:  # trimmed after the batch, so a batch never needs a second fold
            seen: set[Any] = set()
            kept = []
            for event in reversed(self.kept):
                kind = event.get("type")
                if kind in self.whole or kind not in seen:
                    kept.append(event)
                else:
                    self.trimmed.add(kind)
                seen.add(kind)
            self.kept = kept[::-1]
        return True

    def poll(self, read: Callable[..., tuple[list[dict[str, Any]], int]] | None = None) -> bool:
        """Fold what was appended since the last poll; True when anything changed. `read` is
        read_events (a caller may pass a counting one)."""
        read = read or read_events
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:  # not written yet, or the folder was removed
            changed = bool(self.offset or self.kept)
            if changed:
                self.reset()
            return self._changed(changed)
        changed = False
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            if self.offset or self.kept:  # replaced or truncated: from the top
                changed = True
            self.reset()
            self.inode = stat.st_ino
        if stat.st_size == self.offset:
            return self._changed(changed)
        events, offset = read(self.path, self.offset)
        if not self._fold(events):  # a resume reached back past what this fold keeps
            self.reset()
            self.inode = stat.st_ino
            events, offset = read(self.path, 0)
            self._fold(events)
        self.offset = offset
        return self._changed(changed or bool(events))

    def _changed(self, changed: bool) -> bool:
        self.version += changed
        return changed


def run_events(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The events of the run as it stands: when a run was resumed from step N, what an
    earlier attempt wrote after step N was computed again, so only the newer copy is kept."""
    fold = EventsFold(path)
    fold.poll()
    return fold.kept if kind is None else fold.standing(kind)


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
