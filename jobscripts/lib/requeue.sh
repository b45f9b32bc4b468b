# shellcheck shell=bash
# Sourced by the job scripts (slurm_cpu.sh, slurm_gpu.sh, slurm_depth_array.sh, workstation.sh);
# not run on its own.
#
# slmc_run_requeueable CMD [ARGS...]
#   Runs CMD (an `srun ...` or `mpirun ...` line that starts `slmc-hpc run ... --resume`) in
#   the background and waits for it. While it runs, SIGUSR1 (and, outside Slurm, SIGTERM and
#   SIGINT) received by this shell is passed on to CMD as SIGUSR1, which makes every rank
#   write a checkpoint (<output>.ckpt), close the output and exit with 75. (USR1 because
#   srun and mpirun both forward it to all ranks unchanged, while a TERM or INT to the
#   launcher itself may make it kill the ranks before they have checkpointed. Under Slurm a
#   SIGTERM to the batch shell comes with one to every rank, so it is not passed on.)
#   A trap only runs between commands, which is why CMD runs in the background.
#
#   When CMD exits with 75 ("checkpointed, run me again"):
#     - under Slurm: `scontrol requeue $SLURM_JOB_ID`. The job goes back to the queue (Slurm
#       holds it for AuthInfo cred_expire, 120 s by default) and then runs the same script
#       again, whose `--resume` continues from the checkpoint. Not after a SIGTERM other than
#       the time limit's (scancel, preemption): the ranks checkpoint then too, but a
#       cancelled job must stay cancelled; submitting the script again resumes it;
#     - elsewhere (or SLMC_REQUEUE=0): prints that the same command resumes.
#   Returns CMD's exit code (75 after a requeue). Exit codes of slmc-hpc: 0 done, 1 error,
#   2 bad input, 3 numerical failure, 75 checkpointed after a signal, 130 interrupted.
#
# Settings (environment):
#   SLMC_REQUEUE=0        never call scontrol requeue (default 1 under Slurm)
#   SLMC_SETSID=1         start CMD in its own session, so that a Ctrl-C in the terminal
#                         reaches only this shell, which turns it into a clean checkpoint
#                         (workstation.sh sets it)

# The repository this file belongs to (the job scripts find this file, then use SLMC_REPO).
SLMC_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$SLMC_REPO/.venv}
SLMC_EXIT_REQUEUE=75

slmc_log() {
    printf '[job %s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*"
}

