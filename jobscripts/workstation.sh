#!/usr/bin/env bash
# Parallel-tempering run on one machine without a batch system: mpirun, one temperature per
# rank. Stop it at any time with Ctrl-C (or `kill <pid of this script>`): the ranks write a
# checkpoint and the script exits with 75; running the same command again resumes from it.
# A complete run is not rerun (exit 0 at once).
#
#   bash jobscripts/workstation.sh [CONFIG.toml [OUTPUT.h5]]
#
# CONFIG defaults to jobscripts/example.toml, OUTPUT to runs/<config name>-workstation.h5.
#
# Environment (all optional):
#   NP            MPI ranks (default: the number of temperatures in CONFIG)
#   OVERSUBSCRIBE 1: pass --oversubscribe to mpirun; 0: never; auto (default): when NP is
#                 larger than the number of cores
#   VENV          virtual environment with slmc-hpc (default: <repo>/.venv)
#   MPIRUN_ARGS   extra mpirun arguments
#   OMP_NUM_THREADS  BLAS threads per rank (default 1)
# Exit code: slmc-hpc's (0 done, 2 bad input, 3 numerical failure, 75 stopped with a
# checkpoint: run again to continue).
set -uo pipefail
SLMC_REPO=${SLMC_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source-path=SCRIPTDIR source=lib/requeue.sh
. "$SLMC_REPO/jobscripts/lib/requeue.sh"

CONFIG=${1:-$SLMC_REPO/jobscripts/example.toml}
OUTPUT=${2:-runs/$(basename "$CONFIG" .toml)-workstation.h5}
VENV=${VENV:-$SLMC_REPO/.venv}
slmc_check_venv || exit 2
[ -f "$CONFIG" ] || { slmc_log "no such configuration: $CONFIG"; exit 2; }
command -v mpirun >/dev/null 2>&1 || { slmc_log "mpirun not found (bash jobscripts/install.sh installs Open MPI as root)"; exit 2; }

if [ -z "${NP:-}" ]; then
    # One rank per temperature: the length of [temperatures] values, or its count.
    NP=$("$VENV/bin/python" - "$CONFIG" <<'PY'
import sys, tomllib
t = tomllib.load(open(sys.argv[1], "rb")).get("temperatures", {})
n = len(t["values"]) if "values" in t else int(t.get("count", 0))
print(n if n > 0 else "")
PY
) || NP=
    [ -n "$NP" ] || { slmc_log "cannot tell the number of temperatures in $CONFIG; set NP"; exit 2; }
fi

mpi=(mpirun -n "$NP")
cores=$(nproc 2>/dev/null || echo 1)
case ${OVERSUBSCRIBE:-auto} in
    1|yes|true) mpi+=(--oversubscribe) ;;
    auto) [ "$NP" -gt "$cores" ] && mpi+=(--oversubscribe) ;;
esac
if [ -n "${MPIRUN_ARGS:-}" ]; then
    read -r -a extra <<< "$MPIRUN_ARGS"
    mpi+=("${extra[@]}")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Ctrl-C reaches only this script (mpirun runs in its own session), which turns it into a
# checkpoint; without that mpirun would kill the ranks at once.
export SLMC_SETSID=1

mkdir -p "$(dirname "$OUTPUT")"
slmc_log "$NP ranks on $(hostname) ($cores cores), config $CONFIG -> $OUTPUT"
slmc_run_requeueable "${mpi[@]}" "$VENV/bin/slmc-hpc" run "$CONFIG" --output "$OUTPUT" --resume
