#!/usr/bin/env bash
# Create .venv and install workbench with its test and ray extras (CI runs the Ray tests); re-installs only when
# pyproject.toml changed. Needs Python 3.11+ (set PYTHON to pick one). The first run
# downloads torch + torchvision from PyPI (a CUDA build, which also runs on a CPU:
# about 5 GB, a minute or two).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: workbench needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing). Set PYTHON=/path/to/python3.11" >&2
    exit 2
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    echo "installing workbench into .venv (first time: torch and torchvision, a few minutes)..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
    # pip's status is lost in the pipe above: prove the install instead, torchvision included
    # (a CPU-only torch next to PyPI's torchvision fails right here).
    .venv/bin/python -c 'import torch, torchvision, textual, tinydb, typer, mlxtend, ray, workbench.cli' \
        || { echo "error: the install in .venv is incomplete (see pip's messages above)" >&2; exit 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
fi
