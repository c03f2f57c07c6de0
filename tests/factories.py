"""Small specs and runs for engine tests (tiny models, few steps, CPU)."""

from __future__ import annotations

from typing import Any

from engine.spec import ExperimentSpec, apply_override


def tiny_spec(**overrides: Any) -> ExperimentSpec:
    """A spec that trains in well under a second; keys are dotted like `--set` (use __ for dots)."""
    raw: dict[str, Any] = {
        "device": "cpu",
        "data": {"name": "mnist5k", "batch_size": 32},
        "model": {"name": "lenet", "width": 4},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"steps": 12, "eval_every": 6},
        "track": {"every": 3},
    }
    for key, value in overrides.items():
        raw = apply_override(raw, key.replace("__", "."), value)
    return ExperimentSpec.model_validate(raw)
