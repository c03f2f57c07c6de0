"""What the TUI pilot tests share: the terminal size, running async tests, waiting for polls."""

from __future__ import annotations

import asyncio
import functools
import time

from textual.app import App

SIZE = (80, 24)  # the smallest terminal the TUI must work in


def pair_experiments(device: str, **studies: dict) -> dict:
    """An experiments.json of a tiny baseline / half-fixed pair and the study "pair" of them
    (plus `studies`), as the Studies and snapshot tests write it."""
    base = {
        "device": device,
        "data": {"name": "mnist5k"},
        "model": {"name": "lenet", "width": 4},
        "train": {"steps": 100},
        "partition": {"strategy": "first_kernels", "fraction": 0.5},
    }
    return {
        "experiments": {
            "baseline": {**base, "description": "all train", "freeze": False},
            "half-fixed": {"base": "baseline", "description": "first half frozen", "freeze": True},
        },
        "studies": {
            "pair": {"description": "does the subset move farther?", "arms": ["baseline", "half-fixed"], "seeds": 2},
            **studies,
        },
    }


def sync(test):
    """Run an async pilot test with asyncio.run (no pytest-asyncio plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle(pilot, until, timeout: float = 60.0) -> None:
    """Let polls run until `until()` holds (screens read files in a thread)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the screen never caught up"
        await pilot.pause(0.05)


def record_popen(monkeypatch, module) -> list[tuple[list, dict]]:
    """Replace `module.subprocess.Popen` with a recorder: returns the list of (args, kwargs)
    of every process the module starts (none is started)."""
    import subprocess
    from types import SimpleNamespace

    started: list[tuple[list, dict]] = []

    class FakeProcess:
        def __init__(self, args, **kwargs):
            started.append((args, kwargs))

        def wait(self):
            return 0

    monkeypatch.setattr(module, "subprocess", SimpleNamespace(Popen=FakeProcess, DEVNULL=subprocess.DEVNULL))
    return started


class FormHost(App):
    """An app holding one widget (a SpecForm), for pilot tests of the widget alone."""

    def __init__(self, form) -> None:
        super().__init__()
        self.form = form

    def compose(self):
        yield self.form
