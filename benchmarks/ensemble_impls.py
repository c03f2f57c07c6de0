"""Step time of each ensemble implementation relative to sequential, for K = 2, 4, 8 members.

Each member is a plain model (default: lenet, width 16) on MNIST-shaped inputs (1x28x28,
10 classes), batch 64, one SGD-with-momentum step per iteration on a fixed batch kept on
the device. Timing is engine.ensemble.measure_step_times (warm-up, implementations
interleaved over repeats, median; cuda-synchronised), all ratios from this one run.

    python benchmarks/ensemble_impls.py [--device cuda:0] [--model lenet] [--width 16] [--steps 20] [--repeats 5]
Ratio < 1: faster than sequential. An implementation that fails on the device shows as "-".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ensemble import IMPLEMENTATIONS, measure_step_times  # noqa: E402
from engine.spec import ModelSpec  # noqa: E402

INPUT_SHAPE = (1, 28, 28)  # MNIST
CLASSES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="lenet", choices=["lenet", "vgg", "resnet"])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    spec = ModelSpec(name=args.model, width=args.width)
    print(f"{args.model} width {args.width}, batch {args.batch}, {INPUT_SHAPE} inputs on {args.device}")
    print(f"{'K':>3}  {'sequential ms/step':>18}  " + "  ".join(f"{name:>10}" for name in IMPLEMENTATIONS))
    for members in args.members:
        times = measure_step_times(
            spec, INPUT_SHAPE, CLASSES, members, args.batch, args.device, IMPLEMENTATIONS,
            steps=args.steps, repeats=args.repeats,
        )
        base = times["sequential"]
        ratios = [f"{times[name] / base:10.3f}" if name in times else f"{'-':>10}" for name in IMPLEMENTATIONS]
        print(f"{members:>3}  {base * 1e3:18.3f}  " + "  ".join(ratios), flush=True)


if __name__ == "__main__":
    main()
