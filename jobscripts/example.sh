#!/usr/bin/env bash
# The README's first command: install everything (if needed) and run the shipped example
# (jobscripts/example.toml: 6x6 lattice, four temperatures, SLMC with the linear model,
# parallel tempering) on the CPU with mpirun, one replica per rank, then print the summary.
# Output: runs/example.h5 (replaced on every run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobscripts/install.sh
mkdir -p runs
VENV=${VENV:-.venv}
# Open MPI refuses to run as root without these; --oversubscribe allows 4 ranks on fewer cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -n 4 --oversubscribe "$VENV/bin/slmc-hpc" run jobscripts/example.toml --output runs/example.h5 --overwrite
"$VENV/bin/python" analysis/summary.py runs/example.h5
