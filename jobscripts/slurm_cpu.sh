#!/usr/bin/env bash
# Parallel-tempering run on CPUs under Slurm, one temperature per MPI rank, that checkpoints
# before its time limit and requeues itself until the run is complete.
#
#   sbatch jobscripts/slurm_cpu.sh [CONFIG.toml [OUTPUT.h5]]
#
# CONFIG defaults to jobscripts/example.toml (4 temperatures: keep --ntasks equal to the
# number of [temperatures] values); OUTPUT defaults to runs/<config name>-job<job id>.h5 (stable across requeues; relative to
# the directory you submit from). The repository (for the helper and the default .venv) is
# found from the submitted script's path; SLMC_REPO overrides it.
#
# How the restart works: --signal=B:USR1@300 makes Slurm send SIGUSR1 to this batch shell
# 300 s before the time limit (Slurm looks every 30 s, so it comes up to a minute earlier).
# The shell passes it on to the ranks, which write <OUTPUT>.ckpt, close the output and exit
# with 75; the shell then calls `scontrol requeue`, and when the job runs again (Slurm holds
# a requeued job for AuthInfo cred_expire, 120 s by default) the same `slmc-hpc run ...
# --resume` continues from the checkpoint. Each run appends to the same log
# (--open-mode=append); a run that is already complete exits 0 at once. The ranks also
# checkpoint every [run] checkpoint_every seconds, so a crash loses at most that much.
# Choose sig_time (the 300) well above the time a checkpoint and the output's close take.
# scancel: the ranks checkpoint too (SIGTERM) but the job is not requeued; submit the same
# script with the same OUTPUT again to continue. Exit code of the job: slmc-hpc's
# (0 done, 2 bad input, 3 numerical failure, 75 checkpointed).
#
# Environment (all optional; sbatch passes your environment on):
#   VENV       virtual environment with slmc-hpc installed (default: <repo>/.venv)
#   LAUNCHER   "srun" (default: srun --mpi=pmix) or "mpirun" (mpirun inside the allocation;
#              use it if your Slurm has no PMIx plugin: `srun --mpi=list`)
#   LAUNCHER_ARGS  extra arguments for srun or mpirun
#   SLMC_REPO  repository root (default: found from the submitted script's path)
#   OMP_NUM_THREADS  BLAS threads per rank (default: --cpus-per-task, else 1)
#
# ---- what to edit for a new cluster -------------------------------------------------
#   * --partition / --account (add them below; ask your site which to use)
#   * --ntasks: the number of temperatures in your config
#   * --time and the @300 of --signal
#   * the `module load` lines below (MPI and parallel HDF5 that h5py was built against)
#   * VENV, if the environment is not the repository's .venv
#SBATCH --job-name=slmc-cpu
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.log
##SBATCH --partition=YOUR_PARTITION
##SBATCH --account=YOUR_ACCOUNT

# module purge
# module load openmpi hdf5/parallel python/3.11     # your site's names

set -uo pipefail

# Find lib/requeue.sh (it sets SLMC_REPO and VENV). This bootstrap stands in every job
# script, since it is what finds the shared code: SLMC_REPO if set; else the submitted
# script's path (Slurm runs a spooled copy, so ask scontrol; relative to the submit
# directory), else this file's; else the submit directory.
_s=$([ -n "${SLMC_REPO:-}" ] || scontrol show job "${SLURM_JOB_ID:-0}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1) || true
case $_s in /*) ;; ?*) _s=${SLURM_SUBMIT_DIR:-.}/$_s ;; *) _s=$0 ;; esac
_d=${SLMC_REPO:-$(dirname "$_s")/..}
[ -n "${SLMC_REPO:-}" ] || [ -f "$_d/jobscripts/lib/requeue.sh" ] || _d=${SLURM_SUBMIT_DIR:-$PWD}
. "$_d/jobscripts/lib/requeue.sh" || { echo "set SLMC_REPO to the slmc-hpc repository" >&2; exit 2; }

CONFIG=${1:-$SLMC_REPO/jobscripts/example.toml}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
slmc_slurm_run "$CONFIG" "${2:-}"
