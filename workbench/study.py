"""Running a study: every arm x seed as a background run, finished runs re-used, then wait.

A study's runs are ordinary runs. One whose resolved spec has the same digest as a run
already in the store is the same computation, so a completed one is re-used and a queued
or running one is waited for instead of started twice; a cancelled, failed or lost one
is replaced. So `workbench study NAME` can be run again at any time (after Ctrl-C, a
dropped connection, or with more seeds) and only does what is missing.

Same digest is not enough: the run must also have been made by this engine code (its
engine hash, engine/provenance.py), or a study could pair runs of two versions of the
training loop. Runs of other or unknown code (made before provenance was recorded) are
re-used only with `any_code` (`--reuse-any-code`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.provenance import current_engine_hash
from engine.spec import ExperimentSpec, ResolvedStudy, SpecError
from workbench.records import ACTIVE, CORRUPT, record_from_folder
from workbench.runner import refresh_active, resolve_spec_device, submit
from workbench.store import Store

PREFERENCE = {"completed": 0, "running": 1, "queued": 2}  # which of several same-digest runs to use


@dataclass
class StudyRuns:
    study: ResolvedStudy
    runs: dict[str, dict[int, Path]]  # arm -> seed -> run folder
    specs: dict[str, dict[int, ExperimentSpec]]  # with concrete devices
    reused: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)

    def records(self) -> dict[str, dict[int, dict]]:
        """Fresh records of every run, read from the folders."""
        return {arm: {seed: record_from_folder(path) for seed, path in seeds.items()} for arm, seeds in self.runs.items()}


def _usable_runs(logs_dir: Path, any_code: bool) -> dict[str, dict]:
    """digest -> the best run with that digest that is done or on its way (made by this
    engine code, unless `any_code`)."""
    best: dict[str, dict] = {}
    engine = current_engine_hash()
    for record in refresh_active(Store(logs_dir)):
        digest, status = record.get("digest"), record.get("status")
        if not digest or status not in PREFERENCE or not Path(record.get("run_dir", "")).is_dir():
            continue
        if not any_code and record.get("engine") != engine:
            continue
        current = best.get(digest)
        if current is None or PREFERENCE[status] < PREFERENCE[current["status"]]:
            best[digest] = record
    return best


def gather(
    study: ResolvedStudy, logs_dir: Path, *, launch: bool, max_per_device: int | None = None, any_code: bool = False
) -> StudyRuns:
    """Match every arm x seed to a run; with `launch`, submit the missing ones. `any_code`:
    re-use runs whatever engine code made them (the spec digest alone decides)."""
    specs = {arm: {seed: resolve_spec_device(spec) for seed, spec in seeds.items()} for arm, seeds in study.specs.items()}
    usable = _usable_runs(logs_dir, any_code)
    if launch:  # all or nothing: every run to be queued is checked before the first is
        from engine.preflight import preflight

        preflight([spec for seeds in specs.values() for spec in seeds.values() if spec.digest() not in usable], logs_dir)
    found = StudyRuns(study, {arm: {} for arm in specs}, specs)
    for arm, seeds in specs.items():
        for seed, spec in seeds.items():
            record = usable.get(spec.digest())
            if record is not None:
                found.runs[arm][seed] = Path(record["run_dir"])
                found.reused.append(record["run_id"])
            elif launch:
                folder = submit(spec, study.experiments[arm], logs_dir, max_per_device=max_per_device)
                usable[spec.digest()] = {"run_dir": str(folder.path), "status": "queued", "run_id": folder.run_id}
                found.runs[arm][seed] = folder.path
                found.submitted.append(folder.run_id)
            else:
                found.missing.append((arm, seed))
    return found


def unfinished(records: dict[str, dict[int, dict]]) -> list[dict]:
    return [r for seeds in records.values() for r in seeds.values() if r["status"] in ACTIVE]


def check_completed(study: ResolvedStudy, records: dict[str, dict[int, dict]]) -> None:
    """A verdict needs every run completed: say which are not and what to do."""
    for arm, seeds in records.items():
        for seed, r in seeds.items():
            if r["status"] == CORRUPT:  # resuming cannot mend it: the folder must go for a new run to replace it
                raise SpecError(
                    f"study {study.name!r}: run {r['run_id']} ({arm} seed {seed}) is corrupt: {r.get('error')}; "
                    f"move its folder ({r['run_dir']}) aside and run `workbench study {study.name}` again to replace it"
                )
    bad = [
        f"{arm} seed {seed} ({r['run_id']}: {r['status']}{': ' + r['error'] if r.get('error') else ''})"
        for arm, seeds in records.items()
        for seed, r in seeds.items()
        if r["status"] != "completed"
    ]
    if bad:
        raise SpecError(
            f"study {study.name!r} has runs that did not complete: {'; '.join(bad)}; "
            f"`workbench resume RUN_ID` them or run `workbench study {study.name}` again to replace them"
        )


def code_note(records: dict[str, dict[int, dict]]) -> str:
    """What the report and the verdict say when --reuse-any-code let runs of any engine code in."""
    engines = sorted({r.get("engine") or "unknown" for seeds in records.values() for r in seeds.values()})
    return (
        "--reuse-any-code: runs were re-used whatever engine code made them; engine hashes among "
        f"these runs: {', '.join(engines)}"
    )
