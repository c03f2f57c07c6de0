"""`workbench`: the command line (typer).

Bad input ends with one sentence naming the bad value and what is allowed, exit code 2
and no traceback (`--debug` shows tracebacks). torch is imported only by commands that
train, so listing and showing runs stays instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from engine.choices import FUSION_MODES, PRUNE_CRITERIA
from workbench.backends import BACKENDS
from engine.run_folder import RunFolder, unless_corrupt, write_error
from engine.spec import Experiments, SpecError, check_seed_count, json_schema, parse_override
from workbench import study_memory, tables
from workbench.store import Store

DEFAULT_EXPERIMENTS = "experiments.json"
stdout = Console()
stderr = Console(stderr=True)


_debug = False  # set by the --debug option of the top-level callback


def friendly(command: Callable) -> Callable:
    """User errors become one line and exit code 2, and so does a write the disk refused (full,
    read-only): the user can fix that; anything unexpected one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpecError as exc:
            if _debug:
                raise
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if _debug or type(exc).__module__.startswith(("typer", "click")):
                raise  # typer.Exit and friends: already the right exit
            if write_error(exc):
                typer.echo(f"error: {write_error(exc)}", err=True)
                raise typer.Exit(2) from None
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None

    return wrapper


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Does freezing all but a subset of a CNN's weights let that subset move faster? Compose, run and measure it.",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"workbench {version('workbench')}")
        except PackageNotFoundError:  # imported from a checkout that was never installed
            typer.echo("workbench (version unknown: not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    _version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _debug
    _debug = debug


ExperimentsPath = Annotated[
    Path, typer.Option("--experiments", "-e", help="The experiments file.", show_default=True)
]
LogsDir = Annotated[
    Path, typer.Option("--logs-dir", envvar="WORKBENCH_LOGS", help="Where run folders and store.json live.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _store_runs(logs_dir: Path) -> list[dict]:
    """Every run in the store, oldest first; live ones re-read from their folders (a run
    whose process died shows as lost)."""
    from workbench.runner import refresh_active

    return sorted(refresh_active(Store(logs_dir)), key=lambda r: r.get("created") or 0)


def _find_run(logs_dir: Path, run_id: str) -> dict:
    """The one run whose id starts with `run_id`."""
    matches = [r for r in _store_runs(logs_dir) if r["run_id"].startswith(run_id)]
    if len(matches) != 1:
        known = "no runs" if not matches else ", ".join(r["run_id"] for r in matches)
        raise SpecError(f"run id {run_id!r} matches {known}; `workbench runs` lists the run ids in {logs_dir}/")
    return matches[0]


def _resolve_overrides(set_: list[str] | None, device: str | None, seed: int | None) -> dict:
    overrides = dict(parse_override(item) for item in set_ or [])
    if device is not None:
        overrides["device"] = device
    if seed is not None:
        overrides["seed"] = seed
    return overrides


def _default_experiment(catalog: Experiments, experiment: str | None, path: Path) -> str:
    name = experiment or (catalog.names[0] if catalog.names else None)
    if name is None:
        raise SpecError(f"{path} defines no experiments")
    return name


Device = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N, mps or auto.")]
Overrides = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a key, e.g. --set optimizer.lr=0.1 (repeatable).")
]
MaxPerDevice = Annotated[
    Optional[int],
    typer.Option(
        "--max-per-device", min=1, envvar="WORKBENCH_MAX_PER_DEVICE", help="Runs at once on one device (default 2)."
    ),
]


BackendName = BACKENDS.choice_enum("BackendName")
Backend = Annotated[BackendName, typer.Option(help="Where the runs execute: " + BACKENDS.help())]
RayAddress = Annotated[
    Optional[str],
    typer.Option("--ray-address", help="ray: the cluster's head, HOST:PORT (default: $RAY_ADDRESS, else the cluster on this machine)."),
]
GpusPerRun = Annotated[float, typer.Option(help="ray: GPUs a CUDA run asks for (0.5: two runs share a GPU).")]
CpusPerRun = Annotated[float, typer.Option(help="ray: CPUs each run asks for (and trains a CPU run with).")]
Tags = Annotated[
    Optional[list[str]],
    typer.Option("--tag", help="Label the runs (repeatable); find them with `runs --tag T` or `tag:T` in the TUI's filter."),
]


def _launch_options(backend: Any, ray_address: str | None, gpus_per_run: float, cpus_per_run: float):
    from workbench.backends import LaunchOptions

    return LaunchOptions(backend.value, ray_address, gpus_per_run, cpus_per_run)


@app.command()
@friendly
def run(
    experiment: Annotated[Optional[str], typer.Argument(help="Experiment name (default: the file's first).")] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="Train in the foreground of this terminal (default: background + TUI).")
    ] = False,
    device: Device = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init and data order.")] = None,
    set_: Overrides = None,
    experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS),
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Train one experiment: in the background, watched in the TUI; or with --headless in the
    foreground of this terminal, with a progress bar (Ctrl-C stops cleanly)."""
    catalog = Experiments.load(experiments)
    name = _default_experiment(catalog, experiment, experiments)
    spec = catalog.resolve(name, _resolve_overrides(set_, device, seed))
    if not headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        headless = True  # no terminal for the TUI (a script, a pipe, CI): train in the foreground
    if not headless:
        from workbench.runner import resolve_spec_device, submit as submit_run
        from workbench.tui import run_tui

        folder = submit_run(resolve_spec_device(spec), name, logs_dir)
        run_tui(logs_dir, experiments, folder.run_id)  # quitting the TUI leaves the run going
        typer.echo(f"run {folder.run_id} goes on in the background: workbench runs | workbench logs -f {folder.run_id}", err=True)
        return

    from workbench.headless import run_headless
    from workbench.progress import run_progress

    with run_progress(spec.train.steps, f"{name}", stderr) as progress:
        outcome = run_headless(spec, name, logs_dir, on_step=progress.advance, on_event=progress.event)

    if as_json:
        payload = {
            "run_id": outcome.folder.run_id,
            "run_dir": str(outcome.folder.path.resolve()),
            "status": outcome.status,
            "summary": outcome.summary,
        }
        if outcome.error:
            payload["error"] = outcome.error
        typer.echo(json.dumps(payload))
    elif outcome.summary:
        stdout.print(tables.run_detail(outcome.summary, outcome.folder))
    if outcome.status == "failed":
        typer.echo(
            f"error: run {outcome.folder.run_id} failed: {outcome.error}; traceback in {outcome.folder.log_path}",
            err=True,
        )
        raise typer.Exit(1)
    if outcome.status == "cancelled":
        typer.echo(f"run {outcome.folder.run_id} cancelled at step {outcome.summary['steps']}", err=True)
        raise typer.Exit(130)


@app.command()
@friendly
def tui(
    run_id: Annotated[Optional[str], typer.Argument(help="Open on this run (a unique prefix works).")] = None,
    experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS),
    logs_dir: LogsDir = Path("logs"),
) -> None:
    """The workbench: watch runs live, compose and launch experiments (q quits; runs go on)."""
    from workbench.tui import run_tui

    run_tui(logs_dir, experiments, run_id)


@app.command()
@friendly
def runs(
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C.")] = False,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only runs with this tag (repeatable: all of them).")] = None,
) -> None:
    """List runs: status, device, host, step, final accuracy, and how far each subset moved."""
    from workbench.tags import check_tags, has_tags

    wanted = check_tags(tag)

    def listed() -> list[dict]:
        return [r for r in _store_runs(logs_dir) if has_tags(r, wanted)]

    if watch and not as_json:
        from rich.live import Live

        with Live(tables.runs_view(listed()), console=stdout, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(1.0)
                    live.update(tables.runs_view(listed()), refresh=True)
            except KeyboardInterrupt:
                return
    records = listed()
    if as_json:
        typer.echo(json.dumps(records))
    elif not records and wanted:
        stderr.print(f"no runs in {logs_dir}/ tagged {', '.join(wanted)}; `workbench tag RUN TAG` tags one")
    elif not records:
        stderr.print(f"no runs in {logs_dir}/ yet; start one with: workbench submit or workbench run --headless")
    else:
        stdout.print(tables.runs_view(records))


@app.command()
@friendly
def submit(
    experiment: Annotated[Optional[str], typer.Argument(help="Experiment name (default: the file's first).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init and data order.")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Submit K runs with seeds 0..K-1.")] = None,
    device: Device = None,
    set_: Overrides = None,
    max_per_device: MaxPerDevice = None,
    backend: Backend = BackendName("local"),
    ray_address: RayAddress = None,
    gpus_per_run: GpusPerRun = 1.0,
    cpus_per_run: CpusPerRun = 1.0,
    tag: Tags = None,
    experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS),
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Queue runs in the background and return at once; they outlive this terminal."""
    from workbench.runner import submit as submit_run
    from workbench.tags import check_tags

    options = _launch_options(backend, ray_address, gpus_per_run, cpus_per_run)
    tags = check_tags(tag)

    if seed is not None and seeds is not None:
        raise SpecError("--seed and --seeds: give one (a single seed, or a count of seeds 0..K-1)")
    if seeds is not None:
        check_seed_count(seeds)
    catalog = Experiments.load(experiments)
    name = _default_experiment(catalog, experiment, experiments)
    overrides = _resolve_overrides(set_, device, seed)
    seed_list = list(range(seeds)) if seeds is not None else [None]
    # Every spec is checked (device included) before the first run is queued: all or nothing.
    specs = [options.placed(catalog.resolve(name, overrides if s is None else {**overrides, "seed": s})) for s in seed_list]
    launcher = options.launcher()  # a Ray cluster that is not there: told now, before any folder
    from engine.preflight import preflight

    preflight([launcher.checkable(spec) for spec in specs], logs_dir)  # what the workers would fail on, told now
    folders = [submit_run(spec, name, logs_dir, max_per_device=max_per_device, launcher=launcher, tags=tags) for spec in specs]
    _print_queued([(folder, f"{name}, seed {spec.seed}, {spec.device}") for folder, spec in zip(folders, specs)], as_json)


