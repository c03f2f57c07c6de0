"""Cost of a Hessian-guided partition, as a multiple of one training step.

Measures, on the shipped `baseline` model (lenet w32 on mnist5k; conv layers, as the
shipped studies partition), float64 on the CPU:
1. every conv layer's S and OBD saliency as the engine computes them (engine/gauss_newton.py:
   per-example Jacobians, batched by vmap over examples and classes) over `--samples` examples;
2. every conv layer's S from K HVPs (engine/hessian.py, the direct definition), batched
   (vmap over blocks of HVPs) vs one HVP at a time, and the Gauss-Newton pass, all over
   `--compare-samples` examples (the cost is linear in examples; fewer keep the slow arms short,
   but let vmap take more HVPs per pass, engine.hessian.TANGENT_EXAMPLES / examples, than at 1,000);
3. the whole `hessian_interaction` partition (S, OBD saliency, the split) over `--samples`
   examples: `prepare` with it minus `prepare` with `first_kernels` (no logs dir: no cache);
4. one training step (batch 64, float32, the run's device), the unit of all.

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

from engine.gauss_newton import gauss_newton  # noqa: E402
from engine.hessian import TANGENT_EXAMPLES, HessianProbe, interaction  # noqa: E402
from engine.spec import Experiments  # noqa: E402
from engine.train import prepare  # noqa: E402
from tracking_overhead import step_seconds  # noqa: E402


def all_s_seconds(prep, samples: int, method: str) -> float:
    """Seconds to compute every conv layer's S: `hvp` / `one` (K HVPs, batched or not) or `gn`
    (the engine's Gauss-Newton pass, which gives the OBD saliency too)."""
    x, y = prep.data.train_x[:samples], prep.data.train_y[:samples]
    probe = HessianProbe(prep.model, x, y, prep.spec.partition.hessian.batch_size, torch.device("cpu"), method != "one")
    conv = [layer for layer in prep.layers if layer.kind == "conv"]
    start = time.perf_counter()
    if method == "gn":
        gauss_newton(probe, conv)
    else:
        for layer in conv:
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

    batched = all_s_seconds(prep, args.compare_samples, "hvp")
    one = all_s_seconds(prep, args.compare_samples, "one")
    gn = all_s_seconds(prep, args.compare_samples, "gn")
    per_pass = max(1, TANGENT_EXAMPLES // min(args.compare_samples, plain.partition.hessian.batch_size))
    print(f"S of every conv layer over {args.compare_samples} examples from K HVPs: batched ({per_pass} HVPs per vmap) "
          f"{batched:.1f} s, one HVP at a time {one:.1f} s: batched is {one / batched:.2f}x faster (goal >= 2); "
          f"the Gauss-Newton pass (S and saliency) {gn:.1f} s, {batched / gn:.1f}x faster than batched HVPs (S alone)")

    full = all_s_seconds(prep, args.samples, "gn")
    print(f"S and OBD saliency of every conv layer over {args.samples} examples (Gauss-Newton pass): "
          f"{full:.1f} s = {full / step:,.0f} steps")

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
