"""What the screens do to runs, all without torch: cancel, resume, and any `workbench`
command that queues runs (submit, fuse), run as a subprocess."""

from __future__ import annotations

import json
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


def confirm_cancel(screen, record: dict, logs_dir: Path) -> None:
    """Ask, then cancel the run of `record` (`c` on the Runs and Run screens): a cancel stops
    hours of training, one stray key must not do it. A run that is not active is told so
    at once, with nothing to confirm."""
    from workbench.tui.screens.confirm import ConfirmScreen

    if record.get("status") not in ACTIVE:
        screen.notify(cancel_run(record, logs_dir))
        return

    def answered(yes: bool | None) -> None:
        if yes:
            screen.notify(cancel_run(record, logs_dir))
            screen.poll()

    question = f"Cancel {record['run_id']} ({record.get('experiment') or '-'}, {record.get('status')})?"
    screen.app.push_screen(ConfirmScreen(question), answered)


def resume_command(run_id: str, logs_dir: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "workbench"), "resume", run_id, "--logs-dir", str(logs_dir)]


def resume_run(record: dict, logs_dir: Path) -> str:
    """`workbench resume RUN` in its own session (it imports torch; this process never does).
    The run shows up as queued/running on the next poll."""
    if record.get("status") not in RESUMABLE:
        return f"{record['run_id']} is {record.get('status')}: only {', '.join(RESUMABLE)} runs can be resumed"
    failed = start_detached(resume_command(record["run_id"], logs_dir), subprocess.Popen)
    return f"cannot start workbench resume: {failed}" if failed else f"{record['run_id']}: resume requested"


def start_detached(command: list[str], popen) -> str:
    """Start `command` in its own session, so that quitting the TUI leaves it going, with a
    thread that waits for it (no zombie left); "" or why it could not start. `popen` is the
    caller's `subprocess.Popen`, looked up when it calls (the tests replace it per screen)."""
    try:
        process = popen(command, start_new_session=True, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        return str(exc)
    threading.Thread(target=process.wait, name=f"reap-{command[1]}", daemon=True).start()
    return ""


COMMAND_TIMEOUT_S = 60  # submitting only validates and queues: seconds, not minutes


def workbench_executable() -> Path:
    """The `workbench` console script beside this interpreter (the venv's)."""
    return Path(sys.executable).parent / "workbench"


def run_workbench(args: list[str], logs_dir: Path) -> tuple[list[str] | None, str]:
    """`workbench ARGS --logs-dir LOGS --json`, a command that queues runs, as a subprocess
    (it may import torch; this process never does): (run ids, "") or (None, why it failed,
    the first line it printed: bad input is one clear sentence)."""
    command = args[0]
    try:
        done = subprocess.run([str(workbench_executable()), *args, "--logs-dir", str(logs_dir), "--json"],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"workbench {command} did not answer within {COMMAND_TIMEOUT_S} s"
    except OSError as exc:
        return None, f"cannot start workbench {command}: {exc}"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return None, lines[0] if lines else f"workbench {command} failed (exit status {done.returncode})"
    try:
        ids = json.loads(done.stdout.strip().splitlines()[-1])["run_ids"]
    except (IndexError, KeyError, TypeError, json.JSONDecodeError):
        return None, f"workbench {command} printed no run ids: {done.stdout.strip()[:200]!r}"
    return list(ids), ""
