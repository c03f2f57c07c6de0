"""What the Runs and Run screens do to a run: cancel and resume, both without torch."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from workbench.records import ACTIVE
from workbench.runner import RESUMABLE, cancel


def cancel_run(record: dict, logs_dir: Path) -> str:
    if record.get("status") not in ACTIVE:
        return f"{record['run_id']} is {record.get('status')}: nothing to cancel"
    return cancel(record, logs_dir)


def resume_command(run_id: str, logs_dir: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "workbench"), "resume", run_id, "--logs-dir", str(logs_dir)]


def resume_run(record: dict, logs_dir: Path) -> str:
    """`workbench resume RUN` in its own session (it imports torch; this process never does).
    The run shows up as queued/running on the next poll."""
    if record.get("status") not in RESUMABLE:
        return f"{record['run_id']} is {record.get('status')}: only {', '.join(RESUMABLE)} runs can be resumed"
    try:
        process = subprocess.Popen(
            resume_command(record["run_id"], logs_dir),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        return f"cannot start workbench resume: {exc}"
    threading.Thread(target=process.wait, name="reap-resume", daemon=True).start()  # no zombie left
    return f"{record['run_id']}: resume requested"
