"""Step time and parameter count of question 2's arms: the full model with half its kernels
fixed, two half-width models side by side, and two half-width trunks under one joint head,
each relative to the same full model with nothing fixed.

Runs the real training loop (engine.train.train) on the shipped experiments and times the
steps themselves (see tracking_overhead.py). Arms are interleaved over rounds and the
median taken, so drift on a shared machine hits all of them alike.

    python benchmarks/half_fixed_vs_half_size.py [--device cuda:0] [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.spec import Experiments  # noqa: E402
from engine.train import prepare  # noqa: E402
from tracking_overhead import step_seconds  # noqa: E402

REFERENCE = "fused-halves-baseline"
# "baseline" (the plain model, kernels in one tensor per layer) shows what the groups cost by themselves.
ARMS = (REFERENCE, "fused-halves", "two-half-width", "two-trunks-joint-head", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    catalog = Experiments.load(Path(__file__).resolve().parents[1] / "experiments.json")
    overrides = {"device": args.device, "train.steps": args.steps, "train.eval_every": 0, "track.every": 0}
    specs = {arm: catalog.resolve(arm, overrides) for arm in ARMS}
    params = {arm: prepare(spec).notes["params"] for arm, spec in specs.items()}
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as logs:
        step_seconds(specs[REFERENCE], Path(logs))  # warm-up
        for round_ in range(args.rounds):
            for arm, spec in specs.items():
                times[arm].append(step_seconds(spec, Path(logs)))
            print(f"round {round_ + 1}: " + ", ".join(f"{a} {t[-1] * 1e3:.2f} ms" for a, t in times.items()), flush=True)

    reference = statistics.median(times[REFERENCE])
    print(f"\nlenet width 32 on {args.device}, batch 64, {args.steps} steps x {args.rounds} rounds (median step time)")
    print(f"{'arm':<24}{'params':>10}{'ms/step':>10}{'vs ' + REFERENCE:>28}")
    for arm in ARMS:
        median = statistics.median(times[arm])
        print(f"{arm:<24}{params[arm]:>10,}{median * 1e3:>10.2f}{median / reference:>28.3f}")
    half, two = statistics.median(times["fused-halves"]), statistics.median(times["two-half-width"])
    print(f"\nhalf-fixed full model / two half-width models: {half / two:.3f} (step time)")


if __name__ == "__main__":
    main()
