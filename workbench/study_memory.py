"""What `workbench study NAME` was last asked for, so that `workbench report NAME` finds its runs.

A study's runs are found by spec digest, and `--seeds` / `--set` change the specs: a report
asked without the options its study ran with looks for runs nobody made. So `study`
remembers its options per study name in `<logs dir>/studies/<name>.json` (written
atomically: a kill leaves the old memory or the new one), and `report` without options
uses them. The memory is a convenience, never the truth: a missing or unreadable one is
simply not used.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from engine.run_folder import atomic_write_json


def memory_path(logs_dir: Path, name: str) -> Path:
    # A study name is free text in experiments.json: quoted, it stays one file inside studies/.
    return Path(logs_dir) / "studies" / f"{quote(name, safe='')}.json"


def remember(logs_dir: Path, name: str, seeds: int | None, set_: list[str] | None) -> None:
    """Record the options `workbench study NAME` ran with (after its runs were found or queued)."""
    atomic_write_json(memory_path(logs_dir, name), {"study": name, "seeds": seeds, "set": list(set_ or [])})


def recall(logs_dir: Path, name: str) -> tuple[int | None, list[str]] | None:
    """The options of the last `workbench study NAME` in this logs dir, or None."""
    try:
        memory = json.loads(memory_path(logs_dir, name).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(memory, dict) or memory.get("study") != name:
        return None
    seeds, set_ = memory.get("seeds"), memory.get("set")
    seeds_ok = seeds is None or (isinstance(seeds, int) and not isinstance(seeds, bool))
    if not seeds_ok or not isinstance(set_, list) or not all(isinstance(item, str) for item in set_):
        return None
    return seeds, set_


def options_text(seeds: int | None, set_: list[str] | None) -> str:
    """`--seeds 2 --set train.steps=200`, quoted for a shell ("" when there are none)."""
    words = ([f"--seeds {seeds}"] if seeds is not None else []) + [f"--set {shlex.quote(item)}" for item in set_ or []]
    return " ".join(words)


def study_command(name: str, seeds: int | None, set_: list[str] | None) -> str:
    return " ".join(["workbench study", shlex.quote(name), options_text(seeds, set_)]).strip()


def report_options(
    logs_dir: Path, name: str, seeds: int | None, set_: list[str] | None, say: Callable[[str], None]
) -> tuple[int | None, list[str] | None]:
    """The options `report NAME` resolves the study with: the ones given, or, with none given,
    those of the last `study NAME` (told through `say`)."""
    if seeds is not None or set_:
        return seeds, set_
    remembered = recall(logs_dir, name)
    if remembered is None or remembered == (None, []):
        return seeds, set_
    say(
        f"report {name}: using the options of the last `{study_command(name, *remembered)}` "
        f"(remembered in {memory_path(logs_dir, name)}; pass --seeds/--set to choose others)"
    )
    return remembered


def missing_hint(logs_dir: Path, name: str, seeds: int | None, set_: list[str] | None) -> str:
    """How a report that found no runs for these options can find them (ends the error sentence)."""
    remembered = recall(logs_dir, name)
    asked = study_command(name, seeds, set_)
    if remembered is None:
        return f"run `{asked}` first (report's --seeds and --set must match the study's)"
    if remembered == (seeds, list(set_ or [])):
        return f"run `{asked}` again to make them"
    return (
        f"the last `workbench study` here was `{study_command(name, *remembered)}`: "
        f"give report the same options, or run `{asked}`"
    )
