#!/usr/bin/env bash
# Set up, then run the main job on the embedded MNIST digits: the baseline (everything
# trains) and half-fixed (first half of each conv layer's kernels frozen), same seed,
# then list both runs so the subset's movement can be compared.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/workbench run --headless baseline "$@"
.venv/bin/workbench run --headless half-fixed "$@"
.venv/bin/workbench runs
