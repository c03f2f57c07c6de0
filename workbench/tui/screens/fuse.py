"""`f` on the Runs screen: fuse the marked runs (or the ensemble run under the cursor) into
a new run, choosing how: average, head or mutant. The choice is made here; the members are
checked, and the run queued, by `workbench fuse` in a subprocess (it says what is wrong
with them in one sentence, shown as a notification)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

MODES = {
    "mutant": "one wide model computing the members' average at step 0, then trained",
    "head": "the members' trunks frozen, one new linear + softmax trained on top",
    "average": "the members' averaged logits, evaluated (no training)",
}


class FuseScreen(ModalScreen[str | None]):
    """Dismissed with the chosen mode, or None."""

    BINDINGS = [Binding("escape", "close", "Cancel")]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__(id="fuse-screen")
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        with Vertical(id="fuse-box"):
            yield Static(f"[b]Fuse[/b] {', '.join(self.run_ids)} into a new run:")
            yield OptionList(*(Option(f"[b]{mode}[/b]  {what}", id=mode) for mode, what in MODES.items()),
                             id="fuse-modes")
            yield Static("[dim]enter fuses, escape cancels; more options: workbench fuse --help[/dim]")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_close(self) -> None:
        self.dismiss(None)
