"""Study arms that fuse another arm's runs: `{"name": "mutant", "fuse": {"arm": "ensemble-4", "mode": "mutant"}}`.

The fuse arm's run of seed s fuses the members of the source arm's run of seed s, so its
spec (workbench.fuse.fused_spec, the spec `workbench fuse RUN --mode M` makes) names that
run and can only be written once the run has completed. So the source arm's runs come
first: matched, or for `study` submitted and followed to their end, exactly as a
`continues` study gets its converged runs (workbench.study.finished_runs). The fused
specs are then ordinary arm specs: matched by digest (which holds the source run id),
re-used, submitted.

The fused run copies the source run's model, data, optimizer, steps and device, so the
study's and the command line's `set` reach it through the source arm; the fuse arm's own
`set` applies to the fused run itself (e.g. `train.steps`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from engine.spec import ResolvedStudy, SpecError
from workbench.backends import LOCAL, LaunchOptions


def fill_fused_arms(
    resolved: ResolvedStudy,
    logs_dir: Path,
    *,
    launch: bool,
    max_per_device: int | None = None,
    any_code: bool = False,
    options: LaunchOptions = LOCAL,
    follow: Callable[[dict[str, Path]], None] | None = None,
    pending_ok: bool = False,
) -> ResolvedStudy:
    """`resolved` with the specs of its fuse arms made (unchanged without fuse arms).

    With `launch`, the source arms' missing runs are submitted and followed to their end.
    Without, a source run that is missing or unfinished is an error naming it, unless
    `pending_ok` (the Studies screen): the fuse arm is then left without specs (no runs yet).
    """
    if resolved.cells:
        cells = [dataclasses.replace(cell, study=_filled(cell.study, resolved.name, logs_dir, launch, max_per_device,
                                                         any_code, options, follow, pending_ok))
                 for cell in resolved.cells]
        return dataclasses.replace(resolved, cells=cells)
    return _filled(resolved, resolved.name, logs_dir, launch, max_per_device, any_code, options, follow, pending_ok)


def _filled(part: ResolvedStudy, name: str, logs_dir: Path, launch: bool, max_per_device: int | None, any_code: bool,
            options: LaunchOptions, follow, pending_ok: bool) -> ResolvedStudy:
    from workbench.fuse import fused_spec
    from workbench.records import record_from_folder
    from workbench.study import finished_runs

    if not part.fused:
        return part
    sources = list(dict.fromkeys(arm.fuse.arm for arm in part.fused.values()))
    prerequisite = ResolvedStudy(f"{name}/{'+'.join(sources)}", "", sources[0], part.seeds,
                                 {source: part.specs[source] for source in sources},
                                 {source: part.experiments[source] for source in sources})

    def missing(seeds: list[int]) -> str:
        fusing = ", ".join(f"{label!r} fuses arm {arm.fuse.arm!r}" for label, arm in part.fused.items())
        return (f"study {name!r}: {fusing}, which has no completed run for seed {', '.join(map(str, seeds))} yet; "
                f"`workbench study {name}` runs it first")

    try:
        runs = finished_runs(prerequisite, logs_dir, launch=launch, missing=missing, max_per_device=max_per_device,
                             any_code=any_code, options=options, follow=follow, label=" (to fuse)")
    except SpecError:
        if pending_ok:
            return part
        raise
    specs = dict(part.specs)
    for label, arm in part.fused.items():
        members = {seed: record_from_folder(runs[arm.fuse.arm][seed]) for seed in part.seeds}
        specs[label] = {
            seed: fused_spec([record], arm.fuse.mode, steps=None, overrides=arm.set,
                             fusion={"checkpoint": arm.fuse.checkpoint})
            for seed, record in members.items()
        }
    experiments = {**part.experiments, **{label: f"fuse-{arm.fuse.mode}" for label, arm in part.fused.items()}}
    return dataclasses.replace(part, specs=specs, experiments=experiments)
