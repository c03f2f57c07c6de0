"""Hessian-guided partitions, declared torch-free: the `partition.hessian` settings and the
`hessian_interaction` and `obd` strategies (their implementation: engine/strategies/hessian.py).

Definitions (README "Hessian-guided partitions"). For a layer with K kernels, C_k is kernel
k's coordinates (its weights with its bias and BatchNorm scale/shift, grouped as
`first_kernels` groups them) and 1_k their indicator vector. H is the Hessian of the mean
cross-entropy over the first `samples` training examples, model in eval mode.
- S[i, j] = 1_i^T H 1_j, the signed sum of the Hessian entries between kernels i and j.
- A[i, j] = sum of |H_ab| over a in C_i, b in C_j (exact, one HVP per coordinate: only
  for layers of at most `budget` coordinates).
- OBD saliency s_k = 1/2 w_k^T H_kk w_k (`block`), or 1/2 sum_a H_aa w_a^2 (`diagonal`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.choices import PARTITIONS

MAX_HESSIAN_SAMPLES = 100_000  # training examples the Hessian is averaged over
MAX_HESSIAN_BATCH = 65_536
MAX_HESSIAN_BUDGET = 10_000_000  # coordinates of one layer for the exact |H| sums


class HessianAt(BaseModel):
    """The weights the Hessian is taken at when not the run's own initial weights."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="Run id whose checkpoint gives the weights (and BatchNorm statistics).")
    checkpoint: str = Field("final", description="Which checkpoint of `run` (init, final, step_N).")


class HessianSpec(BaseModel):
    """Settings of the Hessian-guided strategies (`hessian_interaction`, `obd`)."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(
        1000, ge=1, le=MAX_HESSIAN_SAMPLES, description="The loss is the mean over the first N training examples, in dataset order."
    )
    batch_size: int = Field(
        250, ge=1, le=MAX_HESSIAN_BATCH, description="Examples per Hessian-vector product batch (memory; the sum is the same)."
    )
    objective: Literal["decouple", "couple"] = Field(
        "decouple",
        description="hessian_interaction: decouple minimises, couple maximises the cross-set interaction "
        "sum over fixed i, subset j of |S[i, j]|.",
    )
    matrix: Literal["signed", "absolute"] = Field(
        "signed",
        description="hessian_interaction's graph weights: signed: |S| (sums of signed entries, from K HVPs per layer); "
        "absolute: A, sums of |H| entries (one HVP per coordinate: layers within `budget` only).",
    )
    saliency: Literal["block", "diagonal"] = Field(
        "block",
        description="OBD saliency: block: 1/2 w_k^T H_kk w_k; diagonal: 1/2 sum H_aa w_a^2 (layers within `budget` only).",
    )
    fix: Literal["low", "high"] = Field("low", description="obd: fix the kernels of lowest (low) or highest (high) saliency.")
    budget: int = Field(
        4096, ge=1, le=MAX_HESSIAN_BUDGET,
        description="Most coordinates a layer may have for the exact per-coordinate sums (matrix absolute, saliency diagonal).",
    )
    device: Literal["cpu", "run"] = Field(
        "cpu", description="cpu: float64 on the CPU (the same masks everywhere); run: float64 on the run's device."
    )
    at: HessianAt | None = Field(
        None, description='null: the run\'s initial weights; {"run": ID, "checkpoint": "final"}: another run\'s checkpoint.'
    )


HESSIAN_READS = ("fraction", "include_fc", "hessian")


def needs_per_coordinate(hessian: HessianSpec, strategy: str) -> bool:
    """Whether this choice needs one HVP per coordinate (the budgeted, exact |H| sums)."""
    return hessian.saliency == "diagonal" or (strategy == "hessian_interaction" and hessian.matrix == "absolute")


def _check(partition: Any) -> None:
    at = partition.hessian.at
    if at is not None and not at.run:
        raise ValueError("partition.hessian.at.run must name a run id (see `workbench runs`)")


PARTITIONS.declare(
    "hessian_interaction",
    "split each layer's kernels to minimise (objective decouple) or maximise (couple) the Hessian interaction "
    "between the fixed `fraction` and the rest",
    HESSIAN_READS,
    _check,
)
PARTITIONS.declare(
    "obd", "fix each layer's `fraction` of kernels of lowest (hessian.fix low) or highest OBD saliency", HESSIAN_READS, _check
)