def _print_queued(queued: list[tuple[Any, str]], as_json: bool) -> None:
    """What `submit` and `fuse` print: the run ids as JSON, or a line per queued run (its
    folder, and what it is) and how to follow them."""
    ids = [folder.run_id for folder, _ in queued]
    if as_json:
        typer.echo(json.dumps({"run_ids": ids}))
        return
    for folder, what in queued:
        typer.echo(f"queued {folder.run_id} ({what}): {folder.path}")
    typer.echo(f"follow with: workbench runs --watch   |   workbench logs -f {ids[0]}", err=True)


# The fusion modes and prune criteria `fuse` offers: the registries' names (mode "none" fuses nothing).
FusionMode = FUSION_MODES.choice_enum("FusionMode", skip=("none",))
PruneCriterion = PRUNE_CRITERIA.choice_enum("PruneCriterion")


@app.command()
@friendly
def fuse(
    run_ids: Annotated[list[str], typer.Argument(help="Trained runs of one model, or ensemble runs of it (their members are fused): two models or more in all. Unique prefixes work.")],
    mode: Annotated[FusionMode, typer.Option(help=FUSION_MODES.help(skip=("none",)))] = FusionMode("mutant"),
    steps: Annotated[Optional[int], typer.Option(min=0, help="Training steps (default: 0 for average, else the members').")] = None,
    train_trunks: Annotated[bool, typer.Option("--train-trunks", help="head: train the trunks too (default: frozen).")] = False,
    prune_every: Annotated[int, typer.Option(min=0, help="mutant: prune channels every K steps (0: never).")] = 0,
    prune_fraction: Annotated[float, typer.Option(help="mutant: share of each conv layer's channels removed per pruning.")] = 0.1,
    prune_criterion: Annotated[PruneCriterion, typer.Option(help="mutant: " + PRUNE_CRITERIA.help())] = PruneCriterion("bn_scale"),
    prune_min_fraction: Annotated[float, typer.Option(help="mutant: never prune a layer below this share of its channels.")] = 0.5,
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint of each member: final, init or step_N; center_final: an EASGD ensemble's center.")] = "final",
    device: Device = None,
    set_: Overrides = None,
    max_per_device: MaxPerDevice = None,
    backend: Backend = BackendName("local"),
    ray_address: RayAddress = None,
    gpus_per_run: GpusPerRun = 1.0,
    cpus_per_run: CpusPerRun = 1.0,
    tag: Tags = None,
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Build a new run from trained runs and queue it in the background."""
    from workbench.fuse import fused_spec
    from workbench.runner import submit as submit_run
    from workbench.tags import check_tags

    options = _launch_options(backend, ray_address, gpus_per_run, cpus_per_run)
    tags = check_tags(tag)

    mode, prune_criterion = mode.value, prune_criterion.value  # the registered names, as the spec holds them
    members = [_find_run(logs_dir, run_id) for run_id in run_ids]
    prune = {"every": prune_every, "fraction": prune_fraction, "criterion": prune_criterion, "min_fraction": prune_min_fraction}
    fusion = {"checkpoint": checkpoint, "train_trunks": train_trunks, "prune": prune}
    spec = fused_spec(members, mode, steps=steps, overrides=_resolve_overrides(set_, device, None), fusion=fusion)
    name = f"fuse-{mode}"
    spec = options.placed(spec)
    launcher = options.launcher()
    from engine.preflight import preflight

    preflight([launcher.checkable(spec)], logs_dir)  # e.g. a member with no final checkpoint yet: refused now, not failed later
    folder = submit_run(spec, name, logs_dir, max_per_device=max_per_device, launcher=launcher, tags=tags)
    _print_queued([(folder, f"{name} of {', '.join(m['run_id'] for m in members)}, {spec.device}")], as_json)


@app.command()
@friendly
def cancel(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids (unique prefixes work).")],
    logs_dir: LogsDir = Path("logs"),
    wait: Annotated[float, typer.Option(help="Seconds to wait for the runs to stop (0: do not wait).")] = 30.0,
) -> None:
    """Stop runs cleanly at their next step (status cancelled, checkpoint kept for resume)."""
    from workbench.runner import cancel as cancel_run, wait_until_done

    records = [_find_run(logs_dir, run_id) for run_id in run_ids]
    for record in records:
        typer.echo(cancel_run(record, logs_dir))
    if wait:
        for record in records:
            if record["status"] in ("queued", "running"):
                done = wait_until_done(Path(record["run_dir"]), wait)
                state = done["status"] if done else f"still stopping after {wait:g} s"
                typer.echo(f"{record['run_id']}: {state}" + (f" at step {done['step']}" if done and done.get("step") else ""))
        _store_runs(logs_dir)  # write the final states into the index


@app.command()
@friendly
def resume(
    run_id: Annotated[str, typer.Argument(help="The run's id (a unique prefix works).")],
    max_per_device: MaxPerDevice = None,
    backend: Backend = BackendName("local"),
    ray_address: RayAddress = None,
    gpus_per_run: GpusPerRun = 1.0,
    cpus_per_run: CpusPerRun = 1.0,
    logs_dir: LogsDir = Path("logs"),
) -> None:
    """Continue a cancelled, failed or lost run from its last saved training state, in the background."""
    from workbench.runner import resume as resume_run

    options = _launch_options(backend, ray_address, gpus_per_run, cpus_per_run)
    record = _find_run(logs_dir, run_id)
    if options.backend == "ray":  # Ray may place it on any node, but it names the GPU "cuda:0" there
        from workbench.ray_backend import ray_device

        ray_device(record.get("device") or "cpu", options)
    folder = resume_run(record, logs_dir, max_per_device=max_per_device, launcher=options.launcher())
    typer.echo(f"resumed {folder.run_id}: {folder.path}")


@app.command()
@friendly
def tag(
    run_id: Annotated[str, typer.Argument(help="The run (a unique prefix works).")],
    tags: Annotated[list[str], typer.Argument(help="Tags to add (or with --remove, to take off).")],
    remove: Annotated[bool, typer.Option("--remove", help="Take these tags off the run instead.")] = False,
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Label a run (or take labels off): `runs --tag T` and the TUI's `tag:T` filter find it."""
    from workbench.tags import check_tags, tag_runs

    tags = check_tags(tags)  # before anything is read or written
    record = _find_run(logs_dir, run_id)
    done = tag_runs(logs_dir, [Path(record["run_dir"])], remove=tags) if remove else \
        tag_runs(logs_dir, [Path(record["run_dir"])], add=tags)
    if as_json:
        typer.echo(json.dumps({"run_id": record["run_id"], "tags": done[record["run_id"]]}))
    else:
        typer.echo(f"{record['run_id']}: tags {', '.join(done[record['run_id']]) or '(none)'}")


@app.command()
@friendly
def logs(
    run_id: Annotated[str, typer.Argument(help="The run's id (a unique prefix works).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
    logs_dir: LogsDir = Path("logs"),
) -> None:
    """Print a run's worker log."""
    from workbench.records import ACTIVE, record_from_folder

    record = _find_run(logs_dir, run_id)
    folder = RunFolder(Path(record["run_dir"]))
    offset = 0
    try:
        while True:
            record = record_from_folder(folder.path) or record
            try:
                with open(folder.log_path, "rb") as log:
                    log.seek(offset)
                    chunk = log.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            if chunk:
                typer.echo(chunk.decode(errors="replace"), nl=False)
            if not follow or record["status"] not in ACTIVE:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    if follow and record["status"] != "completed":
        typer.echo(f"[run {record['run_id']} is {record['status']}]", err=True)


StudySeeds = Annotated[Optional[int], typer.Option(min=1, help="Seeds 0..K-1 instead of the study's own.")]


def _resolve_study(experiments: Path, name: str, seeds: int | None, set_: list[str] | None):
    return Experiments.load(experiments).study(name, seeds, dict(parse_override(item) for item in set_ or []))


ReuseAnyCode = Annotated[
    bool,
    typer.Option(
        "--reuse-any-code",
        help="Re-use runs whatever engine code made them (default: only runs of this engine's code, by its hash).",
    ),
]


def _cell_label(values: dict) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def _study_verdict(resolved, found: list, any_code: bool) -> dict:
    """The verdict of a study (one per cell for a sweep), noting when --reuse-any-code let in
    runs of any engine code."""
    from workbench.study import code_note
    from workbench.sweep import sweep_verdict
    from workbench.verdict import study_verdict

    if resolved.cells:
        verdict = sweep_verdict(resolved, [f.runs for f in found])
        verdicts = [verdict] + [cell["verdict"] for cell in verdict["cells"]]
    else:
        verdict = study_verdict(resolved.name, found[0].runs, resolved.reference)
        verdicts = [verdict]
        if resolved.continues:  # continuing converged runs: best loss, escapes, barriers per arm
            from workbench.escape import escape_section

            verdict["escape"] = escape_section(found[0].runs, resolved.reference)
    if any_code:
        note = code_note({f"{i} {arm}": seeds for i, f in enumerate(found) for arm, seeds in f.records().items()})
        for each in verdicts:
            each["reuse_any_code"] = True
            each.setdefault("notes", []).append(note)
    return verdict


@app.command()
@friendly
def study(
    name: Annotated[str, typer.Argument(help="Study name in the experiments file.")],
    seeds: StudySeeds = None,
    set_: Overrides = None,
    max_per_device: MaxPerDevice = None,
    backend: Backend = BackendName("local"),
    ray_address: RayAddress = None,
    gpus_per_run: GpusPerRun = 1.0,
    cpus_per_run: CpusPerRun = 1.0,
    tag: Tags = None,
    experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS),
    logs_dir: LogsDir = Path("logs"),
    reuse_any_code: ReuseAnyCode = False,
    as_json: AsJson = False,
) -> None:
    """Run (or re-use) every arm x seed of a study (of every cell of a sweep), wait, and print the verdict.
    Its runs are tagged with the study's name (and each --tag)."""
    from workbench.progress import follow_runs
    from workbench.study import check_completed, gather, with_prerequisites
    from workbench.sweep import grid_table
    from workbench.tags import check_tags, is_tag, tag_runs
    from workbench.verdict import verdict_table

    tags = check_tags(tag)
    resolved = _resolve_study(experiments, name, seeds, set_)
    options = _launch_options(backend, ray_address, gpus_per_run, cpus_per_run)
    try:  # runs that other runs need first: `continues`' converged runs, the runs fuse arms fuse
        resolved = with_prerequisites(resolved, logs_dir, launch=True, max_per_device=max_per_device, options=options,
                                      any_code=reuse_any_code, follow=lambda labels: follow_runs(labels, stderr))
    except KeyboardInterrupt:
        typer.echo(f"stopped watching; the runs go on in the background. `workbench study {name}` picks them up.", err=True)
        raise typer.Exit(130) from None
    parts = [cell.study for cell in resolved.cells] or [resolved]
    found = [
        gather(part, logs_dir, launch=True, max_per_device=max_per_device, any_code=reuse_any_code, options=options)
        for part in parts
    ]
    if options.backend == "ray":
        from workbench.ray_backend import disconnect

        disconnect()  # the runs are Ray's now: following them needs only their folders
    study_memory.remember(logs_dir, name, seeds, set_)  # so that `report NAME` finds these runs
    # a name that cannot be a tag (a space in it) is left out: the study's name is in its runs' experiments too
    tag_runs(logs_dir, [path for f in found for seeds_ in f.runs.values() for path in seeds_.values()],
             [*([name] if is_tag(name) else []), *tags])
    cells = f" x {len(parts)} sweep cells" if resolved.cells else ""
    stderr.print(
        f"study {name}: {len(resolved.arms)} arms x {len(resolved.seeds)} seeds{cells}; "
        f"re-using {sum(len(f.reused) for f in found)} runs, submitted {sum(len(f.submitted) for f in found)}",
        highlight=False,
    )
    labels = {}
    for cell, f in zip(resolved.cells or [None], found):
        where = f" ({_cell_label(cell.set)})" if cell else ""
        for arm, seeds_ in f.runs.items():
            for seed, path in seeds_.items():
                if path not in labels.values():  # cells that share a run (same digest) follow it once
                    labels[f"{arm} seed {seed}{where}"] = path
    try:
        follow_runs(labels, stderr)
    except KeyboardInterrupt:
        typer.echo(f"stopped watching; the runs go on in the background. `workbench study {name}` picks them up.", err=True)
        raise typer.Exit(130) from None
    for part, f in zip(parts, found):
        check_completed(part, f.records())
    verdict = _study_verdict(resolved, found, reuse_any_code)
    _store_runs(logs_dir)  # the index gets the finished runs' figures
    if as_json:
        typer.echo(json.dumps(verdict))
    else:
        stdout.print(grid_table(verdict) if resolved.cells else verdict_table(verdict))
        for entry in verdict.get("escape", []):
            stdout.print(f"[bold]{entry['arm']}[/bold]: {entry['sentence']}; left the basin in {entry['escaped']} of {entry['n']}", highlight=False)
        if verdict.get("best_single"):  # a study with ensemble arms (workbench/best_single.py)
            from workbench.best_single import best_single_table

            stdout.print(best_single_table(verdict["best_single"]))
            stdout.print(verdict["best_single"]["sentence"], highlight=False)


@app.command()
@friendly
def report(
    name: Annotated[str, typer.Argument(help="Study name in the experiments file.")],
    seeds: StudySeeds = None,
    set_: Overrides = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Folder for the report (default: <logs dir>/reports/NAME).")
    ] = None,
    experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS),
    logs_dir: LogsDir = Path("logs"),
    reuse_any_code: ReuseAnyCode = False,
) -> None:
    """Write a markdown report with plots for a study whose runs have finished (a sweep: a heatmap and a report per cell)."""
    from workbench.report import write_report
    from workbench.study import check_completed, gather
    from workbench.sweep import write_sweep_report

    seeds, set_ = study_memory.report_options(logs_dir, name, seeds, set_, lambda line: typer.echo(line, err=True))
    resolved = _resolve_study(experiments, name, seeds, set_)
    from workbench.study import with_prerequisites

    resolved = with_prerequisites(resolved, logs_dir, launch=False, any_code=reuse_any_code)
    parts = [cell.study for cell in resolved.cells] or [resolved]
    found = [gather(part, logs_dir, launch=False, any_code=reuse_any_code) for part in parts]
    missing = [
        f"{arm} seed {seed}" + (f" ({_cell_label(cell.set)})" if cell else "")
        for cell, f in zip(resolved.cells or [None], found) for arm, seed in f.missing
    ]
    if missing:
        code = "" if reuse_any_code else " (made by this engine code; --reuse-any-code accepts any)"
        hint = study_memory.missing_hint(logs_dir, name, seeds, set_)
        raise SpecError(f"study {name!r} has no runs yet for {', '.join(missing)}{code}; {hint}")
    for part, f in zip(parts, found):
        check_completed(part, f.records())
    verdict = _study_verdict(resolved, found, reuse_any_code)
    out = output or logs_dir / "reports" / name
    if resolved.cells:
        path = write_sweep_report(verdict, [f.runs for f in found], out)
    else:
        path = write_report(verdict, found[0].runs, out)
    typer.echo(str(path.resolve()))


