"""Rich renderables for the CLI: run lists, one run's detail, the experiments catalogue."""

from __future__ import annotations

import datetime
import socket
import json
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.choices import PARTITIONS
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec, PartitionSpec
from engine.vocabulary import METRICS

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "cancelled": "yellow",
    "failed": "bold red",
    "lost": "bold magenta",
    "queued": "dim",
    "corrupt": "bold red reverse",  # a run file is unreadable: the run's figures cannot be trusted
}


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _when(timestamp: float | None, short: bool = False) -> str:
    if not timestamp:
        return "-"
    when = datetime.datetime.fromtimestamp(timestamp)
    if short:  # today: the time; earlier: the date
        return when.strftime("%H:%M" if when.date() == datetime.date.today() else "%b %d")
    return when.strftime("%Y-%m-%d %H:%M")


def run_host(record: dict[str, Any]) -> str:
    """Where a run is: its host, and under Ray the start of its node's id (nodes may share a host)."""
    node = f":{record['node'][:6]}" if record.get("node") else ""
    return f"{record.get('host') or '-'}{node}"


def any_elsewhere(records: list[dict[str, Any]]) -> bool:
    """Whether some run ran on another host or under Ray (a shared logs dir, a cluster): then
    tables show a host column, which would only repeat this host's name otherwise."""
    return any(r.get("backend") == "ray" or r.get("host") not in (None, socket.gethostname()) for r in records)


def experiment_text(record: dict[str, Any]) -> Text:
    """The experiment's name, then the run's tags (`#tag`, dim): in the column that gives way
    first at 80 columns, so tags never push a figure off the line (`--json` has them whole)."""
    text = Text(record.get("experiment") or "-")
    for tag in record.get("tags") or ():
        text.append(f" #{tag}", style="dim")
    return text


