"""A resumed run's partition comes from its own masks.pt, never chosen again.

Every strategy is a function of the spec, so choosing again would give the same masks, but
not for free and not always bit for bit: a Hessian-guided partition measures the model
again (seconds to minutes), and with `partition.hessian.device: "run"` on a GPU its float64
sums need not repeat exactly. The run's first start wrote masks.pt after everything else the
partition produced (hessian.pt), so a masks.pt on disk means the partition's files are
complete. A masks.pt that cannot be read, or that does not fit the model, is not trusted:
the partition is chosen again (and the saved file was the same function of the spec).
"""

from __future__ import annotations

import torch

from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.subsets import Masks


def saved_masks(folder: RunFolder, params: dict[str, torch.Tensor]) -> Masks | None:
    """The masks the run was started with, or None if its masks.pt is missing, damaged or
    not a mask over these parameters."""
    try:
        masks = folder.load_tensors(folder.masks_path)
    except (OSError, SpecError):
        return None
    if not isinstance(masks, dict) or not masks:
        return None
    for subset in masks.values():
        if not isinstance(subset, dict) or not set(subset) <= set(params):
            return None
        for name, mask in subset.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != params[name].shape:
                return None
    return masks
