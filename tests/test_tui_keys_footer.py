"""The footer shows the keys of what has the focus, and is rebuilt once per focus change
(Textual's rebuilt it twice: blur, then focus) and not at all when its keys stay the same."""

from __future__ import annotations

import time
from pathlib import Path

from textual.widgets import DataTable, Input

from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.runs import RunsScreen
from workbench.tui.widgets.keys_footer import KeysFooter

from test_tui import make_run
from tui_support import settle, sync


def footer_keys(screen) -> list[str]:
    return [key.key for key in screen.query_one(KeysFooter).query("FooterKey")]


@sync
async def test_the_footer_follows_the_focus_with_one_rebuild_per_change(tmp_path: Path, monkeypatch):
    logs = tmp_path / "logs"
    make_run(logs, "done0001", "baseline", "completed", time.time() - 60)
    rebuilds = []
    recompose = KeysFooter.recompose

    async def counted(self):
        rebuilds.append(time.monotonic())
        await recompose(self)

    monkeypatch.setattr(KeysFooter, "recompose", counted)
    app = WorkbenchApp(logs, tmp_path / "experiments.json")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunsScreen)
                     and app.screen.query_one("#runs-table", DataTable).row_count == 1 and footer_keys(app.screen))
        await pilot.pause(0.2)
        screen = app.screen
        assert "enter" in footer_keys(screen)  # the table's "Open"
        rebuilds.clear()
        await pilot.press("slash")
        await pilot.pause(0.2)
        assert isinstance(app.focused, Input) and "enter" not in footer_keys(screen)
        assert len(rebuilds) == 1
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert isinstance(app.focused, DataTable) and "enter" in footer_keys(screen)
        assert len(rebuilds) == 2
        await pilot.press("down", "up")  # bindings updates with the same keys: nothing rebuilt
        await pilot.pause(0.2)
        assert len(rebuilds) == 2
