"""A full or read-only disk: one sentence naming the file ("no space left on <path>",
"cannot write to <path>") and exit 2 from commands; a run that hits a full disk ends
`failed` with that sentence in its end event, record and log; and the temporary files of
a writer killed mid-write are removed by the next write into the folder.

Tests run as root, where chmod cannot make a folder read-only, so the disk's refusals are
simulated: a file object whose writes fail with ENOSPC (as the kernel's do on a full
disk), or os calls that raise the OSError the kernel would.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import read_events
from engine.run_folder import HOST_TAG, atomic_write, atomic_write_json
from workbench.store import Store
from cli_support import assert_clean_exit

REPO = Path(__file__).resolve().parent.parent


class FullDisk:
    """A file whose writes fail the way they do on a full disk."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@pytest.fixture
def full_disk_for(monkeypatch):
    """`full_disk_for("final.pt")`: from now on, writing a file of that name fails with ENOSPC
    (every file is written through a temporary `.<name>.*` beside it, opened with os.fdopen)."""

    def arm(name: str) -> None:
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            file = real_fdopen(fd, *args, **kwargs)
            return FullDisk(file) if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}.") else file

        monkeypatch.setattr(os, "fdopen", fdopen)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor writes")
    return arm


# --- a run on a full disk ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "checkpoint, overrides",
    [("final", []), ("step_000010", ["--set", "checkpoint.every=10"])],
    ids=["final-checkpoint", "checkpoint-during-the-steps"],
)
def test_a_run_on_a_full_disk_fails_saying_no_space_left(checkpoint, overrides, full_disk_for, cli, experiments_file, logs_dir):
    full_disk_for(f"{checkpoint}.pt")
    result = cli("run", "--headless", "baseline", "--json", *overrides, "--experiments", experiments_file, "--logs-dir", logs_dir)
    assert_clean_exit(result, 1)  # a failed run: 1, as any failed run
    payload = json.loads(result.stdout)
    run_dir = Path(payload["run_dir"])
    sentence = f"no space left on {run_dir / 'checkpoints' / checkpoint}.pt"
    assert payload["status"] == "failed" and payload["error"] == sentence
    assert sentence in result.stderr

    events, _ = read_events(run_dir / "events.jsonl")
    ends = [e for e in events if e["type"] == "end"]
    assert len(ends) == 1 and ends[0]["status"] == "failed" and ends[0]["error"] == sentence
    record = Store(logs_dir).get(run_dir.name)
    assert record["status"] == "failed" and record["error"] == sentence
    assert sentence in (run_dir / "worker.log").read_text()
    assert not list(run_dir.rglob("*.tmp")), list(run_dir.rglob("*"))

    # `runs`: the reason on a line under the table, cut to 80 columns; `show`: in full
    table = cli("runs", "--logs-dir", logs_dir)
    assert_clean_exit(table, 0)
    assert all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    why = [line for line in table.stdout.splitlines() if line.startswith(f"{run_dir.name} failed")]
    assert len(why) == 1 and why[0].split(" ", 2)[2].rstrip("…") in sentence, table.stdout
    shown = cli("show", run_dir.name, "--logs-dir", logs_dir)
    assert_clean_exit(shown, 0)
    assert sentence.replace(" ", "") in "".join(shown.stdout.split())  # the long path may wrap


# --- commands -------------------------------------------------------------------------------
def _refusing(code: int):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return refuse


@pytest.mark.parametrize(
    "call, code, sentence",
    [
        ("fsync", errno.ENOSPC, "no space left on {out}"),
        ("fsync", errno.EDQUOT, "no space left on {out}"),
        ("replace", errno.EROFS, "cannot write to {out} (read-only file system)"),
        ("replace", errno.EACCES, "cannot write to {out} (permission denied)"),
    ],
)
def test_a_command_the_disk_refuses_says_which_file_and_exits_2(call, code, sentence, monkeypatch, cli, tmp_path):
    out = tmp_path / "schema.json"
    monkeypatch.setattr(os, call, _refusing(code))
    result = cli("schema", "-o", out)
    assert_clean_exit(result, 2)
    assert result.stderr.strip() == "error: " + sentence.format(out=out)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing written, nothing left


def test_a_store_that_cannot_be_written_is_one_sentence(monkeypatch, cli, tmp_path):
    lock = tmp_path / "logs" / "store.json.lock"

    def refuse(self):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(lock))

    monkeypatch.setattr(Store, "all", refuse)
    result = cli("runs", "--logs-dir", tmp_path / "logs")
    assert_clean_exit(result, 2)
    assert result.stderr.strip() == f"error: cannot write to {lock} (read-only file system)"


def test_other_os_errors_stay_unexpected(cli, tmp_path):
    (tmp_path / "file").write_text("")
    result = cli("schema", "-o", tmp_path / "file" / "schema.json")  # a file where a folder should be
    assert result.exit_code == 1 and "error: unexpected" in result.stderr


# --- temporary files of a killed writer -------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_write_removes_temporary_files_of_dead_writers_only(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".summary.json.{dead}@{HOST_TAG}.ab12cd34.tmp"
    live = tmp_path / f".spec.json.{alive}@{HOST_TAG}.ef56gh78.tmp"  # a write in progress in this process
    elsewhere = tmp_path / f".summary.json.{dead}@some-other-host.ab12cd34.tmp"  # its pid means nothing here
    unrelated = tmp_path / "notes.tmp"
    for path in (stale, live, elsewhere, unrelated):
        path.write_bytes(b"half")
    atomic_write_json(tmp_path / "summary.json", {"steps": 3})
    assert not stale.exists()
    assert live.exists() and elsewhere.exists() and unrelated.exists()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"steps": 3}


WRITER = """
import sys, time
from pathlib import Path
from engine.run_folder import atomic_write

def write(file):
    file.write(b"half a checkpoint")
    file.flush()
    print("writing", flush=True)
    time.sleep(600)  # killed here, mid-write

atomic_write(Path(sys.argv[1]), write)
"""


def test_a_writer_killed_mid_write_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoints" / "step_000010.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert writer.stdout.readline() == b"writing\n"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    leftovers = list(target.parent.glob(".*.tmp"))
    assert len(leftovers) == 1 and f".{writer.pid}@" in leftovers[0].name, leftovers
    assert not target.exists()  # the kill left the old state: no half file under the real name

    atomic_write(target.parent / "step_000020.pt", lambda f: f.write(b"whole"))
    assert not list(target.parent.glob(".*.tmp"))
    assert (target.parent / "step_000020.pt").read_bytes() == b"whole"
