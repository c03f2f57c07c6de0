"""The title line of one built section of a form: `▼ name` open, `▶ name` closed; enter,
space or a click opens or closes it. The section's own problems (a whole-section rule)
show under the title, so a closed section still says what is wrong.

It stands in for Textual's Collapsible, which is three widgets per section (title, contents,
and itself): every widget mounted costs time when Compose opens. The form owns the
section's fields and shows or hides them on `Toggled`.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static


class SectionTitle(Static, can_focus=True):
    DEFAULT_CSS = """
    SectionTitle {
        width: 1fr;
        height: auto;
        padding: 0 1;
        background: $surface;
        color: $block-cursor-blurred-foreground;
        text-style: $block-cursor-blurred-text-style;
        pointer: pointer;
        &:hover { background: $block-hover-background; color: $foreground; }
        &:focus {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    BINDINGS = [Binding("enter,space", "toggle", "Open/close section", show=False)]

    expanded = reactive(False, init=False)
    problems = reactive("", init=False)

    class Toggled(Message):
        """The title was opened or closed (`title.expanded` says which)."""

        def __init__(self, title: SectionTitle) -> None:
            super().__init__()
            self.title = title

        @property
        def control(self) -> SectionTitle:
            return self.title

    def __init__(self, label: str, section: str, *, expanded: bool, problems: str = "", id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.label = label
        self.section = section
        self.set_reactive(SectionTitle.expanded, expanded)
        self.set_reactive(SectionTitle.problems, problems)
        self.update(self._content())

    def _content(self) -> Content:
        title = Content.assemble("▼ " if self.expanded else "▶ ", self.label)
        if not self.problems:
            return title
        return Content.assemble(title, "\n", (self.problems, "$text-error"))

    def watch_expanded(self) -> None:
        self.update(self._content())
        self.post_message(self.Toggled(self))

    def watch_problems(self) -> None:
        self.update(self._content())

    def action_toggle(self) -> None:
        self.expanded = not self.expanded

    async def _on_click(self, event: events.Click) -> None:
        event.stop()
        self.action_toggle()
