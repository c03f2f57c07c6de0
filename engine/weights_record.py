"""Reading `snapshots.jsonl` (engine/weight_snapshots.py writes it), torch-free: the TUI's
Weights tab and the report read it. What a record holds is told there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOTS_FILE = "snapshots.jsonl"


def read_snapshots(path: str | Path) -> list[dict[str, Any]]:
    """The snapshots in step order, one per step: the line written last wins (a resumed run
    writes a step again); a torn last line (a writer killed mid-line) and blank lines are
    skipped. [] when there is no file."""
    by_step: dict[int, dict[str, Any]] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def kernel_range(snapshots: list[dict[str, Any]]) -> float:
    """The largest |w| of the first conv kernels over every snapshot: one colour scale for
    the whole run (a kernel's colour means the same value at every step)."""
    reach = 0.0
    for record in snapshots:
        for kernel in (record.get("kernels") or {}).get("values") or []:
            for channel in kernel:
                for row in channel:
                    reach = max(reach, *(abs(v) for v in row))
    return reach or 1.0
