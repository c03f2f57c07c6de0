"""Progress of a foreground run: a rich bar on a terminal, plain lines when piped or logged."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from engine.events import describe_event
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_SECONDS = 10.0  # when piped, a line at most this often (plus one per eval)


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self.progress, self.task = progress, task

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def event(self, event: dict) -> None:
        if event["type"] == "start":
            self.progress.update(self.task, status=f"on {event['device']}")
        elif event["type"] == "eval":
            self.progress.update(self.task, status=f"eval_acc {event['eval_acc']:.3f}  eval_loss {event['eval_loss']:.3f}")


class _Lines:
    def __init__(self, total: int, label: str, console: Console) -> None:
        self.total, self.label, self.console = total, label, console
        self.started = self.last = time.monotonic()

    def advance(self, step: int) -> None:
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY_SECONDS:
            self.last = now
            rate = step / (now - self.started)
            self.console.print(f"{self.label}: step {step}/{self.total} ({rate:.1f} steps/s)", highlight=False)

    def event(self, event: dict) -> None:
        line = describe_event(event)
        if line:
            self.console.print(f"{self.label}: {line}", highlight=False)


@contextmanager
def run_progress(total: int, label: str, console: Console) -> Iterator[_Bar | _Lines]:
    if not console.is_terminal:
        yield _Lines(total, label, console)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(label, total=total, status=""))


def follow_runs(labels: dict[str, Path], console: Console, poll_seconds: float = 0.5) -> dict[str, dict]:
    """Wait for background runs to end, showing each run's progress (a bar per run on a
    terminal; a line per status change otherwise). Returns label -> final record."""
    from workbench.records import ACTIVE, record_from_folder

    def read() -> dict[str, dict]:
        return {label: record_from_folder(path) for label, path in labels.items()}

    records = read()
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=console, transient=False) as progress:
            tasks = {
                label: progress.add_task(f"{label} {r['run_id']}", total=r.get("steps") or 1, status=r["status"])
                for label, r in records.items()
            }
            while True:
                for label, r in records.items():
                    progress.update(tasks[label], completed=r.get("step") or 0, status=r["status"])
                if not any(r["status"] in ACTIVE for r in records.values()):
                    return records
                time.sleep(poll_seconds)
                records = read()
    seen: dict[str, str] = {}
    while True:
        for label, r in records.items():
            if seen.get(label) != r["status"]:
                seen[label] = r["status"]
                console.print(f"{label} {r['run_id']}: {r['status']}", highlight=False)
        if not any(r["status"] in ACTIVE for r in records.values()):
            return records
        time.sleep(poll_seconds)
        records = read()
