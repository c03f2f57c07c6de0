"""Experiment specs: what a run is, as pydantic models.

Imports no torch, so the CLI and the TUI can read, validate and show experiments
without paying for a torch import. `experiments.json` holds named experiments; an
experiment may inherit from another with `"base": "name"`, and the command line
overrides any dotted key with `--set key=value`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SpecError(ValueError):
    """A problem with user input, told in one sentence naming the bad value and what is allowed."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo like "lr_" must not silently run the default.
    model_config = ConfigDict(extra="forbid")


DatasetName = Literal["mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"]


class DataSpec(_Section):
    name: DatasetName = Field(
        "mnist5k",
        description="mnist5k: 5,000 real MNIST digits shipped offline (4,000 train / 1,000 held out); "
        "digits: scikit-learn's 8x8 digits; the rest load through torchvision from `dir`.",
    )
    dir: str = Field("data", description="Folder holding torchvision datasets (relative to the working directory).")
    download: bool = Field(False, description="Download a torchvision dataset into `dir` if it is missing.")
    batch_size: int = Field(64, gt=0, description="Examples per training step.")


class ModelSpec(_Section):
    name: Literal["lenet", "vgg", "resnet"] = Field("lenet", description="CNN family member.")
    width: int = Field(
        16, gt=0, description="Channels of the first conv layer (all groups together); later layers scale from it."
    )
    groups: int = Field(
        1, ge=1, description="Split every conv layer's kernels into this many groups, each its own parameter tensor."
    )
    connectivity: Literal["dense", "grouped"] = Field(
        "dense",
        description="dense: one full-width model whose kernels are split into groups; "
        "grouped: independent narrow trunks (a grouped convolution), each seeing only its own group.",
    )
    head: Literal["joint", "members"] = Field(
        "joint",
        description="joint: one linear + softmax over every group's features; members (grouped only): each trunk "
        "has its own classifier and loss, and predictions average the trunks' logits.",
    )

    @model_validator(mode="after")
    def _groups_divide(self) -> ModelSpec:
        if self.width % self.groups:
            raise ValueError(f"model.width {self.width} must be a multiple of model.groups {self.groups}")
        if self.head == "members" and self.connectivity != "grouped":
            raise ValueError("model.head='members' needs model.connectivity='grouped'")
        return self


