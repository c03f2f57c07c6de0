"""`workbench fuse`: the spec of a new run built from trained runs (torch-free).

The members are checked here, before anything is queued: each must exist, have
completed (or at least hold the checkpoint asked for), and be a single model or an
ensemble of such models (each of its members fused) of one family, width and dataset.
The fused run is an ordinary run (background worker, resume, TUI, store) whose spec
names its runs in `fusion.runs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.choices import FUSION_MODES
from engine.coupling import is_center
from engine.run_folder import RunFolder
from pydantic import ValidationError

from engine.spec import ExperimentSpec, FusionSpec, SpecError, apply_override, validation_messages


def fused_spec(
    members: list[dict], mode: str, *, steps: int | None, overrides: dict[str, Any], fusion: dict[str, Any]
) -> ExperimentSpec:
    """`members`: store records of the runs to fuse; `fusion`: the FusionSpec fields set on the command line."""
    if mode not in FUSION_MODES or mode == "none":
        raise SpecError(f"--mode {mode!r}: must be one of {', '.join(n for n in FUSION_MODES.names if n != 'none')}")
    checkpoint = fusion.get("checkpoint", FusionSpec().checkpoint)
    specs = [_member_spec(record, checkpoint) for record in members]
    # An EASGD ensemble's center checkpoint is one model, whatever the run's ensemble.
    models = len(specs) if is_center(checkpoint) else sum(spec.ensemble.members for spec in specs)
    if models < 2:
        raise SpecError(f"fuse needs at least two models (two runs, or one ensemble run), got {models}")
    first = specs[0]
    for record, spec in zip(members[1:], specs[1:]):
        if spec.model != first.model or spec.data.name != first.data.name:
            raise SpecError(
                f"run {record['run_id']} is {spec.model.name} width {spec.model.width} on {spec.data.name}; "
                f"every member must match run {members[0]['run_id']} ({first.model.name} width {first.model.width} "
                f"on {first.data.name})"
            )
    base = first.model_dump(mode="json")
    base.update(
        description=f"{mode} fusion of runs {', '.join(r['run_id'] for r in members)}",
        partition={"strategy": "none"},
        freeze=False,
        seeding={},
        ensemble={},
        checkpoint={"every": 0},
        fusion={**fusion, "mode": mode, "runs": [r["run_id"] for r in members]},
    )
    # average computes the members' mean as it is: nothing to train unless asked.
    base["train"]["steps"] = steps if steps is not None else (0 if mode == "average" else first.train.steps)
    for key, value in overrides.items():
        base = apply_override(base, key, value)
    try:
        return ExperimentSpec.model_validate(base)
    except ValidationError as exc:
        raise SpecError("\n".join(f"fused run: {m}" for m in validation_messages(exc))) from None


def _member_spec(record: dict, checkpoint: str) -> ExperimentSpec:
    folder = RunFolder(Path(record["run_dir"]))
    run_id = record["run_id"]
    if not folder.checkpoint_path(checkpoint).exists():
        raise SpecError(
            f"run {run_id} ({record.get('status')}) has no checkpoint {checkpoint!r} to fuse; "
            "fuse completed runs, or pass --checkpoint init|step_N"
        )
    spec = ExperimentSpec.model_validate(folder.spec())
    if spec.model.groups > 1 or spec.fusion.mode != "none":
        raise SpecError(f"run {run_id} is a grouped or fused run; fuse runs of single models or ensembles of them")
    return spec
