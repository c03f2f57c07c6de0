"""Who writes the store when several machines share the logs dir: one host only.

On a shared filesystem (NFS and the like) the store's cross-process file lock is not
reliable between machines: two hosts can both believe they hold it, and one rename then
silently drops the other's update. So the store has a single writer *host*: the first host
that writes `<logs>/store.json` claims it in `<logs>/store.host` (created exclusively, so
two hosts cannot both claim it). Processes on that host write the store under the lock,
which is reliable between the processes of one machine. Processes on any other host (Ray
workers, `runs` or the TUI on a worker node) never write it: they read it (renames make
that safe without the lock) and reconcile it with the run folders in memory, as on a
read-only logs dir. Nothing is lost: the folders are the truth, and the writer host's next
read picks up whatever the others' runs wrote there. To move the writer (the head moved),
delete `store.host`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

STORE_HOST_FILE = "store.host"


def writer_host(logs_dir: Path) -> str | None:
    """The host that writes the store, claimed by this one when nobody has (None: unreadable)."""
    path = Path(logs_dir) / STORE_HOST_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        try:
            return path.read_text().strip() or None
        except OSError:
            return None
    except OSError:  # a read-only logs dir: the store handles that itself
        return None
    try:
        os.write(fd, (socket.gethostname() + "\n").encode())
    except OSError:  # a full disk: no claim (an empty file claims nothing); the store reports the disk
        path.unlink(missing_ok=True)
        return None
    finally:
        os.close(fd)
    return socket.gethostname()


def writes_here(logs_dir: Path) -> bool:
    """Whether processes of this host may write the store (an unreadable claim: they may try)."""
    host = writer_host(logs_dir)
    return host is None or host == socket.gethostname()
