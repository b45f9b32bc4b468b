#!/usr/bin/env bash
# The depth (scaling-law) study as a Slurm job array: array task N runs
# analysis/depth_study.py with --layers N, i.e. the linear model and an N-layer Transformer
# on the same problem and seed, into its own directory runs/depth/layers-N/. Every task
# runs the linear baseline too (depth_study.py always does): it is the reference for that
# task's ratios, and the same seed gives the same linear run in every task.
#
#   sbatch jobscripts/slurm_depth_array.sh [CONFIG.toml [OUTDIR]]     # tasks 1-4 (--array below)
#   sbatch --array=1-8 jobscripts/slurm_depth_array.sh                 # other depths
#   bash jobscripts/slurm_depth_array.sh combine [OUTDIR]              # afterwards: one table and plot
#
# CONFIG defaults to analysis/reference.toml (one temperature, so one process per task;
# a few minutes per task on one core), OUTDIR to runs/depth. `combine` links every
# task's files into OUTDIR/all and runs depth_study.py there, which reuses finished files
# instead of rerunning them and writes OUTDIR/all/depth_study.{txt,png}. To chain it:
#   jid=$(sbatch --parsable jobscripts/slurm_depth_array.sh)
#   sbatch --dependency=afterok:$jid --array=0 jobscripts/slurm_depth_array.sh combine
# depth_study.py has no checkpoints: give --time enough for the deepest model (a rerun of
# a task skips the variants whose .h5 file exists; delete a partial file first).
#
# Environment (optional): VENV (default <repo>/.venv), SLMC_REPO, SEED (--seed), SCHEME
# (--scheme nested|plain).
#
# ---- what to edit for a new cluster -------------------------------------------------
#   * --partition / --account, --time, the module lines, VENV
#SBATCH --job-name=slmc-depth
#SBATCH --array=1-4
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=02:00:00
#SBATCH --output=%x-%A_%a.log
##SBATCH --partition=YOUR_PARTITION
##SBATCH --account=YOUR_ACCOUNT

# module purge
# module load python/3.11     # your site's names

set -euo pipefail

# Find lib/requeue.sh, which sets SLMC_REPO and VENV (the bootstrap of slurm_cpu.sh, explained there).
_s=$([ -n "${SLMC_REPO:-}" ] || scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1) || true
case $_s in /*) ;; ?*) _s=${SLURM_SUBMIT_DIR:-.}/$_s ;; *) _s=$0 ;; esac
_d=${SLMC_REPO:-$(dirname "$_s")/..}
[ -n "${SLMC_REPO:-}" ] || [ -f "$_d/jobscripts/lib/requeue.sh" ] || _d=${SLURM_SUBMIT_DIR:-$PWD}
. "$_d/jobscripts/lib/requeue.sh" || { echo "set SLMC_REPO to the slmc-hpc repository" >&2; exit 2; }

VENV=${VENV:-$SLMC_REPO/.venv}
slmc_check_venv || exit 2
PY=$VENV/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
extra=()
[ -n "${SEED:-}" ] && extra+=(--seed "$SEED")
[ -n "${SCHEME:-}" ] && extra+=(--scheme "$SCHEME")

if [ "${1:-}" = combine ]; then
    OUTDIR=${2:-runs/depth}
    CONFIG=${CONFIG:-$SLMC_REPO/analysis/reference.toml}
    mkdir -p "$OUTDIR/all"
    layers=()
    for dir in "$OUTDIR"/layers-*; do
        [ -d "$dir" ] || continue
        n=${dir##*/layers-}
        [ -f "$dir/transformer-$n.h5" ] || { slmc_log "skipping $dir: no transformer-$n.h5 (task unfinished?)"; continue; }
        ln -sfn "../layers-$n/transformer-$n.h5" "$OUTDIR/all/transformer-$n.h5"
        [ -e "$OUTDIR/all/linear.h5" ] || ln -sfn "../layers-$n/linear.h5" "$OUTDIR/all/linear.h5"
        layers+=("$n")
    done
    [ ${#layers[@]} -gt 0 ] || { slmc_log "no finished tasks under $OUTDIR"; exit 1; }
    mapfile -t layers < <(printf '%s\n' "${layers[@]}" | sort -n)
    slmc_log "combining layers ${layers[*]} into $OUTDIR/all"
    exec "$PY" "$SLMC_REPO/analysis/depth_study.py" "$CONFIG" --layers "${layers[@]}" --outdir "$OUTDIR/all" "${extra[@]}"
fi

CONFIG=${1:-$SLMC_REPO/analysis/reference.toml}
OUTDIR=${2:-runs/depth}
LAYERS=${SLURM_ARRAY_TASK_ID:?"run this with sbatch (a job array), or as: $0 combine [OUTDIR]"}
TASKDIR=$OUTDIR/layers-$LAYERS
mkdir -p "$TASKDIR"
slmc_log "array task $LAYERS of job ${SLURM_ARRAY_JOB_ID:-?}: linear + $LAYERS-layer Transformer," \
         "config $CONFIG -> $TASKDIR"
"$PY" "$SLMC_REPO/analysis/depth_study.py" "$CONFIG" --layers "$LAYERS" --outdir "$TASKDIR" "${extra[@]}"
