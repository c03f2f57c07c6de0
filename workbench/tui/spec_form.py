"""Moved to workbench.tui.widgets.spec_form; this name is the same module (so patches of it
reach the form), kept for callers that import it from here."""

import sys

from workbench.tui.widgets import spec_form

sys.modules[__name__] = spec_form