@app.command()
@friendly
def show(
    run_id: Annotated[str, typer.Argument(help="The run's 8-character id (a unique prefix works).")],
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Show one run: its spec, final figures and per-layer movement of each subset."""
    from workbench.records import record_from_folder

    record = _find_run(logs_dir, run_id)
    folder = RunFolder(Path(record["run_dir"]) if record.get("run_dir") else logs_dir / record["run_id"])
    # The folder is the truth: a file damaged since the index was written shows as corrupt here.
    record = record_from_folder(folder.path) or record
    spec, summary = unless_corrupt(folder.spec), unless_corrupt(folder.summary)
    from engine.events import run_events
    from engine.provenance import describe

    # the code that made the run, from its first start (a resume's may differ: record["engine"] says "mixed")
    start = next(iter(run_events(folder.events_path, "start")), {})
    provenance = start.get("provenance")
    if as_json:
        typer.echo(json.dumps({"record": record, "spec": spec, "summary": summary, "provenance": provenance,
                               "hessian": start.get("hessian")}))
        return
    stdout.print(tables.record_header(record, spec or {}))
    code, versions = describe(provenance) if provenance or record.get("status") != "queued" else ("not started yet", "-")
    mixed = " [red](resumed under other engine code)[/red]" if record.get("engine") == "mixed" else ""
    stdout.print(f"[bold]code[/bold]        {code}{mixed}\n[bold]versions[/bold]    {versions}", highlight=False)
    if summary:
        stdout.print(tables.run_detail(summary, folder))
    if start.get("hessian"):  # a Hessian-guided partition: what chose it (`workbench hessian` for more)
        from workbench.hessian_view import summary_table

        stdout.print(summary_table(start["hessian"]))


@app.command()
@friendly
def hessian(
    run_id: Annotated[str, typer.Argument(help="A hessian_interaction or obd run's id (a unique prefix works).")],
    layer: Annotated[Optional[str], typer.Option(help="One layer: also print its S, kernels ordered by the split.")] = None,
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """A Hessian-guided run's kernel interactions: within-set vs cross-set sums of |S| and the OBD saliency range, per layer."""
    from engine.hessian_summary import hessian_note
    from workbench.hessian_view import hessian_json, load_hessian, matrix_table, summary_table

    record = _find_run(logs_dir, run_id)
    folder = RunFolder(Path(record["run_dir"]) if record.get("run_dir") else logs_dir / record["run_id"])
    saved = load_hessian(folder)
    chosen = hessian_json(folder.run_id, saved, layer)
    if as_json:
        typer.echo(json.dumps(chosen))
        return
    stdout.print(summary_table(hessian_note({**saved, "layers": {n: saved["layers"][n] for n in chosen["layers"]}})))
    if layer:
        stdout.print(matrix_table(layer, saved["layers"][layer]))



@app.command()
@friendly
def quantize(
    run_id: Annotated[str, typer.Argument(help="A completed soft-weight-sharing run (a unique prefix works).")],
    device: Device = None,
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """Snap a soft-weight-sharing run's weights to their mixture means, evaluate, and give the compression figures."""
    from engine.quantize import quantize_run

    record = _find_run(logs_dir, run_id)
    result = quantize_run(Path(record["run_dir"]) if record.get("run_dir") else logs_dir / record["run_id"], logs_dir, device)
    if as_json:
        typer.echo(json.dumps(result))
        return
    stdout.print(tables.quantize_table(result))


@app.command()
@friendly
def cluster(
    ray_address: RayAddress = None,
    logs_dir: LogsDir = Path("logs"),
    as_json: AsJson = False,
) -> None:
    """The Ray cluster's nodes: host, address, CPUs, GPUs, and the runs each is training."""
    from workbench.backends import LaunchOptions
    from workbench.ray_backend import cluster_view, connect

    connect(LaunchOptions("ray", ray_address).address)
    nodes = cluster_view(_store_runs(logs_dir))
    if as_json:
        typer.echo(json.dumps({"nodes": nodes}))
    else:
        stdout.print(tables.cluster_table(nodes))


@app.command("experiments")
@friendly
def list_experiments(experiments: ExperimentsPath = Path(DEFAULT_EXPERIMENTS), as_json: AsJson = False) -> None:
    """List the experiments and studies in the experiments file, resolved through their bases."""
    catalog = Experiments.load(experiments)
    specs = {name: catalog.resolve(name) for name in catalog.names}
    studies = {name: catalog.study(name) for name in catalog.studies}
    if as_json:
        typer.echo(json.dumps({name: spec.model_dump(mode="json") for name, spec in specs.items()}))
    else:
        stdout.print(tables.experiments_table(specs))
        if studies:
            sets = {name: (catalog.studies[name] or {}).get("set", {}) for name in studies}
            stdout.print(tables.studies_table(studies, sets))


@app.command()
@friendly
def validate(path: Annotated[Path, typer.Argument(help="The experiments file.")] = Path(DEFAULT_EXPERIMENTS)) -> None:
    """Check an experiments file and report every error with its location."""
    catalog = Experiments.load(path)
    problems = catalog.errors()
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        typer.echo(f"{path}: {len(problems)} error{'s' if len(problems) > 1 else ''}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{path}: ok, {len(catalog.names)} experiments, {len(catalog.studies)} studies")


@app.command()
@friendly
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of experiments files (point "$schema" at it for editor completion)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        from engine.run_folder import atomic_write

        atomic_write(output, lambda f: f.write(text.encode()))
    else:
        typer.echo(text, nl=False)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `workbench runs | head` closed the pipe early: not an error
        os._exit(0)
