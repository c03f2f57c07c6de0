"""Work that takes seconds (a submit from Compose) runs in a thread with a busy line: the
spinner and what is under way show at once, keys keep answering, and the line clears when
the work ends."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from textual.widgets import Input

from workbench.tui.screens.compose import ComposeScreen
from workbench.tui.widgets.busy_line import FRAMES, BusyLine

from test_tui_compose import Host
from tui_support import settle, sync


@sync
async def test_a_slow_submit_shows_a_busy_line_and_keys_still_answer(experiments_file: Path, logs_dir: Path, monkeypatch):
    release = threading.Event()

    real_run = subprocess.run

    def slow_run(cmd, **kwargs):  # `workbench submit` taking its seconds, until the test lets it end
        if "submit" not in cmd:  # the patch is of the subprocess module: anything else runs as usual
            return real_run(cmd, **kwargs)
        release.wait(60)
        return subprocess.CompletedProcess(cmd, 2, stdout="", stderr="error: no GPU cuda:3 here\n")

    monkeypatch.setattr("workbench.tui.screens.actions.subprocess.run", slow_run)
    screen = ComposeScreen(experiments_file, logs_dir, base="baseline")
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        status = screen.query_one("#compose-status", BusyLine)
        # keys are sent without pilot.press, which waits for an idle app: a turning spinner never is
        app.simulate_key("ctrl+l")
        try:
            await settle(pilot, lambda: status.busy)
            shown = str(status.render())
            assert status.busy and shown[0] in FRAMES and "submitting unsaved" in shown
            await settle(pilot, lambda: str(status.render())[0] != shown[0])  # the spinner turns
            for key in "abc":  # the name field still takes keys while the submit runs
                app.simulate_key(key)
            await settle(pilot, lambda: screen.query_one("#compose-name", Input).value == "abc")
            assert screen.launching
        finally:
            release.set()
        await settle(pilot, lambda: not screen.launching)
        assert not status.busy and str(status.render()) == "launch failed: error: no GPU cuda:3 here"
