"""`workbench tui`: watch runs live, open one, cancel, resume, compose new ones.

The app never owns a run: runs are separate processes, so quitting (or losing the SSH
connection) leaves them going, and reopening re-attaches by reading the store and the run
folders. All file I/O happens in thread workers; this process never imports torch.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from workbench.store import Store
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.run import RunScreen
from workbench.tui.screens.runs import RunsScreen


class WorkbenchApp(App):
    TITLE = "workbench"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        # Not in every footer (80 columns are taken by each screen's own keys): `?` and the
        # palette list it.
        Binding("t", "studies", "Studies", show=False),
    ]

    def __init__(self, logs_dir: Path, experiments: Path, run_id: str | None = None) -> None:
        super().__init__()
        self.logs_dir = Path(logs_dir)
        self.experiments = Path(experiments)
        self.start_run_id = run_id

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.logs_dir, self.experiments))
        if self.start_run_id:
            self.open_run(self.start_run_id)

    def open_run(self, run_id: str) -> None:
        """Open the Run screen on `run_id` (a unique prefix works)."""
        records = Store(self.logs_dir).all() if self.logs_dir.is_dir() else []
        found = [r for r in records if r["run_id"].startswith(run_id)]
        if len(found) != 1:
            self.notify(f"no run {run_id!r}" if not found else f"{run_id!r} matches {len(found)} runs", severity="error")
            return
        self.push_screen(RunScreen(found[0], self.logs_dir))

    # keys ---------------------------------------------------------------------------------
    def screen_keys(self, screen: Screen | None = None) -> list[tuple[str, str]]:
        """(key, description) of every binding active on `screen`, for `?` and the palette."""
        screen = screen or self.screen
        keys = list(getattr(screen, "HELP_EXTRA", []))
        for active in screen.active_bindings.values():
            binding = active.binding
            if binding.description and binding.show:  # the footer's keys, not every widget's
                keys.append((binding.key_display or self.get_key_display(binding), binding.description))
        if "studies" in {a.binding.action for a in screen.active_bindings.values()}:
            keys.append(("t", "Studies"))
        keys.append(("ctrl+p", "Command palette"))
        return list(dict.fromkeys(keys))  # once each, in order

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """Save an SVG of the screen into `screenshots/` of the logs dir (Textual's own default,
        ~/Downloads, fails where it does not exist, as on most servers) and say where."""
        folder = Path(path) if path else self.logs_dir / "screenshots"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            saved = self.save_screenshot(filename, str(folder))
        except OSError as exc:
            self.notify(f"cannot save a screenshot in {folder}: {exc}", severity="error")
            return
        self.notify(str(saved), title="screenshot saved")

    def action_studies(self) -> None:
        """The studies of the experiments file: progress, launch, verdict."""
        from workbench.tui.screens.studies import StudiesScreen

        if isinstance(self.screen, StudiesScreen):
            return
        self.push_screen(StudiesScreen(self.experiments, self.logs_dir))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        keys = self.screen_keys()
        self.push_screen(HelpScreen(keys))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen = {"quit"}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            display = binding.key_display or key
            yield SystemCommand(
                f"{binding.description} ({display})",
                f"same as the key {display}",
                partial(active.node.run_action, binding.action),
            )
        if "studies" not in seen:  # a screen that shadows `t` still reaches the studies
            yield SystemCommand("Studies", "every study: progress, launch, verdict", self.action_studies)

