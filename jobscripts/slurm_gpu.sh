#!/usr/bin/env bash
# Parallel-tempering run on GPUs under Slurm: one temperature and one GPU per MPI rank; it
# checkpoints before its time limit and requeues itself until the run is complete.
#
#   sbatch jobscripts/slurm_gpu.sh [CONFIG.toml [OUTPUT.h5]]
#
# CONFIG must set `[run] backend = "cupy"` (default: jobscripts/example_gpu.toml, 16x16
# lattice, 4 temperatures: keep --ntasks equal to the number of temperatures); OUTPUT
# defaults to runs/<config name>-job<job id>.h5 (stable across requeues; relative to the directory you submit from). Needs
# CuPy in the environment: `pip install '.[gpu]'` (cupy-cuda12x) on a node with CUDA 12.
#
# GPU binding: slmc-hpc picks each rank's device itself, from the node-local rank: GPU
# (node-local rank mod number of visible GPUs) (slmc_hpc.backend.device_for). With
# --gpus-per-task=1, srun binds one GPU to each task (--gpu-bind=per_task:1 is implied), so
# every rank sees exactly one GPU and takes it; under mpirun every rank sees the node's GPUs
# and the ranks of a node take them round-robin. Either way: one GPU per rank as long as a
# node has as many GPUs as ranks.
#
# Restart: as in slurm_cpu.sh (the same helper, jobscripts/lib/requeue.sh): SIGUSR1
# about 5 minutes before the time limit -> the ranks write <OUTPUT>.ckpt and exit 75 -> the
# job requeues itself -> the next run continues with --resume.
#
# Environment (all optional): VENV (default <repo>/.venv), LAUNCHER (srun | mpirun),
# LAUNCHER_ARGS, SLMC_REPO, OMP_NUM_THREADS.
#
# ---- what to edit for a new cluster -------------------------------------------------
#   * --partition / --account; on some sites --gres=gpu:N (GPUs per node) instead of
#     --gpus-per-task, with --ntasks-per-node=N
#   * --ntasks: the number of temperatures; --cpus-per-task: CPU cores per GPU
#   * --time and the @300 of --signal
#   * the `module load` lines (CUDA, MPI, parallel HDF5)
#   * VENV, if the environment is not the repository's .venv
#SBATCH --job-name=slmc-gpu
#SBATCH --ntasks=4
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.log
##SBATCH --partition=YOUR_GPU_PARTITION
##SBATCH --account=YOUR_ACCOUNT

# module purge
# module load cuda/12 openmpi hdf5/parallel python/3.11     # your site's names

set -uo pipefail

# Find lib/requeue.sh, which sets SLMC_REPO and VENV (the bootstrap of slurm_cpu.sh, explained there).
_s=$([ -n "${SLMC_REPO:-}" ] || scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1) || true
case $_s in /*) ;; ?*) _s=${SLURM_SUBMIT_DIR:-.}/$_s ;; *) _s=$0 ;; esac
_d=${SLMC_REPO:-$(dirname "$_s")/..}
[ -n "${SLMC_REPO:-}" ] || [ -f "$_d/jobscripts/lib/requeue.sh" ] || _d=${SLURM_SUBMIT_DIR:-$PWD}
. "$_d/jobscripts/lib/requeue.sh" || { echo "set SLMC_REPO to the slmc-hpc repository" >&2; exit 2; }

CONFIG=${1:-$SLMC_REPO/jobscripts/example_gpu.toml}
# The CPU side (local updates, the effective model) is single-threaded per rank.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if ! grep -Eq '^[[:space:]]*backend[[:space:]]*=[[:space:]]*"cupy"' "$CONFIG"; then
    slmc_log "warning: $CONFIG does not set [run] backend = \"cupy\": the run will not use the GPUs"
fi
slmc_slurm_run "$CONFIG" "${2:-}" " (one GPU each; job GPUs: ${CUDA_VISIBLE_DEVICES:-${SLURM_JOB_GPUS:-unknown}})"
