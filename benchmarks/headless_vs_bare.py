"""Wall time of `workbench run --headless` against a bare PyTorch loop (benchmarks/bare_loop.py).

Both run as fresh processes (interpreter start, imports and data loading included) on
the same experiment, model, data and number of steps; workbench also tracks movement,
evaluates, writes events, checkpoints and the store. Alternated over several rounds,
median taken.

    python benchmarks/headless_vs_bare.py [--device cuda:0] [--steps 1000] [--rounds 3]
Goal: ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    workbench = str(Path(sys.executable).parent / "workbench")
    bare_cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_loop.py"), "--experiment", args.experiment,
                "--device", args.device, "--steps", str(args.steps)]
    times: dict[str, list[float]] = {"bare": [], "workbench": []}
    with tempfile.TemporaryDirectory() as logs:
        headless_cmd = [workbench, "run", "--headless", args.experiment, "--device", args.device,
                        "--set", f"train.steps={args.steps}", "--logs-dir", logs]
        for round_ in range(args.rounds):
            times["bare"].append(wall(bare_cmd))
            times["workbench"].append(wall(headless_cmd))
            print(f"round {round_ + 1}: bare {times['bare'][-1]:.2f} s, workbench {times['workbench'][-1]:.2f} s", flush=True)
    bare, headless = statistics.median(times["bare"]), statistics.median(times["workbench"])
    ratio = headless / bare
    print(f"\n{args.experiment} on {args.device}, {args.steps} steps, median of {args.rounds}")
    print(f"bare PyTorch loop        {bare:7.2f} s")
    print(f"workbench run --headless {headless:7.2f} s  ratio {ratio:.3f}  ({'meets' if ratio <= 1.15 else 'misses'} goal <= 1.15)")


if __name__ == "__main__":
    main()
