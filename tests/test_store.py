"""The run index: round trips, many writers at once, recovery from a corrupt file, liveness."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from workbench.store import Store


def test_put_update_get_all_round_trip(tmp_path):
    store = Store(tmp_path / "logs")
    assert store.all() == [] and store.get("aaaaaaaa") is None
    store.put({"run_id": "aaaaaaaa", "status": "running", "step": 0})
    store.put({"run_id": "bbbbbbbb", "status": "completed", "step": 5, "eval_acc": 0.5})
    store.update("aaaaaaaa", status="completed", step=7)
    store.put({"run_id": "bbbbbbbb", "status": "failed", "step": 6})  # put replaces the whole record

    again = Store(tmp_path / "logs")  # a fresh instance reads what the first wrote
    assert again.get("aaaaaaaa") == {"run_id": "aaaaaaaa", "status": "completed", "step": 7}
    assert again.get("bbbbbbbb") == {"run_id": "bbbbbbbb", "status": "failed", "step": 6}
    assert sorted(r["run_id"] for r in again.all()) == ["aaaaaaaa", "bbbbbbbb"]
    assert again.get("cccccccc") is None
    again.update("cccccccc", status="completed")  # updating an unknown run adds nothing
    assert len(again.all()) == 2


def test_put_many_replaces_and_inserts_in_one_write(tmp_path, monkeypatch):
    from workbench import store as store_module

    store = Store(tmp_path / "logs")
    store.put({"run_id": "aaaaaaaa", "status": "running", "step": 3, "stale": True})
    writes = []
    original = store_module.AtomicJSONStorage.write
    monkeypatch.setattr(store_module.AtomicJSONStorage, "write", lambda self, data: (writes.append(1), original(self, data)))
    store.put_many([{"run_id": "aaaaaaaa", "status": "completed", "step": 9}, {"run_id": "bbbbbbbb", "status": "queued"}])
    assert len(writes) <= 2  # one locked session; TinyDB writes once per operation, not once per record
    assert store.get("aaaaaaaa") == {"run_id": "aaaaaaaa", "status": "completed", "step": 9}  # replaced, not merged
    assert store.get("bbbbbbbb") == {"run_id": "bbbbbbbb", "status": "queued"}
    writes.clear()
    store.put_many([{"run_id": f"r{i:07d}", "status": "running"} for i in range(20)])
    assert len(writes) == 1 and len(store.all()) == 22


# ---------------------------------------------------------------------------------------
# Many processes at once.

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from workbench.store import Store

    logs, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = Store(logs)
    (logs / f"ready-{worker}").touch()
    while not (logs / "go").exists():
        time.sleep(0.001)
    for i in range(count):
        store.put({"run_id": f"w{worker}-{i:03d}", "status": "completed", "worker": worker, "pad": "x" * 300})
    """
)

