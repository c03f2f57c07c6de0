"""Step-time cost of movement tracking: every step and every 10 steps, against tracking off.

Each record includes the gradient norms of its step (`grad`: a _foreach_norm over the
gradients after backward, on recorded steps only), so "every 10" is the cost of tracking
with grad as studies run it.

Runs the real training loop (engine.train.train) on the shipped `half-fixed` experiment
and times the steps themselves (from the first on_step to the last, so set-up, the final
evaluation and checkpoint writes are excluded). Configurations are interleaved over
several rounds and the median taken, so drift on a shared machine hits all of them alike.

    python benchmarks/tracking_overhead.py [--device cuda:0] [--steps 600] [--rounds 3]
Goals: every step <= 1.05, every 10 steps (with grad) <= 1.02 (ratios to tracking off);
weight snapshots (`--snapshots K`, track.snapshots) <= 1.02 of the same tracking without them, also
printed as one snapshot's own median time against the K steps it covers (robust to drift).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.run_folder import RunFolder  # noqa: E402
from engine.spec import Experiments  # noqa: E402
from engine.train import prepare, train  # noqa: E402


def step_seconds(spec, logs: Path) -> float:
    stamps = step_stamps(spec, logs)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def step_stamps(spec, logs: Path) -> list[float]:
    """The time at the end of every step of a real run of `spec` (benchmarks/phase_switch.py uses them too)."""
    prep = prepare(spec)
    stamps: list[float] = []

    def on_step(step: int) -> None:
        if prep.device.type == "cuda":
            import torch

            torch.cuda.synchronize(prep.device)  # time finished work, not queued kernels
        stamps.append(time.perf_counter())

    train(prep, RunFolder.create(logs), experiment="bench", on_step=on_step)
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="half-fixed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--snapshots", type=int, default=50, help="track.snapshots of the last configuration")
    args = parser.parse_args()

    base = Experiments.load(Path(__file__).resolve().parents[1] / "experiments.json").resolve(
        args.experiment,
        {"device": args.device, "train.steps": args.steps, "train.eval_every": 0, "checkpoint.every": 0},
    )
    configs = {"off": 0, "every 1": 1, "every 10": 10, "every 10 + snapshots": 10}
    times: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as logs:
        step_seconds(base, Path(logs))  # warm-up: allocator, kernels, caches
        for round_ in range(args.rounds):
            for name, every in configs.items():
                snapshots = args.snapshots if name.endswith("snapshots") else 0  # weights over time (track.snapshots)
                spec = base.model_copy(update={"track": base.track.model_copy(update={"every": every, "snapshots": snapshots})})
                times[name].append(step_seconds(spec, Path(logs)))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {t[-1] * 1e3:.3f} ms/step" for n, t in times.items()), flush=True)

    off = statistics.median(times["off"])
    print(f"\n{args.experiment} on {args.device}, {args.steps} steps x {args.rounds} rounds (median step time)")
    print(f"tracking off        {off * 1e3:8.3f} ms/step")
    for name, goal in (("every 1", 1.05), ("every 10", 1.02)):
        ratio = statistics.median(times[name]) / off
        verdict = "meets" if ratio <= goal else "misses"
        print(f"tracking {name:<10} {statistics.median(times[name]) * 1e3:8.3f} ms/step  ratio {ratio:.3f}  ({verdict} goal <= {goal})")
    # the weight snapshots' own cost: against the same tracking without them
    ratio = statistics.median(times["every 10 + snapshots"]) / statistics.median(times["every 10"])
    print(f"snapshots every {args.snapshots:<4} {statistics.median(times['every 10 + snapshots']) * 1e3:8.3f} ms/step  ratio "
          f"{ratio:.3f} to tracking every 10 alone  ({'meets' if ratio <= 1.02 else 'misses'} goal <= 1.02)")
    # On a shared machine the two whole-run medians above drift by more than the 2% in question; one
    # snapshot's own time (build the record, write its line) against the steps it covers does not.
    with tempfile.TemporaryDirectory() as folder:
        cost = snapshot_seconds(base, Path(folder) / "snapshots.jsonl")
    share = cost / (args.snapshots * off)
    print(f"one snapshot (record + line written): {cost * 1e3:.2f} ms = {share:.2%} of the {args.snapshots} steps it covers "
          f"({'meets' if share <= 0.02 else 'misses'} goal <= 2%)")


def snapshot_seconds(spec, path: Path, repeats: int = 21) -> float:
    """Median time of one weight snapshot of `spec`'s model (engine.weight_snapshots), written to `path`."""
    from engine.weight_snapshots import WeightSnapshots

    prep = prepare(spec)
    hook = WeightSnapshots(prep.model, prep.layers, prep.masks, 1, path, prep.device)
    durations = []
    for step in range(repeats):
        if prep.device.type == "cuda":
            import torch

            torch.cuda.synchronize(prep.device)
        start = time.perf_counter()
        hook.write(step)  # a new step each time: write() skips a step it has written
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


if __name__ == "__main__":
    main()
