"""Rich renderables for the CLI: run lists, one run's detail, the experiments catalogue."""

from __future__ import annotations

import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "cancelled": "yellow",
    "failed": "bold red",
    "lost": "bold magenta",
    "queued": "dim",
}
METRICS = ("dist", "rel", "speed", "path", "cos")


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def runs_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="runs", header_style="bold")
    for column in ("run", "experiment", "status", "freeze", "partition", "step", "eval acc", "subset dist", "fixed dist", "started"):
        table.add_column(column, justify="right" if column in ("step", "eval acc", "subset dist", "fixed dist") else "left")
    for r in records:
        partition = f"{r.get('strategy') or '-'} {number(r.get('fraction'), 2)}"
        step = f"{number(r.get('step'))}/{number(r.get('steps'))}"
        table.add_row(
            r["run_id"],
            r.get("experiment") or "-",
            status_text(r.get("status", "?")),
            "yes" if r.get("freeze") else "no",
            partition,
            step,
            number(r.get("eval_acc"), 3),
            number(r.get("subset_dist")),
            number(r.get("fixed_dist")),
            _when(r.get("created")),
        )
    return table


def record_header(record: dict[str, Any], spec: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    partition = spec.get("partition", {})
    rows = [
        ("run", record["run_id"]),
        ("experiment", record.get("experiment") or "-"),
        ("status", status_text(record.get("status", "?"))),
        ("device", record.get("device") or "-"),
        ("model", f"{spec.get('model', {}).get('name')} width {spec.get('model', {}).get('width')}"),
        ("data", spec.get("data", {}).get("name", "-")),
        ("optimizer", " ".join(f"{k}={v}" for k, v in spec.get("optimizer", {}).items())),
        ("partition", " ".join(f"{k}={v}" for k, v in partition.items() if v not in ([], None))),
        ("freeze", str(spec.get("freeze"))),
        ("seed", str(spec.get("seed"))),
        ("folder", record.get("run_dir") or "-"),
    ]
    if record.get("error"):
        rows.append(("error", Text(record["error"], style="red")))
    for key, value in rows:
        table.add_row(key, value)
    return table


def movement_table(movement: dict[str, Any]) -> Table:
    table = Table(title="weight movement (from init)", header_style="bold")
    table.add_column("subset")
    table.add_column("layer")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for subset, figures in movement.items():
        table.add_row(Text(subset, style="bold"), "all", *(number(figures.get(m)) for m in METRICS))
        for layer, layer_figures in figures.get("layers", {}).items():
            table.add_row("", layer, *(number(layer_figures.get(m)) for m in METRICS))
    return table


def run_detail(summary: dict[str, Any], folder: RunFolder) -> Group:
    final = summary.get("final", {})
    headline = Text.assemble(
        ("run ", "bold"),
        (summary.get("run_id", folder.run_id), "bold cyan"),
        f"  {summary.get('experiment')}  ",
        status_text(summary.get("status", "?")),
        f"  step {summary.get('steps')}/{summary.get('planned_steps')}",
        f"  train_loss {number(final.get('train_loss'))}",
        f"  eval_loss {number(final.get('eval_loss'))}",
        f"  eval_acc {number(final.get('eval_acc'))}",
        f"  {number(summary.get('steps_per_second'))} steps/s",
    )
    return Group(headline, movement_table(summary.get("movement", {})), Text(f"folder: {folder.path}", style="dim"))


def experiments_table(specs: dict[str, ExperimentSpec]) -> Table:
    table = Table(title="experiments", header_style="bold")
    for column in ("name", "freeze", "partition", "model", "data", "optimizer", "steps"):
        table.add_column(column)
    for name, spec in specs.items():
        p, o = spec.partition, spec.optimizer
        partition = f"{p.strategy} {p.fraction:g}" + (" +fc" if p.include_fc else "")
        if p.strategy == "layers":
            partition = f"layers {','.join(p.layers)}"
        table.add_row(
            name,
            "yes" if spec.freeze else "no",
            partition,
            f"{spec.model.name} w{spec.model.width}",
            spec.data.name,
            f"{o.name} lr {o.lr:g}",
            str(spec.train.steps),
        )
    return table
