"""Run folders written by hand for verdict tests, with per-layer movement.

Every layer of every subset moves in a straight line at a known speed per step (a number,
or a function of the step for speeds that change), so its dist and path at step t are the
integral of its speed, and every ratio a verdict takes is known exactly. Whole-subset
figures add the layers up in squares, as the engine's tracker does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

Speed = float | Callable[[int], float]
CONV1, CONV2, FC1, FC2 = "features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"


def write_run(
    root: Path,
    run_id: str,
    seed: int,
    *,
    freeze: bool,
    speeds: dict[str, dict[str, Speed]],
    grads: dict[str, dict[str, float]] | None = None,
    steps: int = 100,
    every: int = 10,
    evals: list[dict] | None = None,
    partition: dict | None = None,
    lr: float = 0.05,
    acc: float = 0.9,
) -> Path:
    """A completed run: spec.json, events.jsonl (movement every `every` steps; `grads`, when
    given, per side and layer on every record after step 0) and summary.json."""
    folder = root / run_id
    folder.mkdir(parents=True)
    spec = {"seed": seed, "freeze": freeze, "optimizer": {"name": "sgd", "lr": lr},
            "partition": partition or {"strategy": "first_kernels", "fraction": 0.5}, "train": {"steps": steps}}
    (folder / "spec.json").write_text(json.dumps(spec))
    sizes = {side: 10 * len(layers) for side, layers in speeds.items()}
    events = [{"type": "start", "step": 0, "run_id": run_id, "experiment": "x", "subset_sizes": sizes}]
    travelled = {side: {layer: 0.0 for layer in layers} for side, layers in speeds.items()}
    paths = dict.fromkeys(speeds, 0.0)  # whole subsets: the running sum of their update norms
    previous, last = 0, None
    for step in range(0, steps + 1, every):
        subsets = {}
        for side, layers in speeds.items():
            entries = {}
            for layer, speed in layers.items():
                v = (speed(step) if callable(speed) else speed) if step else 0.0
                travelled[side][layer] += v * (step - previous)
                entries[layer] = {"dist": travelled[side][layer], "speed": v, "path": travelled[side][layer],
                                  "rel": None, "cos": 1.0}
                if grads is not None and step:
                    entries[layer]["grad"] = grads[side][layer]
            total = {key: math.sqrt(sum(e[key] ** 2 for e in entries.values())) for key in ("dist", "speed")}
            paths[side] += total["speed"] * (step - previous)
            subsets[side] = {**total, "path": paths[side], "rel": None, "cos": 1.0, "layers": entries}
        previous = step
        last = {"type": "movement", "step": step, "subsets": subsets}
        events.append(last)
    events += evals or []
    events.append({"type": "end", "step": steps, "status": "completed"})
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = {"run_id": run_id, "status": "completed", "steps": steps, "movement": last["subsets"],
               "final": {"train_loss": 0.1, "eval_loss": 0.2, "eval_acc": acc}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def layer_speeds(subset: dict[str, Speed], fixed: dict[str, Speed]) -> dict[str, dict[str, Speed]]:
    return {"subset": subset, "fixed": fixed}