class OptimizerSpec(_Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="Learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam/adamw).")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd with momentum > 0 only).")
    weight_decay: float = Field(
        0.0, ge=0, description="L2 penalty: coupled (added to the gradient) for sgd/adam, decoupled for adamw."
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerSpec:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("optimizer.nesterov=true needs optimizer.name='sgd' and optimizer.momentum > 0")
        return self


class TrainSpec(_Section):
    steps: int = Field(1000, ge=0, description="Optimizer steps (0: evaluate only, e.g. an averaged ensemble).")
    eval_every: int = Field(250, ge=0, description="Evaluate on the held-out split every k steps (0 = only at the end).")


Strategy = Literal["first_kernels", "random_kernels", "random_elements", "layers", "groups", "none"]


class PartitionSpec(_Section):
    strategy: Strategy = Field(
        "first_kernels",
        description="How trainable coordinates split into `subset` (always trains) and `fixed` "
        "(frozen when freeze=true).",
    )
    fraction: float = Field(0.5, ge=0, le=1, description="Share of each layer that is fixed.")
    include_fc: bool = Field(False, description="Partition FC layers too (false: they are wholly in `subset`).")
    seed: int | Literal["run"] = Field(
        0,
        description='Seed for the random strategies; "run": the run\'s own seed, so each run seed draws a fresh '
        "partition (the same in every arm of a study for that seed).",
    )
    layers: list[str] = Field(default_factory=list, description="Layer names fixed whole by the `layers` strategy.")
    groups: list[int] = Field(
        default_factory=list, description="Kernel groups (see model.groups) fixed whole by the `groups` strategy."
    )

    @model_validator(mode="after")
    def _layers_named(self) -> PartitionSpec:
        if self.strategy == "layers" and not self.layers:
            raise ValueError("partition.strategy='layers' needs partition.layers, a list of layer names to fix")
        if self.strategy == "groups" and not self.groups:
            raise ValueError("partition.strategy='groups' needs partition.groups, a list of group indices to fix")
        return self


class SeedingSpec(_Section):
    """Seeded groups: their initial values do not come from the run's `seed`."""

    groups: list[int] = Field(default_factory=list, description="Kernel groups whose initial values are seeded.")
    seed: int = Field(0, description="Draw the seeded groups' values with this seed (the same for every run seed).")
    run: str | None = Field(None, description="Copy the seeded groups' values from this run's checkpoint instead.")
    checkpoint: str = Field("final", description="Which checkpoint of `run` to copy from (init, final, step_N).")


class EnsembleSpec(_Section):
    members: int = Field(1, ge=1, description="Train this many independent models as one (each with its own loss).")
    implementation: Literal["auto", "grouped", "vmap", "sequential"] = Field(
        "auto", description="How the members run: auto picks the fastest measured on the device."
    )


class PruneSpec(_Section):
    every: int = Field(0, ge=0, description="Prune channels every k steps (0 = never).")
    fraction: float = Field(0.1, gt=0, lt=1, description="Share of each conv layer's channels removed per pruning.")
    criterion: Literal["bn_scale", "channel_norm"] = Field(
        "bn_scale", description="bn_scale: |BatchNorm scale| (network slimming); channel_norm: L2 norm of a kernel."
    )
    min_fraction: float = Field(
        0.5, gt=0, le=1, description="Stop pruning a layer once it holds this share of its channels at step 0."
    )


class FusionSpec(_Section):
    mode: Literal["none", "average", "head", "mutant"] = Field(
        "none",
        description="average: the members' averaged logits; head: frozen trunks + one new linear + softmax; "
        "mutant: one wide model computing the members' average at step 0, then trained as one.",
    )
    runs: list[str] = Field(default_factory=list, description="Run ids of the trained members.")
    checkpoint: str = Field("final", description="Which checkpoint of each member run to fuse.")
    train_trunks: bool = Field(False, description="head mode: train the members' trunks too (false: frozen).")
    prune: PruneSpec = Field(default_factory=PruneSpec)


class TrackSpec(_Section):
    every: int = Field(10, ge=0, description="Record weight movement every k steps (0 = off).")


class CheckpointSpec(_Section):
    every: int = Field(0, ge=0, description="Save a checkpoint every k steps (0 = only init and final).")


_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


class ExperimentSpec(_Section):
    """One fully resolved run: every value a run depends on."""

    description: str = ""
    seed: int = Field(0, description="Seeds the initial weights and the data order.")
    device: str = Field("auto", description="cpu, cuda, cuda:N, mps or auto (first GPU if any, else CPU).")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    freeze: bool = Field(False, description="true: the fixed coordinates are frozen; false: all train, same partition tracked.")
    track: TrackSpec = Field(default_factory=TrackSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    seeding: SeedingSpec = Field(default_factory=SeedingSpec)
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    fusion: FusionSpec = Field(default_factory=FusionSpec)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        """Cross-section rules, each told as what to change."""
        groups = self.model.groups
        for key, indices in (("partition.groups", self.partition.groups), ("seeding.groups", self.seeding.groups)):
            bad = [g for g in indices if not 0 <= g < groups]
            if bad:
                raise ValueError(f"{key} {bad}: group indices must be 0..{groups - 1} (model.groups is {groups})")
        if groups > 1 and self.partition.strategy not in ("groups", "none"):
            raise ValueError(
                f"partition.strategy {self.partition.strategy!r} splits single kernel tensors; with model.groups > 1 "
                "use partition.strategy 'groups' or 'none'"
            )
        if self.ensemble.members > 1:
            if groups > 1 or self.partition.strategy != "none" or self.freeze:
                raise ValueError(
                    "ensemble.members > 1 needs model.groups 1, partition.strategy 'none' and freeze false "
                    "(each member is a whole model)"
                )
        if self.fusion.mode != "none":
            if not self.fusion.runs:
                raise ValueError(f"fusion.mode {self.fusion.mode!r} needs fusion.runs, the run ids to fuse")
            if self.ensemble.members > 1 or groups > 1:
                raise ValueError("fusion needs ensemble.members 1 and model.groups 1 (the fused model is built from the runs)")
        if self.fusion.prune.every and self.fusion.mode != "mutant":
            raise ValueError("fusion.prune.every > 0 needs fusion.mode 'mutant' (channel pruning narrows the fused model)")
        if self.seeding.run and not self.seeding.groups:
            raise ValueError("seeding.run needs seeding.groups, the groups to copy from that run")
        return self

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("device must be cpu, cuda, cuda:N, mps or auto")
        return value

    def digest(self) -> str:
        """Identifies what was computed: equal digests mean interchangeable runs."""
        # The ensemble implementations compute the same function: which one ran is not part of what.
        dump = self.model_dump(mode="json", exclude={"description": True, "ensemble": {"implementation"}})
        defaults = ExperimentSpec().model_dump(mode="json")
        # Keys added after runs already existed leave the digest alone at their default,
        # so those runs stay re-usable by studies and resumable.
        for section, keys in _LATER_KEYS.items():
            for key in keys:
                if key is None and dump.get(section) == {k: v for k, v in defaults[section].items() if k in dump[section]}:
                    dump.pop(section, None)
                elif key is not None and dump[section].get(key) == defaults[section][key]:
                    dump[section].pop(key, None)
        canonical = json.dumps(dump, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# section -> keys (None: the whole section) added to the spec after the first runs were made
_LATER_KEYS: dict[str, tuple[str | None, ...]] = {
    "model": ("groups", "connectivity", "head"),
    "partition": ("groups",),
    "seeding": (None,),
    "ensemble": (None,),
    "fusion": (None,),
}


class ExperimentEntry(ExperimentSpec):
    """An entry of experiments.json: a spec plus the name of the experiment it inherits from."""

    base: str | None = Field(None, description="Name of the experiment this one inherits from.")


MAX_SWEEP_CELLS = 64  # each cell is arms x seeds runs: a bound on what one typo can launch


class StudyArm(_Section):
    """One arm of a study: an experiment, optionally with overrides of its own."""

    name: str | None = Field(None, description="Label of the arm (default: the experiment's name).")
    experiment: str = Field(description="Name of an experiment in this file.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides for this arm only.")

    @property
    def label(self) -> str:
        return self.name or self.experiment


class StudySpec(_Section):
    """Paired runs: every arm x seed, compared with the reference arm at matched steps."""

    description: str = ""
    arms: list[str | StudyArm] = Field(
        min_length=2, description="Experiment names (or {name, experiment, set} objects); one is the reference."
    )
    reference: str | None = Field(None, description="Label of the reference arm (default: the arm with freeze=false).")
    seeds: int | list[int] = Field(
        3, description="How many seeds (0..K-1), or the list of seeds; a seed sets init and data order."
    )
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides applied to every arm.")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted key -> values: every combination (a cell) is a sub-study of its own, with the cell's "
        f"values set in every arm (at most {MAX_SWEEP_CELLS} cells).",
    )

    def arm_list(self) -> list[StudyArm]:
        return [StudyArm(experiment=arm) if isinstance(arm, str) else arm for arm in self.arms]

    def seed_list(self, count: int | None = None) -> list[int]:
        if count is not None:
            return list(range(count))
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class ExperimentsFile(_Section):
    """The shape of experiments.json (the JSON Schema editors use is generated from this)."""

    model_config = ConfigDict(extra="forbid", title="workbench experiments")
    schema_: str | None = Field(None, alias="$schema")
    experiments: dict[str, ExperimentEntry] = Field(default_factory=dict)
    studies: dict[str, StudySpec] = Field(default_factory=dict)


def json_schema() -> dict[str, Any]:
    return ExperimentsFile.model_json_schema(by_alias=True)


# ---------------------------------------------------------------------------------------
# Loading, inheritance and overrides. Everything works on plain dicts first (so an entry
# only overrides the keys it names) and validates the merged result once.


def _describe(error: dict[str, Any], prefix: str) -> str:
    loc = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if error["type"] == "missing":
        return f"{loc}: required"
    return f"{loc}: {message} (got {json.dumps(error.get('input'), default=str)})"


def validation_messages(exc: ValidationError, prefix: str = "") -> list[str]:
    return [_describe(error, prefix) for error in exc.errors()]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Experiments:
    """The experiments of one experiments.json, resolved through their `base` chains."""

    def __init__(self, raw: dict[str, Any], path: str = "experiments.json") -> None:
        self.path = path
        self.raw = raw
        self.entries: dict[str, dict[str, Any]] = raw.get("experiments", {}) or {}

    @classmethod
    def load(cls, path: str | Path) -> Experiments:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SpecError(f"{path}: no such experiments file; pass --experiments PATH") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("experiments", {}), dict):
            raise SpecError(f'{path}: must be a JSON object like {{"experiments": {{"name": {{...}}}}}}')
        return cls(raw, str(path))

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def errors(self) -> list[str]:
        """Every problem in the file, each with its location; empty when the file is valid."""
        problems: list[str] = []
        try:
            ExperimentsFile.model_validate(self.raw)
        except ValidationError as exc:
            # Shape errors of single entries are reported below on the resolved spec, with
            # inheritance applied; here only keep the ones about the file's own layout.
            problems += [m for m in validation_messages(exc) if not m.startswith("experiments.")]
        for name in self.entries:
            try:
                self.resolve(name)
            except SpecError as exc:
                problems += str(exc).split("\n")
        for name in self.studies:
            try:
                self.study(name)
            except SpecError as exc:
                problems += [p for p in str(exc).split("\n") if p not in problems]
        return problems

    # studies -------------------------------------------------------------------------
    @property
    def studies(self) -> dict[str, Any]:
        studies = self.raw.get("studies", {})
        return studies if isinstance(studies, dict) else {}

    def study(self, name: str, seeds: int | None = None, overrides: dict[str, Any] | None = None) -> ResolvedStudy:
        """Every arm x seed of study `name` as full specs; `seeds` (a count) and `overrides`
        come from the command line and win over the file."""
        if name not in self.studies:
            raise SpecError(f"unknown study {name!r}; {self.path} has: {', '.join(self.studies) or 'none'}")
        where = f"{self.path}: studies.{name}"
        try:
            study = StudySpec.model_validate(self.studies[name])
        except ValidationError as exc:
            raise SpecError("\n".join(validation_messages(exc, where))) from None
        arms = study.arm_list()
        labels = [arm.label for arm in arms]
        if len(set(labels)) != len(labels):
            raise SpecError(f"{where}.arms: two arms share a label; give them distinct `name`s (got {labels})")
        for key in [*study.set, *(k for arm in arms for k in arm.set)]:
            if key not in settable_keys():
                raise SpecError(f"{where}: set {key!r}: unknown key; allowed: {', '.join(settable_keys())}")
        if seeds is not None and seeds < 1:
            raise SpecError(f"--seeds {seeds}: must be at least 1")
        seed_list = study.seed_list(seeds)
        if not seed_list:
            raise SpecError(f"{where}.seeds: needs at least one seed")
        if study.sweep:
            cells = []
            for cell in sweep_cells(study.sweep, where):
                try:
                    resolved = self._resolve_study(name, where, study, seed_list, {**cell, **(overrides or {})})
                except SpecError as exc:
                    label = ", ".join(f"{k}={json.dumps(v)}" for k, v in cell.items())
                    # resolve() names overridden keys as --set ones; these came from the sweep
                    lines = [line.removeprefix("--set ") if line.split(":")[0][6:] in cell else line
                             for line in str(exc).splitlines()]
                    raise SpecError("\n".join(f"{where}.sweep cell {label}: {line}" for line in lines)) from None
                cells.append(StudyCell(cell, resolved))
            first = cells[0].study
            return ResolvedStudy(name, study.description, first.reference, seed_list, {}, first.experiments, cells)
        return self._resolve_study(name, where, study, seed_list, overrides or {})

    def _resolve_study(
        self, name: str, where: str, study: StudySpec, seed_list: list[int], overrides: dict[str, Any]
    ) -> ResolvedStudy:
        """Every arm x seed of `study` with `overrides` (a sweep cell's, the command line's) applied last."""
        arms = study.arm_list()
        labels = [arm.label for arm in arms]
        specs: dict[str, dict[int, ExperimentSpec]] = {}
        for arm in arms:
            if arm.experiment not in self.entries:
                raise SpecError(
                    f"{where}.arms: unknown experiment {arm.experiment!r}; known: {', '.join(self.entries)}"
                )
            specs[arm.label] = {
                seed: self.resolve(arm.experiment, {**study.set, **arm.set, **overrides, "seed": seed})
                for seed in seed_list
            }
        reference = study.reference
        if reference is None:
            unfrozen = [label for label in labels if not specs[label][seed_list[0]].freeze]
            if len(unfrozen) != 1:
                raise SpecError(
                    f"{where}.reference: {len(unfrozen)} arms have freeze=false ({', '.join(unfrozen) or 'none'}); "
                    f"name the reference arm, one of: {', '.join(labels)}"
                )
            reference = unfrozen[0]
        elif reference not in labels:
            raise SpecError(f"{where}.reference: {reference!r} is not an arm; arms: {', '.join(labels)}")
        return ResolvedStudy(name, study.description, reference, seed_list, specs,
                             {arm.label: arm.experiment for arm in arms})

    def _merged(self, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name not in self.entries:
            if seen:
                raise SpecError(
                    f"{self.path}: experiments.{seen[-1]}.base: unknown experiment {name!r}; "
                    f"known: {', '.join(self.entries)}"
                )
            raise SpecError(f"unknown experiment {name!r}; {self.path} has: {', '.join(self.entries) or 'none'}")
        if name in seen:
            raise SpecError(f"{self.path}: experiments.{name}.base: inheritance cycle {' -> '.join((*seen, name))}")
        entry = self.entries[name]
        if not isinstance(entry, dict):
            raise SpecError(f"{self.path}: experiments.{name}: must be an object, got {json.dumps(entry)}")
        base = entry.get("base")
        own = {k: v for k, v in entry.items() if k != "base"}
        if base is None:
            return own
        return _deep_merge(self._merged(base, (*seen, name)), own)

    def resolve(self, name: str, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
        """The full spec of `name`, with inheritance and `--set` overrides applied."""
        merged = self._merged(name)
        for key, value in (overrides or {}).items():
            merged = apply_override(merged, key, value)
        try:
            return ExperimentSpec.model_validate(merged)
        except ValidationError as exc:
            messages = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"])
                # A bad value that came from the command line is named as such, not as the file's.
                prefix = "--set " if key in (overrides or {}) else f"{self.path}: experiments.{name}."
                messages.append(prefix + _describe(error, "").lstrip("."))
            raise SpecError("\n".join(messages)) from None


@dataclass
class ResolvedStudy:
    """A study with every arm x seed resolved to a full spec.

    A study with a `sweep` has no specs of its own: each of its `cells` is a study resolved
    with that cell's values (its reference and experiments are the first cell's)."""

    name: str
    description: str
    reference: str
    seeds: list[int]
    specs: dict[str, dict[int, ExperimentSpec]]  # arm label -> seed -> spec
    experiments: dict[str, str]  # arm label -> experiment name
    cells: list[StudyCell] = field(default_factory=list)

    @property
    def arms(self) -> list[str]:
        return list(self.specs) or (self.cells[0].study.arms if self.cells else [])


@dataclass
class StudyCell:
    """One cell of a sweep: the values it sets, and the sub-study they make."""

    set: dict[str, Any]
    study: ResolvedStudy


def sweep_cells(sweep: dict[str, list[Any]], where: str = "sweep") -> list[dict[str, Any]]:
    """The cartesian product of a sweep's value lists, first key slowest; refuses unknown
    keys, empty lists and more than MAX_SWEEP_CELLS cells."""
    for key, values in sweep.items():
        if key == "seed":
            raise SpecError(f"{where}.sweep: 'seed' cannot be swept; a study's `seeds` already pairs the arms over seeds")
        if key not in settable_keys():
            raise SpecError(f"{where}.sweep: {key!r}: unknown key; allowed: {', '.join(settable_keys())}")
        if not values:
            raise SpecError(f"{where}.sweep.{key}: an empty list of values; give at least one value")
    count = math.prod(len(values) for values in sweep.values())
    if count > MAX_SWEEP_CELLS:
        raise SpecError(
            f"{where}.sweep: {count} cells (the product of its value lists) is more than the {MAX_SWEEP_CELLS} allowed; "
            "sweep fewer values"
        )
    return [dict(zip(sweep, combination)) for combination in itertools.product(*sweep.values())]


def settable_keys(model: type[BaseModel] = ExperimentSpec, prefix: str = "") -> list[str]:
    """Every dotted key that `--set` accepts."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += settable_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line: the value is JSON where it parses, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {text!r}: expected key=value, e.g. --set optimizer.lr=0.1")
    if key not in settable_keys():
        raise SpecError(f"--set {key!r}: unknown key; allowed: {', '.join(settable_keys())}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def apply_override(spec: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    merged = copy.deepcopy(spec)
    *parents, leaf = key.split(".")
    node = merged
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return merged
