"""The `ray` backend on a real two-node Ray cluster on this machine (CPU only).

A head on 127.0.0.1 and a second node with its own custom resource (`node_b`) simulate two
servers; one CPU each, so a study's runs must use both to run two at a time. Commands run
as real processes (a Ray driver per command, as a user's would be). The cluster is started
once for the module and shut down in teardown, whatever the tests did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="Ray is not installed (pip install 'workbench[ray]'): the ray backend cannot be tested")

from conftest import TINY_EXPERIMENTS  # noqa: E402
from ray_nodes import ray_env, raylet_pids, start_node, stop_node, wait_for_head  # noqa: E402
from test_runner import wait_for  # noqa: E402
from workbench.records import record_from_folder  # noqa: E402

LONG_STEPS = 3000  # long enough to be caught running (seconds on an idle CPU), short enough to complete after a resume


def workbench(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from workbench.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=ray_env(),
    )


def runs(logs: Path) -> dict[str, dict]:
    done = workbench("runs", "--json", "--logs-dir", logs)
    assert done.returncode == 0, done.stderr
    return {r["run_id"]: r for r in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    head = start_node()
    nodes = [head]
    try:
        wait_for_head(head.address)
        nodes.append(start_node(head.address, resources={"node_b": 1}))
        folder = tmp_path_factory.mktemp("ray")
        experiments = folder / "experiments.json"
        experiments.write_text(json.dumps(TINY_EXPERIMENTS))

        def both_alive():
            done = workbench("cluster", "--json", "--ray-address", head.address, "--logs-dir", folder / "none")
            listed = json.loads(done.stdout)["nodes"] if done.returncode == 0 else []
            return listed if sum(n["alive"] for n in listed) == 2 else None

        listed = wait_for(both_alive, 120, "two live Ray nodes")
        node_b = next(n["node_id"] for n in listed if "node_b" in n["resources"])
        yield {"address": head.address, "folder": folder, "experiments": experiments, "node_b": node_b, "nodes": nodes}
    finally:
        for node in reversed(nodes):
            stop_node(node)


def _final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoints" / "final.pt", weights_only=True)


def test_a_study_spreads_over_both_nodes_with_the_weights_and_verdict_of_local_runs(cluster):
    ray_logs, local_logs = cluster["folder"] / "ray-logs", cluster["folder"] / "local-logs"
    study = ["study", "half-fixed-vs-baseline", "--seeds", 3, "--json", "-e", cluster["experiments"]]
    done = workbench(*study, "--backend", "ray", "--ray-address", cluster["address"], "--logs-dir", ray_logs)
    assert done.returncode == 0, done.stderr
    ray_verdict = json.loads(done.stdout)
    placed = runs(ray_logs)
    assert len(placed) == 6 and {r["status"] for r in placed.values()} == {"completed"}
    assert {r["backend"] for r in placed.values()} == {"ray"}
    assert len({r["node"] for r in placed.values()}) == 2, "Ray placed the study's runs on one node only"
    assert not (ray_logs / ".queue").exists(), "a Ray run went through the local slot queue"

    # The same six runs launched locally, one torch thread each as each Ray run (one CPU) has.
    done = workbench(*study, "--logs-dir", local_logs, "--max-per-device", os.cpu_count() or 1)
    assert done.returncode == 0, done.stderr
    local_verdict = json.loads(done.stdout)
    assert local_verdict["subsets"] == ray_verdict["subsets"] and local_verdict["answer"] == ray_verdict["answer"]

    local = {r["digest"]: r for r in runs(local_logs).values()}
    for record in placed.values():
        theirs, ours = _final_weights(record["run_dir"]), _final_weights(local[record["digest"]]["run_dir"])
        assert theirs.keys() == ours.keys()
        assert all(torch.equal(theirs[k], ours[k]) for k in ours), f"run {record['run_id']} differs from its local twin"


def _submit_long(cluster, logs: Path, seeds: int) -> list[Path]:
    done = workbench("submit", "baseline", "--seeds", seeds, "--set", f"train.steps={LONG_STEPS}",
                     "--set", f"train.eval_every={LONG_STEPS}", "--set", "track.every=500", "--set", "checkpoint.every=100",
                     "--backend", "ray", "--ray-address", cluster["address"],
                     "-e", cluster["experiments"], "--logs-dir", logs, "--json")
    assert done.returncode == 0, done.stderr
    return [logs / run_id for run_id in json.loads(done.stdout)["run_ids"]]


def record(run_dir: Path) -> dict:
    return record_from_folder(run_dir)  # read here, in-process: polling stays cheap


def stepping(run_dir: Path) -> dict | None:
    found = record(run_dir)
    return found if found["status"] == "running" and (found["step"] or 0) > 0 else None


def ended(run_dir: Path) -> dict | None:
    found = record(run_dir)
    return found if found["status"] not in ("queued", "running") else None


def alive_nodes(cluster) -> int | None:
    done = workbench("cluster", "--json", "--ray-address", cluster["address"], "--logs-dir", cluster["folder"] / "none")
    return sum(node["alive"] for node in json.loads(done.stdout)["nodes"]) if done.returncode == 0 else None


def test_a_run_cancelled_through_ray_stops_cleanly(cluster):
    [run_dir] = _submit_long(cluster, cluster["folder"] / "cancel-logs", 1)
    wait_for(lambda: stepping(run_dir), what="the run to start stepping")
    cancel = "import sys; from workbench.ray_backend import cancel_in_ray; print(cancel_in_ray(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", cancel, str(run_dir)], capture_output=True, text=True, env=ray_env())
    assert done.returncode == 0 and "stopped through Ray" in done.stdout, done.stderr
    assert not (run_dir / "cancel.request").exists()  # Ray alone stopped it
    stopped = wait_for(lambda: ended(run_dir), what="the run to end")
    assert stopped["status"] == "cancelled" and 0 < stopped["step"] < LONG_STEPS


def test_killing_a_nodes_raylet_leaves_its_runs_lost_and_resume_on_ray_completes_them(cluster):
    logs = cluster["folder"] / "node-death-logs"
    run_dirs = _submit_long(cluster, logs, 2)  # SPREAD: one on each node

    def one_stepping_on_b():
        return next((r for r in map(record, run_dirs) if r.get("node") == cluster["node_b"] and stepping(Path(r["run_dir"]))), None)

    on_b = Path(wait_for(one_stepping_on_b, what="a run stepping on node_b")["run_dir"])
    raylets = raylet_pids(cluster["nodes"][1])
    assert raylets, "node_b's raylet process was not found"
    os.kill(raylets[0], signal.SIGKILL)

    lost = wait_for(lambda: (r := record(on_b))["status"] == "lost" and r, what="node_b's run to read lost")
    assert lost["step"] < LONG_STEPS
    # On one host the run's lock says `lost` at once, before Ray's health checks declare node_b
    # dead; a resume in that gap may be placed on node_b, which Ray still lists, and be dropped
    # with it. On separate servers `lost` comes from a 30 s stale heartbeat, after Ray has noticed.
    wait_for(lambda: alive_nodes(cluster) == 1, what="Ray to declare node_b dead")
    done = workbench("resume", on_b.name, "--backend", "ray", "--ray-address", cluster["address"], "--logs-dir", logs)
    assert done.returncode == 0, done.stderr
    finished = wait_for(lambda: ended(on_b), 900, "the resumed run to end")
    assert finished["status"] == "completed" and finished["step"] == LONG_STEPS
    assert finished["node"] not in (None, cluster["node_b"])  # rescheduled on the node still alive
    listed = runs(logs)  # the CLI lists both, the resumed one where it ran
    assert listed[on_b.name]["status"] == "completed" and listed[on_b.name]["host"] == socket.gethostname()


def test_a_gpu_run_on_a_cluster_without_gpus_is_refused_before_any_folder(cluster):
    logs = cluster["folder"] / "gpu-logs"
    done = workbench("submit", "baseline", "--device", "cuda", "--backend", "ray", "--ray-address", cluster["address"],
                     "-e", cluster["experiments"], "--logs-dir", logs)
    assert done.returncode == 2 and "the Ray cluster has 0 GPUs" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not logs.exists()