# Trap handler: pass the signal on to the launcher as USR1 (once per signal received).
_slmc_on_signal() {
    local sig=$1
    [ "$sig" = TERM ] && _slmc_got_term=1
    _slmc_interrupted=1
    if [ "$sig" = TERM ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        # scancel and the time limit send SIGTERM to the ranks as well; a second signal
        # could reach a rank after its checkpoint, when it no longer handles signals.
        slmc_log "received SIGTERM (scancel, time limit or preemption): Slurm signals the ranks too"
    elif [ -n "${_slmc_child:-}" ] && kill -0 "$_slmc_child" 2>/dev/null; then
        slmc_log "received SIG$sig: sending SIGUSR1 to the MPI launcher (pid $_slmc_child) to checkpoint and stop"
        kill -USR1 "$_slmc_child" 2>/dev/null || true
    else
        slmc_log "received SIG$sig while no MPI launcher is running"
        _slmc_pending=1
    fi
}

slmc_run_requeueable() {
    _slmc_got_term=0 _slmc_interrupted=0 _slmc_pending=0 _slmc_child=
    trap '_slmc_on_signal USR1' USR1
    trap '_slmc_on_signal TERM' TERM
    trap '_slmc_on_signal INT' INT

    slmc_log "starting: $*"
    if [ "${SLMC_SETSID:-0}" = 1 ] && command -v setsid >/dev/null 2>&1; then
        setsid "$@" &
    else
        "$@" &
    fi
    _slmc_child=$!
    if [ "$_slmc_pending" = 1 ]; then
        # A signal came before the launcher existed: pass it on once the ranks have had
        # time to install their signal handlers (a run stopped this early just starts again).
        sleep 5
        kill -USR1 "$_slmc_child" 2>/dev/null || true
    fi

    # `wait` returns early (> 128) when a trapped signal arrives; wait again until the
    # launcher has really exited. A second wait on an already reaped child returns 127.
    local rc
    while :; do
        _slmc_interrupted=0
        wait "$_slmc_child"
        rc=$?
        if [ "$_slmc_interrupted" = 1 ] && [ "$rc" -gt 128 ]; then
            if kill -0 "$_slmc_child" 2>/dev/null; then
                continue
            fi
            # exited meanwhile: its status is still collectable once
            wait "$_slmc_child" 2>/dev/null
            local rc2=$?
            [ "$rc2" != 127 ] && rc=$rc2
        fi
        break
    done
    trap - USR1 TERM INT
    _slmc_child=
    slmc_log "MPI launcher exited with code $rc"

    if [ "$rc" = "$SLMC_EXIT_REQUEUE" ]; then
        local reason=
        if [ "$_slmc_got_term" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
            reason=$(scontrol show job --oneliner "$SLURM_JOB_ID" 2>/dev/null | grep -o ' Reason=[^ ]*' | head -n 1)
            reason=${reason# Reason=}
        fi
        if [ "$_slmc_got_term" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ] && [ "$reason" != TimeLimit ]; then
            # SIGTERM that is not the time limit: scancel (or preemption, or a node going
            # down). The ranks have checkpointed, but a cancelled job must not come back;
            # (a preempted job with PreemptMode=REQUEUE is requeued by Slurm itself).
            slmc_log "checkpoint written; stopped by SIGTERM (scancel?), so the job is not requeued;" \
                     "submit the same script with the same output path to resume"
        elif [ -n "${SLURM_JOB_ID:-}" ] && [ "${SLMC_REQUEUE:-1}" = 1 ]; then
            slmc_log "checkpoint written; requeueing job $SLURM_JOB_ID (restart count ${SLURM_RESTART_COUNT:-0})"
            if scontrol requeue "$SLURM_JOB_ID"; then
                slmc_log "requeued; the job will resume from the checkpoint when it starts again"
            else
                slmc_log "scontrol requeue failed (job cancelled, or requeue not allowed here);" \
                         "submit the same script again with the same output path to resume"
            fi
        else
            slmc_log "checkpoint written; run the same command again to resume"
        fi
    fi
    return "$rc"
}

# slmc_set_launcher NTASKS: sets the array SLMC_LAUNCH to the MPI launcher named by
# LAUNCHER ("srun", the default: srun --mpi=pmix; or "mpirun"), plus LAUNCHER_ARGS.
slmc_set_launcher() {
    local n=$1 extra=()
    case ${LAUNCHER:-srun} in
        srun)   SLMC_LAUNCH=(srun --mpi=pmix --ntasks="$n") ;;
        mpirun) SLMC_LAUNCH=(mpirun -n "$n") ;;
        *)      slmc_log "LAUNCHER must be srun or mpirun, not '${LAUNCHER}'"; return 2 ;;
    esac
    if [ -n "${LAUNCHER_ARGS:-}" ]; then
        read -r -a extra <<< "$LAUNCHER_ARGS"
        SLMC_LAUNCH+=("${extra[@]}")
    fi
}

# slmc_check_venv: VENV must hold an installed slmc-hpc.
slmc_check_venv() {
    if [ ! -x "$VENV/bin/slmc-hpc" ]; then
        slmc_log "no $VENV/bin/slmc-hpc: set VENV to the environment slmc-hpc is installed in" \
                 "(bash jobscripts/install.sh creates <repo>/.venv)"
        return 2
    fi
}

# slmc_slurm_run CONFIG [OUTPUT [NOTE]]: the body shared by slurm_cpu.sh and slurm_gpu.sh:
# check VENV, choose the launcher for the job's tasks, and run
# `slmc-hpc run CONFIG --output OUTPUT --resume` with the signal/requeue handling above.
# OUTPUT defaults to runs/<config name>-job<job id>.h5 (the same across requeues).
slmc_slurm_run() {
    local config=$1 output=${2:-runs/$(basename "$1" .toml)-job${SLURM_JOB_ID:-0}.h5} note=${3:-}
    local ntasks=${SLURM_NTASKS:-${SLURM_NPROCS:-1}}
    # Open MPI refuses to run as root without these (containers, test clusters); harmless otherwise.
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    slmc_check_venv || return 2
    slmc_set_launcher "$ntasks" || return 2
    mkdir -p "$(dirname "$output")"
    slmc_log "job ${SLURM_JOB_ID:-none} on ${SLURM_JOB_NODELIST:-$(hostname)}, restart ${SLURM_RESTART_COUNT:-0}:" \
             "$ntasks ranks$note, config $config -> $output"
    slmc_run_requeueable "${SLMC_LAUNCH[@]}" "$VENV/bin/slmc-hpc" run "$config" --output "$output" --resume
}
