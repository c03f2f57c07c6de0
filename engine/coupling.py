"""Names of an EASGD ensemble's center checkpoints (torch-free: `workbench fuse` checks them).

The center of an EASGD ensemble (engine/easgd.py) is one plain model saved beside each of
the ensemble's checkpoints: `checkpoints/center_final.pt` beside `final.pt`, and so on.
"""

from __future__ import annotations

CENTER_PREFIX = "center_"


def center_checkpoint(name: str) -> str:
    """The center's checkpoint saved beside checkpoint `name` (final -> center_final)."""
    return CENTER_PREFIX + name


def is_center(checkpoint: str) -> bool:
    """Whether a checkpoint name is an EASGD center's: one plain model, whatever the run's ensemble."""
    return checkpoint.startswith(CENTER_PREFIX)
