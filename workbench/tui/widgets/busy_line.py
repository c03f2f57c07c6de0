"""A one-line status that shows when work is under way: a spinner and what is being done,
before the usual text, for as long as a thread worker runs (a submit or a fuse takes
seconds: Python starts, torch is imported, the members are checked). The key that started
the work has long been answered; this says the work goes on."""

from __future__ import annotations

from textual.timer import Timer
from textual.widgets import Static

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class BusyLine(Static):
    def __init__(self, text: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(text, id=id, classes=classes, markup=False)
        self.text = text
        self.work = ""  # what is under way ("" when nothing)
        self._frame = 0
        self._timer: Timer | None = None

    @property
    def busy(self) -> bool:
        return bool(self.work)

    def say(self, text: str) -> None:
        """The usual text (shown after the spinner while busy)."""
        self.text = text
        self._draw()

    def start(self, work: str) -> None:
        self.work = work
        if self._timer is None:
            self._timer = self.set_interval(0.1, self._turn)
        self._draw()

    def stop(self) -> None:
        self.work = ""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._draw()

    def _turn(self) -> None:
        self._frame = (self._frame + 1) % len(FRAMES)
        self._draw()

    def _draw(self) -> None:
        if not self.work:
            self.update(self.text)
        else:
            self.update(f"{FRAMES[self._frame]} {self.work}" + (f"  {self.text}" if self.text else ""))
