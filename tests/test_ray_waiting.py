"""A run waiting in Ray's queue is beaten for by the waiting keeper (workbench/ray_waiting.py);
one whose actor Ray drops before it starts gets no more beats, reads `lost` once the newest
is STALE_SECONDS old, and `resume` takes it up. The dropped actor is simulated (the keeper's
one beat is a plain function of "does Ray still know the actor"): no Ray cluster needed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from workbench.heartbeat import STALE_SECONDS
from workbench.liveness import with_liveness
from workbench.ray_waiting import WAIT_FILE, beat_if_waiting, waiting_beat
from workbench.records import record_from_folder
from workbench.runner import wait_until_done

TINY = {"seed": 0, "device": "cpu", "data": {"name": "digits", "batch_size": 32}, "model": {"name": "lenet", "width": 2},
        "train": {"steps": 4, "eval_every": 2}, "partition": {"strategy": "none"}, "track": {"every": 2}}


def _waiting_in_ray(logs: Path, launched: float, keeper: bool = True) -> Path:
    """A run folder as `submit --backend ray` leaves it while Ray holds the run's actor unstarted."""
    folder = logs / "raydrop1"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(TINY))
    (folder / "events.jsonl").write_text(json.dumps({"type": "queued", "time": launched}) + "\n")
    (folder / "run.lock").touch()  # free: no process of ours holds it while Ray holds the run
    ray = {"actor": "run-raydrop1-1", "namespace": "workbench", "keeper": keeper}
    (folder / "launch.json").write_text(json.dumps({"experiment": "tiny", "submitted": launched, "launched": launched,
                                                    "pid": None, "host": "ray", "backend": "ray", "ray": ray}))
    return folder


def test_a_run_ray_drops_unstarted_reads_lost_once_its_beats_stop(tmp_path):
    launched = time.time() - 3600
    folder = _waiting_in_ray(tmp_path, launched)
    assert record_from_folder(folder)["status"] == "lost"  # an hour without a beat: Ray no longer holds it

    now = time.time()
    assert beat_if_waiting(folder, lambda: True, now=now)  # Ray still holds its actor: a beat
    assert waiting_beat(folder) == now
    record = record_from_folder(folder)
    assert record["status"] == "queued" and record["ray_waiting"] == now  # an hour in Ray's queue, and alive
    assert with_liveness(record, now=now + STALE_SECONDS - 1)["status"] == "queued"

    assert not beat_if_waiting(folder, lambda: False, now=now + 5)  # Ray dropped the actor: no beat
    assert waiting_beat(folder) == now
    assert with_liveness(record, now=now + STALE_SECONDS + 1)["status"] == "lost"  # within the heartbeat window

    # once started, the keeper stops beating: the actor's lock and the worker's heartbeat take over
    (folder / "ray.json").write_text(json.dumps({"node_id": "n1"}))
    assert not beat_if_waiting(folder, lambda: True, now=now + 10) and waiting_beat(folder) == now


def test_without_the_keeper_a_waiting_run_is_judged_as_before(tmp_path):
    folder = _waiting_in_ray(tmp_path, time.time() - 3600, keeper=False)  # launched by code before the keeper
    record = record_from_folder(folder)
    assert record["status"] == "queued" and "ray_waiting" not in record


def test_resume_takes_up_a_run_ray_dropped(wb):
    logs = wb.logs  # a real process in a folder that stays: the worker it starts outlives the command
    folder = _waiting_in_ray(logs, time.time() - 3600)
    (folder / WAIT_FILE).write_text(json.dumps({"time": time.time() - STALE_SECONDS - 5}))  # its last beat, gone stale
    assert record_from_folder(folder)["status"] == "lost"

    wb("resume", "raydrop1", "--logs-dir", logs)  # here, on the local backend
    done = wait_until_done(folder, 300)  # a guard far above the seconds a 4-step run takes
    assert done and done["status"] == "completed"
    assert json.loads((folder / "summary.json").read_text())["steps"] == 4
