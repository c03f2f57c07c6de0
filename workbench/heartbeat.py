"""A worker's sign of life: `<run>/heartbeat.json`, rewritten every few seconds.

A process killed with SIGKILL, by the OOM killer or by a reboot writes no final status.
Its run must not show as running forever, so readers judge liveness from two facts: on
this host, whether the process still exists; on any host, whether the heartbeat is fresh.
The heartbeat also carries the current step, so listing runs needs no events parsing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from engine.run_folder import read_json

HEARTBEAT_FILE = "heartbeat.json"
BEAT_SECONDS = 2.0
STALE_SECONDS = 30.0  # no beat for this long: the process is gone (or its host is)


class Heartbeat:
    """A daemon thread that rewrites the heartbeat file until stopped (or the process dies)."""

    def __init__(self, run_dir: Path, phase: str = "queued") -> None:
        self.path = Path(run_dir) / HEARTBEAT_FILE
        self.phase = phase
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=BEAT_SECONDS * 2)

    def on_step(self, step: int) -> None:
        self.step = step  # read by the beat thread; an int assignment is atomic

    def write(self) -> None:
        beat = {"pid": os.getpid(), "host": socket.gethostname(), "phase": self.phase, "step": self.step, "time": time.time()}
        # A rename keeps readers from seeing half a file; no fsync: a lost beat costs nothing.
        tmp = self.path.with_name(f".{HEARTBEAT_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(beat))
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.write()
            except OSError:
                pass  # a full disk must not kill training; the run will just look stale


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / HEARTBEAT_FILE)  # missing or corrupt: no beat
