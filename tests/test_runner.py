"""Background runs as real processes: they outlive their terminal, queue per device, are
seen as lost when killed, fail with their error recorded, and cancel + resume gives the
same bits as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from engine.events import run_events
from engine.run_folder import RunFolder
from workbench.heartbeat import read_heartbeat
from workbench.records import record_from_folder

TIMEOUT = 90  # seconds for a tiny run to finish on a busy 2-core machine


def submit(wb, *args: object) -> list[Path]:
    ids = json.loads(wb("submit", *args, "--json").stdout)["run_ids"]
    return [wb.logs / run_id for run_id in ids]


def wait_for(predicate, timeout: float = TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(run_dir: Path) -> str:
    return record_from_folder(run_dir)["status"]


def finished(run_dir: Path) -> dict:
    return wait_for(lambda: (r := record_from_folder(run_dir)) and r["status"] not in ("queued", "running") and r, what=f"{run_dir.name} to end")


def running_at(run_dir: Path, step: int) -> dict:
    """The heartbeat once the worker is training past `step`."""
    return wait_for(
        lambda: (b := read_heartbeat(run_dir)) and b["phase"] == "running" and b["step"] >= step and b,
        what=f"{run_dir.name} to pass step {step}",
    )


def test_a_submitted_run_outlives_the_terminal_that_started_it(wb, workbench_exe):
    # A "terminal": a shell in its own session that submits, then is killed with its whole
    # process group, as a dropped SSH connection would (SIGHUP, then SIGKILL for good measure).
    shell = subprocess.Popen(
        ["bash", "-c", f"'{workbench_exe}' submit baseline --set train.steps=150 --json > ids.json; sleep 300"],
        cwd=wb.logs.parent,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "WORKBENCH_LOGS"},
    )
    ids_file = wb.logs.parent / "ids.json"
    wait_for(lambda: ids_file.exists() and ids_file.read_text().strip(), what="submit to print the run id")
    os.killpg(shell.pid, signal.SIGHUP)
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    run_dir = wb.logs / json.loads(ids_file.read_text())["run_ids"][0]
    assert finished(run_dir)["status"] == "completed"
    assert RunFolder(run_dir).summary()["steps"] == 150


def test_sigkill_of_a_worker_shows_the_run_as_lost_at_once(wb):
    (run_dir,) = submit(wb, "baseline", "--set", "train.steps=100000")
    beat = running_at(run_dir, 1)
    os.kill(beat["pid"], signal.SIGKILL)
    wait_for(lambda: status(run_dir) == "lost", timeout=5, what="lost")
    listed = {r["run_id"]: r for r in json.loads(wb("runs", "--json").stdout)}
    assert listed[run_dir.name]["status"] == "lost"
    # and a lost run can be resumed (from step 0 here: it had no saved state)
    wb("resume", run_dir.name)
    assert wait_for(lambda: status(run_dir) in ("queued", "running") and status(run_dir), timeout=10, what="resumed")
    wb("cancel", run_dir.name)
    assert status(run_dir) == "cancelled"


def test_cancel_then_resume_equals_an_uninterrupted_run(wb):
    args = ("half-fixed", "--set", "train.steps=2500", "--set", "checkpoint.every=400", "--set", "train.eval_every=500")
    straight, broken = submit(wb, *args), submit(wb, *args)
    straight, broken = straight[0], broken[0]
    running_at(broken, 30)
    out = wb("cancel", broken.name).stdout
    assert "cancelled" in out, out
    stopped = record_from_folder(broken)
    assert stopped["status"] == "cancelled" and 30 <= stopped["step"] < 2500
    assert RunFolder(broken).train_state_path.exists()

    wb("resume", broken.name)
    assert finished(broken)["status"] == "completed"
    assert finished(straight)["status"] == "completed"
    a = RunFolder(straight).load_tensors(RunFolder(straight).checkpoint_path("final"))
    b = RunFolder(broken).load_tensors(RunFolder(broken).checkpoint_path("final"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["step"] for e in run_events(RunFolder(broken).events_path, "end")] == [2500]


def training_spans(run_dirs: list[Path]) -> list[tuple[float, float]]:
    """(start, end) time of each run's training, once all have completed."""
    spans = []
    for run_dir in run_dirs:
        assert finished(run_dir)["status"] == "completed"
        events = run_events(RunFolder(run_dir).events_path)
        spans.append((next(e["time"] for e in events if e["type"] == "start"), next(e["time"] for e in events if e["type"] == "end")))
    return spans


def test_queue_runs_at_most_max_per_device_at_once(wb):
    run_dirs = submit(wb, "baseline", "--seeds", "4", "--max-per-device", "2", "--set", "train.steps=60")
    spans = training_spans(run_dirs)
    # at any run's start, how many runs were training (itself included)
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) <= 2
    assert [RunFolder(d).spec()["seed"] for d in run_dirs] == [0, 1, 2, 3]


