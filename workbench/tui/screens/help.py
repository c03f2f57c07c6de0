"""`?`: the keys of the screen underneath, and the app's own."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def keys_table(bindings: list[tuple[str, str]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, description in bindings:
        table.add_row(key, description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__(id="help-screen")
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static("[b]Keys[/b]  (runs keep going when you quit: they are separate processes)")
            yield Static(keys_table(self.bindings), id="help-keys")
            yield Static("[dim]escape closes this; ctrl+p opens the command palette[/dim]")

    def action_close(self) -> None:
        self.dismiss(None)
