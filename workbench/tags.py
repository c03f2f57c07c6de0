"""Tags: a researcher's own labels on runs ("lr-sweep", "for-paper"), to find them again.

Tags are run metadata, not part of the experiment: they never enter the spec or its digest,
so tagging a run changes nothing about what it is or which study re-uses it. They live in
the run folder (`tags.json`, `{"tags": [...]}`, written atomically) because the folder is
the truth and the index a cache: a rebuilt index reads them back from there
(workbench/records.py). A study tags its runs with the study's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock

from engine.run_folder import atomic_write_json, read_json
from engine.spec import SpecError

TAGS_FILE = "tags.json"
MAX_LENGTH = 40
_TAG = re.compile(rf"[^\s,]{{1,{MAX_LENGTH}}}")
RULE = f"1 to {MAX_LENGTH} characters, no spaces or commas (e.g. lr-sweep, paper:fig2)"


def check_tag(tag: str) -> str:
    """`tag` if it is a valid tag, else SpecError naming it and the rule."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise SpecError(f"tag {tag!r}: a tag is {RULE}")
    return tag


def check_tags(tags: Iterable[str] | None) -> list[str]:
    """The valid tags, each once, in the order given (SpecError at the first bad one)."""
    return list(dict.fromkeys(check_tag(tag) for tag in tags or ()))


def is_tag(text: str) -> bool:
    return bool(_TAG.fullmatch(text))


def read_tags(run_dir: Path) -> list[str]:
    """The run's tags ([] when it has none). A tags.json that is not the expected shape
    gives its valid tags only: tags are labels, never a reason to distrust a run."""
    found = (read_json(Path(run_dir) / TAGS_FILE) or {}).get("tags")
    return [t for t in found if isinstance(t, str) and is_tag(t)] if isinstance(found, list) else []


def change_tags(run_dir: Path, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """Add and remove tags of one run folder; returns its tags after. Two commands tagging
    the same run at once both count: the read-modify-write holds a lock of the logs dir
    (one for all runs, so that no lock file is left in the run folders; tagging is rare)."""
    run_dir = Path(run_dir)
    add, remove = check_tags(add), set(check_tags(remove))
    with FileLock(str(run_dir.parent / ".tags.lock")):
        tags = [t for t in dict.fromkeys([*read_tags(run_dir), *add]) if t not in remove]
        atomic_write_json(run_dir / TAGS_FILE, {"tags": tags})
    return tags


def tag_runs(logs_dir: Path, run_dirs: Iterable[Path], add: Iterable[str] = (),
             remove: Iterable[str] = ()) -> dict[str, list[str]]:
    """Change the tags of each run folder, then its index record; {run_id: tags after}."""
    from workbench.store import Store

    if not add and not remove:
        return {}
    store = Store(logs_dir)
    done = {}
    for run_dir in dict.fromkeys(Path(p) for p in run_dirs):  # arms that share a run: tagged once
        tags = change_tags(run_dir, add, remove)
        store.update(run_dir.name, tags=tags)
        done[run_dir.name] = tags
    return done


def has_tags(record: dict[str, Any], tags: Iterable[str]) -> bool:
    """Whether the run has every one of `tags` (case aside, as the TUI's text filter)."""
    return {t.lower() for t in tags} <= {t.lower() for t in record.get("tags") or ()}
