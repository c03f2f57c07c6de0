"""Writing experiments.json: add or replace one named experiment, keeping the file readable.

Imports no torch. The shipped file's layout is kept exactly: top-level keys one per line,
each experiment and study a block of its own, each key of an entry on its own line with
its value as compact inline JSON. A file that was written in that layout is re-written
byte for byte when nothing changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.run_folder import atomic_write
from engine.spec import Experiments, ExperimentSpec, SpecError

SCHEMA_REF = "./experiments.schema.json"
_BLOCKS = ("experiments", "studies")


def _inline(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _block(entries: dict[str, Any], indent: str) -> str:
    """`{ "name": { "key": inline, ... }, ... }` with one entry per block."""
    if not entries:
        return "{}"
    parts = []
    for name, entry in entries.items():
        if isinstance(entry, dict) and entry:
            inner = ",\n".join(f"{indent}    {_inline(k)}: {_inline(v)}" for k, v in entry.items())
            parts.append(f"{indent}  {_inline(name)}: {{\n{inner}\n{indent}  }}")
        else:
            parts.append(f"{indent}  {_inline(name)}: {_inline(entry)}")
    return "{\n" + ",\n".join(parts) + f"\n{indent}}}"


def format_experiments(raw: dict[str, Any]) -> str:
    """The text of an experiments file in the shipped layout (ends with a newline)."""
    lines = []
    for key, value in raw.items():
        if key in _BLOCKS and isinstance(value, dict):
            lines.append(f"  {_inline(key)}: {_block(value, '  ')}")
        else:
            lines.append(f"  {_inline(key)}: {_inline(value)}")
    if not lines:
        return "{}\n"
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"$schema": SCHEMA_REF, "experiments": {}, "studies": {}}
    raw = Experiments.load(path).raw  # SpecError on unreadable JSON or a wrong shape
    raw.setdefault("experiments", {})
    return raw


def save_experiment(path: Path, name: str, entry: dict[str, Any], *, overwrite: bool = False) -> None:
    """Add (or, with overwrite=True, replace) experiment `name` in the experiments file at `path`.

    Every other experiment, the studies and the "$schema" key are kept, in order; a missing
    file is created. The whole resulting file is validated first: on any problem a SpecError
    lists them all and nothing is written. The write is atomic (temporary file + rename).
    """
    path = Path(path)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"experiment name {name!r}: must be a non-empty string")
    if name != name.strip():
        raise SpecError(f"experiment name {name!r}: must not start or end with spaces")
    if not isinstance(entry, dict):
        raise SpecError(f"experiments.{name}: must be an object, got {_inline(entry)}")
    if entry.get("base") == name:
        raise SpecError(f"experiments.{name}.base: an experiment cannot inherit from itself")
    raw = _read(path)
    experiments = raw["experiments"]
    if name in experiments and not overwrite:
        raise SpecError(f"experiment {name!r} already exists in {path}; choose another name or overwrite it")
    experiments[name] = entry  # a replaced entry keeps its place; a new one goes last
    problems = Experiments(raw, str(path)).errors()
    if problems:
        raise SpecError("\n".join(problems))
    text = format_experiments(raw)
    atomic_write(path, lambda f: f.write(text.encode()))


def _diff(values: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        ref = reference.get(key)
        if isinstance(value, dict) and isinstance(ref, dict):
            nested = _diff(value, ref)
            if nested:
                out[key] = nested
        elif key not in reference or value != ref:
            out[key] = value
    return out


def minimal_entry(
    spec: ExperimentSpec,
    base: str | None = None,
    *,
    catalog: Experiments | None = None,
    base_spec: ExperimentSpec | None = None,
) -> dict[str, Any]:
    """The keys of `spec` that differ from experiment `base` (resolved through `catalog`, or
    given as `base_spec`) or, with no base, from the defaults; nested by section, with
    `"base": base` first. `{"base": "baseline", "freeze": true}` for a frozen baseline."""
    if base is not None and base_spec is None:
        if catalog is None:
            raise SpecError(f"minimal_entry: base {base!r} needs the catalog it comes from")
        base_spec = catalog.resolve(base)
    reference = (base_spec or ExperimentSpec()).model_dump(mode="json")
    changed = _diff(spec.model_dump(mode="json"), reference)
    return {"base": base, **changed} if base is not None else changed
