"""The Textual workbench (`workbench tui`). Importing this package imports no torch and no
Textual; `run_tui` loads the app when called."""

from __future__ import annotations

from pathlib import Path


def run_tui(logs_dir: Path, experiments: Path, run_id: str | None = None) -> None:
    """Run the TUI on `logs_dir` until the user quits; `run_id` opens that run's screen first.
    Quitting never stops runs: they are separate processes."""
    from workbench.tui.app import WorkbenchApp

    WorkbenchApp(Path(logs_dir), Path(experiments), run_id).run()
