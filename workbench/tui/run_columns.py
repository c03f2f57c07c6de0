"""The Runs table's columns: what each shows, how it sorts, and which show at which width.

At 80 columns the table shows what a researcher scans first (which run, how far, how good,
how soon done); from WIDE_COLUMNS on it adds the device, the movement and the age, and the
host and the tags when they say something (some run on another host or under Ray; some run
tagged)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text

from workbench.tables import STATUS_STYLE, any_elsewhere, run_host
from workbench.tui.feed import StepRates, age, duration, progress_bar, short_number

WIDE_COLUMNS = 120  # from here on the extra columns show
MARK = "●"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    cell: Callable[[dict[str, Any], StepRates], Any]
    sort: Callable[[dict[str, Any], StepRates], Any]  # None sorts last whichever the direction
    wide_only: bool = False
    shown_if: Callable[[list[dict[str, Any]]], bool] | None = None  # given the runs: whether the column says anything


COLUMNS = (
    Column("run", "run", lambda r, _: r["run_id"], lambda r, _: r["run_id"]),
    Column("experiment", "experiment", lambda r, _: clip(r.get("experiment") or "-", 13), lambda r, _: r.get("experiment")),
    Column("status", "status", lambda r, _: Text(r.get("status") or "?", style=STATUS_STYLE.get(r.get("status") or "", "")),
           lambda r, _: r.get("status")),
    Column("device", "device", lambda r, _: r.get("device") or "-", lambda r, _: r.get("device"), wide_only=True),
    # where the run is (its Ray node too): a shared logs dir shows every node's runs
    Column("host", "host", lambda r, _: clip(run_host(r), 16), lambda r, _: run_host(r) if r.get("host") else None,
           wide_only=True, shown_if=any_elsewhere),
    Column("seed", "seed", lambda r, _: str(r["seed"]) if r.get("seed") is not None else "-", lambda r, _: r.get("seed")),
    Column("step", "step", lambda r, _: progress_bar(r.get("step"), r.get("steps")), lambda r, _: r.get("step")),
    Column("acc", "eval acc", lambda r, _: percent(r.get("eval_acc")), lambda r, _: r.get("eval_acc")),
    Column("rate", "steps/s", lambda r, rates: short_number(rates.rate(r["run_id"])), lambda r, rates: rates.rate(r["run_id"])),
    Column("eta", "ETA", lambda r, rates: duration(rates.eta(r)), lambda r, rates: rates.eta(r)),
    Column("subset", "subset dist", lambda r, _: short_number(r.get("subset_dist")), lambda r, _: r.get("subset_dist"),
           wide_only=True),
    Column("fixed", "fixed dist", lambda r, _: short_number(r.get("fixed_dist")), lambda r, _: r.get("fixed_dist"),
           wide_only=True),
    Column("age", "age", lambda r, _: age(r.get("created")), lambda r, _: -(r.get("created") or 0), wide_only=True),
    Column("tags", "tags", lambda r, _: clip(" ".join(r.get("tags") or ()) or "-", 24),
           lambda r, _: " ".join(r.get("tags") or ()) or None, wide_only=True,
           shown_if=lambda records: any(r.get("tags") for r in records)),
)
BY_KEY = {column.key: column for column in COLUMNS}


def columns_for(width: int, records: list[dict[str, Any]] = ()) -> list[Column]:
    """The columns at `width` for `records` (every run, not only the filtered ones: the
    columns stay put while the filter is typed)."""
    return [c for c in COLUMNS if (width >= WIDE_COLUMNS or not c.wide_only) and (c.shown_if is None or c.shown_if(records))]


def row_cells(record: dict[str, Any], columns: list[Column], rates: StepRates, marked: bool = False) -> list[Any]:
    cells = [column.cell(record, rates) for column in columns]
    if marked:  # the run id cell carries the mark
        cells[0] = Text(f"{MARK} {record['run_id']}", style="bold yellow")
    return cells


def sorted_ids(records: dict[str, dict[str, Any]], ids: list[str], key: str | None, reverse: bool,
               rates: StepRates) -> list[str]:
    """`ids` ordered by column `key` (None: as given, newest first); runs without a value
    last in either direction, ties in the given order."""
    if key is None:
        return ids
    column = BY_KEY[key]
    valued = [i for i in ids if column.sort(records[i], rates) is not None]
    missing = [i for i in ids if i not in set(valued)]
    return sorted(valued, key=lambda i: column.sort(records[i], rates), reverse=reverse) + missing
