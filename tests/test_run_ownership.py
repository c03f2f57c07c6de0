"""One run folder, one live owner: a worker's lock decides its status, a second resume or
worker is refused, a run whose submit died is `lost` (never queued forever) and resumes
into a complete run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from filelock import FileLock

from engine.events import read_events
from workbench.heartbeat import HEARTBEAT_FILE
from workbench.records import LAUNCH_FILE, record_from_folder

from test_runner import finished, running_at, status, submit, wait_for


def _hold_the_cpu_slot(wb) -> FileLock:
    """The only CPU slot (runs are submitted with --max-per-device 1), held by this test:
    a worker submitted now waits in the queue until it is released."""
    (wb.logs / ".slots").mkdir(parents=True, exist_ok=True)
    return FileLock(str(wb.logs / ".slots" / "cpu.0.lock"))


def _ends(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir / "events.jsonl")[0] if e.get("type") == "end"]


def test_a_live_worker_is_running_whatever_its_heartbeat_and_a_second_resume_is_refused(wb):
    (run_dir,) = submit(wb, "baseline", "--set", "train.steps=100000", "--set", "track.every=0")
    beat = running_at(run_dir, 1)
    (run_dir / HEARTBEAT_FILE).unlink()  # the trigger: a missing beat read as a dead run
    launch = json.loads((run_dir / LAUNCH_FILE).read_text())
    (run_dir / LAUNCH_FILE).write_text(json.dumps({**launch, "submitted": 1.0, "launched": 1.0}))
    assert status(run_dir) == "running"
    assert json.loads(wb("runs", "--json").stdout)[0]["status"] == "running"

    refused = wb("resume", run_dir.name, check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == f"error: run {run_dir.name} is running (pid {beat['pid']}); cancel it first"

    # A second worker started by hand on the same folder leaves it alone.
    second = subprocess.run(
        [sys.executable, "-m", "workbench.worker", str(run_dir), "--experiment", "baseline", "--resume"],
        cwd=wb.logs.parent, capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 1 and "already owned" in second.stdout, (second.stdout, second.stderr)
    starts = [e for e in read_events(run_dir / "events.jsonl")[0] if e.get("type") == "start"]
    assert len(starts) == 1

    wb("cancel", run_dir.name)
    assert finished(run_dir)["status"] == "cancelled"
    assert len(_ends(run_dir)) == 1


def test_a_resumed_run_waiting_in_the_queue_is_queued_not_lost(wb):
    slot = _hold_the_cpu_slot(wb)
    with slot:
        (run_dir,) = submit(wb, "baseline", "--max-per-device", "1")
        assert status(run_dir) == "queued"
        pid = json.loads((run_dir / LAUNCH_FILE).read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: status(run_dir) == "lost", what="the killed worker's run to read lost")
        assert json.loads(wb("runs", "--json").stdout)[0]["status"] == "lost"

        wb("resume", run_dir.name, "--max-per-device", "1")
        # Submitted long ago, no heartbeat yet: what made a waiting resumed run read `lost`.
        (run_dir / HEARTBEAT_FILE).unlink(missing_ok=True)
        launch = json.loads((run_dir / LAUNCH_FILE).read_text())
        (run_dir / LAUNCH_FILE).write_text(json.dumps({**launch, "submitted": 1.0, "launched": 1.0}))
        assert status(run_dir) == "queued"
        refused = wb("resume", run_dir.name, check=False)
        assert refused.returncode == 2 and "cancel it first" in refused.stderr, refused.stderr
    record = finished(run_dir)
    assert record["status"] == "completed"
    assert len(_ends(run_dir)) == 1


# A `submit` killed after its run's events exist and before any worker started (the
# launcher is where the kill lands).
GHOST = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from engine.spec import Experiments
    from workbench import runner

    class Killed:
        def launch(self, folder, worker_args, pass_fds=()):
            print(folder.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    spec = runner.resolve_spec_device(Experiments.load(sys.argv[1]).resolve("baseline"))
    runner.submit(spec, "baseline", Path(sys.argv[2]), launcher=Killed())
    """
)


def test_a_run_whose_submit_died_is_lost_then_resumes_into_a_complete_folder(wb, experiments_file):
    ghost = subprocess.run(
        [sys.executable, "-c", GHOST, str(experiments_file), str(wb.logs)], capture_output=True, text=True, timeout=120
    )
    assert ghost.returncode == -signal.SIGKILL, ghost.stderr
    run_dir = wb.logs / ghost.stdout.strip()
    assert [e["type"] for e in read_events(run_dir / "events.jsonl")[0]] == ["queued"]

    record = json.loads(wb("show", run_dir.name, "--json").stdout)["record"]
    assert record["status"] == "lost"  # not `queued` forever
    assert "nothing to cancel" in wb("cancel", run_dir.name).stdout
    assert not (run_dir / "masks.pt").exists() and not (run_dir / "checkpoints" / "init.pt").exists()

    wb("resume", run_dir.name)
    assert finished(run_dir)["status"] == "completed"
    # The run folder contract holds after the resume: masks and initial weights are the very
    # ones a run never interrupted has. (Its final weights too, on the same thread count:
    # test_runner's cancel/resume test; a headless run here uses more threads than a worker.)
    assert (run_dir / "checkpoints" / "final.pt").exists() and (run_dir / "summary.json").exists()
    fresh = json.loads(wb("run", "--headless", "baseline", "--json").stdout)["run_dir"]
    for name in ("masks.pt", "checkpoints/init.pt"):
        resumed, clean = (_tensors(torch.load(Path(d) / name, weights_only=True)) for d in (run_dir, fresh))
        assert resumed.keys() == clean.keys() and all(torch.equal(resumed[k], clean[k]) for k in resumed), name


def _tensors(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict, or masks ({subset: {param: mask}}), as one flat name -> tensor dict."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_tensors(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
