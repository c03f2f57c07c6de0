"""The index is a cache of the run folders and can never hide one: killed mid-rebuild,
missing, empty, of another shape, a directory, on a read-only disk."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workbench.store import Store

RUNS = 400  # enough folders that a rebuild takes a while, so kills land inside it


def _fake_run(logs: Path, run_id: str) -> None:
    folder = logs / run_id
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"seed": 0, "freeze": False}))
    events = [{"type": "queued", "time": 1.0}, {"type": "start", "step": 0, "time": 1.0, "run_id": run_id},
              {"type": "end", "step": 5, "status": "completed", "time": 2.0}]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("many") / "logs"
    for i in range(RUNS):
        _fake_run(logs, f"r{i:07d}")
    return logs


def _ids(logs: Path) -> set[str]:
    return {r["run_id"] for r in Store(logs).all()}


REBUILDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from workbench.store import Store
    print("ready", flush=True)
    Store(Path(sys.argv[1])).all()
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_rebuild_killed_at_any_moment_loses_no_run(many_runs, tmp_path, sig):
    logs = tmp_path / "logs"
    shutil.copytree(many_runs, logs)
    expected = {f"r{i:07d}" for i in range(RUNS)}
    for delay in (0.0, 0.05, 0.15, 0.3, 0.6):
        (logs / "store.json").write_text('{"runs": {"1": {"run_id": tru')  # torn: forces a full rebuild
        proc = subprocess.Popen([sys.executable, "-c", REBUILDER, str(logs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert (logs / "store.json").exists(), f"no index left after {sig.name} at {delay}s"
        assert _ids(logs) == expected, f"runs hidden after {sig.name} at {delay}s"


@pytest.mark.parametrize("content", [None, b"", b"  \n\t", b"null", b"{}", b'{"runs": {}}', b'{"_default": {}}'])
def test_a_missing_or_empty_store_is_rebuilt_from_the_folders(tmp_path, cli, content):
    logs = tmp_path / "logs"
    for run_id in ("aaaaaaaa", "bbbbbbbb"):
        _fake_run(logs, run_id)
    if content is not None:
        (logs / "store.json").write_bytes(content)
    result = cli("runs", "--json", "--logs-dir", logs)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert {r["run_id"] for r in json.loads(result.stdout)} == {"aaaaaaaa", "bbbbbbbb"}
    assert {r["run_id"] for r in json.loads((logs / "store.json").read_text())["runs"].values()} == {"aaaaaaaa", "bbbbbbbb"}
    quiet = cli("show", "aaaa", "--json", "--logs-dir", logs)
    assert quiet.exit_code == 0 and json.loads(quiet.stdout)["record"]["run_id"] == "aaaaaaaa"


@pytest.mark.parametrize(
    "content",
    [b'{"runs": []}', b'"a string"', b"[1, 2]", b'{"runs": {"1": 5}}', b'{"runs": {"1": {"status": "x"}}}',
     b'{"runs": {"x": {"run_id": "aaaaaaaa"}}}', b'{"runs": "x"}', b"[" * 100_000 + b"]" * 100_000],
    ids=["runs-list", "string", "list", "int-record", "no-run-id", "bad-doc-id", "runs-string", "deep-nesting"],
)
def test_a_store_of_another_shape_is_kept_aside_and_rebuilt(tmp_path, cli, content):
    logs = tmp_path / "logs"
    _fake_run(logs, "aaaaaaaa")
    (logs / "store.json").write_bytes(content)
    result = cli("runs", "--json", "--logs-dir", logs)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert [r["run_id"] for r in json.loads(result.stdout)] == ["aaaaaaaa"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "corrupt" in lines[0], result.stderr
    (aside,) = logs.glob("store.json.corrupt-*")
    assert aside.read_bytes() == content


def test_a_store_that_is_a_directory_gets_one_sentence(tmp_path, cli):
    logs = tmp_path / "logs"
    _fake_run(logs, "aaaaaaaa")
    (logs / "store.json").mkdir()
    result = cli("runs", "--json", "--logs-dir", logs)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {logs / 'store.json'} is a folder, not the run index; move it away and the index is rebuilt"
    ]


def test_folders_the_index_lacks_are_added_and_a_bad_folder_is_skipped(tmp_path, cli, capsys):
    logs = tmp_path / "logs"
    _fake_run(logs, "aaaaaaaa")
    assert _ids(logs) == {"aaaaaaaa"}
    _fake_run(logs, "bbbbbbbb")  # e.g. a submit killed between its folder and its index entry
    _fake_run(logs, "cccccccc")
    (logs / "cccccccc" / "events.jsonl").unlink()
    (logs / "cccccccc" / "events.jsonl").mkdir()  # unreadable: reading it raises
    (logs / "store.json").unlink()
    ids = _ids(logs)
    assert {"aaaaaaaa", "bbbbbbbb"} <= ids
    err = capsys.readouterr().err
    assert "cccccccc" in ids or ("warning" in err and "cccccccc" in err), err


def test_reading_a_logs_dir_that_does_not_exist_creates_nothing(tmp_path, cli):
    missing = tmp_path / "nowhere" / "logs"
    result = cli("runs", "--logs-dir", missing)
    assert result.exit_code == 0
    assert "no runs" in result.stderr and str(missing) in result.stderr
    assert not missing.exists() and not missing.parent.exists()


def _read_only(path: Path, *command: str) -> subprocess.CompletedProcess:
    """`command` with `path` mounted read-only in a private mount namespace (nothing outlives it)."""
    mount = f"mount --bind {path} {path} && mount -o remount,ro,bind {path} && exec \"$@\""
    return subprocess.run(["unshare", "-rm", "sh", "-c", mount, "sh", *command], capture_output=True, text=True)


def test_read_only_commands_work_on_a_read_only_logs_dir(tmp_path, workbench_exe):
    logs = tmp_path / "logs"
    for run_id in ("aaaaaaaa", "bbbbbbbb"):
        _fake_run(logs, run_id)
    Store(logs).all()  # an index with both runs
    _fake_run(logs, "cccccccc")  # and one it lacks
    (logs / "store.json.lock").unlink(missing_ok=True)  # reading must not need to create it
    before = {p.name: p.read_bytes() for p in logs.iterdir() if p.is_file()}
    probe = _read_only(logs, "touch", str(logs / "probe"))
    if probe.returncode != 0 and "Read-only" not in probe.stderr:
        pytest.skip(f"no private read-only mounts here: {probe.stderr.strip()}")
    result = _read_only(logs, str(workbench_exe), "runs", "--json", "--logs-dir", str(logs))
    assert result.returncode == 0, result.stderr
    assert {r["run_id"] for r in json.loads(result.stdout)} == {"aaaaaaaa", "bbbbbbbb", "cccccccc"}
    shown = _read_only(logs, str(workbench_exe), "show", "cccc", "--json", "--logs-dir", str(logs))
    assert shown.returncode == 0 and json.loads(shown.stdout)["record"]["run_id"] == "cccccccc", shown.stderr
    assert {p.name: p.read_bytes() for p in logs.iterdir() if p.is_file()} == before


def test_a_reader_lists_every_run_when_the_index_cannot_be_written(tmp_path, cli, monkeypatch):
    import errno

    from workbench import store as store_module

    logs = tmp_path / "logs"
    _fake_run(logs, "aaaaaaaa")
    Store(logs).all()
    _fake_run(logs, "bbbbbbbb")  # the index lacks it, and the disk is full

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_module, "atomic_write_json", full)
    result = cli("runs", "--json", "--logs-dir", logs)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert {r["run_id"] for r in json.loads(result.stdout)} == {"aaaaaaaa", "bbbbbbbb"}
