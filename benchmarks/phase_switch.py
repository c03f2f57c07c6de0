"""What a phase switch of a changing partition costs, in training steps.

Runs the real training loop on the shipped `alternate-halves` experiment with a switch
every `--every` steps and times every step (on_step stamps). A switch happens inside its
boundary step (after the optimizer step: record the phase's movement, draw the next masks,
re-freeze, save the phase's masks and start weights), so the cost of a switch is the
median duration of boundary steps minus the median of the other steps, divided by the
latter. Each mode (alternate, rotate, resample) is measured in the same run.

    python benchmarks/phase_switch.py [--device cuda:0] [--steps 400] [--every 20]
Goal: a switch costs less than 3 training steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.spec import Experiments  # noqa: E402
from tracking_overhead import step_stamps  # noqa: E402 - this script's folder is on the path

MODES = {"alternate": {}, "rotate": {"partition.fraction": 0.75},
         "resample": {"partition.strategy": "random_kernels", "partition.seed": "run"}}


def step_times(spec, logs: Path) -> list[float]:
    stamps = step_stamps(spec, logs)
    return [b - a for a, b in zip(stamps, stamps[1:])]  # durations of steps 2..N


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()

    catalog = Experiments.load(Path(__file__).resolve().parents[1] / "experiments.json")
    print(f"alternate-halves on {args.device}, {args.steps} steps, a switch every {args.every} (median step times)")
    with tempfile.TemporaryDirectory() as logs:
        for mode, extra in MODES.items():
            spec = catalog.resolve("alternate-halves", {
                "device": args.device, "train.steps": args.steps, "train.eval_every": 0, "checkpoint.every": 0,
                "schedule.every": args.every, "schedule.mode": mode, **extra})
            durations = step_times(spec, Path(logs))
            # durations[i] is step i + 2; a boundary step is a multiple of `every` (not the last: no switch there)
            boundary = [d for i, d in enumerate(durations) if (i + 2) % args.every == 0 and i + 2 < args.steps]
            ordinary = [d for i, d in enumerate(durations) if (i + 2) % args.every != 0]
            step, switch_step = statistics.median(ordinary), statistics.median(boundary)
            cost = (switch_step - step) / step
            verdict = "meets" if cost < 3 else "misses"
            print(f"{mode:<10} step {step * 1e3:7.3f} ms, boundary step {switch_step * 1e3:7.3f} ms: "
                  f"a switch costs {cost:.2f} steps ({verdict} goal < 3; {len(boundary)} switches)", flush=True)


if __name__ == "__main__":
    main()
