#!/usr/bin/env bash
# The README's first command: install everything (if needed) and run the shipped example
# (jobscripts/example.toml, 6x6 lattice, SLMC with the linear model) on the CPU.
# Output: runs/example.h5 (replaced on every run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobscripts/install.sh
mkdir -p runs
VENV=${VENV:-.venv}
"$VENV/bin/slmc-hpc" run jobscripts/example.toml --output runs/example.h5 --overwrite
"$VENV/bin/python" analysis/summary.py runs/example.h5
