"""Experiment specs: what a run is, as pydantic models.

Imports no torch, so the CLI and the TUI can read, validate and show experiments
without paying for a torch import. `experiments.json` holds named experiments; an
experiment may inherit from another with `"base": "name"`, and the command line
overrides any dotted key with `--set key=value`.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import hashlib
import json
import os
import re
import itertools
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from engine.choices import ENSEMBLE_IMPLEMENTATIONS, FUSION_MODES, OPTIMIZERS, PARTITIONS, PRUNE_CRITERIA, SCHEDULE_MODES
from engine.coupling import is_center
from engine.hessian_spec import HessianSpec  # also declares the Hessian-guided strategies


class SpecError(ValueError):
    """A problem with user input, told in one sentence naming the bad value and what is allowed."""


# What a file (or the command line) may ask for. Each limit is far above any run this tool
# is for and low enough that checking a file stays instant: without them, a typo such as
# "seeds": 10000000 made `validate` resolve ten million specs (minutes, ~100 GB).
# Seeds are 0..2^32-1: torch takes up to 2^64-1 but numpy's legacy RNG only 2^32-1, and
# tools that read JSON numbers as doubles (editors, JavaScript) keep every such seed exact.
SEED_MAX = 2**32 - 1
MAX_SEEDS = 1000  # seeds per study (a count, or the length of a list of seeds)
MAX_ARMS = 16  # arms per study
MAX_STEPS = 10_000_000  # optimizer steps of one run, and any "every k steps"
MAX_WIDTH = 1024  # model.width: lenet at 1024 has about 800M parameters already
MAX_BATCH = 65_536  # data.batch_size
MAX_MEMBERS = 64  # ensemble members, and runs fused into one
MAX_LIST = 1000  # partition.layers and other lists of names
MAX_EXPERIMENTS = 1000  # experiments in one file
MAX_STUDIES = 100  # studies in one file (each resolves up to MAX_ARMS x MAX_SEEDS specs)
MAX_BASE_DEPTH = 16  # how many `base` links one experiment may follow
MAX_FILE_BYTES = 1 << 20  # an experiments file (the shipped one is about 8 KB)
MAX_NESTING = 32  # levels of [ ] and { } in an experiments file (the shipped one has 4)


# Named choices: each allows the names its registry declares (engine/choices.py).
OptimizerName = OPTIMIZERS.field_type()
Strategy = PARTITIONS.field_type()
EnsembleImplementation = ENSEMBLE_IMPLEMENTATIONS.field_type()
FusionMode = FUSION_MODES.field_type()
PruneCriterion = PRUNE_CRITERIA.field_type()
ScheduleMode = SCHEDULE_MODES.field_type()


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
    batch_size: int = Field(64, gt=0, le=MAX_BATCH, description="Examples per training step.")


class ModelSpec(_Section):
    name: Literal["lenet", "vgg", "resnet"] = Field("lenet", description="CNN family member.")
    width: int = Field(
        16, gt=0, le=MAX_WIDTH, description="Channels of the first conv layer (all groups together); later layers scale from it."
    )
    groups: int = Field(
        1, ge=1, le=MAX_WIDTH, description="Split every conv layer's kernels into this many groups, each its own parameter tensor."
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
    name: OptimizerName = "sgd"
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
    steps: int = Field(1000, ge=0, le=MAX_STEPS, description="Optimizer steps (0: evaluate only, e.g. an averaged ensemble).")
    eval_every: int = Field(250, ge=0, le=MAX_STEPS, description="Evaluate on the held-out split every k steps (0 = only at the end).")


class PartitionSpec(_Section):
    strategy: Strategy = Field(
        "first_kernels",
        description="How trainable coordinates split into `subset` (always trains) and `fixed` "
        "(frozen when freeze=true).",
    )
    fraction: float = Field(0.5, ge=0, le=1, description="Share of each layer that is fixed.")
    include_fc: bool = Field(False, description="Partition FC layers too (false: they are wholly in `subset`).")
    seed: typing.Annotated[int, Field(ge=0, le=SEED_MAX)] | Literal["run"] = Field(
        0,
        description='Seed for the random strategies (0..2^32-1); "run": the run\'s own seed, so each run seed draws '
        "a fresh partition (the same in every arm of a study for that seed).",
    )
    layers: list[str] = Field(
        default_factory=list, max_length=MAX_LIST, description="Layer names fixed whole by the `layers` strategy."
    )
    groups: list[int] = Field(
        default_factory=list,
        max_length=MAX_WIDTH,
        description="Kernel groups (see model.groups) fixed whole by the `groups` strategy.",
    )
    hessian: HessianSpec = Field(default_factory=HessianSpec, description="Settings of hessian_interaction and obd.")

    @model_validator(mode="after")
    def _strategy_settings(self) -> PartitionSpec:
        PARTITIONS.check(self.strategy, self)  # e.g. `layers` needs partition.layers
        return self


class SeedingSpec(_Section):
    """Seeded groups: their initial values do not come from the run's `seed`."""

    groups: list[int] = Field(
        default_factory=list, max_length=MAX_WIDTH, description="Kernel groups whose initial values are seeded."
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Draw the seeded groups' values with this seed (the same for every run seed).")
    run: str | None = Field(None, description="Copy the seeded groups' values from this run's checkpoint instead.")
    checkpoint: str = Field("final", description="Which checkpoint of `run` to copy from (init, final, step_N).")


class ElasticFreeze(_Section):
    """Soft freezing: the fixed coordinates train but are pulled back to their initial values."""

    mode: Literal["elastic"] = Field(description="elastic: the fixed coordinates train, pulled back to init with strength rho.")
    rho: float = Field(ge=0, le=1e12, description="Strength of the pull (0: no pull, the plain run; large: hard freezing).")
    rule: Literal["decoupled"] = Field(
        "decoupled",
        description="decoupled: after every optimizer step, w -= min(lr*rho, 1) * (w - w0) on the fixed coordinates "
        "(EASGD's elastic force, outside the optimizer's momentum and Adam scaling; capped at 1 so it never overshoots w0).",
    )


class CouplingSpec(_Section):
    """Elastic averaging between ensemble members (Zhang, Choromanska & LeCun 2015)."""

    mode: Literal["none", "easgd"] = Field(
        "none", description="none: independent members; easgd: members and a center variable pull on each other."
    )
    rho: float = Field(0.1, ge=0, le=1e12, description="Elastic strength; alpha = lr * rho per coupling.")
    period: int = Field(1, ge=1, le=MAX_STEPS, description="Couple every this many steps (tau).")


class EnsembleSpec(_Section):
    members: int = Field(1, ge=1, le=MAX_MEMBERS, description="Train this many independent models as one (each with its own loss).")
    implementation: EnsembleImplementation = Field(
        "auto", description="How the members run: auto picks the fastest measured on the device."
    )
    coupling: CouplingSpec = Field(default_factory=CouplingSpec)


class PruneSpec(_Section):
    every: int = Field(0, ge=0, le=MAX_STEPS, description="Prune channels every k steps (0 = never).")
    fraction: float = Field(0.1, gt=0, lt=1, description="Share of each conv layer's channels removed per pruning.")
    criterion: PruneCriterion = Field(
        "bn_scale", description="bn_scale: |BatchNorm scale| (network slimming); channel_norm: L2 norm of a kernel."
    )
    min_fraction: float = Field(
        0.5, gt=0, le=1, description="Stop pruning a layer once it holds this share of its channels at step 0."
    )


class FusionSpec(_Section):
    mode: FusionMode = Field(
        "none",
        description="average: the members' averaged logits; head: frozen trunks + one new linear + softmax; "
        "mutant: one wide model computing the members' average at step 0, then trained as one.",
    )
    runs: list[str] = Field(default_factory=list, max_length=MAX_MEMBERS, description="Run ids of the trained members.")
    checkpoint: str = Field("final", description="Which checkpoint of each member run to fuse.")
    train_trunks: bool = Field(False, description="head mode: train the members' trunks too (false: frozen).")
    prune: PruneSpec = Field(default_factory=PruneSpec)


class RegularizerSpec(_Section):
    """A prior over the weights added to the loss (Nowlan & Hinton 1992; Ullrich, Meeds & Welling 2017)."""

    name: Literal["none", "soft_weight_sharing"] = Field(
        "none",
        description="soft_weight_sharing: tau x the negative log-likelihood of the weights under a learned "
        "Gaussian mixture (one component pinned at 0) is added to the loss.",
    )
    components: int = Field(16, ge=2, le=256, description="Mixture components J, the one pinned at 0 included.")
    tau: float = Field(0.005, ge=0, le=1e6, description="Weight of the prior's negative log-likelihood in the loss.")
    on: Literal["subset", "all"] = Field("all", description="Which coordinates the prior covers: the partition's subset, or all.")
    lr: float = Field(5e-4, gt=0, le=10, description="Adam learning rate of the mixture's means, log-variances and mixing logits.")
    pi_zero: float = Field(0.99, gt=0, lt=1, description="Mixing proportion of the component pinned at 0 (fixed).")


class TrackSpec(_Section):
    every: int = Field(10, ge=0, le=MAX_STEPS, description="Record weight movement every k steps (0 = off).")
    snapshots: int = Field(0, ge=0, le=MAX_STEPS, description="Save the weights' compact form every k steps (0 = off): "
                           "first conv kernels, per-layer histograms, a 2-D projection (snapshots.jsonl).")


class CheckpointSpec(_Section):
    every: int = Field(0, ge=0, le=MAX_STEPS, description="Save a checkpoint every k steps (0 = only init and final).")


class ScheduleSpec(_Section):
    """A partition that changes during the run: phases of `every` steps (engine/phases.py)."""

    every: int = Field(
        0, ge=0, le=MAX_STEPS, description="Change which coordinates are fixed every k steps (0 = never: one partition)."
    )
    mode: ScheduleMode = Field("alternate", description="How each phase's fixed coordinates are chosen.")
    optimizer_state: Literal["keep", "reset"] = Field(
        "keep",
        description="keep: a coordinate's momentum / Adam moments are held while it is fixed and resume when it trains "
        "again; reset: the optimizer state of every coordinate starts afresh at each phase.",
    )


# Partition strategies whose masks do not depend on a seed: a fresh draw would be the same masks.
_UNSEEDED_STRATEGIES = ("first_kernels", "layers", "groups", "none")


class InitSpec(_Section):
    """Start from another run's weights instead of the seed's initialisation (engine/init_run.py)."""

    run: str | None = Field(None, description="Run id whose checkpoint gives the initial weights (same model spec).")
    checkpoint: str = Field("final", description="Which checkpoint of `run` (init, final, step_N).")
    optimizer: Literal["fresh", "carry"] = Field(
        "fresh", description="fresh: a new optimizer state; carry: the run's optimizer state saved at that checkpoint."
    )


_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


class ExperimentSpec(_Section):
    """One fully resolved run: every value a run depends on."""

    description: str = ""
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seeds the initial weights and the data order (0..2^32-1).")
    device: str = Field("auto", description="cpu, cuda, cuda:N, mps or auto (first GPU if any, else CPU).")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    freeze: bool | ElasticFreeze = Field(
        False,
        description="true: the fixed coordinates are frozen; false: all train, same partition tracked; "
        '{"mode": "elastic", "rho": R}: they train, pulled back to their initial values.',
    )
    track: TrackSpec = Field(default_factory=TrackSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    seeding: SeedingSpec = Field(default_factory=SeedingSpec)
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    fusion: FusionSpec = Field(default_factory=FusionSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    init: InitSpec = Field(default_factory=InitSpec)
    regularizer: RegularizerSpec = Field(default_factory=RegularizerSpec)

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
        if self.fusion.prune.every and self.freeze:
            # pruning rebuilds the layers, so masks drawn over the built model no longer fit them
            raise ValueError("fusion.prune.every > 0 needs freeze false (pruning rebuilds the layers a frozen subset is drawn on)")
        if self.ensemble.coupling.mode != "none" and self.ensemble.members < 2:
            raise ValueError(
                f"ensemble.coupling.mode {self.ensemble.coupling.mode!r} couples ensemble members; set ensemble.members >= 2"
            )
        if self.regularizer.name != "none" and self.fusion.prune.every:
            raise ValueError("regularizer.name 'soft_weight_sharing' needs fusion.prune.every 0 (pruning reshapes the weights the prior covers)")
        if self.seeding.run and not self.seeding.groups:
            raise ValueError("seeding.run needs seeding.groups, the groups to copy from that run")
        return self

    @model_validator(mode="after")
    def _init_fits(self) -> ExperimentSpec:
        if self.init.run and (self.fusion.mode != "none" or self.ensemble.members > 1 or self.seeding.groups):
            raise ValueError("init.run needs no fusion, no ensemble and no seeding.groups (it gives every initial weight)")
        return self

    @model_validator(mode="after")
    def _schedule_fits(self) -> ExperimentSpec:
        """A changing partition needs a partition to change, and a second phase."""
        schedule, partition = self.schedule, self.partition
        if not schedule.every:
            return self
        if schedule.every >= self.train.steps:
            raise ValueError(
                f"schedule.every {schedule.every} must be below train.steps {self.train.steps}, or the run has one phase"
            )
        if partition.strategy == "none" or self.ensemble.members > 1 or self.fusion.mode != "none":
            raise ValueError("schedule.every > 0 needs a partition (partition.strategy not 'none'), no ensemble and no fusion")
        if self.elastic:  # the pull holds the phase-0 fixed set; a phase switch would not move it
            raise ValueError("schedule.every > 0 needs freeze true or false, not elastic")
        if schedule.mode == "rotate" and (not 0 < partition.fraction < 1 or self.model.groups > 1):
            raise ValueError(
                f"schedule.mode 'rotate' needs 0 < partition.fraction < 1 (got {partition.fraction}) and model.groups 1"
            )
        if schedule.mode == "resample" and partition.strategy in _UNSEEDED_STRATEGIES:
            raise ValueError(
                f"schedule.mode 'resample' draws the partition afresh, but partition.strategy {partition.strategy!r} "
                "draws nothing; use a random strategy (random_kernels, random_elements) or a Hessian one (hessian_interaction, obd: measured again at each phase's start)"
            )
        if schedule.mode == "resample" and partition.hessian.at is not None:
            raise ValueError(
                "schedule.mode 'resample' measures the Hessian again at the weights each phase starts from; "
                "partition.hessian.at would measure the same checkpoint every phase: leave it out"
            )
        return self

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_form(cls, value: Any) -> Any:
        # One sentence for a bad value, not one complaint per member of the union.
        if isinstance(value, dict):
            try:
                return ElasticFreeze.model_validate(value)
            except ValidationError as exc:
                # the caller's message shows the whole value: here only what is wrong in it
                raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))} {e['msg'].lower()}" for e in exc.errors())) from None
        if isinstance(value, ElasticFreeze):
            return value
        try:
            return TypeAdapter(bool).validate_python(value)  # what a plain bool field always accepted
        except ValidationError:
            raise ValueError('must be true, false or {"mode": "elastic", "rho": R} with R >= 0') from None

    @property
    def elastic(self) -> ElasticFreeze | None:
        """The elastic pull on the fixed coordinates, when `freeze` asks for one."""
        return self.freeze if isinstance(self.freeze, ElasticFreeze) else None

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
    "partition": ("groups", "hessian"),
    "seeding": (None,),
    "ensemble": ("coupling", None),
    "fusion": (None,),
    "schedule": (None,),
    "init": (None,),
    "regularizer": (None,),
    "track": ("snapshots",),
}