def runs_table(records: list[dict[str, Any]]) -> Table:
    # Fits 80 columns: one space between columns, ids never wrap, the experiment name gives
    # way first, and the pid column only appears while some run is alive.
    live = any(r.get("status") in ("queued", "running") for r in records)
    hosts = any_elsewhere(records)
    table = Table(title="runs", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("run", no_wrap=True, min_width=8)
    table.add_column("experiment", overflow="ellipsis", no_wrap=True, min_width=8, max_width=20, ratio=1)
    for name in ("status", "device", *(("host",) if hosts else ()), *(("pid",) if live else ())):
        table.add_column(name, no_wrap=True, justify="right" if name == "pid" else "left")
    for name in ("step", "acc", "subset", "fixed"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("when", no_wrap=True)
    for r in records:
        alive = r.get("status") in ("queued", "running")
        table.add_row(
            r["run_id"],
            experiment_text(r),
            status_text(r.get("status", "?")),
            r.get("device") or "-",
            *((run_host(r),) if hosts else ()),
            *((str(r["pid"]) if alive and r.get("pid") else "",) if live else ()),
            f"{number(r.get('step'))}/{number(r.get('steps'))}",
            number(r.get("eval_acc"), 3),
            number(r.get("subset_dist"), 3),
            number(r.get("fixed_dist"), 3),
            _when(r.get("created"), short=True),
        )
    table.caption = "subset, fixed: distance each has moved from its initial weights"
    return table


def cluster_table(nodes: list[dict[str, Any]]) -> Table:
    """`workbench cluster`: a row per Ray node and the live runs the run folders place on it."""
    table = Table(title="ray cluster", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for name in ("node", "host", "address", "state", "cpus", "gpus", "resources", "runs"):
        table.add_column(name, no_wrap=name != "runs", justify="right" if name in ("cpus", "gpus") else "left")
    for node in nodes:
        table.add_row(
            node["node_id"][:8], node.get("host") or "-", node.get("address") or "-",
            "alive" if node["alive"] else "[red]dead[/red]", number(node["cpus"]), number(node["gpus"]),
            ", ".join(node["resources"]) or "-", " ".join(node["runs"]) or "-",
        )
    table.caption = "runs: queued or running runs whose actor Ray started on the node"
    return table


def runs_view(records: list[dict[str, Any]]) -> Group:
    """The runs table, then one line per run with an error (failed, corrupt, lost): the
    reason cut to the terminal's width, in full in `workbench show RUN_ID`."""
    with_error = [r for r in records if r.get("error")]
    if not with_error:
        return Group(runs_table(records))
    lines = [Text("why (in full: workbench show RUN_ID)", style="bold")]
    for r in with_error:
        reason = " ".join(str(r["error"]).split())  # one line: a multi-line sentence would wrap
        lines.append(
            Text.assemble(r["run_id"], " ", status_text(r.get("status", "?")), f" {reason}", no_wrap=True, overflow="ellipsis")
        )
    return Group(runs_table(records), *lines)


def record_header(record: dict[str, Any], spec: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long folder path or error in full, folded, never cut
    partition = _section(spec, "partition")
    rows = [
        ("run", record["run_id"]),
        ("experiment", record.get("experiment") or "-"),
        ("status", status_text(record.get("status", "?"))),
        ("device", record.get("device") or "-"),
        ("model", f"{_section(spec, 'model').get('name')} width {_section(spec, 'model').get('width')}"),
        ("data", str(_section(spec, "data").get("name", "-"))),
        ("optimizer", " ".join(f"{k}={v}" for k, v in _section(spec, "optimizer").items())),
        ("partition", " ".join(f"{k}={v}" for k, v in partition.items() if v not in ([], None))),
        ("freeze", str(spec.get("freeze"))),
        *[(key, " ".join(f"{k}={v}" for k, v in section.items())) for key, section in _soft_sections(spec)],
        ("seed", str(spec.get("seed"))),
        ("folder", record.get("run_dir") or "-"),
    ]
    if record.get("error"):
        rows.append(("error", Text(str(record["error"]), style="red")))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _soft_sections(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """EASGD coupling and the weight prior, named where a run uses them."""
    coupling = _section(_section(spec, "ensemble"), "coupling")
    regularizer = _section(spec, "regularizer")
    return [(key, section) for key, section, off in (("coupling", coupling, "mode"), ("regularizer", regularizer, "name"))
            if section.get(off, "none") != "none"]


def quantize_table(result: dict[str, Any]) -> Table:
    """`workbench quantize`: accuracy before and after snapping, and the compression figures."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    covered = f"{result['covered_weights']:,} weights ({result['covers']} coordinates the prior covered)"
    compression = result["compression"]
    for key, value in (
        ("run", result["run_id"]),
        ("eval acc", f"{result['eval_acc_before']:.4f} trained -> {result['eval_acc']:.4f} snapped"),
        ("covers", covered),
        ("zero share", f"{result['zero_share']:.2%} of them snapped to 0"),
        ("components", f"{result['components_used']} of {result['components']} in use"),
        ("bits/weight", f"{result['index_bits']} (fixed-length index), {result['entropy_bits']:.3f} (entropy of the assignments)"),
        ("compression", "-" if compression is None else f"{compression:.1f}x vs float32 at the entropy bound (codebook not counted)"),
    ):
        table.add_row(key, value)
    return table


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data[key]` when it is an object, else {}: a hand-edited or damaged file shows what it can."""
    found = data.get(key)
    return found if isinstance(found, dict) else {}


def movement_table(movement: dict[str, Any]) -> Table:
    table = Table(title="weight movement (from init)", header_style="bold")
    table.add_column("subset")
    table.add_column("layer")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for subset, figures in movement.items():
        if not isinstance(figures, dict):
            continue
        table.add_row(Text(subset, style="bold"), "all", *(number(figures.get(m)) for m in METRICS))
        for layer, layer_figures in _section(figures, "layers").items():
            if isinstance(layer_figures, dict):
                table.add_row("", layer, *(number(layer_figures.get(m)) for m in METRICS))
    return table


def run_detail(summary: dict[str, Any], folder: RunFolder) -> Group:
    final = _section(summary, "final")
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
    if isinstance(summary.get("params"), int):
        headline.append(f"  {summary['params']:,} params")
    if isinstance(final.get("member_acc"), list):  # an ensemble: what each member scores alone, next to the average's eval_acc
        headline.append("\nmember eval_acc " + " ".join(number(acc) for acc in final["member_acc"]), style="dim")
    # A pruned model's layers change shape, so its run tracks no movement (summary movement
    # None): what it shows instead is how its channels went.
    movement = _section(summary, "movement")
    body = movement_table(movement) if movement else pruning_table(folder)
    phases = [phases_table(summary["phases"])] if isinstance(summary.get("phases"), list) and summary["phases"] else []
    return Group(headline, body, *phases, Text(f"folder: {folder.path}", style="dim"))


def phases_table(phases: list[dict[str, Any]]) -> Table:
    """A changing partition's phases: how far each moved the coordinates it trained (`subset`)
    and those it fixed, from the phase's start weights (engine/phases.py)."""
    table = Table(title="movement per phase (from the phase's start; subset = what the phase trained)", header_style="bold")
    for column in ("phase", "steps", "subset dist", "subset speed", "fixed dist", "trained coords"):
        table.add_column(column, justify="left" if column in ("phase", "steps") else "right")
    for record in phases:
        subsets = _section(record, "subsets")
        trained, fixed = _section(subsets, "subset"), _section(subsets, "fixed")
        table.add_row(str(record.get("phase")), f"{record.get('start_step')}-{record.get('step')}", number(trained.get("dist")),
                      number(trained.get("speed")), number(fixed.get("dist")), number(trained.get("size")))
    return table


def pruning_table(folder: RunFolder) -> Table | Text:
    """Channels of each pruned layer before the first pruning and after the last, from the
    run's `prune` events; a one-line note for a run with neither movement nor pruning."""
    from engine.events import run_events

    prunes = run_events(folder.events_path, "prune") if folder.events_path.exists() else []
    if not prunes:
        return Text("no weight movement recorded (track.every is 0, or the run ended before the first record)", style="dim")
    first, last = prunes[0], prunes[-1]
    table = Table(
        title=f"channel pruning: {len(prunes)} prunings, steps {first.get('step')}-{last.get('step')}",
        header_style="bold",
    )
    for column in ("layer", "channels before", "after", "removed"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    before = {name: width + first.get("removed", {}).get(name, 0) for name, width in first.get("widths", {}).items()}
    for name, width in last.get("widths", {}).items():
        table.add_row(name, number(before.get(name)), number(width), number(before.get(name, width) - width))
    params_before, params_after = first.get("params_before") or 0, last.get("params_after") or 0
    table.add_row("parameters", f"{params_before:,}", f"{params_after:,}", f"{params_before - params_after:,}", style="bold")
    table.caption = "weight movement is not tracked in pruned runs: their layers change shape"
    return table


def _longest(names) -> int:
    return max((len(name) for name in names), default=4)


def partition_text(p: PartitionSpec) -> str:
    """`first_kernels 0.5 +fc`, `layers a,b`, `groups 0`, `none`: only what the strategy reads
    (its registry declaration says which settings)."""
    reads = PARTITIONS[p.strategy].reads
    values = {"fraction": f"{p.fraction:g}", "layers": ",".join(p.layers), "groups": ",".join(map(str, p.groups))}
    text = " ".join([p.strategy, *(values[key] for key in reads if key in values)])
    return text + (" +fc" if "include_fc" in reads and p.include_fc else "")


def model_text(spec: ExperimentSpec) -> str:
    """`lenet w16`, with kernel groups (`g2 dense`), ensemble members (`x4`) or fusion (`mutant of 2`)."""
    m = spec.model
    text = f"{m.name} w{m.width}"
    if m.groups > 1:
        text += f" g{m.groups} {m.connectivity}" + (" heads" if m.head == "members" else "")
    if spec.ensemble.members > 1:
        text += f" x{spec.ensemble.members}"
    if spec.ensemble.coupling.mode != "none":
        text += f" {spec.ensemble.coupling.mode} rho {spec.ensemble.coupling.rho:g}/{spec.ensemble.coupling.period}"
    if spec.fusion.mode != "none":
        text += f" {spec.fusion.mode} of {len(spec.fusion.runs)}"
    return text


def experiments_table(specs: dict[str, ExperimentSpec]) -> Table:
    table = Table(title="experiments", header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("name", no_wrap=True, min_width=_longest(specs))  # names are what users type: never cut
    for column in ("freeze", "partition", "model", "data", "optimizer", "steps"):
        table.add_column(column, min_width=10 if column == "model" else None)  # "w32 g2 dense" wraps, never cut
    for name, spec in specs.items():
        table.add_row(
            name,
            f"elastic {spec.elastic.rho:g}" if spec.elastic else "yes" if spec.freeze else "no",
            partition_text(spec.partition),
            model_text(spec),
            spec.data.name,
            f"{spec.optimizer.name} lr {spec.optimizer.lr:g}"
            + (f" + swsh J{spec.regularizer.components} tau {spec.regularizer.tau:g}" if spec.regularizer.name != "none" else ""),
            str(spec.train.steps),
        )
    return table


def studies_table(studies: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> Table:
    """ResolvedStudy by name: arms (the reference marked), seeds, and the study's overrides."""
    table = Table(title="studies", header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True, min_width=_longest(studies))
    for column in ("arms", "seeds", "set"):
        table.add_column(column, overflow="fold")
    for name, study in studies.items():
        arms = ", ".join(f"{arm}*" if arm == study.reference else arm for arm in study.arms)
        changes = "\n".join(f"{key}={json.dumps(value)}" for key, value in overrides.get(name, {}).items())
        table.add_row(name, arms, str(len(study.seeds)), changes)
    table.caption = "* the reference arm: the others' movement is compared with it"
    return table
