"""Sweeps: a study run over a grid of settings, one verdict per cell (imports no torch).

A study's `"sweep": {"optimizer.lr": [...], "partition.fraction": [...]}` makes every
combination of values a cell: a sub-study with the cell's values set in every arm
(engine.spec.sweep_cells). Each cell gets its own verdict from
workbench.verdict.study_verdict; what this module reads from one is its headline ratio
and interval (`headline`), so the grid shows the answer to the question in every cell.

    sweep_verdict   the JSON of a swept study: {"study", "sweep", "reference", "arms",
                    "seeds", "cells": [{"set": {...}, "verdict": {...}}], "notes"}
    grid_table      the CLI's grid: rows x columns for two keys, a list for one or three+
    write_sweep_report  README.md with a heatmap of the headline ratio, each cell's own
                    report (workbench.report) in cells/NN/
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

from engine.spec import ResolvedStudy
from workbench.verdict import fmt_ci, fmt_ratio, study_verdict

MARK = "*"  # the cell's 95% interval of the headline ratio excludes 1


def sweep_verdict(resolved: ResolvedStudy, cell_runs: list[dict[str, dict[int, Path]]]) -> dict[str, Any]:
    """One verdict per cell of `resolved` (cell_runs[i]: arm -> seed -> run folder of cell i)."""
    first = resolved.cells[0].study
    return {
        "study": resolved.name,
        "sweep": _sweep_values(resolved),
        "reference": resolved.reference,
        "arms": first.arms,
        "seeds": resolved.seeds,
        "cells": [
            {"set": cell.set, "verdict": study_verdict(resolved.name, runs, cell.study.reference)}
            for cell, runs in zip(resolved.cells, cell_runs)
        ],
        "notes": [],
    }


def _sweep_values(resolved: ResolvedStudy) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for cell in resolved.cells:
        for key, value in cell.set.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return values


def headline(verdict: dict[str, Any]) -> tuple[str, float | None, list[float] | None]:
    """(scope, ratio, 95% interval) of a cell's headline: the partitioned layers' `subset`
    where the verdict has that scope, else the whole `subset` (an older verdict's lead)."""
    lead = (verdict.get("headline") or {}).get("subset")
    scope = (verdict.get("headline") or {}).get("scope", "subset")
    if lead is None:
        subsets = verdict.get("subsets") or {}
        lead = subsets.get("subset") or next(iter(subsets.values()), {})
        scope = "subset"
    return scope, lead.get("ratio"), lead.get("ci")


def excludes_one(ci: list[float] | None) -> bool:
    return ci is not None and (ci[0] > 1 or ci[1] < 1)


def cell_text(verdict: dict[str, Any]) -> str:
    """'1.21*': the headline ratio, marked where its interval excludes 1 ('-' without one)."""
    _, ratio, ci = headline(verdict)
    return "-" if ratio is None else fmt_ratio(ratio) + (MARK if excludes_one(ci) else "")


def _label(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _layout(sweep: dict[str, Any]) -> tuple[list[str], list[tuple], list[Any]]:
    """(row keys, row value tuples, column values): the last key across, the others down."""
    keys = list(sweep["sweep"])
    rows = list(itertools.product(*(sweep["sweep"][k] for k in keys[:-1])))
    return keys[:-1], rows, sweep["sweep"][keys[-1]]


def _cell_at(sweep: dict[str, Any], row_keys: list[str], row: tuple, column_key: str, column: Any) -> dict | None:
    wanted = {**dict(zip(row_keys, row)), column_key: column}
    return next((c for c in sweep["cells"] if c["set"] == wanted), None)


def grid_table(sweep: dict[str, Any]):
    """A rich table of every cell's headline ratio: rows x columns for two swept keys, one
    row per cell (with its interval) otherwise; then the legend and any notes."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    keys = list(sweep["sweep"])
    scope = headline(sweep["cells"][0]["verdict"])[0] if sweep["cells"] else "subset"
    arm = next((a for a in sweep.get("arms", []) if a != sweep["reference"]), "arm")
    title = f"{sweep['study']}: {arm} / {sweep['reference']}, {scope} dist"
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    if len(keys) == 2:
        row_keys, rows, columns = _layout(sweep)
        table.add_column(f"{keys[0]} \\ {keys[1]}", no_wrap=True)
        for column in columns:
            table.add_column(_label(column), justify="right", no_wrap=True)
        for row in rows:
            cells = [_cell_at(sweep, row_keys, row, keys[1], column) for column in columns]
            table.add_row(_label(row[0]), *("-" if c is None else cell_text(c["verdict"]) for c in cells))
    else:
        for key in keys:
            table.add_column(key, no_wrap=True)
        for name in ("ratio", "95% CI", "n"):
            table.add_column(name, justify="right", no_wrap=True)
        for cell in sweep["cells"]:
            _, ratio, ci = headline(cell["verdict"])
            lead = (cell["verdict"].get("headline") or {}).get("subset") or {}
            n = lead.get("n", (cell["verdict"].get("subsets", {}).get("subset") or {}).get("n", "-"))
            table.add_row(*(_label(cell["set"][k]) for k in keys), cell_text(cell["verdict"]),
                          "-" if ci is None else fmt_ci(ci), str(n))
    parts: list[Any] = [table, Text(f"{MARK}: the 95% interval over seeds excludes 1", style="dim")]
    parts += [Text(f"note: {note}", style="yellow") for note in sweep.get("notes", [])]
    return Group(*parts)


# ---------------------------------------------------------------------------------------
# The report


def plot_heatmap(sweep: dict[str, Any]):
    """Headline ratio per cell on a log colour scale centred on 1, the value written in each
    cell with MARK where the interval excludes 1; None when no cell has a ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(sweep["sweep"])
    row_keys, rows, columns = _layout(sweep)
    grid = np.full((len(rows), len(columns)), np.nan)
    text = [["-"] * len(columns) for _ in rows]
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            cell = _cell_at(sweep, row_keys, row, keys[-1], column)
            if cell is None:
                continue
            _, ratio, _ = headline(cell["verdict"])
            if ratio is not None and ratio > 0:
                grid[i, j] = math.log2(ratio)
            text[i][j] = cell_text(cell["verdict"])
    if np.isnan(grid).all():
        return None
    limit = max(float(np.nanmax(np.abs(grid))), 0.05)
    figure, ax = plt.subplots(figsize=(1.4 + 1.1 * len(columns), 1.2 + 0.6 * len(rows)))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            dark = not np.isnan(grid[i, j]) and abs(grid[i, j]) > 0.6 * limit  # white on the deep colours
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), [_label(c) for c in columns])
    ax.set_xlabel(keys[-1])
    ax.set_yticks(range(len(rows)), [", ".join(_label(v) for v in row) or "-" for row in rows])
    ax.set_ylabel(", ".join(row_keys) or "")
    bar = figure.colorbar(image, ax=ax)
    bar.set_label("log2 ratio (0: as far as the reference)")
    scope = headline(sweep["cells"][0]["verdict"])[0]
    ax.set_title(f"{sweep['study']}: {scope} dist ratio ({MARK}: 95% CI excludes 1)", fontsize=10)
    return figure


