#!/usr/bin/env bash
# The README's second command (and what CI runs): install everything (if needed), then the
# whole test suite: serial tests, then the MPI tests under mpirun with 2 ranks.
# Extra arguments go to the serial pytest run (e.g. -k lattice).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobscripts/install.sh
PY=.venv/bin/python
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One BLAS thread per process: the matrices are small and MPI ranks share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

echo "== serial tests"
"$PY" -m pytest -q -m "not mpi" "$@"

echo "== MPI tests (mpirun -n 2)"
mpirun -n 2 --oversubscribe "$PY" -m pytest -q --with-mpi -m mpi tests/mpi
