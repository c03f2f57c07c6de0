"""Ray nodes on this machine, for the Ray tests and benchmarks/ray_overhead.py: a head on
127.0.0.1 and more nodes joining it, each a `ray start --block` process whose process
group holds all of that node's Ray processes (so stopping it stops exactly that node)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    """This environment without RAY_ADDRESS, with this checkout first on the path (nodes and
    the worker processes they start import workbench from it)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}


def start_node(address: str | None = None, cpus: int = 1, resources: dict | None = None) -> subprocess.Popen:
    """A head (address None: it listens on `head_address(node)`) or a node joining `address`."""
    where = ["--address", address] if address else ["--head", "--port", str(free_port()), "--include-dashboard", "false"]
    extra = ["--resources", json.dumps(resources)] if resources else []
    node = subprocess.Popen(
        [str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-gpus", "0", "--num-cpus", str(cpus),
         "--disable-usage-stats", *where, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=ray_env(),
    )
    node.address = address or f"127.0.0.1:{where[2]}"  # type: ignore[attr-defined]
    return node


def wait_for_head(address: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while subprocess.run([str(RAY), "status", "--address", address], capture_output=True, env=ray_env()).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head at {address} did not come up in {limit:g} s")
        time.sleep(1)


def stop_node(node: subprocess.Popen) -> None:
    """SIGTERM to the node's `ray start --block` (it stops its processes), SIGKILL to whatever is left."""
    for sig, patience in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(node.pid, signal.SIGKILL)  # the node's leftovers (its workers and their runs)
    except ProcessLookupError:
        pass


def raylet_pids(node: subprocess.Popen) -> list[int]:
    """The raylet process(es) of `node` (in its process group)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            group = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            if group == node.pid and (proc / "comm").read_text().strip() == "raylet":
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