def write_sweep_report(sweep: dict[str, Any], cell_runs: list[dict[str, dict[int, Path]]], out_dir: Path) -> Path:
    """README.md with the heatmap and the grid, and every cell's own report in cells/NN/."""
    import matplotlib.pyplot as plt

    from engine.run_folder import atomic_write
    from workbench.report import REPORT_FILE, write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Sweep `{sweep['study']}`", ""]
    figure = plot_heatmap(sweep)
    if figure is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        atomic_write(out_dir / "heatmap.png", lambda f: f.write(buffer.getvalue()))
        lines += ["![heatmap](heatmap.png)", ""]
    keys = list(sweep["sweep"])
    lines += ["| " + " | ".join([*keys, "ratio", "95% CI", "answer", "report"]) + " |",
              "|" + "---|" * len(keys) + "---:|---:|---|---|"]
    for index, (cell, runs) in enumerate(zip(sweep["cells"], cell_runs)):
        folder = f"cells/{index:02d}"
        write_report(cell["verdict"], runs, out_dir / folder)
        _, _, ci = headline(cell["verdict"])
        lines.append("| " + " | ".join([
            *(_label(cell["set"][k]) for k in keys), cell_text(cell["verdict"]), "-" if ci is None else fmt_ci(ci),
            cell["verdict"].get("answer", "-"), f"[{folder}]({folder}/{REPORT_FILE})",
        ]) + " |")
    lines += ["", f"Ratio: the headline movement ratio (dist) of the arm over {sweep['reference']}, per cell, "
              f"over seeds {', '.join(map(str, sweep['seeds']))}; {MARK}: its 95% interval excludes 1.", ""]
    if sweep.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in sweep["notes"]] + [""]
    path = out_dir / REPORT_FILE
    page = "\n".join(lines)
    atomic_write(path, lambda f: f.write(page.encode()))
    return path
