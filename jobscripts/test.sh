#!/usr/bin/env bash
# The README's second command (and what CI runs): install everything (if needed), then the
# whole test suite: serial tests, then the MPI tests under mpirun with 2 and with 4 ranks
# (oversubscribed: more ranks than cores is fine).
# Extra arguments go to the serial pytest run (e.g. -k lattice).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobscripts/install.sh
PY=${VENV:-.venv}/bin/python
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One BLAS thread per process: the matrices are small and MPI ranks share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

echo "== serial tests"
"$PY" -m pytest -q -m "not mpi" "$@"

# Each rank writes its own log; rank 0's is printed (so the summary line is not interleaved)
# and the others' too when the run failed. The timeout turns a hang into a failure.
run_mpi_tests() {
    local n=$1 logs
    logs=$(mktemp -d)
    echo "== MPI tests (mpirun -n $n)"
    set +e
    timeout 900 mpirun -n "$n" --oversubscribe bash -c \
        '"$0" -m pytest -q --color=no --with-mpi -m mpi tests/mpi > "$1/rank$OMPI_COMM_WORLD_RANK.log" 2>&1' \
        "$PY" "$logs"
    local rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        for f in "$logs"/rank*.log; do [ "$f" = "$logs/rank0.log" ] || { echo "-- $f"; cat "$f"; }; done
    fi
    cat "$logs/rank0.log"
    rm -rf "$logs"
    return "$rc"
}
run_mpi_tests 2
run_mpi_tests 4
