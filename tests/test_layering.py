"""Guards on the dependency direction: engine/ never imports workbench/ (the engine runs in
workers and is usable alone), and nothing under workbench/tui imports torch (the UI process
starts fast and never holds a GPU), nor does matching runs to a study (workbench.study)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules(folder: str) -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / folder).rglob("*.py")
    )


def imported_names(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in `path` names (anywhere, lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def loaded_after_import(module: str) -> list[str]:
    """sys.modules after importing `module` in a fresh interpreter."""
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_module_lists_are_not_empty():
    assert "engine.train" in modules("engine") and "workbench.tui.screens.studies" in modules("workbench/tui")


@pytest.mark.parametrize("path", sorted((ROOT / "engine").rglob("*.py")), ids=lambda p: p.name)
def test_no_engine_source_imports_workbench(path):
    bad = sorted(n for n in imported_names(path) if n == "workbench" or n.startswith("workbench."))
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_every_engine_module_loads_no_workbench_module():
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules('engine')!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "engine.train" in loaded
    assert [m for m in loaded if m == "workbench" or m.startswith("workbench.")] == []


@pytest.mark.parametrize("module", modules("workbench/tui") + ["workbench.study", "workbench.devices"])
def test_importing_a_tui_module_or_the_study_matcher_loads_no_torch(module):
    loaded = loaded_after_import(module)
    assert module in loaded and "torch" not in loaded, f"{module} imports torch"