def test_queue_is_first_come_first_served(wb):
    run_dirs = submit(wb, "baseline", "--seeds", "3", "--max-per-device", "1", "--set", "train.steps=30")
    spans = training_spans(run_dirs)
    # one slot: each run trains after the one submitted before it has ended
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans


def test_cancelling_a_queued_run_ends_it_without_training(wb):
    first, second = submit(wb, "baseline", "--seeds", "2", "--max-per-device", "1", "--set", "train.steps=100000")
    running_at(first, 1)
    assert status(second) == "queued"
    wb("cancel", second.name, first.name)
    assert status(second) == "cancelled" and status(first) == "cancelled"
    assert not RunFolder(second).checkpoint_path("init").exists()  # never started


def test_submit_refuses_what_its_worker_could_not_prepare(wb):
    # A torchvision dataset that is not in data.dir, without download: refused now, not failed later.
    result = wb("submit", "baseline", "--seeds", "2", "--set", "data.name=cifar10", "--set", "data.dir=nowhere", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: dataset 'cifar10'") and "nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not [p for p in wb.logs.glob("*") if len(p.name) == 8] if wb.logs.exists() else True


def test_a_run_that_raises_is_failed_with_its_error_in_record_and_log(wb):
    # A fusion accepted at submit whose member's checkpoint is gone by the time its worker
    # prepares (it waits behind a device slot this test holds): prepare raises in the worker.
    from filelock import FileLock

    members = [json.loads(wb("run", "--headless", "baseline", "--seed", s, "--json").stdout)["run_id"] for s in (0, 1)]
    slot = FileLock(str(wb.logs / ".slots" / "cpu.0.lock"))
    (wb.logs / ".slots").mkdir(exist_ok=True)
    with slot:
        ids = json.loads(wb("fuse", *members, "--mode", "average", "--max-per-device", "1", "--json").stdout)["run_ids"]
        (wb.logs / members[0] / "checkpoints" / "final.pt").unlink()
    run_dir = wb.logs / ids[0]
    record = finished(run_dir)
    assert record["status"] == "failed"
    assert members[0] in record["error"] and "final" in record["error"]
    assert record["error"] in (run_dir / "worker.log").read_text()
    assert wb("logs", run_dir.name).stdout.count(record["error"]) >= 1


def test_submit_refuses_bad_input_without_queueing_anything(wb):
    result = wb("submit", "baseline", "--device", "cuda:7", check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: device 'cuda:7'"), result.stderr
    assert "Traceback" not in result.stderr
    result = wb("submit", "baseline", "--seed", "1", "--seeds", "2", check=False)
    assert result.returncode == 2 and "--seeds" in result.stderr
    result = wb("resume", "zzzzzzzz", check=False)
    assert result.returncode == 2 and "zzzzzzzz" in result.stderr
    assert not any(p.is_dir() and len(p.name) == 8 for p in wb.logs.glob("*")) if wb.logs.exists() else True


def test_a_study_runs_every_arm_and_seed_then_reuses_them(wb):
    first = wb("study", "half-fixed-vs-baseline", "--json")
    verdict = json.loads(first.stdout)
    assert verdict["arms"] == ["baseline", "half-fixed"] and verdict["seeds"] == [0, 1]
    subset = verdict["subsets"]["subset"]
    assert subset["ratio"] > 0 and subset["n"] == 2 and subset["ci"][0] <= subset["ratio"] <= subset["ci"][1]
    assert verdict["subsets"]["fixed"]["ratio"] == 0  # frozen: it never moved
    # the answer states the headline: the conv kernels the partition splits
    assert verdict["headline"]["scope"] == "partitioned" and verdict["headline"]["layers"] == ["features.conv1", "features.conv2"]
    assert verdict["answer"].startswith(("conv kernels that kept training moved", "no difference detected: conv kernels"))
    run_ids = {run_id for seeds in verdict["runs"].values() for run_id in seeds.values()}
    assert len(run_ids) == 4

    # Again, with one more seed: the four finished runs are re-used, only seed 2 is new.
    again = wb("study", "half-fixed-vs-baseline", "--seeds", "3", "--json")
    assert "re-using 4 runs, submitted 2" in again.stderr
    report = Path(wb("report", "half-fixed-vs-baseline", "--seeds", "3").stdout.strip())
    text = report.read_text()
    assert all(run_id in text for run_id in run_ids)
    assert (report.parent / "movement.png").read_bytes().startswith(b"\x89PNG")


def test_a_report_before_the_runs_exist_says_what_to_do(wb):
    result = wb("report", "half-fixed-vs-baseline", check=False)
    assert result.returncode == 2 and "workbench study half-fixed-vs-baseline" in result.stderr, result.stderr
    result = wb("study", "no-such-study", check=False)
    assert result.returncode == 2 and "half-fixed-vs-baseline" in result.stderr
