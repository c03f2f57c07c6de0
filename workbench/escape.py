"""Studies that continue converged runs (`continues` in a study; workbench/escape_verdict.py).

Before its arms can run, such a study needs, for every seed, a finished run of the
experiment it continues: those are matched (or, for `study`, submitted and waited for) like
any study's runs, and each arm's spec for seed s then gets `init.run` = that seed's run.
The arms' digests include the run id, so re-running the study re-uses everything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from engine.run_folder import RunFolder
from engine.spec import ResolvedStudy
from workbench.escape_verdict import escape_verdict


def continue_from_sources(
    resolved: ResolvedStudy,
    logs_dir: Path,
    *,
    launch: bool,
    max_per_device: int | None = None,
    any_code: bool = False,
    follow: Callable[[dict[str, Path]], None] | None = None,
) -> ResolvedStudy:
    """`resolved` with init.run set in every arm x seed (unchanged without `continues`).
    With `launch`, missing source runs are submitted and followed to their end; without, a
    missing one is an error naming it."""
    from workbench.study import finished_runs

    parts = [cell.study for cell in resolved.cells] or [resolved]
    first = next((part for part in parts if part.sources), None)
    if first is None:
        return resolved
    source = first.continues  # the arm of the source runs in their own little study
    sources = ResolvedStudy(f"{resolved.name}/{source}", "", source, first.seeds, {source: first.sources}, {source: source})
    found = finished_runs(
        sources, logs_dir, launch=launch, max_per_device=max_per_device, any_code=any_code, follow=follow,
        label=" (continued)", missing=lambda seeds: (
            f"study {resolved.name!r} continues {source!r}, which has no run for seed {', '.join(map(str, seeds))}; "
            f"`workbench study {resolved.name}` runs it first"),
    )
    run_ids = {seed: path.name for seed, path in found[source].items()}

    def filled(part: ResolvedStudy) -> ResolvedStudy:
        specs = {arm: {seed: spec.model_copy(update={"init": spec.init.model_copy(update={"run": run_ids[seed]})})
                       for seed, spec in by_seed.items()}
                 for arm, by_seed in part.specs.items()}
        return dataclasses.replace(part, specs=specs)

    if resolved.cells:
        cells = [dataclasses.replace(cell, study=filled(cell.study)) for cell in resolved.cells]
        return dataclasses.replace(resolved, cells=cells)
    return filled(resolved)


def escape_section(runs: dict[str, dict[int, Path]], reference: str) -> list[dict]:
    """The escape figures of every arm against the reference (the control: nothing frozen)."""
    paths = [Path(path) for by_seed in runs.values() for path in by_seed.values()]
    specs = {str(p): RunFolder(p).spec() or {} for p in paths}
    summaries = {str(p): RunFolder(p).summary() or {} for p in paths}
    return escape_verdict(runs, reference, specs, summaries)
