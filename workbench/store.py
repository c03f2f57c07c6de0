"""The run index: a TinyDB file at `<logs dir>/store.json`, safe for many processes.

TinyDB's default JSONStorage rewrites the file in place, so a reader can see half a file
and two writers can lose each other's updates. Here every operation holds a
cross-process file lock for its whole read-modify-write, and every write goes to a
temporary file that is renamed over the old one: readers see the old file or the new
one, never a torn one, and a `kill -9` mid-write leaves the previous version intact.

The store is only a cache of the run folders, which are the truth, and it can never hide
one. Every operation compares the index with the folders on disk: a run folder the index
does not know (a missing, empty or `{}` store; a submit killed before it wrote the
index) is added from its folder; a store that is not a valid index (torn bytes, another
shape) is copied aside and rebuilt. A rebuild writes the new index beside the old one
and renames it into place, so an interrupt at any moment leaves a usable file, and one
unreadable folder is skipped with a warning naming it. On a read-only logs dir the store
is read without the lock (renames make that safe) and reconciled in memory only.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock
from tinydb import Query, TinyDB
from tinydb.storages import MemoryStorage, Storage
from tinydb.table import Table

from engine.run_folder import ID_LENGTH, atomic_write, atomic_write_json
from engine.spec import SpecError
from workbench.store_host import writes_here

STORE_FILE = "store.json"
TABLE = "runs"
LOCK_TIMEOUT = 60  # seconds; a store operation takes milliseconds, so waiting this long means a stuck lock
READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)
UNWRITABLE_ERRORS = (*READ_ONLY_ERRORS, errno.ENOSPC, errno.EDQUOT)  # a reader goes on without writing the cache


class CorruptStore(Exception):
    """store.json holds something other than a run index: it is rebuilt from the folders."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def parse_index(raw: bytes, path: Path) -> dict[str, Any] | None:
    """The TinyDB document in `raw` (None when there is none yet: empty, whitespace, `null`).

    Anything that is not `{table: {doc_id: {"run_id": str, ...}}}` raises CorruptStore,
    so no other shape ever reaches TinyDB (where it would fail with an AttributeError)."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # torn JSON, bytes that are not UTF-8, absurd nesting
        raise CorruptStore(path, "not valid JSON") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise CorruptStore(path, f"a JSON {type(data).__name__}, not an index object")
    for name, table in data.items():
        if not isinstance(table, dict):
            raise CorruptStore(path, f"table {name!r} is a JSON {type(table).__name__}, not an object")
        for doc_id, record in table.items():
            if not doc_id.isdigit() or not isinstance(record, dict):
                raise CorruptStore(path, f"entry {doc_id!r} of table {name!r} is not a record")
            if name == TABLE and not isinstance(record.get("run_id"), str):
                raise CorruptStore(path, f"run entry {doc_id!r} has no run id")
    return data


def run_folder_ids(logs_dir: Path, known: set[str] = frozenset()) -> set[str]:
    """The ids of the run folders in `logs_dir` (an 8-character name and a spec.json), other
    than `known` ones: those are taken on trust, so a store of thousands of runs costs one
    directory listing per operation, not one stat per run."""
    try:
        entries = list(os.scandir(logs_dir))
    except FileNotFoundError:
        return set()
    return {
        e.name for e in entries
        if len(e.name) == ID_LENGTH and e.name not in known and e.is_dir()
        and os.path.exists(os.path.join(e.path, "spec.json"))
    }


def records_of(logs_dir: Path, run_ids: set[str]) -> list[dict[str, Any]]:
    """Store records built from the run folders `run_ids`, oldest name first; a folder that
    cannot be read is skipped with a warning naming it (one bad folder never stops a rebuild)."""
    from workbench.records import record_from_folder

    records = []
    for run_id in sorted(run_ids):
        path = logs_dir / run_id
        try:
            record = record_from_folder(path)
        except Exception as exc:  # noqa: BLE001: any unreadable folder, whatever the reason
            print(f"warning: skipped run folder {path} while indexing: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if record is not None:
            records.append(record)
    return records


class AtomicJSONStorage(Storage):
    """TinyDB storage that writes a temporary file and renames it into place."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return parse_index(raw, self.path)

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
    def _runs(self, write: bool) -> Iterator[Table]:
        """The runs table, reconciled with the run folders, under the lock. On a logs dir
        this process cannot write, a reading operation gets an in-memory copy instead."""
        if self.path.is_dir():
            raise SpecError(f"{self.path} is a folder, not the run index; move it away and the index is rebuilt")
        if not write and not self.logs_dir.is_dir():
            yield _memory_table({})  # reading never creates the logs dir
            return
        if write:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not writes_here(self.logs_dir):  # another host writes the store (workbench.store_host)
            yield _memory_table(self._reconciled(persist=False))  # a write here lands in memory only
            return
        try:
            self._lock.acquire()
        except OSError as exc:
            if write or exc.errno not in READ_ONLY_ERRORS:
                raise
            yield _memory_table(self._reconciled(persist=False))
            return
        try:
            try:
                self._reconciled(persist=True)
            except OSError as exc:  # a full or read-only disk: a reader still gets every run
                if write or exc.errno not in UNWRITABLE_ERRORS:
                    raise
                yield _memory_table(self._reconciled(persist=False))
                return
            db = TinyDB(self.path, storage=AtomicJSONStorage)
            try:
                yield db.table(TABLE)
            finally:
                db.close()
        finally:
            self._lock.release()

    # operations --------------------------------------------------------------------
    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace the record of `record["run_id"]`."""
        self.put_many([record])

    def put_many(self, records: list[dict[str, Any]]) -> None:
        """Insert or replace each record, in one locked rewrite of the file (a TUI refreshing
        every live run each second would otherwise rewrite the store once per run)."""
        if not records:
            return
        with self._runs(write=True) as runs:
            present = {document["run_id"] for document in runs.all()}
            # update_multiple with a replacing function: upsert would merge, keeping stale fields
            replaced = [(_replacing(r), Query().run_id == r["run_id"]) for r in records if r["run_id"] in present]
            added = [r for r in records if r["run_id"] not in present]
            if replaced:
                runs.update_multiple(replaced)
            if added:
                runs.insert_multiple(added)

    def update(self, run_id: str, **fields: Any) -> None:
        with self._runs(write=True) as runs:
            runs.update(fields, Query().run_id == run_id)

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self._runs(write=False) as runs:
            found = runs.get(Query().run_id == run_id)
        return dict(found) if found else None

    def all(self) -> list[dict[str, Any]]:
        with self._runs(write=False) as runs:
            return [dict(record) for record in runs.all()]

    # recovery ----------------------------------------------------------------------
    def _reconciled(self, persist: bool) -> dict[str, Any]:
        """The index on disk with every run folder it lacks added (rebuilt whole when the
        file is not an index); written back when `persist`. Returns the document."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        try:
            data = parse_index(raw, self.path)
            reason = None if data is not None else ("missing" if not self.path.exists() else "empty")
        except CorruptStore as exc:
            data, reason = None, f"corrupt ({exc.reason})"
        data = data or {}
        runs = data.setdefault(TABLE, {})
        known = {record["run_id"] for record in runs.values()}
        missing = run_folder_ids(self.logs_dir, known)
        if not missing and reason is None:
            return data
        added = records_of(self.logs_dir, missing)
        next_id = max((int(doc_id) for doc_id in runs), default=0) + 1
        for offset, record in enumerate(added):
            runs[str(next_id + offset)] = record
        if persist:
            kept = self._keep_aside(raw) if reason and reason.startswith("corrupt") else None
            atomic_write_json(self.path, data)  # beside the old file, then renamed over it
            if reason is not None and (added or kept):
                aside = f"; kept it as {kept.name}" if kept else ""
                print(f"warning: {self.path} was {reason}{aside}; rebuilt {len(added)} runs from the run folders",
                      file=sys.stderr)
        return data

    def _keep_aside(self, raw: bytes) -> Path:
        """A copy of a corrupt store next to it (never overwriting an earlier one): the old
        file stays in place until the rebuilt one is renamed over it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{STORE_FILE}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{STORE_FILE}.corrupt-{stamp}-{n}")
        atomic_write(aside, lambda f: f.write(raw))
        return aside


def _memory_table(data: dict[str, Any]) -> Table:
    db = TinyDB(storage=MemoryStorage)
    db.storage.write(data)
    return db.table(TABLE)


def _replacing(record: dict[str, Any]):
    """A TinyDB update that makes a document exactly `record`."""

    def replace(document: dict[str, Any]) -> None:
        document.clear()
        document.update(record)

    return replace
