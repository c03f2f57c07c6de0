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

Matching (match_runs) is torch-free and shared with the Studies screen. The digest covers the
concrete device, but turning an arm's "auto" into one needs torch; so a run is keyed by its
digest with the device left out, plus the device it records. An "auto" arm matches its runs
on any device (preferring the one "auto" picks here); only a run to be submitted is resolved
(with torch), so submitted specs and their digests are as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.provenance import current_engine_hash
from engine.run_folder import read_json
from engine.spec import ExperimentSpec, ResolvedStudy, SpecError
from workbench.devices import auto_device
from workbench.records import ACTIVE, CORRUPT, record_from_folder
from workbench.backends import LOCAL, LaunchOptions
from workbench.runner import refresh_active, submit
from workbench.store import Store

RANK = {"completed": 0, "running": 1, "queued": 2}  # runs done or on their way, best first; any other ranks after


def device_free_digest(spec: ExperimentSpec) -> str:
    """The digest with the device left out: "auto" becomes a concrete device only where a run
    starts, and resolving it needs torch, which matching must not import."""
    return spec.model_copy(update={"device": "auto"}).digest()


def named_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device  # as torch names it, and so spec.json


class RunKeys:
    """Each run's (device-free digest, device), from its spec.json read once (it never changes)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, str] | None] = {}

    def key(self, record: dict) -> tuple[str, str] | None:
        """None when the spec cannot be read (corrupt, or not a spec this code reads)."""
        run_dir = record.get("run_dir") or ""
        if run_dir not in self._keys:
            spec = read_json(Path(run_dir) / "spec.json") if run_dir else None
            try:
                parsed = ExperimentSpec.model_validate(spec) if isinstance(spec, dict) else None
            except ValueError:
                parsed = None
            self._keys[run_dir] = (device_free_digest(parsed), parsed.device) if parsed else None
        return self._keys[run_dir]


def stored_runs(logs_dir: Path) -> list[dict]:
    """The store's records whose folders exist (nothing run yet: do not create the folder by looking)."""
    if not Path(logs_dir).is_dir():
        return []
    return [r for r in refresh_active(Store(logs_dir)) if Path(r.get("run_dir") or "").is_dir()]


def match_runs(
    study: ResolvedStudy, records: list[dict], *, any_code: bool = False, keys: RunKeys | None = None
) -> dict[str, dict[int, dict | None]]:
    """arm -> seed -> the best run of that arm x seed's spec, or None; torch-free, used by
    `study`, `report` and the Studies screen alike.

    A run matches when its spec has the arm spec's digest (the same computation), and was
    made by this engine code unless `any_code`. An arm on device "auto" matches runs on any
    device (each records the one it ran on); other devices must be equal. Of several: completed,
    then running, then queued (RANK), then a failed/cancelled/lost one (which `study` replaces);
    then one on the device "auto" picks here (workbench.devices.auto_device); then the newest.
    A run whose spec.json cannot be read matches by the digest and device its record kept, so
    that `study` and `report` name it corrupt instead of passing it over.
    """
    keys = keys or RunKeys()
    engine = current_engine_hash()
    by_digest: dict[str, list[tuple[str, dict]]] = {}
    unreadable: list[dict] = []  # spec.json corrupt: matched by the digest its record kept, to be named corrupt
    for record in records:
        if not any_code and record.get("engine") != engine:
            continue
        key = keys.key(record)
        if key is not None:
            by_digest.setdefault(key[0], []).append((key[1], record))
        elif record.get("digest") and record.get("device"):
            unreadable.append(record)

    def rank(found: tuple[str, dict]) -> tuple[int, bool, float]:
        device, record = found
        return RANK.get(record.get("status") or "", len(RANK)), device != auto_device(), -(record.get("created") or 0)

    matched: dict[str, dict[int, dict | None]] = {}
    for arm, seeds in study.specs.items():
        matched[arm] = {}
        for seed, spec in seeds.items():
            wanted = named_device(spec.device)
            found = [f for f in by_digest.get(device_free_digest(spec), []) if wanted in ("auto", f[0])]
            found += [(r["device"], r) for r in unreadable if wanted in ("auto", r["device"])
                      and spec.model_copy(update={"device": r["device"]}).digest() == r["digest"]]
            matched[arm][seed] = min(found, key=rank)[1] if found else None
    return matched