class ExperimentEntry(ExperimentSpec):
    """An entry of experiments.json: a spec plus the name of the experiment it inherits from."""

    base: str | None = Field(None, description="Name of the experiment this one inherits from.")


MAX_SWEEP_CELLS = 64  # each cell is arms x seeds runs: a bound on what one typo can launch


class StudyFuse(_Section):
    """An arm made by fusing, seed by seed, another arm's ensemble run (workbench/fused_arms.py)."""

    arm: str = Field(description="Label of the study's ensemble arm whose run of each seed is fused (its members).")
    mode: FusionMode = Field("mutant", description="How the members are fused (as `workbench fuse --mode`).")
    checkpoint: str = Field("final", description="Which checkpoint of the source run (final, init, step_N).")


class StudyArm(_Section):
    """One arm of a study: an experiment, optionally with overrides of its own; or the fusion
    of another arm's runs (`fuse`), made once that arm's run of the seed has completed."""

    name: str | None = Field(None, description="Label of the arm (default: the experiment's name).")
    experiment: str | None = Field(None, description="Name of an experiment in this file (unless `fuse`).")
    fuse: StudyFuse | None = Field(
        None, description="Instead of an experiment: fuse another arm's ensemble run of each seed "
        "(e.g. {\"arm\": \"ensemble-4\", \"mode\": \"mutant\"}); `set` then applies to the fused run."
    )
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides for this arm only.")

    @property
    def label(self) -> str:  # exactly one of experiment and fuse: checked where the study is resolved
        return self.name or self.experiment or (f"{self.fuse.mode}-of-{self.fuse.arm}" if self.fuse else "")


