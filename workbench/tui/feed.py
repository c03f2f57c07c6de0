"""The TUI's data layer: the runs in the store, and one run's events and log followed as
they grow. Torch-free, UI-free and safe to call from a worker thread; unit-tested alone.

`EventsTail` is engine.events.EventsFold (reads only the bytes appended since its last
poll; a `start` event with `resumed_from` N drops what an earlier attempt wrote after step
N) plus the per-step series the charts draw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.events import EventsFold, survives_resume
from engine.run_folder import LOG_FILE  # noqa: F401  (the run screen tails it)
from engine.vocabulary import SUBSETS
from workbench.run_filter import matches  # noqa: F401  (the filter moved there; tests import it from here)
from workbench.runner import refresh_active
from workbench.store import Store
from workbench.tables import number

MOVEMENT_METRICS = ("dist", "speed", "cos")
EVAL_METRICS = ("train_loss", "eval_loss", "eval_acc")
PARAMS, WIDTH, MEMBER_ACC = "params", "width.", "member_acc."  # a pruned run's size; an ensemble's members
STATUSES = ("all", "running", "queued", "completed", "failed", "cancelled", "lost", "corrupt")


# --- the runs list ---------------------------------------------------------------------------
class RunFeed:
    """Every run in the store, newest first; active ones re-read from their folders."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = Path(logs_dir)

    def poll(self) -> list[dict[str, Any]]:
        if not self.logs_dir.is_dir():  # nothing run yet: do not create the folder just by looking
            return []
        records = refresh_active(Store(self.logs_dir))
        return sorted(records, key=lambda r: (r.get("created") or 0, r.get("run_id", "")), reverse=True)


def progress_bar(step: int | None, steps: int | None, width: int = 5) -> str:
    """`▰▰▱▱▱  40/100`: a short text bar and the step count."""
    if not steps:
        return f"{step if step is not None else '-'}/-"
    done = max(0, min(width, round(width * (step or 0) / steps)))
    return "▰" * done + "▱" * (width - done) + f" {step or 0}/{steps}"


def age(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return "-"
    return duration(max(0.0, (now or time.time()) - timestamp))


def short_number(value: Any, digits: int = 3) -> str:
    return number(value, digits)


# --- one run's events ----------------------------------------------------------------------------
@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: Any) -> None:
        if isinstance(value, (int, float)):
            self.steps.append(step)
            self.values.append(float(value))

    def keep(self, predicate) -> None:
        pairs = [(s, v) for s, v in zip(self.steps, self.values) if predicate(s)]
        self.steps = [s for s, _ in pairs]
        self.values = [v for _, v in pairs]

    def __len__(self) -> int:
        return len(self.steps)


class EventsTail(EventsFold):
    """A run's events.jsonl followed incrementally, with its series by name (`subset.dist`,
    `eval_acc`, ...). `version` grows whenever anything changed; `start`/`end` follow the
    run's lifecycle (engine.events.lifecycle)."""

    def reset(self) -> None:
        super().reset()
        self.series: dict[str, Series] = {f"{s}.{m}": Series() for s in SUBSETS for m in MOVEMENT_METRICS}
        self.series.update({m: Series() for m in EVAL_METRICS})
        self.step = 0

    @property
    def latest_movement(self) -> dict[str, Any] | None:
        return self.movement

    def layer_series(self, subset: str, metric: str) -> dict[str, Series]:
        """`metric` of every layer of `subset` over steps, by layer (in the order recorded)."""
        layers: dict[str, Series] = {}
        for event in self.standing("movement"):
            for layer, figures in (((event.get("subsets") or {}).get(subset) or {}).get("layers") or {}).items():
                layers.setdefault(layer, Series()).add(event["step"], (figures or {}).get(metric))
        return layers

    def family(self, prefix: str) -> dict[str, Series]:
        """The series named `prefix` + a name, by that name (`width.`: channels per conv
        layer of a pruned run; `member_acc.`: each ensemble member's eval accuracy)."""
        return {key.removeprefix(prefix): series for key, series in self.series.items() if key.startswith(prefix)}

    @property
    def prunes(self) -> bool:
        """Whether the run prunes channels (its widths are logged; movement is not tracked)."""
        return bool(self.family(WIDTH))

    def _add(self, key: str, step: int, value: Any) -> None:
        self.series.setdefault(key, Series()).add(step, value)

    def _take_pruning(self, step: int, params: Any, widths: dict[str, Any]) -> None:
        self._add(PARAMS, step, params)
        for layer, width in widths.items():
            self._add(WIDTH + layer, step, width)

    def take(self, event: dict[str, Any]) -> None:
        super().take(event)
        kind, step = event.get("type"), event.get("step")  # well_formed: a whole step where the kind has one
        if kind == "start":
            if event.get("widths"):
                self._take_pruning(step, event.get("params"), event["widths"])
            self.step = step
        elif kind == "movement":
            for subset in SUBSETS:
                figures = (event.get("subsets") or {}).get(subset) or {}
                for metric in MOVEMENT_METRICS:
                    self.series[f"{subset}.{metric}"].add(step, figures.get(metric))
        elif kind == "eval":
            for metric in EVAL_METRICS:
                self.series[metric].add(step, event.get(metric))
            for member, accuracy in enumerate(event.get("member_acc") or []):
                self._add(f"{MEMBER_ACC}{member}", step, accuracy)
        elif kind == "prune":
            self._take_pruning(step, event.get("params_after"), event.get("widths") or {})
        if isinstance(step, int) and kind != "start":
            self.step = max(self.step, step)

    def cut(self, cut: int) -> bool:
        for series in self.series.values():
            series.keep(lambda step: survives_resume(step, cut))
        self.step = cut
        return super().cut(cut)


class LogTail:
    """The last `limit` lines of a text file, read incrementally (a worker's worker.log)."""

    def __init__(self, path: Path, limit: int = 500) -> None:
        self.path = Path(path)
        self.limit = limit
        self.offset = 0
        self._partial = b""
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        """The complete lines appended since the last poll."""
        try:
            size = self.path.stat().st_size
            if size < self.offset:
                self.offset, self._partial = 0, b""
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        new = data[:cut].decode("utf-8", errors="replace").splitlines()
        self.lines = (self.lines + new)[-self.limit:]
        return new


class StepRates:
    """Steps per second of each running run, from two heartbeats of it (the heartbeat carries
    the worker's step and the time it was written, so the rate is the worker's own, not the
    poll's): what the Runs table's `steps/s` and `ETA` show. The rate is over the span
    between the last two heartbeats with different steps."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}  # run id -> (step, heartbeat time)
        self.rates: dict[str, float] = {}

    def observe(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            run_id, step, beat = record["run_id"], record.get("step"), record.get("heartbeat")
            if record.get("status") != "running" or not isinstance(step, int) or not beat:
                self.rates.pop(run_id, None)
                continue
            seen = self._seen.get(run_id)
            if seen and step > seen[0] and beat > seen[1]:
                self.rates[run_id] = (step - seen[0]) / (beat - seen[1])
            if not seen or step != seen[0]:
                self._seen[run_id] = (step, beat)

    def rate(self, run_id: str) -> float | None:
        return self.rates.get(run_id)

    def eta(self, record: dict[str, Any]) -> float | None:
        """Seconds left at the current rate (None: not running, or no rate yet)."""
        rate, steps, step = self.rate(record["run_id"]), record.get("steps"), record.get("step")
        if not rate or not steps or not isinstance(step, int):
            return None
        return max(0, steps - step) / rate


def duration(seconds: float | None) -> str:
    """`42s`, `7m`, `3h`: an ETA at a glance."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
