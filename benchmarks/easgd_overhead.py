"""Step time of an EASGD-coupled ensemble (period 1: the rule after every step) relative to
the same ensemble uncoupled (goal: <= 1.10).

Each of K members is a plain model (default lenet width 16) on MNIST-shaped inputs, batch
64, one SGD-with-momentum step per iteration on a fixed batch kept on the device; the
coupled loop adds engine.easgd.couple (two foreach passes over the members plus K over the
center). Coupled and uncoupled are interleaved over the repeats (median; cuda-synchronised),
so drift on a shared machine hits both alike; every ratio comes from this one run.

    python benchmarks/easgd_overhead.py [--device cuda:0] [--model lenet] [--width 16] [--members 4] [--implementations sequential grouped]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.easgd import couple, member_parameters  # noqa: E402
from engine.ensemble import IMPLEMENTATIONS, _synchronize, build_ensemble, ensemble_loss  # noqa: E402
from engine.spec import ModelSpec  # noqa: E402

INPUT_SHAPE = (1, 28, 28)  # MNIST
CLASSES = 10
ALPHA = 0.005  # lr 0.05 x rho 0.1: the value only sets the arithmetic, not its cost


def stepper(spec: ModelSpec, members: int, implementation: str, device: torch.device, x, y, coupled: bool):
    torch.manual_seed(0)
    model = build_ensemble(spec, INPUT_SHAPE, CLASSES, members, implementation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tensors = [list(m.values()) for m in member_parameters(model)]
    with torch.no_grad():
        center = [torch.stack(ts).mean(0) for ts in zip(*tensors)]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        ensemble_loss(model(x), y).backward()
        optimizer.step()
        if coupled:
            couple(tensors, center, ALPHA)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="lenet", choices=["lenet", "vgg", "resnet"])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--members", type=int, nargs="+", default=[4])
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    device = torch.device(args.device)
    spec = ModelSpec(name=args.model, width=args.width)
    x = torch.randn(args.batch, *INPUT_SHAPE, device=device)
    y = torch.randint(CLASSES, (args.batch,), device=device)
    print(f"{args.model} width {args.width}, batch {args.batch} on {device}; EASGD period 1 vs uncoupled")
    print(f"{'K':>3}  {'implementation':>14}  {'uncoupled ms/step':>17}  {'coupled ms/step':>15}  {'ratio':>6}")
    for members in args.members:
        for implementation in args.implementations:
            steps = {c: stepper(spec, members, implementation, device, x, y, c) for c in (False, True)}
            times: dict[bool, list[float]] = {False: [], True: []}
            for step in steps.values():
                for _ in range(3):  # warm-up: allocator, kernel selection
                    step()
            for _ in range(args.repeats):
                for coupled, step in steps.items():
                    _synchronize(device)
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    _synchronize(device)
                    times[coupled].append((time.perf_counter() - start) / args.steps)
            plain, coupled = statistics.median(times[False]), statistics.median(times[True])
            print(f"{members:>3}  {implementation:>14}  {plain * 1e3:17.3f}  {coupled * 1e3:15.3f}  {coupled / plain:6.3f}", flush=True)


if __name__ == "__main__":
    main()