@dataclass
class StudyRuns:
    study: ResolvedStudy
    runs: dict[str, dict[int, Path]]  # arm -> seed -> run folder
    specs: dict[str, dict[int, ExperimentSpec]]  # with the device each run has ("auto" left for a missing one)
    reused: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)

    def records(self) -> dict[str, dict[int, dict]]:
        """Fresh records of every run, read from the folders."""
        return {arm: {seed: record_from_folder(path) for seed, path in seeds.items()} for arm, seeds in self.runs.items()}


def gather(
    study: ResolvedStudy, logs_dir: Path, *, launch: bool, max_per_device: int | None = None, any_code: bool = False,
    options: LaunchOptions = LOCAL,
) -> StudyRuns:
    """Match every arm x seed to a run (match_runs); with `launch`, submit the missing ones
    (their device made concrete, which imports torch) through `options`' backend. `any_code`:
    re-use runs whatever engine code made them (the spec digest alone decides)."""
    keys = RunKeys()
    matched = match_runs(study, stored_runs(logs_dir), any_code=any_code, keys=keys)
    usable = {(arm, seed): r for arm, seeds in matched.items() for seed, r in seeds.items() if r and r["status"] in RANK}
    specs = {arm: dict(seeds) for arm, seeds in study.specs.items()}
    for (arm, seed), record in usable.items():
        device = (keys.key(record) or (None, record["device"]))[1]
        specs[arm][seed] = specs[arm][seed].model_copy(update={"device": device})
    if launch:  # all or nothing: every run to be queued is checked before the first is
        from engine.preflight import preflight

        launcher = options.launcher() if any((arm, seed) not in usable for arm, seeds in specs.items() for seed in seeds) else None
        for arm, seeds in specs.items():
            for seed in seeds:
                if (arm, seed) not in usable:
                    seeds[seed] = options.placed(seeds[seed])
        new = [spec for arm, seeds in specs.items() for seed, spec in seeds.items() if (arm, seed) not in usable]
        preflight([launcher.checkable(spec) for spec in new], logs_dir)
    found = StudyRuns(study, {arm: {} for arm in specs}, specs)
    submitted: dict[str, Path] = {}  # digest -> folder: arms x seeds with one spec share one run
    for arm, seeds in specs.items():
        for seed, spec in seeds.items():
            record = usable.get((arm, seed))
            if record is not None:
                found.runs[arm][seed] = Path(record["run_dir"])
                found.reused.append(record["run_id"])
            elif launch and spec.digest() in submitted:
                found.runs[arm][seed] = submitted[spec.digest()]
                found.reused.append(submitted[spec.digest()].name)
            elif launch:
                folder = submit(spec, study.experiments[arm], logs_dir, max_per_device=max_per_device, launcher=launcher)
                submitted[spec.digest()] = folder.path
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


def finished_runs(
    prerequisite: ResolvedStudy,
    logs_dir: Path,
    *,
    launch: bool,
    missing: Callable[[list[int]], str],
    max_per_device: int | None = None,
    any_code: bool = False,
    options: LaunchOptions = LOCAL,
    follow: Callable[[dict[str, Path]], None] | None = None,
    label: str = "",
) -> dict[str, dict[int, Path]]:
    """The completed runs (arm -> seed -> folder) of a study whose runs other runs need first:
    `continues`' converged runs (workbench/escape.py), the ensemble runs a fuse arm fuses
    (workbench/fused_arms.py). With `launch`, missing ones are submitted and followed to their
    end (`follow`), then every one must have completed. Without, a missing one is refused with
    `missing(seeds)` (one sentence); unfinished ones are refused by check_completed."""
    found = gather(prerequisite, logs_dir, launch=launch, max_per_device=max_per_device, any_code=any_code,
                   options=options)
    if found.missing:
        raise SpecError(missing(sorted({seed for _, seed in found.missing})))
    if follow is not None:
        follow({f"{arm} seed {seed}{label}": path for arm, seeds in found.runs.items() for seed, path in seeds.items()})
    check_completed(prerequisite, found.records())
    return found.runs


def with_prerequisites(
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
    """`resolved` with the specs that need other runs first made: `continues` sets init.run
    (workbench/escape.py), then fuse arms fuse their source arm's runs (workbench/fused_arms.py).
    `pending_ok` (the Studies screen): a fuse arm whose source runs are not done stays empty."""
    from workbench.escape import continue_from_sources
    from workbench.fused_arms import fill_fused_arms

    resolved = continue_from_sources(resolved, logs_dir, launch=launch, max_per_device=max_per_device,
                                     any_code=any_code, follow=follow)
    return fill_fused_arms(resolved, logs_dir, launch=launch, max_per_device=max_per_device, any_code=any_code,
                           options=options, follow=follow, pending_ok=pending_ok)