class StudySpec(_Section):
    """Paired runs: every arm x seed, compared with the reference arm at matched steps."""

    description: str = ""
    arms: list[str | StudyArm] = Field(
        min_length=2,
        max_length=MAX_ARMS,
        description="Experiment names (or {name, experiment, set} objects); one is the reference.",
    )
    reference: str | None = Field(None, description="Label of the reference arm (default: the arm with freeze=false).")
    seeds: (
        typing.Annotated[int, Field(ge=1, le=MAX_SEEDS)]
        | typing.Annotated[list[typing.Annotated[int, Field(ge=0, le=SEED_MAX)]], Field(min_length=1, max_length=MAX_SEEDS)]
    ) = Field(3, description="How many seeds (0..K-1), or the list of seeds; a seed sets init and data order.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides applied to every arm.")
    continues: str | None = Field(
        None,
        description="An experiment: every arm starts from the final weights of that experiment's run with the same "
        "seed (init.run, run first when missing), e.g. to escape a converged model's minimum; the verdict adds "
        "the escape figures.",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted key -> values: every combination (a cell) is a sub-study of its own, with the cell's "
        f"values set in every arm (at most {MAX_SWEEP_CELLS} cells).",
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_bounded(cls, value: Any) -> Any:
        # Checked before the int | list union so that a bad value gets one sentence, not
        # one complaint per member of the union.
        if isinstance(value, list):
            if not 1 <= len(value) <= MAX_SEEDS:
                raise ValueError(f"a list of seeds must hold 1..{MAX_SEEDS} seeds, not {len(value)}")
            bad = [v for v in value if not _is_int(v) or not 0 <= v <= SEED_MAX]
            if bad:
                raise ValueError(f"seed {json.dumps(bad[0])}: every seed must be an integer 0..{SEED_MAX} (2^32-1)")
        elif not _is_int(value) or not 1 <= value <= MAX_SEEDS:
            raise ValueError(f"must be a count of seeds 1..{MAX_SEEDS} or a list of seeds")
        return value

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
    experiments: dict[str, ExperimentEntry] = Field(default_factory=dict, max_length=MAX_EXPERIMENTS)
    studies: dict[str, StudySpec] = Field(default_factory=dict, max_length=MAX_STUDIES)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed_count(count: int, option: str = "--seeds") -> None:
    """A seed count from the command line, bounded like a study's `seeds`."""
    if not 1 <= count <= MAX_SEEDS:
        raise SpecError(f"{option} {count}: must be 1..{MAX_SEEDS} (seeds 0..K-1)")


def json_schema() -> dict[str, Any]:
    return ExperimentsFile.model_json_schema(by_alias=True)


# ---------------------------------------------------------------------------------------
# Loading, inheritance and overrides. Everything works on plain dicts first (so an entry
# only overrides the keys it names) and validates the merged result once.


def _shown(value: Any, limit: int = 60) -> str:
    """A value as JSON, cut short: an error names the value without printing a megabyte of it."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(word: str, choices: list[str], listing: str = "allowed") -> str:
    """`; did you mean 'lr'?` when one choice is close to `word`, else `; allowed: a, b` (or nothing)."""
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {listing}: {', '.join(choices)}" if choices else ""


def _inner_type(annotation: Any, part: Any) -> Any:
    """The type at `part` of a validation error's location inside `annotation` (None: unknown)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        return next((f.annotation for name, f in fields.items() if part in (name, f.alias)), None)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _inner_type(args[0], part)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    # A union: pydantic's location names the member tried (`StudyArm`).
    return next((member for member in args if getattr(member, "__name__", None) == part), None)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed beside the unknown key at `loc` (empty when that place has no model)."""
    node: Any = model
    for part in loc[:-1]:
        node = _inner_type(node, part)
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return []
    return [field.alias or name for name, field in node.model_fields.items()]


def _describe(error: dict[str, Any], prefix: str, model: type[BaseModel] = ExperimentSpec) -> str:
    loc = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key{_suggest(str(error['loc'][-1]), _allowed_keys(model, error['loc']))}"
    if error["type"] == "missing":
        return f"{loc}: required"
    if error["type"] == "model_type":  # pydantic names the class (DataSpec); the user wrote a section
        message = "must be an object of settings"
    elif error["type"] in ("less_than_equal", "greater_than_equal") and error["loc"][-1:] == ("seed",):
        message = f"must be an integer 0..{SEED_MAX} (2^32-1, a seed that torch and numpy both take)"
    return f"{loc}: {message} (got {_shown(error.get('input'))})"


def validation_messages(exc: ValidationError, prefix: str = "", model: type[BaseModel] = ExperimentSpec) -> list[str]:
    """One line per error; `model` is what was validated (it knows the keys a typo was meant as)."""
    return [_describe(error, prefix, model) for error in exc.errors()]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _nesting(value: Any) -> int:
    """Levels of lists and objects in parsed JSON (iterative: any depth is measured safely)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _text_nesting(text: str) -> int:
    """Levels of [ ] and { } in JSON text that the parser could not nest (strings skipped)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    depth = deepest = 0
    for char in bare:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise SpecError(f"{name} is not a number JSON allows; write a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise SpecError(f"{text} is too large for a floating-point number")
    return value


def read_experiments_json(path: Path) -> dict[str, Any]:
    """The JSON object of an experiments file, or a SpecError naming what is wrong with the
    file: missing, too big, not UTF-8, not JSON, nested too deep, too many entries."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # never read a huge file whole just to refuse it
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise SpecError(f"{path}: no such experiments file; pass --experiments PATH") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not an experiments file; pass --experiments PATH") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(
            f"{path}: {max(size, len(data)):,} bytes; an experiments file may be at most {MAX_FILE_BYTES:,} bytes (1 MiB)"
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # UTF-32 LE starts the same way
        raise SpecError(f"{path}: is UTF-16 or UTF-32 text; save it as UTF-8")
    if b"\x00" in data:
        raise SpecError(f"{path}: holds a NUL byte at offset {data.index(0):,}; an experiments file is UTF-8 JSON text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}); save it as UTF-8"
        ) from None
    try:
        raw = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raw = None  # nested too deep for the parser: measured and told below
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except ValueError:  # the only other one: an integer longer than Python converts
        raise SpecError(
            f"{path}: holds an integer of more than {sys.get_int_max_str_digits():,} digits; no setting takes one"
        ) from None
    depth = _text_nesting(text) if raw is None else _nesting(raw)
    if depth > MAX_NESTING:
        raise SpecError(f"{path}: nested {depth:,} levels deep; at most {MAX_NESTING} levels of [ ] and {{ }} are allowed")
    if not isinstance(raw, dict) or not isinstance(raw.get("experiments", {}), dict):
        raise SpecError(f'{path}: must be a JSON object like {{"experiments": {{"name": {{...}}}}}}')
    for key, limit in (("experiments", MAX_EXPERIMENTS), ("studies", MAX_STUDIES)):
        if isinstance(raw.get(key), dict) and len(raw[key]) > limit:
            raise SpecError(f"{path}: {len(raw[key]):,} {key}; a file may hold at most {limit:,}")
    return raw


class Experiments:
    """The experiments of one experiments.json, resolved through their `base` chains."""

    def __init__(self, raw: dict[str, Any], path: str = "experiments.json") -> None:
        self.path = path
        self.raw = raw
        self.entries: dict[str, dict[str, Any]] = raw.get("experiments", {}) or {}

    @classmethod
    def load(cls, path: str | Path) -> Experiments:
        return cls(read_experiments_json(Path(path)), str(path))

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def errors(self) -> list[str]:
        """Every problem in the file, each once, with its location; empty when the file is valid."""
        problems: list[str] = []
        try:
            ExperimentsFile.model_validate(self.raw)
        except ValidationError as exc:
            # Entries and studies are reported below, entries with inheritance applied; here
            # only keep the errors about the file's own layout.
            messages = validation_messages(exc, model=ExperimentsFile)
            problems += [m for m in messages if not m.startswith(("experiments.", "studies."))]
        # resolve() names each error where it is written, so an error in `baseline` reads the
        # same from every experiment and study that inherits it, and is kept once.
        for name in self.entries:
            try:
                self.resolve(name)
            except SpecError as exc:
                problems += [p for p in str(exc).split("\n") if p not in problems]
        for name in self.studies:
            try:
                self.study(name)
            except SpecError as exc:
                problems += [p for p in str(exc).split("\n") if p not in problems]
        return problems

    def _base(self, name: str) -> str | None:
        entry = self.entries.get(name)
        base = entry.get("base") if isinstance(entry, dict) else None
        return base if isinstance(base, str) else None

    def _written_in(self, name: str, loc: tuple[Any, ...]) -> str:
        """The experiment of `name`'s base chain whose entry sets the value at `loc`: the nearest
        (its value is the one in effect), else `name` itself (a default, or a cross-key rule)."""
        current: str | None = name
        seen: set[str] = set()
        while current is not None and current in self.entries and current not in seen:
            seen.add(current)
            node: Any = self.entries[current]
            for part in loc:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                    node = node[part]
                else:
                    break
            else:
                return current
            current = self._base(current)
        return name

    # studies -------------------------------------------------------------------------
    @property
    def studies(self) -> dict[str, Any]:
        studies = self.raw.get("studies", {})
        return studies if isinstance(studies, dict) else {}

    def study(self, name: str, seeds: int | None = None, overrides: dict[str, Any] | None = None) -> ResolvedStudy:
        """Every arm x seed of study `name` as full specs; `seeds` (a count) and `overrides`
        come from the command line and win over the file."""
        if name not in self.studies:
            raise SpecError(f"no study {name!r} in {self.path}{_suggest(name, list(self.studies), 'it has')}")
        where = f"{self.path}: studies.{name}"
        try:
            study = StudySpec.model_validate(self.studies[name])
        except ValidationError as exc:
            raise SpecError("\n".join(validation_messages(exc, where, StudySpec))) from None
        arms = study.arm_list()
        labels = [arm.label for arm in arms]
        if len(set(labels)) != len(labels):
            raise SpecError(f"{where}.arms: two arms share a label; give them distinct `name`s (got {labels})")
        for key in [*study.set, *(k for arm in arms for k in arm.set)]:
            if key not in settable_keys():
                raise SpecError(f"{where}: set {key!r}: unknown key{_suggest(key, settable_keys())}")
        if seeds is not None:
            check_seed_count(seeds)
        seed_list = study.seed_list(seeds)
        if study.sweep:
            cells = []
            for cell in sweep_cells(study.sweep, where):
                label = ", ".join(f"{k}={json.dumps(v)}" for k, v in cell.items())
                try:
                    resolved = self._resolve_study(name, where, study, seed_list, overrides or {}, cell)
                except SpecError as exc:
                    raise SpecError("\n".join(f"{where}.sweep cell {label}: {line}" for line in str(exc).splitlines())) from None
                cells.append(StudyCell(cell, resolved))
            first = cells[0].study
            return ResolvedStudy(name, study.description, first.reference, seed_list, {}, first.experiments, cells)
        return self._resolve_study(name, where, study, seed_list, overrides or {}, {})

    def _resolve_study(
        self, name: str, where: str, study: StudySpec, seed_list: list[int], overrides: dict[str, Any],
        cell: dict[str, Any],
    ) -> ResolvedStudy:
        """Every arm x seed of `study` with a sweep `cell`'s values, then the command line's
        `overrides`, applied last."""
        arms = study.arm_list()
        labels = [arm.label for arm in arms]
        specs: dict[str, dict[int, ExperimentSpec]] = {}
        fused = {arm.label: arm for arm in arms if arm.fuse is not None}  # specs made once their source runs exist
        for index, arm in enumerate(arms):
            if (arm.experiment is None) == (arm.fuse is None):  # not a model validator: its error would name the class
                raise SpecError(f"{where}.arms.{index}: an arm names an `experiment` or a `fuse` (another arm's "
                                f"runs to fuse), exactly one of them (got {_shown(arm.model_dump(exclude_defaults=True))})")
            if arm.fuse is not None:
                continue
            if arm.experiment not in self.entries:
                raise SpecError(
                    f"{where}.arms: unknown experiment {arm.experiment!r}{_suggest(arm.experiment, self.names, 'known')}"
                )
            # Each override is blamed on where it was written: the study, the arm, the sweep, the command line.
            origins = {
                **{key: f"{where}.set." for key in study.set},
                **{key: f"{where}.arms.{index}.set." for key in arm.set},
                **{key: f"{where}.sweep." for key in cell},
                **{key: "--set " for key in overrides},
            }
            first = self.resolve(
                arm.experiment, {**study.set, **arm.set, **cell, **overrides, "seed": seed_list[0]}, origins=origins
            )
            # The seeds of an arm differ only in `seed` (checked by StudySpec or check_seed_count),
            # so the other seeds copy the first one's spec instead of validating it again: a
            # 1,000-seed study stays instant. Specs are never changed in place (model_copy(update=)).
            specs[arm.label] = {seed: first.model_copy(update={"seed": seed}) for seed in seed_list}
        for label, arm in fused.items():  # checked here, before `study` writes anything
            source = specs.get(arm.fuse.arm)
            if source is None:
                runnable = [each for each in labels if each in specs]
                raise SpecError(f"{where}.arms: {label!r} fuses arm {arm.fuse.arm!r}, which is not an experiment arm of "
                                f"this study; one of: {', '.join(runnable)}")
            if source[seed_list[0]].ensemble.members < 2:
                raise SpecError(f"{where}.arms: {label!r} fuses arm {arm.fuse.arm!r}, which is a single model "
                                "(ensemble.members 1); a fuse arm fuses the members of an ensemble arm")
            if arm.fuse.mode == "none":
                raise SpecError(f"{where}.arms: {label!r}: fuse.mode 'none' fuses nothing; use average, head or mutant")
            if is_center(arm.fuse.checkpoint) and source[seed_list[0]].ensemble.coupling.mode != "easgd":
                raise SpecError(f"{where}.arms: {label!r} fuses checkpoint {arm.fuse.checkpoint!r} of arm "
                                f"{arm.fuse.arm!r}, which has no EASGD center (ensemble.coupling.mode is not easgd)")
        reference = study.reference
        if reference is None:
            unfrozen = [label for label in labels if label in specs and not specs[label][seed_list[0]].freeze]
            if len(unfrozen) != 1:
                raise SpecError(
                    f"{where}.reference: {len(unfrozen)} arms have freeze=false ({', '.join(unfrozen) or 'none'}); "
                    f"name the reference arm, one of: {', '.join(labels)}"
                )
            reference = unfrozen[0]
        elif reference not in labels:
            raise SpecError(f"{where}.reference: {reference!r} is not an arm; arms: {', '.join(labels)}")
        sources = {}
        if study.continues is not None:  # each seed's converged run, resolved as its own experiment
            if study.continues not in self.entries:
                raise SpecError(f"{where}.continues: unknown experiment {study.continues!r}"
                                f"{_suggest(study.continues, self.names, 'known')}")
            base = self.resolve(study.continues, {"seed": seed_list[0]})
            sources = {seed: base.model_copy(update={"seed": seed}) for seed in seed_list}
        return ResolvedStudy(name, study.description, reference, seed_list, specs,
                             {arm.label: arm.experiment for arm in arms if arm.experiment}, sources=sources,
                             continues=study.continues, fused=fused)

    def _merged(self, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name not in self.entries:
            if seen:
                raise SpecError(
                    f"{self.path}: experiments.{seen[-1]}.base: unknown experiment {name!r}"
                    f"{_suggest(name, self.names, 'known')}"
                )
            raise SpecError(f"no experiment {name!r} in {self.path}{_suggest(name, self.names, 'it has')}")
        if name in seen:
            raise SpecError(f"{self.path}: experiments.{name}.base: inheritance cycle {' -> '.join((*seen, name))}")
        if len(seen) > MAX_BASE_DEPTH:
            raise SpecError(
                f"{self.path}: experiments.{seen[-1]}.base: more than {MAX_BASE_DEPTH} bases in a row; "
                f"an experiment may inherit through at most {MAX_BASE_DEPTH}"
            )
        entry = self.entries[name]
        if not isinstance(entry, dict):
            raise SpecError(f"{self.path}: experiments.{name}: must be an object, got {_shown(entry)}")
        base = entry.get("base")
        if base is not None and not isinstance(base, str):
            raise SpecError(
                f"{self.path}: experiments.{name}.base: must be the name of an experiment (a string), got {_shown(base)}"
            )
        own = {k: v for k, v in entry.items() if k != "base"}
        if base is None:
            return own
        return _deep_merge(self._merged(base, (*seen, name)), own)

    def resolve(
        self, name: str, overrides: dict[str, Any] | None = None, *, origins: dict[str, str] | None = None
    ) -> ExperimentSpec:
        """The full spec of `name`, with inheritance and `--set` overrides applied; `origins`
        tells where an override was written (key -> location prefix, default "--set ")."""
        merged = self._merged(name)
        for key, value in (overrides or {}).items():
            merged = apply_override(merged, key, value)
        try:
            return ExperimentSpec.model_validate(merged)
        except ValidationError as exc:
            messages = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"])
                # A bad value is named where it was written: an override (the command line, a
                # study), or the entry in the base chain that sets it.
                if key in (overrides or {}):
                    prefix = (origins or {}).get(key, "--set ")
                else:
                    prefix = f"{self.path}: experiments.{self._written_in(name, tuple(error['loc']))}."
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
    sources: dict[int, ExperimentSpec] = field(default_factory=dict)  # `continues`: seed -> the run each arm starts from
    continues: str | None = None  # the experiment of `sources`
    fused: dict[str, StudyArm] = field(default_factory=dict)  # fuse arms: label -> arm; in `specs` once filled

    @property
    def arms(self) -> list[str]:
        if self.cells:
            return self.cells[0].study.arms
        return list(self.specs) + [label for label in self.fused if label not in self.specs]


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
        raise SpecError(f"--set {key!r}: unknown key{_suggest(key, settable_keys())}")
    try:
        return key, json.loads(value)
    except ValueError:  # not JSON (or an integer too long to convert): the text itself
        return key, value


def apply_override(spec: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    merged = copy.deepcopy(spec)
    *parents, leaf = key.split(".")
    node = merged
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            # The section itself is not an object (`"data": "x"`): no override can mend that,
            # and validating the spec names the section where it is written.
            return merged
    node[leaf] = value
    return merged
