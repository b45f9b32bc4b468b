"""Resuming: what --resume finds, whether a checkpoint fits the run, and the checkpoint's
state tree, assembled from (and restored into) a TemperingRun.

The tree: the run's configuration text, run id, phase and step, whether a training round is
pending, the tempering state (the ladder, slot of every replica, round trips, exchange rounds
done, the controller's random stream), and per rank: the shared network's trainer, the
measured acceptance counts (R, 4) and per replica its chain (Replica.state_dict), learning
(Learner.state_dict), tuner and the self-tuning ladder's differences of the current round. The file format is checkpoint.py's."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .checkpoint import checkpoint_path, read_checkpoint, write_checkpoint
from .config import Config, ConfigError, parse, stores_every_key
from .output import FORMAT
from .parallel.comm import on_rank0
from .samplers import AcceptanceCounts

# keys that may change between a run and its resume: they change nothing of the chains
# ([run] measure may also grow: the same chains then run longer, see check_same_run)
RESUMABLE_CHANGES = {("run", "checkpoint_every"), ("run", "progress_every"), ("run", "output")}
# keys only a Transformer reads: they may differ where neither run has one (the default of
# epochs changed in 0.4.2, and every run stored before holds the old value)
NETWORK_ONLY = {("training", "epochs"), ("training", "learning_rate"), ("training", "weight_decay"),
                ("training", "batch_size")}


def on_rank0_config(comm, func, share: bool = True):
    """func() on rank 0; its ConfigError on every rank (see parallel.comm.on_rank0)."""
    return on_rank0(comm, func, (ConfigError,), share)


def resume_state(path: Path, ckpt: Path, cfg: Config) -> str:
    """What --resume of ``cfg`` finds (rank 0 looks): "checkpoint", "complete" or "new". A
    complete run keeps its final state as its checkpoint (phase "measure", step = its [run]
    measure): with the same configuration the run is "complete"; with a larger measure that
    checkpoint continues it; any other change is refused (ConfigError)."""
    measure = cfg.run.measure
    done, text = _complete_output(path)
    if ckpt.exists() and not (done is not None and _checkpoint_position(ckpt) == ("measure", done) == ("measure", measure)):
        return "checkpoint"
    if done is None:
        if not path.exists():
            return "new"
        raise ConfigError(f"--resume: {str(path)!r} exists but there is no checkpoint {str(ckpt)!r} to continue "
                          f"from (killed before the first checkpoint?); pass --overwrite to start again")
    if measure > done:
        raise ConfigError(f"--resume: {str(path)!r} is complete with {done} measured steps; continuing it to "
                          f"{measure} needs its final state {str(ckpt)!r}, which is missing (removed, or the run "
                          f"finished before slmc-hpc 0.3); nothing was changed")
    if stores_every_key(text):  # a text stored before 0.2 took the defaults of then: not comparable key by key
        check_same_run(cfg, parse(text, legacy=True), f"--resume: the complete run {str(path)!r}")
    return "complete"


def check_same_run(cfg: Config, saved: Config, what: str) -> None:
    """ConfigError unless ``cfg`` is the configuration ``saved`` up to RESUMABLE_CHANGES, a
    [run] measure that may grow (the same chains then run longer) and, where neither is a
    Transformer run, the keys only a Transformer reads (NETWORK_ONLY)."""
    if cfg.run.measure < saved.run.measure:
        raise ConfigError(f"{what} has {saved.run.measure} measured steps; [run] measure = {cfg.run.measure} "
                          f"would shorten it (it may only grow); nothing was changed")
    free = RESUMABLE_CHANGES | {("run", "measure")}
    if "transformer" not in (cfg.effective_model.kind, saved.effective_model.kind):
        free = free | NETWORK_ONLY
    changed = [(name, key) for name, section in cfg.sections.items() for key, value in section.as_dict().items()
               if (name, key) not in free and saved.sections[name].as_dict()[key] != value]
    if changed:
        keys = ", ".join(f"[{n}] {k}" for n, k in changed)
        # the run's values, so that a default changed since (e.g. bond_range in 0.4) can be given back
        values = "; ".join(f"{k} = {saved.sections[n].as_dict()[k]!r} there, {cfg.sections[n].as_dict()[k]!r} here"
                           for n, k in changed)
        raise ConfigError(f"{what} is from another configuration ({keys} differ: {values}); resume with the "
                          f"run's own configuration, or pass --overwrite to start again; nothing was changed")


def _complete_output(path: Path) -> tuple[int | None, str | None]:
    """(measured steps, stored configuration) of a complete output file (one with its
    summary), else (None, None)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == FORMAT and "summary" in f:
                return int(f["measure/free_energy"].shape[1]), f.attrs["config"]
    except (OSError, KeyError):
        pass
    return None, None


