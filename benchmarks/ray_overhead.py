"""What Ray costs per run, and what a second node buys: measured on local Ray nodes.

1. Launch overhead: the time from `workbench submit` to the run's `start` event (the
   worker has imported torch, loaded the data and built the model), one run at a time,
   with `--backend local` and with `--backend ray` (one warm node). Median over rounds;
   the difference is what Ray adds per run (goal: under 2 s on this machine).
2. Throughput: wall time of a 12-run study (2 arms x 6 seeds, tiny LeNet) on one Ray node
   of 1 CPU, then on two such nodes (runs done per minute, and the ratio).

    python benchmarks/ray_overhead.py [--rounds 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY_EXPERIMENTS  # noqa: E402  (the tests' tiny experiments)
from engine.events import run_events  # noqa: E402
from ray_nodes import ray_env, start_node, stop_node, wait_for_head  # noqa: E402


def workbench(*args: object) -> str:
    done = subprocess.run([sys.executable, "-c", "from workbench.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env=ray_env(), check=False)
    if done.returncode:
        raise SystemExit(f"workbench {' '.join(map(str, args))} failed: {done.stderr}")
    return done.stdout


def until_done(run_dir: Path) -> None:
    while not run_events(run_dir / "events.jsonl", "end"):
        time.sleep(0.1)


def launch_overhead(folder: Path, experiments: Path, backend: list[str], rounds: int, steps: int) -> float:
    """Median seconds from submit to the start event, one run at a time."""
    logs, waits = folder / f"logs-{backend[1]}", []
    for seed in range(rounds):
        submitted = time.time()
        out = workbench("submit", "baseline", "--seed", 100 + seed, "--set", f"train.steps={steps}", *backend,
                        "-e", experiments, "--logs-dir", logs, "--json")
        run_dir = logs / json.loads(out)["run_ids"][0]
        until_done(run_dir)
        waits.append(run_events(run_dir / "events.jsonl", "start")[0]["time"] - submitted)
    return statistics.median(waits)


def study_wall(folder: Path, experiments: Path, address: str, name: str, steps: int) -> float:
    started = time.perf_counter()
    workbench("study", "half-fixed-vs-baseline", "--seeds", 6, "--set", f"train.steps={steps}", "--backend", "ray",
              "--ray-address", address, "-e", experiments, "--logs-dir", folder / name, "--json")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        experiments = folder / "experiments.json"
        experiments.write_text(json.dumps(TINY_EXPERIMENTS))
        head = start_node()
        nodes = [head]
        try:
            wait_for_head(head.address)
            workbench("submit", "baseline", "--set", "train.steps=1", "--backend", "ray", "--ray-address", head.address,
                      "-e", experiments, "--logs-dir", folder / "warm", "--json")  # the first Ray worker start is once per node
            local = launch_overhead(folder, experiments, ["--backend", "local"], args.rounds, args.steps)
            ray = launch_overhead(folder, experiments, ["--backend", "ray", "--ray-address", head.address], args.rounds, args.steps)
            print(f"launch overhead, submit -> start event, median of {args.rounds}: local {local:.2f} s, "
                  f"ray {ray:.2f} s, ray adds {ray - local:+.2f} s per run (goal < 2 s)")
            one = study_wall(folder, experiments, head.address, "one-node", args.steps)
            nodes.append(start_node(head.address))
            time.sleep(5)  # the second node registers with the head
            two = study_wall(folder, experiments, head.address, "two-nodes", args.steps)
            print(f"12-run study ({args.steps} steps each), 1-CPU nodes: one node {one:.1f} s "
                  f"({12 / one * 60:.1f} runs/min), two nodes {two:.1f} s ({12 / two * 60:.1f} runs/min), "
                  f"throughput ratio {one / two:.2f}")
        finally:
            for node in reversed(nodes):
                stop_node(node)


if __name__ == "__main__":
    main()
