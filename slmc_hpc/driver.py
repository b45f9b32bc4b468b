"""A run's lifecycle: decide whether to start afresh or resume, assemble the run from its
configuration, open (or reopen) the output, run the tempering loop (run_loop.py) under the
stop-signal flag, and close the file, leaving a finished file or a checkpoint to resume."""

from __future__ import annotations

from pathlib import Path

from .assemble import assemble, uses_shared_network
from .checkpoint import checkpoint_path
from .config import Config, ConfigError, parse
from .control import Control, Interrupted, StopSignals
from .output import GatheredOutput, gathers_output, open_output
from .parallel.comm import SerialComm
from .resume import load_checkpoint, on_rank0_config, remove_checkpoint, restore, resume_state
from .run_loop import TemperingRun

__all__ = ["Interrupted", "run"]

WRITE_SECONDS = 30.0  # measured records go to the file (and it is flushed) this often


def run(cfg: Config, output: str | Path | None = None, overwrite: bool = False, log=print, comm=None,
        gather_output: bool | None = None, resume: bool = False) -> Path:
    """Run the configuration. With ``comm`` of several ranks (MPI), rank r owns replica r;
    otherwise this process owns them all. Only rank 0 logs. Several ranks write the file
    with MPI-IO, or, when h5py has no MPI support (or ``gather_output`` is set), through
    rank 0 (GatheredOutput).

    Checkpoints go to ``<output>.ckpt`` every [run] checkpoint_every seconds and when any rank
    gets SIGTERM or SIGUSR1 (then the run raises Interrupted). With ``resume`` the run
    continues from that checkpoint, rewriting the output from the checkpoint's position on,
    so the file ends up as an uninterrupted run's; without a checkpoint it starts afresh
    when there is no output yet, and does nothing when the output is already complete.
    A complete run keeps its final state as its checkpoint: resumed with a larger [run]
    measure (every other key the same) it continues the same chains, and the file ends up as
    that of a run with the larger measure from the start."""
    comm = comm or SerialComm()
    if output is not None and not str(output).isprintable():
        raise ConfigError(f"--output {str(output)!r} must be a file name of printable characters")
    path = Path(output or cfg.run.output)
    ckpt = checkpoint_path(path)
    log = log if comm.rank == 0 else (lambda *a, **k: None)
    # from the start to the file's close a stop signal only sets a flag: the loops act on it,
    # and one that comes too late to matter (summary, close) no longer kills a finished run
    with StopSignals() as signals:
        tree = None
        if resume:
            state = on_rank0_config(comm, lambda: resume_state(path, ckpt, cfg))
            if state == "complete":
                log(f"slmc-hpc: {path} is already complete; nothing to resume")
                return path
            if state == "checkpoint":
                tree = load_checkpoint(ckpt, cfg, comm)
        parts = assemble(cfg, comm, log)
        if tree is not None:
            log(f"slmc-hpc: resuming from {ckpt} ({tree['phase']} step {tree['step']})")
            before = parse(tree["config"], legacy=True).run.measure
            if before != cfg.run.measure:
                log(f"slmc-hpc: extending the run from {before} to {cfg.run.measure} measured steps")
        if uses_shared_network(cfg) and cfg.slmc.scheme == "plain" and cfg.effective_model.attention_shells == "global":
            log("slmc-hpc: warning: scheme = \"plain\" with attention_shells = \"global\" recomputes every effective "
                "spin at each single-spin update (its cost grows with N); a finite attention_shells keeps it constant")
        gather = gathers_output(comm, gather_output)
        if gather:
            log("slmc-hpc: warning: h5py has no MPI support; rank 0 gathers and writes the output (slower)")
        out = open_output(path, parts.layout, comm, overwrite, run_id=tree["run_id"] if tree is not None else None,
                          gather=gather)
        if tree is None:  # never resume an earlier run into this one; only now, so a refused run removes nothing
            on_rank0_config(comm, lambda: remove_checkpoint(ckpt))
        log(f"slmc-hpc: {parts.header}, {len(parts.temperatures)} temperature(s) on {comm.size} process(es), "
            f"{parts.layout.local_updates} local updates/step -> {path}")
        if parts.model_line is not None:
            log(parts.model_line)
        try:
            job = TemperingRun(parts, comm, out, Control(comm, cfg.run.checkpoint_every, signals, WRITE_SECONDS),
                               path, log)
            if tree is None:
                job.run()
            else:
                restore(job, tree)
                job.run(tree["phase"], int(tree["step"]), bool(tree.get("round_pending", 0)))
        except Interrupted:
            out.close()  # every rank stopped at the same step: the collective close is safe
            raise
        except BaseException:
            # under MPI-IO closing is collective, and the other ranks may be anywhere: leave
            # the file as last flushed and let the caller abort the job (cli._fail, or the
            # uncaught-exception hook); one process, or rank 0's gathered file, closes it
            if comm.size == 1 or isinstance(out, GatheredOutput):
                out.close()
            raise
        out.close()
    comm.barrier()
    return path