def _checkpoint_position(ckpt: Path) -> tuple[str, int] | None:
    """(phase, step) of a checkpoint, from its attributes alone; None if unreadable (reading it
    in full then says what is wrong)."""
    try:
        with h5py.File(ckpt, "r") as f:
            return str(f.attrs["phase"]), int(f.attrs["step"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def remove_checkpoint(ckpt: Path) -> None:
    """Remove the checkpoint of an earlier run (and a temporary one), so it is never resumed
    into this one."""
    try:
        for stale in (ckpt, ckpt.with_name(ckpt.name + ".tmp")):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot remove the old checkpoint {str(ckpt)!r} of an earlier run: {exc}") from None


def load_checkpoint(ckpt: Path, cfg: Config, comm) -> dict:
    """Rank 0 reads and checks the checkpoint; every rank gets the shared part and its own
    rank's part (not everyone's: at L = 12 each rank's buffers are tens of MB)."""
    def read():
        tree = read_checkpoint(ckpt)
        check_checkpoint(tree, ckpt, cfg, comm.size)
        return tree
    full = on_rank0_config(comm, read, share=False)
    ranks = full.pop("ranks") if comm.rank == 0 else None
    tree = comm.bcast(full)
    tree["ranks"] = {str(comm.rank): comm.scatter([ranks[str(r)] for r in range(comm.size)]
                                                  if comm.rank == 0 else None)}
    return tree


def check_checkpoint(tree: dict, ckpt: Path, cfg: Config, n_ranks: int) -> None:
    """The checkpoint is readable, of this configuration (up to RESUMABLE_CHANGES) and of
    this many ranks; ConfigError naming the difference otherwise."""
    try:
        saved = parse(tree["config"], legacy=True)
        phase, ranks, _ = tree["phase"], int(tree["n_ranks"]), tree["run_id"]
    except (KeyError, ConfigError, TypeError) as exc:
        raise ConfigError(f"checkpoint {str(ckpt)!r} is damaged or from another version ({exc})") from None
    if not stores_every_key(tree["config"]):  # since 0.2 a checkpoint stores every key
        raise ConfigError(f"checkpoint {str(ckpt)!r} was written by slmc-hpc before 0.2, whose defaults, tuner "
                          f"and file layout differ; finish that run with the version that started it, or start "
                          f"again with --overwrite")
    check_same_run(cfg, saved, f"checkpoint {str(ckpt)!r}")
    if ranks != n_ranks:
        raise ConfigError(f"checkpoint {str(ckpt)!r} was written by {ranks} rank(s); resume with {ranks}, "
                          f"not {n_ranks}")
    if phase not in ("thermalize", "measure"):
        raise ConfigError(f"checkpoint {str(ckpt)!r} is damaged (phase {phase!r})")


def save_checkpoint(run, phase: str, step: int, round_pending: bool = False) -> None:
    """Gather every rank's state of ``run`` (a TemperingRun) and write the checkpoint (rank 0;
    collective). ``round_pending``: the training round due after ``step`` was interrupted;
    the state is from before it, and a resume redoes it first."""
    replicas = {}
    for r, rep in run.replicas.items():
        learner = run.learners[r]
        tuner = run.tuners[r]
        replicas[str(r)] = (rep.state_dict() | (learner.state_dict() if learner is not None else {})
                            | ({"tuner": tuner.state_dict()} if tuner is not None else {})
                            | {"differences": np.array(run.differences[r], dtype=np.float64).reshape(-1, 3)})
    mine = {"trainer": run.network.state_dict() if run.network is not None else None,
            "counts": run.counts_array(), "replicas": replicas}
    parts = run.comm.gather(mine)
    path = checkpoint_path(run.path)

    def write():
        tree = {"config": run.config_text, "run_id": run.out.run_id, "phase": phase, "step": step,
                "round_pending": int(round_pending),
                "n_ranks": run.comm.size, "n_exchange": run.n_exchange,
                "slot_of_replica": run.slot_of_replica.copy(), "trips": run.trips.state_dict(),
                "controller_rng": json.dumps(run.controller_rng.bit_generator.state),
                "temperatures": np.array(run.temperatures, dtype=np.float64),  # moved by a self-tuning ladder
                "ranks": {str(rank): part for rank, part in enumerate(parts)}}
        try:
            write_checkpoint(path, tree)
        except OSError as exc:  # disk full, quota, permissions: the old checkpoint is intact
            raise ConfigError(f"cannot write the checkpoint {str(path)!r}: {exc}; "
                              f"the previous checkpoint and the output are intact") from None
    on_rank0_config(run.comm, write)  # also: nobody goes on before the checkpoint is on disk


def restore(run, tree: dict) -> None:
    """Put ``run`` (a TemperingRun, freshly assembled) where the checkpoint ``tree`` left off,
    and rewind its output to the checkpoint's position (what was written after it is redone)."""
    mine = tree["ranks"][str(run.comm.rank)]
    if run.network is not None:
        run.network.load_state_dict(mine["trainer"])
    run.measured = [AcceptanceCounts.from_array(a) for a in mine["counts"]]
    if "temperatures" in tree:  # checkpoints before 0.3 have the configured ladder
        run.temperatures = [float(t) for t in tree["temperatures"]]
        run.betas = 1.0 / np.asarray(run.temperatures)
    for r, rep in run.replicas.items():
        saved, learner = mine["replicas"][str(r)], run.learners[r]
        models = ()
        if learner is not None:
            learner.load_state_dict(saved)
            learner.move_to(float(run.betas[r]))  # slot r's learner, at slot r's β (a ladder may have moved it)
            models = learner.models(float(saved["beta"]))
        rep.load_state_dict(saved, *models)
        if run.tuners[r] is not None:  # the path of the next step is the tuner's to say
            try:
                run.tuners[r].load_state_dict(saved["tuner"])
            except ValueError as exc:
                raise ConfigError(f"the checkpoint's path tuning does not fit this configuration ({exc}); "
                                  f"finish the run with the version that started it") from None
    run.resumed_chains = {r: mine["replicas"][str(r)]["chain"] for r in run.replicas}
    run.differences = {r: [tuple(row) for row in mine["replicas"][str(r)].get("differences", np.zeros((0, 3)))]
                       for r in run.replicas}
    if run.controller_rng is not None:
        run.controller_rng.bit_generator.state = json.loads(tree["controller_rng"])
    run.slot_of_replica = np.array(tree["slot_of_replica"])
    run.trips.load_state_dict(tree["trips"])
    run.n_exchange = int(tree["n_exchange"])
    measured = int(tree["step"]) if tree["phase"] == "measure" else 0
    if run.comm.rank == 0:
        run.out.rewind(measured, run.n_exchange)
    run.out.drop_summary()
    run.out.flush()