# Reads store.json without the lock, the way a quick look at the file would, while the
# writers write: every read must be a whole JSON document, old or new, never a torn one.
READER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    logs = Path(sys.argv[1])
    good = torn = 0
    while True:
        done = (logs / "done").exists()
        try:
            text = (logs / "store.json").read_text()
        except FileNotFoundError:
            text = None
        if text is not None:
            try:
                json.loads(text)
                good += 1
            except ValueError:
                torn += 1
        if done:
            break
    print(json.dumps({"good": good, "torn": torn}))
    """
)


def test_concurrent_writers_lose_nothing_and_readers_never_see_a_torn_file(tmp_path):
    logs, writers, count = tmp_path / "logs", 6, 25
    logs.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(logs), str(w), str(count)], stderr=subprocess.PIPE)
        for w in range(writers)
    ]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(logs)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(logs.glob("ready-*"))) < writers:  # a barrier, so that they really do overlap
            assert time.monotonic() < deadline, "writers never got ready"
            assert all(p.poll() is None for p in procs), [p.communicate()[1].decode() for p in procs if p.poll()]
            time.sleep(0.01)
        (logs / "go").touch()
        errors = [p.communicate(timeout=120)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * writers, errors
    finally:
        (logs / "done").touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
        reads = json.loads(reader.communicate(timeout=60)[0])

    raw = json.loads((logs / "store.json").read_text())  # valid JSON, in TinyDB's layout
    assert len(raw["runs"]) == writers * count
    ids = sorted(r["run_id"] for r in Store(logs).all())
    assert ids == sorted(f"w{w}-{i:03d}" for w in range(writers) for i in range(count))
    assert reads["torn"] == 0, reads
    assert reads["good"] > 0, reads
    assert not list(logs.glob(".store.json.*.tmp")), "temporary files left behind"


# ---------------------------------------------------------------------------------------
# Recovery and liveness, through the CLI.


def _tiny_runs(cli, experiments_file, logs_dir, names=("baseline", "half-fixed")) -> list[dict]:
    payloads = []
    for name in names:
        result = cli("run", "--headless", name, "--json", "--experiments", experiments_file, "--logs-dir", logs_dir)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        payloads.append(json.loads(result.stdout))
    return payloads


def _digest(records: list[dict]) -> dict[str, tuple]:
    keys = ("status", "experiment", "digest", "freeze", "step", "eval_acc", "subset_dist", "fixed_dist", "run_dir")
    return {r["run_id"]: tuple(r.get(k) for k in keys) for r in records}


def test_a_corrupt_store_is_kept_aside_and_rebuilt_from_the_run_folders(cli, experiments_file, logs_dir, capsys):
    payloads = _tiny_runs(cli, experiments_file, logs_dir)
    before = _digest(Store(logs_dir).all())
    assert sorted(before) == sorted(p["run_id"] for p in payloads)
    assert {v[0] for v in before.values()} == {"completed"}

    # Through the Store API.
    garbage = b'\x00\xff{"runs": {"1": {"run_id": tru'
    (logs_dir / "store.json").write_bytes(garbage)
    capsys.readouterr()
    assert _digest(Store(logs_dir).all()) == before
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "corrupt" in warning[0] and "2 runs" in warning[0], warning
    aside = list(logs_dir.glob("store.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert _digest(json.loads((logs_dir / "store.json").read_text())["runs"].values()) == before

    # Through the CLI, corrupt again at once: the earlier kept-aside copy must survive too.
    garbage2 = b"\x89PNG not json at all"
    (logs_dir / "store.json").write_bytes(garbage2)
    result = cli("runs", "--json", "--logs-dir", logs_dir)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert _digest(json.loads(result.stdout)) == before
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "corrupt" in lines[0], result.stderr
    kept = sorted(p.read_bytes() for p in logs_dir.glob("store.json.corrupt-*"))
    assert kept == sorted([garbage, garbage2])

    # Rebuilt once: the next look is quiet.
    quiet = cli("runs", "--json", "--logs-dir", logs_dir)
    assert quiet.exit_code == 0 and quiet.stderr.strip() == ""
    assert _digest(json.loads(quiet.stdout)) == before


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer names a process
    return proc.pid


def _running_folder(logs: Path, run_id: str, pid: int, host: str, beat_age: float) -> dict:
    """A run folder as a worker leaves it mid-run: spec, a start event, a heartbeat."""
    folder = logs / run_id
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    start = {"type": "start", "step": 0, "run_id": run_id, "experiment": "x", "pid": pid, "host": host, "time": 1.0}
    (folder / "events.jsonl").write_text(json.dumps(start) + "\n")
    beat = {"pid": pid, "host": host, "phase": "running", "step": 5, "time": time.time() - beat_age}
    (folder / "heartbeat.json").write_text(json.dumps(beat))
    return {"run_id": run_id, "status": "running", "pid": pid, "host": host, "created": 1.0, "run_dir": str(folder)}


def test_a_running_record_whose_process_is_dead_shows_as_lost(cli, tmp_path):
    logs = tmp_path / "logs"
    store = Store(logs)
    host, other = socket.gethostname(), socket.gethostname() + "-other"
    for record in [
        _running_folder(logs, "deadrun1", _dead_pid(), host, beat_age=1),  # killed a second ago
        _running_folder(logs, "liverun1", os.getpid(), host, beat_age=1),  # this test process is alive
        _running_folder(logs, "elsewhr1", _dead_pid(), other, beat_age=1),  # another host, fresh beat
        _running_folder(logs, "elsewhr2", os.getpid(), other, beat_age=600),  # another host, silent for 10 min
        _running_folder(logs, "reboot01", os.getpid(), host, beat_age=600),  # pid reused after a reboot
    ]:
        store.put(record)
    store.put({"run_id": "nofoldr1", "status": "running", "pid": os.getpid(), "host": host, "created": 2.0,
               "run_dir": str(logs / "nofoldr1")})

    result = cli("runs", "--json", "--logs-dir", logs)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    status = {r["run_id"]: r["status"] for r in json.loads(result.stdout)}
    assert status == {
        "deadrun1": "lost",  # its process is gone: never `running` forever
        "liverun1": "running",
        "elsewhr1": "running",  # another host's pid cannot be checked from here; its beat is fresh
        "elsewhr2": "lost",
        "reboot01": "lost",  # the pid exists, but the heartbeat says the run's process is not it
        "nofoldr1": "lost",  # the folder is the truth, and it is gone
    }
    assert Store(logs).get("deadrun1")["status"] == "lost"  # and the index now says so
