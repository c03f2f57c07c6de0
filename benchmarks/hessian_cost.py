"""Cost of a Hessian-guided partition, as a multiple of one training step.

Measures, on the shipped `baseline` model (lenet w32 on mnist5k; conv layers, as the
shipped studies partition):
1. every conv layer's S (K HVPs each, float64 on the CPU) over `--samples` examples,
   batched (vmap over blocks of HVPs) vs one HVP at a time, over `--compare-samples`
   examples (the cost is linear in examples; fewer keep the slow arm short, but let vmap
   take more HVPs per pass, engine.hessian.TANGENT_EXAMPLES / examples, than at 1,000);
2. the whole `hessian_interaction` partition (S, OBD saliency, the split) over `--samples`
   examples: `prepare` with it minus `prepare` with `first_kernels`;
3. one training step (batch 64, float32, the run's device), the unit of both.

    python benchmarks/hessian_cost.py [--device cpu] [--samples 1000] [--compare-samples 100]
Goals: batched >= 2x faster than one at a time; the whole partition under 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from engine.hessian import TANGENT_EXAMPLES, HessianProbe, interaction  # noqa: E402
from engine.spec import Experiments  # noqa: E402
from engine.train import prepare  # noqa: E402
from tracking_overhead import step_seconds  # noqa: E402


def all_s_seconds(prep, samples: int, batched: bool) -> float:
    x, y = prep.data.train_x[:samples], prep.data.train_y[:samples]
    probe = HessianProbe(prep.model, x, y, prep.spec.partition.hessian.batch_size, torch.device("cpu"), batched)
    start = time.perf_counter()
    for layer in prep.layers:
        if layer.kind == "conv":
            interaction(probe, layer)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--compare-samples", type=int, default=100)
    args = parser.parse_args()
    catalog = Experiments.load(Path(__file__).resolve().parents[1] / "experiments.json")
    overrides = {"device": args.device, "train.steps": 30, "train.eval_every": 0, "track.every": 0,
                 "partition.hessian.samples": args.samples}
    plain = catalog.resolve(args.experiment, overrides)
    measured = catalog.resolve(args.experiment, {**overrides, "partition.strategy": "hessian_interaction"})

    with tempfile.TemporaryDirectory() as logs:
        step = step_seconds(plain, Path(logs))
    prep = prepare(plain)
    print(f"model: {plain.model.name} w{plain.model.width} on {plain.data.name}; one training step "
          f"(batch {plain.data.batch_size}, float32, {args.device}): {step * 1000:.1f} ms")

    batched = all_s_seconds(prep, args.compare_samples, True)
    one = all_s_seconds(prep, args.compare_samples, False)
    per_pass = max(1, TANGENT_EXAMPLES // min(args.compare_samples, plain.partition.hessian.batch_size))
    print(f"S of every conv layer over {args.compare_samples} examples: batched ({per_pass} HVPs per vmap) {batched:.1f} s, "
          f"one HVP at a time {one:.1f} s: batched is {one / batched:.2f}x faster (goal >= 2)")

    full = all_s_seconds(prep, args.samples, True)
    print(f"S of every conv layer over {args.samples} examples, batched: {full:.1f} s = {full / step:,.0f} steps")

    start = time.perf_counter()
    prepare(plain)
    base = time.perf_counter() - start
    start = time.perf_counter()
    prepare(measured)
    whole = time.perf_counter() - start - base
    print(f"whole hessian_interaction partition (S + OBD saliency + split) over {args.samples} examples: "
          f"{whole:.1f} s = {whole / step:,.0f} steps (goal < 60 s on 2 CPU cores)")


if __name__ == "__main__":
    main()
