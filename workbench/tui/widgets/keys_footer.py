"""Textual's Footer, rebuilt only when the keys it shows change.

Textual's Footer rebuilds all its key widgets on every bindings update, and a focus change
sends two (the blur, then the focus): moving between the Runs screen's filter and its
table rebuilt the footer twice per key, a good part of what that key cost. This one
rebuilds only when the shown keys differ from what it shows.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple | None = None

    def _keys_shown(self) -> tuple:
        """What compose() draws: each shown binding of the screen as it is now."""
        return tuple(
            (key, binding.action, binding.description, binding.key_display, str(binding.group), enabled, tooltip)
            for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._rebuild)  # when Textual's would: the second of a pair finds nothing new

    async def _rebuild(self) -> None:
        shown = self._keys_shown()
        if shown != self._shown:
            self._shown = shown
            await self.recompose()
