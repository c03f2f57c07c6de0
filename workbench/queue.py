"""Per-device run queue without a server: waiting workers line up in a folder and take slots.

Every submitted run gets its own worker process at once. Before it imports torch, the
worker waits for one of the device's `max_per_device` slots. A slot is an exclusive lock
on `<logs>/.slots/<device>.<k>.lock`; the kernel releases it when the process ends,
however it ends, so a crashed run never keeps a slot. Order is first come, first
served: the runner puts a ticket named by submission time in `<logs>/.queue/<device>/`
before it starts the worker (so a worker that starts up faster cannot jump the line), the
worker signs it with its pid, and only the oldest live ticket may take a free slot.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from workbench.heartbeat import STALE_SECONDS
from workbench.liveness import process_alive

POLL_SECONDS = 0.25
DEFAULT_MAX_PER_DEVICE = 2


def default_max_per_device() -> int:
    try:
        return max(1, int(os.environ.get("WORKBENCH_MAX_PER_DEVICE", DEFAULT_MAX_PER_DEVICE)))
    except ValueError:
        return DEFAULT_MAX_PER_DEVICE


def _device_key(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower())


class DeviceQueue:
    def __init__(self, logs_dir: Path, device: str, max_per_device: int) -> None:
        key = _device_key(device)
        self.tickets = Path(logs_dir) / ".queue" / key
        self.slots = [Path(logs_dir) / ".slots" / f"{key}.{k}.lock" for k in range(max_per_device)]

    def _ticket(self, run_id: str, submitted_ns: int) -> Path:
        return self.tickets / f"{submitted_ns:020d}-{run_id}"

    def enqueue(self, run_id: str, submitted_ns: int) -> None:
        """Take a place in line (by the runner, before the worker exists: no pid yet)."""
        self.tickets.mkdir(parents=True, exist_ok=True)
        self._ticket(run_id, submitted_ns).write_text(json.dumps({"host": socket.gethostname()}))

    def wait(self, run_id: str, submitted_ns: int, should_stop: Callable[[], bool]) -> FileLock | None:
        """Block until this run holds a slot (returned: keep it referenced for the run's
        lifetime) or `should_stop()` turns true (None)."""
        self.tickets.mkdir(parents=True, exist_ok=True)
        self.slots[0].parent.mkdir(parents=True, exist_ok=True)
        ticket = self._ticket(run_id, submitted_ns)
        ticket.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        try:
            while not should_stop():
                if self._first_in_line(ticket):
                    slot = self._free_slot()
                    if slot is not None:
                        return slot
                time.sleep(POLL_SECONDS)
            return None
        finally:
            ticket.unlink(missing_ok=True)

    def _first_in_line(self, mine: Path) -> bool:
        for ticket in sorted(self.tickets.iterdir()):
            if ticket == mine:
                return True
            try:
                owner = json.loads(ticket.read_text())
                age = time.time() - ticket.stat().st_mtime
            except (OSError, json.JSONDecodeError):
                continue  # being written or removed right now
            if owner.get("pid") is None:
                if age > STALE_SECONDS:
                    ticket.unlink(missing_ok=True)  # its worker never started
                    continue
                return False  # its worker is starting up: it came first
            if owner.get("host") == socket.gethostname() and not process_alive(owner["pid"]):
                ticket.unlink(missing_ok=True)  # its worker died while waiting
                continue
            return False
        return True

    def _free_slot(self) -> FileLock | None:
        for path in self.slots:
            lock = FileLock(str(path))
            try:
                lock.acquire(timeout=0)
                return lock
            except Timeout:
                continue
        return None
