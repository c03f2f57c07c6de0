"""Partition strategies' implementations (their declarations are in engine/choices.py).

An implementation is `fixed(params, layers, spec, generator) -> {param name: bool tensor}`:
the coordinates it fixes, for the parameters it partitions (the rest stay wholly in
`subset`). It draws any randomness from `generator` (seeded from partition.seed, on the
CPU), so a spec gives the same masks on every device. Importing this package registers
the shipped strategies; a new one is a module that declares and implements itself.
"""

from __future__ import annotations

from engine.models import Layer
from engine.spec import PartitionSpec


def partitioned_layers(layers: list[Layer], spec: PartitionSpec) -> list[Layer]:
    """The layers a strategy splits: every conv layer, and FC layers when include_fc."""
    return [layer for layer in layers if layer.kind == "conv" or spec.include_fc]


from engine.strategies import elements, kernel_scores, whole  # noqa: E402,F401 - registers the shipped strategies
from engine.strategies import hessian  # noqa: E402,F401 - hessian_interaction, obd
