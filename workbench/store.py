"""The run index: a TinyDB file at `<logs dir>/store.json`, safe for many processes.

TinyDB's default JSONStorage rewrites the file in place, so a reader can see half a file
and two writers can lose each other's updates. Here every operation holds a
cross-process file lock for its whole read-modify-write, and every write goes to a
temporary file that is renamed over the old one: readers see the old file or the new
one, never a torn one, and a `kill -9` mid-write leaves the previous version intact.

The store is only an index: the run folders are the truth. A store file found corrupt is
moved aside and rebuilt from the folders (workbench.records).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock
from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from engine.run_folder import atomic_write_json

STORE_FILE = "store.json"
LOCK_TIMEOUT = 60  # seconds; a store operation takes milliseconds, so waiting this long means a stuck lock


class CorruptStore(Exception):
    pass


class AtomicJSONStorage(Storage):
    """TinyDB storage that writes a temporary file and renames it into place."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not text at all
            raise CorruptStore(self.path) from None
        if data is not None and not isinstance(data, dict):
            raise CorruptStore(self.path)
        return data

    def write(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.path, data)

    def close(self) -> None:
        pass


class Store:
    def __init__(self, logs_dir: str | Path) -> None:
        self.logs_dir = Path(logs_dir)
        self.path = self.logs_dir / STORE_FILE
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)

    @contextmanager
    def _runs(self) -> Iterator[Table]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            db = TinyDB(self.path, storage=AtomicJSONStorage)
            try:
                try:
                    db.table("runs").all()  # read once, so corruption shows up here, inside the lock
                except CorruptStore:
                    self._rebuild_locked()
                yield db.table("runs")
            finally:
                db.close()

    # operations --------------------------------------------------------------------
    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace the record of `record["run_id"]`."""
        self.put_many([record])

    def put_many(self, records: list[dict[str, Any]]) -> None:
        """Insert or replace each record, in one locked rewrite of the file (a TUI refreshing
        every live run each second would otherwise rewrite the store once per run)."""
        if not records:
            return
        with self._runs() as runs:
            present = {document["run_id"] for document in runs.all()}
            # update_multiple with a replacing function: upsert would merge, keeping stale fields
            replaced = [(_replacing(r), Query().run_id == r["run_id"]) for r in records if r["run_id"] in present]
            added = [r for r in records if r["run_id"] not in present]
            if replaced:
                runs.update_multiple(replaced)
            if added:
                runs.insert_multiple(added)

    def update(self, run_id: str, **fields: Any) -> None:
        with self._runs() as runs:
            runs.update(fields, Query().run_id == run_id)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self._runs() as runs:
            found = runs.get(Query().run_id == run_id)
        return dict(found) if found else None

    def all(self) -> list[dict[str, Any]]:
        with self._runs() as runs:
            return [dict(record) for record in runs.all()]

    # recovery ----------------------------------------------------------------------
    def _rebuild_locked(self) -> None:
        from workbench.records import record_from_folder

        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{STORE_FILE}.corrupt-{stamp}")
        n = 1
        while aside.exists():  # never overwrite an earlier corrupt copy from the same second
            n += 1
            aside = self.path.with_name(f"{STORE_FILE}.corrupt-{stamp}-{n}")
        self.path.replace(aside)
        records = [r for r in map(record_from_folder, sorted(self.logs_dir.iterdir())) if r is not None]
        atomic_write_json(self.path, {"runs": {str(i + 1): r for i, r in enumerate(records)}})
        print(
            f"warning: {self.path} was corrupt; kept it as {aside.name} and rebuilt {len(records)} runs from the run folders",
            file=sys.stderr,
        )


def _replacing(record: dict[str, Any]):
    """A TinyDB update that makes a document exactly `record`."""

    def replace(document: dict[str, Any]) -> None:
        document.clear()
        document.update(record)

    return replace
