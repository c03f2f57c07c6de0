"""The backend choice without a Ray cluster: the options, a run waiting in Ray's queue, the
single store-writer host, devices under Ray, and a cluster that is not there."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from cli_support import assert_clean_exit
from tui_support import sync
from engine.spec import SpecError
from test_layering import loaded_after_import
from workbench.backends import BACKENDS, LaunchOptions
from workbench.liveness import with_liveness
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.store_host import STORE_HOST_FILE


@pytest.mark.parametrize("module", ["workbench.cli", "workbench.tui.app", "workbench.tui.screens.compose"])
def test_the_cli_and_the_tui_start_without_ray_or_torch(module):
    loaded = loaded_after_import(module)
    assert module in loaded and "ray" not in loaded and "torch" not in loaded


def test_the_backends_are_registered_and_bad_options_are_refused():
    assert BACKENDS.names == ["local", "ray"]
    with pytest.raises(SpecError, match="'slurm' is not known; allowed: local, ray"):
        LaunchOptions("slurm")
    with pytest.raises(SpecError, match="--gpus-per-run 0"):
        LaunchOptions("ray", gpus_per_run=0)


def test_ray_address_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert LaunchOptions("ray").address == "10.0.0.1:6379"
    assert LaunchOptions("ray", "10.0.0.2:6379").address == "10.0.0.2:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert LaunchOptions("ray").address == "auto"


def test_under_ray_a_fixed_gpu_index_is_refused_and_a_gpu_run_asks_for_its_gpus():
    pytest.importorskip("ray", reason="Ray is not installed")
    from workbench.ray_backend import ray_device, resources

    options = LaunchOptions("ray", gpus_per_run=0.5, cpus_per_run=2)
    assert ray_device("cpu", options) == "cpu"
    with pytest.raises(SpecError, match="device 'cuda:1' cannot be placed by Ray"):
        ray_device("cuda:1", options)
    assert resources("cuda:0", options) == {"num_cpus": 2, "num_gpus": 0.5}
    assert resources("cpu", options) == {"num_cpus": 2, "num_gpus": 0.0}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def test_no_cluster_at_the_address_is_one_sentence_exit_2_and_no_folder(cli, experiments_file, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed")
    logs = tmp_path / "logs"
    started = time.monotonic()
    result = cli("submit", "baseline", "--backend", "ray", "--ray-address", f"127.0.0.1:{_closed_port()}",
                 "-e", experiments_file, "--logs-dir", logs)
    assert_clean_exit(result, 2)
    assert "no Ray cluster is reachable at 127.0.0.1:" in result.stderr and "ray start --head" in result.stderr
    assert not logs.exists()
    assert time.monotonic() - started < 120  # not Ray's endless retries (a guard, far above the seconds it takes)


def _queued_in_ray(logs: Path, run_id: str = "raywait1") -> Path:
    folder = logs / run_id
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"seed": 0, "device": "cpu"}))
    (folder / "events.jsonl").write_text(json.dumps({"type": "queued", "time": time.time() - 3600}) + "\n")
    (folder / "run.lock").touch()  # free: no process of ours holds it while Ray holds the run
    launch = {"experiment": "baseline", "submitted": time.time() - 3600, "launched": time.time() - 3600,
              "pid": None, "host": "ray", "backend": "ray", "ray": {"actor": "run-raywait1-1"}}
    (folder / "launch.json").write_text(json.dumps(launch))
    return folder


def test_a_run_waiting_in_rays_queue_stays_queued_until_its_actor_starts(tmp_path):
    folder = _queued_in_ray(tmp_path)
    record = record_from_folder(folder)
    assert record["status"] == "queued" and record["backend"] == "ray" and record["node"] is None  # an hour in Ray's queue
    (folder / "ray.json").write_text(json.dumps({"node_id": "n1", "host": socket.gethostname()}))
    started = record_from_folder(folder)
    assert started["node"] == "n1" and started["status"] == "lost"  # started, yet no process holds its lock
    assert with_liveness({**record, "backend": "local"})["status"] == "lost"  # a local run that old is lost


def test_only_the_store_host_writes_the_store_and_others_still_list_every_run(tmp_path):
    _queued_in_ray(tmp_path, "hostrun1")
    store = Store(tmp_path)
    assert [r["run_id"] for r in store.all()] == ["hostrun1"]  # this host claimed the store
    assert (tmp_path / STORE_HOST_FILE).read_text().strip() == socket.gethostname()
    written = (tmp_path / "store.json").read_bytes()

    (tmp_path / STORE_HOST_FILE).write_text("another-host\n")
    _queued_in_ray(tmp_path, "hostrun2")
    store.put({"run_id": "hostrun3", "status": "completed"})  # a worker on a non-writer host: not written
    assert (tmp_path / "store.json").read_bytes() == written
    assert sorted(r["run_id"] for r in store.all()) == ["hostrun1", "hostrun2"]  # read from the folders


@sync
async def test_the_compose_form_launches_on_the_backend_chosen(experiments_file, logs_dir, monkeypatch):
    import subprocess

    from textual.widgets import Select

    from test_tui_compose import Host
    from workbench.tui.screens.compose import ComposeScreen

    calls = []

    def recorded_run(cmd, **kwargs):
        if "submit" in cmd:  # not the GPU probe the form's device list makes
            calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 2, stdout="", stderr="error: no Ray cluster is running on this machine\n")

    monkeypatch.setattr("workbench.tui.screens.actions.subprocess.run", recorded_run)
    screen = ComposeScreen(experiments_file, logs_dir, base="baseline")
    async with Host(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert screen.query_one("#compose-backend", Select).value == "local"
        screen.query_one("#compose-backend", Select).value = "ray"
        await pilot.press("ctrl+l")
        deadline = time.monotonic() + 60
        while (screen.launching or not calls) and time.monotonic() < deadline:
            await pilot.pause(0.1)
    assert calls and calls[0][calls[0].index("--backend") + 1] == "ray"
