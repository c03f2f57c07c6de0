"""A screen that follows files on disk: `read()` in a thread worker, `apply()` on the UI thread.

Every screen that watches runs polls the same way, so the rules live here once: one read
at a time (a slow disk or a held store lock never piles reads up), a result that arrives
after the screen closed is dropped, and a read that fails shows its error on the screen
instead of taking the UI down.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.screen import Screen


class PollingScreen(Screen):
    POLL_SECONDS = 1.0
    READ_ERROR = "cannot read runs"  # what a failed read says, before the exception's text

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._polling = False

    def start_polling(self) -> None:
        """Read now, then every POLL_SECONDS (call from on_mount)."""
        self.poll()
        self.set_interval(self.POLL_SECONDS, self.poll)

    def poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._read_in_thread()

    def read(self) -> Any:
        """Runs in a thread: do the file I/O, return what `apply` needs. May raise."""
        raise NotImplementedError

    def apply(self, result: Any, error: str) -> None:
        """Runs on the UI thread: show `result` (None when the read failed with `error`)."""
        raise NotImplementedError

    @work(thread=True, exit_on_error=False)
    def _read_in_thread(self) -> None:
        try:
            result, error = self.read(), ""
        except Exception as exc:  # a stuck lock or a bad file must not take the UI down
            result, error = None, f"{self.READ_ERROR}: {exc}"
        self.app.call_from_thread(self._deliver, result, error)

    def _deliver(self, result: Any, error: str) -> None:
        self._polling = False
        if self not in self.app.screen_stack:  # closed while its read was under way
            return
        self.apply(result, error)
