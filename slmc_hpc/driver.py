"""The run loop for one process: all temperature replicas in lockstep. Thermalization trains
the effective models (each slot's linear model at its β; the one shared Transformer on all
slots' samples); measurement freezes them and exchanges temperature labels between
neighbouring replicas (parallel tempering), every slot's linear models moving with its
label. Measurements, snapshots, the models, the exchanges and a summary go to one HDF5 file,
row r of every per-temperature dataset being slot r. Checkpoints (on a schedule and on
SIGTERM/SIGUSR1) hold everything needed to continue the same chains bit for bit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from .backend import array_module, use_device_of_rank
from .checkpoint import checkpoint_path, read_checkpoint, write_checkpoint
from .config import Config, ConfigError, parse, temperature_ladder
from .control import Control, StopSignals
from .parallel.comm import SerialComm, on_rank0
from .fermions import DoubleExchange
from .lattice import Lattice
from .output import FORMAT, MEASURE_DTYPES, GatheredOutput, RunOutput
from .progress import Progress
from .replica import Replica, shared_trainer, train_round, uses_shared_network
from .stats import estimate
from .tempering import RoundTrips, exchange
from .training import RoundInterrupted, n_refits


# steps between the collective that agrees on writes, checkpoints and stops (a signal is
# answered within this many steps). Every step makes every step wait for the slowest rank:
# the logged control share was 5-6% (2 ranks, L = 6), 48% with 4 ranks on 2 cores, and 1.3x
# slower runs on busy cores; every 10 steps it is under 1% (2 ranks)
CONTROL_EVERY = 10
WRITE_SECONDS = 30.0  # measured records go to the file (and it is flushed) this often ...
MAX_PENDING_STEPS = 5000  # ... or after this many measured steps, whichever comes first


def build_physics(cfg: Config) -> DoubleExchange:
    try:
        array_module(cfg.run.backend)
    except RuntimeError as exc:
        raise ConfigError(f"[run] backend = {cfg.run.backend!r}: {exc}") from None
    m = cfg.model
    lattice = Lattice.from_kind(cfg.lattice.kind, cfg.lattice.L)
    return DoubleExchange(lattice, t=m.t, J=m.J, mu=m.mu, J_direct=m.J_direct, backend=cfg.run.backend)


def geometric_mean_beta(temperatures) -> float:
    """β_ref of the Transformer's β-conditioning: the geometric mean of the run's β."""
    return float(np.exp(-np.mean(np.log(temperatures))))


class Interrupted(Exception):
    """A stop signal arrived; the run checkpointed and closed its output (CLI exit 75)."""

    def __init__(self, checkpoint: Path, phase: str, step: int):
        super().__init__(f"stopped by a signal after {phase} step {step}; checkpoint {str(checkpoint)!r} "
                         f"written; continue with --resume")
        self.checkpoint = checkpoint


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
    when there is no output yet, and does nothing when the output is already complete."""
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
            state = _on_rank0(comm, lambda: _resume_state(path, ckpt))
            if state == "complete":
                log(f"slmc-hpc: {path} is already complete; nothing to resume")
                return path
            if state == "checkpoint":
                tree = _load_checkpoint(ckpt, cfg, comm)
        job = _Run(cfg, comm, path, log)
        if tree is not None:
            log(f"slmc-hpc: resuming from {ckpt} ({tree['phase']} step {tree['step']})")
        else:
            _on_rank0(comm, lambda: _remove_checkpoint(ckpt))  # never resume an earlier run into this one
        job.open_output(overwrite, gather_output, run_id=tree["run_id"] if tree is not None else None)
        try:
            job.control = Control(comm, cfg.run.checkpoint_every, signals, WRITE_SECONDS)
            job.start(tree)
            job.summarize()
        except Interrupted:
            job.out.close()  # every rank stopped at the same step: the collective close is safe
            raise
        except BaseException:
            # under MPI-IO closing is collective, and the other ranks may be anywhere: leave
            # the file as last flushed and let the caller abort the job (cli._fail, or the
            # uncaught-exception hook); one process, or rank 0's gathered file, closes it
            if comm.size == 1 or isinstance(job.out, GatheredOutput):
                job.out.close()
            raise
        job.out.close()
    comm.barrier()
    if comm.rank == 0:
        try:
            ckpt.unlink(missing_ok=True)  # complete; a later --resume finds the finished file
        except OSError as exc:
            log(f"slmc-hpc: warning: could not remove the checkpoint {ckpt}: {exc}")
    return path


def _remove_checkpoint(ckpt: Path) -> None:
    try:
        for stale in (ckpt, ckpt.with_name(ckpt.name + ".tmp")):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot remove the old checkpoint {str(ckpt)!r} of an earlier run: {exc}") from None


def _on_rank0(comm, func, share: bool = True):
    """func() on rank 0; its ConfigError on every rank (see parallel.comm.on_rank0)."""
    return on_rank0(comm, func, (ConfigError,), share)


def _resume_state(path: Path, ckpt: Path) -> str:
    """What --resume finds (rank 0 looks): "checkpoint", "complete" or "new"."""
    if ckpt.exists():
        return "checkpoint"
    if not path.exists():
        return "new"
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == FORMAT and "summary" in f:
                return "complete"
    except OSError:
        pass
    raise ConfigError(f"--resume: {str(path)!r} exists but there is no checkpoint {str(ckpt)!r} to continue "
                      f"from (killed before the first checkpoint?); pass --overwrite to start again")


def _load_checkpoint(ckpt: Path, cfg: Config, comm) -> dict:
    """Rank 0 reads and checks the checkpoint; every rank gets the shared part and its own
    rank's part (not everyone's: at L = 12 each rank's buffers are tens of MB)."""
    def read():
        tree = read_checkpoint(ckpt)
        _check_checkpoint(tree, ckpt, cfg, comm.size)
        return tree
    full = _on_rank0(comm, read, share=False)
    ranks = full.pop("ranks") if comm.rank == 0 else None
    tree = comm.bcast(full)
    tree["ranks"] = {str(comm.rank): comm.scatter([ranks[str(r)] for r in range(comm.size)]
                                                  if comm.rank == 0 else None)}
    return tree


RESUMABLE_CHANGES = {("run", "checkpoint_every"), ("run", "progress_every"), ("run", "output")}


def _check_checkpoint(tree: dict, ckpt: Path, cfg: Config, n_ranks: int) -> None:
    try:
        saved = parse(tree["config"])
        phase, ranks, _ = tree["phase"], int(tree["n_ranks"]), tree["run_id"]
    except (KeyError, ConfigError, TypeError) as exc:
        raise ConfigError(f"checkpoint {str(ckpt)!r} is damaged or from another version ({exc})") from None
    changed = [(name, key) for name, section in cfg.sections.items() for key, value in section.as_dict().items()
               if (name, key) not in RESUMABLE_CHANGES and saved.sections[name].as_dict()[key] != value]
    if changed:
        keys = ", ".join(f"[{n}] {k}" for n, k in changed)
        raise ConfigError(f"checkpoint {str(ckpt)!r} is from another configuration ({keys} differ); "
                          f"resume with the run's own configuration, or pass --overwrite to start again")
    if ranks != n_ranks:
        raise ConfigError(f"checkpoint {str(ckpt)!r} was written by {ranks} rank(s); resume with {ranks}, "
                          f"not {n_ranks}")
    if phase not in ("thermalize", "measure"):
        raise ConfigError(f"checkpoint {str(ckpt)!r} is damaged (phase {phase!r})")


class _Run:
    """One run on this process: its replicas, the shared trainer, the output, and the
    tempering state; checkpoints save exactly these."""

    def __init__(self, cfg: Config, comm, path: Path, log):
        self.cfg, self.comm, self.path, self.log = cfg, comm, path, log
        physics = build_physics(cfg)
        if cfg.run.backend == "cupy":
            device = use_device_of_rank(comm.node_rank)
            log(f"rank 0 diagonalizes on GPU {device} (each rank: node-local rank modulo visible GPUs)")
        self.lattice = physics.lattice
        self.temperatures = temperature_ladder(cfg, comm.size)
        R = self.R = len(self.temperatures)
        if comm.size > 1 and R != comm.size:
            raise ConfigError(f"[temperatures] gives {R} temperatures but {comm.size} MPI ranks run: "
                              f"one temperature per rank")
        self.betas = 1.0 / np.asarray(self.temperatures)
        # one stream per replica and one for the exchange decisions (SeedSequence.spawn)
        seeds = np.random.SeedSequence(cfg.run.seed).spawn(R + 1)
        beta_ref = geometric_mean_beta(self.temperatures)
        self.trainer = None
        if uses_shared_network(cfg):
            # the minibatch order of this rank's samples: its own stream
            order_seed = np.random.SeedSequence(cfg.run.seed, spawn_key=(R + 1, comm.rank)).generate_state(1, np.uint64)
            self.trainer = shared_trainer(cfg, self.lattice, beta_ref, int(order_seed[0]), comm)
        self.local = {r: Replica(cfg, physics, self.betas[r], np.random.default_rng(seeds[r]), beta_ref, self.trainer)
                      for r in range(R) if r % comm.size == comm.rank}
        self.controller_rng = np.random.default_rng(seeds[R]) if comm.rank == 0 else None
        self.every = cfg.temperatures.exchange_every if R > 1 else 0
        self.slot_of_replica = np.arange(R)
        self.trips = RoundTrips(R)
        self.n_exchange = 0  # exchange rounds done
        self.counts = np.zeros((R, 4), dtype=np.int64)  # measured, per slot: exact tests, accepted, middle ...
        self.control = None
        self.resumed_chains = {}

    def open_output(self, overwrite: bool, gather_output: bool | None, run_id: str | None = None) -> None:
        """Create the output, or with the ``run_id`` of a checkpoint reopen that run's file."""
        cfg, comm, log = self.cfg, self.comm, self.log
        model = next(iter(self.local.values())).model
        n_rounds = n_refits(cfg.run.thermalize, cfg.training.every) if model is not None else 0
        n_exchanges = cfg.run.measure // self.every if self.every else 0
        args = (self.path, cfg, self.lattice, self.temperatures, model, n_rounds, n_exchanges)
        if gather_output is None:
            gather_output = comm.size > 1 and not h5py.get_config().mpi
        if gather_output and comm.size > 1:
            log("slmc-hpc: warning: h5py has no MPI support; rank 0 gathers and writes the output (slower)")
            self.out = GatheredOutput(comm, lambda: RunOutput(*args, overwrite=overwrite, run_id=run_id))
        else:
            self.out = RunOutput(*args, overwrite=overwrite, comm=comm, run_id=run_id)
        log(f"slmc-hpc: {cfg.run.sampler} on {self.lattice.kind} L={self.lattice.L} (N={self.lattice.N}), "
            f"{self.R} temperature(s) on {comm.size} process(es), {cfg.local_updates} local updates/step "
            f"-> {self.path}")
        if model is not None:
            log(f"effective model: {cfg.effective_model.kind}, {model.n_parameters} parameters")

    def start(self, tree: dict | None) -> None:
        """Thermalize and measure, or continue where the checkpoint ``tree`` left off."""
        if tree is None:
            self.thermalize(0)
            self.measure(0)
            return
        phase, step = tree["phase"], int(tree["step"])
        self.restore(tree)
        if phase == "thermalize":
            self.thermalize(step, redo_round=bool(tree.get("round_pending", 0)))
            self.measure(0)
        else:
            self.measure(step)

    # -- checkpoints -------------------------------------------------------------------

    def poll(self, phase: str, step: int) -> None:
        """Every CONTROL_EVERY steps, one collective: checkpoint when it is due, and stop
        after a signal."""
        if step % CONTROL_EVERY:
            return
        write, save, stop = self.control.poll()
        if write and phase == "measure":
            self.write_pending(step)
            self.control.wrote()
        if not save:
            return
        self.out.sync()  # the rows the checkpoint counts on are on disk before it is
        self.save_checkpoint(phase, step)
        self.control.checkpointed()
        if stop:
            raise Interrupted(checkpoint_path(self.path), phase, step)

    def save_checkpoint(self, phase: str, step: int, round_pending: bool = False) -> None:
        """``round_pending``: the training round due after ``step`` was interrupted; the
        state is from before it, and a resume redoes it first."""
        mine = {"trainer": self.trainer.state_dict() if self.trainer is not None else None,
                "counts": self.counts.copy(),
                "replicas": {str(r): rep.state_dict() for r, rep in self.local.items()}}
        parts = self.comm.gather(mine)

        def write():
            tree = {"config": self.cfg.text, "run_id": self.out.run_id, "phase": phase, "step": step,
                    "round_pending": int(round_pending),
                    "n_ranks": self.comm.size, "n_exchange": self.n_exchange,
                    "slot_of_replica": self.slot_of_replica.copy(), "trips": self.trips.state_dict(),
                    "controller_rng": json.dumps(self.controller_rng.bit_generator.state),
                    "ranks": {str(rank): part for rank, part in enumerate(parts)}}
            try:
                write_checkpoint(checkpoint_path(self.path), tree)
            except OSError as exc:  # disk full, quota, permissions: the old checkpoint is intact
                raise ConfigError(f"cannot write the checkpoint {str(checkpoint_path(self.path))!r}: {exc}; "
                                  f"the previous checkpoint and the output are intact") from None
        _on_rank0(self.comm, write)  # also: nobody goes on before the checkpoint is on disk

    def restore(self, tree: dict) -> None:
        mine = tree["ranks"][str(self.comm.rank)]
        if self.trainer is not None:
            self.trainer.load_state_dict(mine["trainer"])
        self.counts[:] = mine["counts"]
        for r, rep in self.local.items():
            rep.load_state_dict(mine["replicas"][str(r)])
        self.resumed_chains = {r: mine["replicas"][str(r)]["chain"] for r in self.local}
        if self.controller_rng is not None:
            self.controller_rng.bit_generator.state = json.loads(tree["controller_rng"])
        self.slot_of_replica = np.array(tree["slot_of_replica"])
        self.trips.load_state_dict(tree["trips"])
        self.n_exchange = int(tree["n_exchange"])
        measured = int(tree["step"]) if tree["phase"] == "measure" else 0
        if self.comm.rank == 0:  # what was written after the checkpoint is redone
            self.out.rewind(measured, self.n_exchange)
        self.out.drop_summary()
        self.out.flush()

    # -- thermalization ----------------------------------------------------------------

    def thermalize(self, start: int, redo_round: bool = False) -> None:
        """All replicas in lockstep, each at its own temperature, training the models: each
        slot's linear model on that slot's samples, the shared Transformer on every slot's
        samples at once (a collective round on all ranks). No exchanges yet, so every slot's
        samples come from one β and a slot's linear fit never mixes temperatures.
        ``redo_round``: first the round due after step ``start``, which a stop interrupted."""
        cfg, log = self.cfg, self.log
        log(f"thermalizing {cfg.run.thermalize} steps" + (f" from step {start}" if start else ""))
        prog = Progress("therm", cfg.run.thermalize, cfg.run.progress_every, log, done=start)
        n_acc = n_tests = 0
        replicas = list(self.local.values())
        begin, training = time.perf_counter(), 0.0
        reduce_before = self.comm.allreduce_seconds
        if redo_round:  # then what the uninterrupted run did after that round
            training += self.shared_round(replicas, start)
            self.poll("thermalize", start)
        for k in range(start, cfg.run.thermalize):
            for rep in replicas:
                info = rep.step()
                n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
            if not replicas[0].trains_alone and replicas[0].round_due():
                training += self.shared_round(replicas, k + 1)
            prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == cfg.run.thermalize)
            self.poll("thermalize", k + 1)
        if training:
            total = time.perf_counter() - begin
            reduce = self.comm.allreduce_seconds - reduce_before
            log(f"shared-model training on rank 0: {training / total:.1%} of thermalization wall time, "
                f"all-reduce (waiting included) {reduce / total:.1%}")
        # a round needs 2 x head_size training samples (replica.train_round): a run whose
        # buffer or thermalization never got there measures with its untrained model
        untrained = {slot: rep.head_size for slot, rep in self.local.items() if rep.trainer is not None and not rep.rounds}
        untrained = dict(sorted(kv for part in self.comm.allgather(untrained) for kv in part.items()))
        if untrained and cfg.run.thermalize:
            log(f"slmc-hpc: warning: no training round ran for temperature slot(s) {list(untrained)}: a round needs "
                f"twice the model's {max(untrained.values())} least-squares head parameters in training samples; "
                "the chain stays exact, but its model is untrained (raise [run] thermalize or [training] buffer_size)")
        for slot, rep in self.local.items():
            if rep.model is not None:
                inner = rep.slot_models[1]
                self.out.write_model(slot, rep.model.parameters()[0],
                                     None if inner is None else inner.parameters()[0])
                self.out.write_training(slot, rep.rounds)

    def shared_round(self, replicas: list, step: int) -> float:
        """The shared Transformer's training round after ``step``; its wall time (s). A stop
        signal during the round's minibatches (on any rank) abandons it: checkpoint the state
        before the round, marked so that a resume redoes it, and stop. (The round's full-data
        head fits, and rounds without attention layers, are not interruptible: seconds.)"""
        begin = time.perf_counter()
        try:
            kept = train_round(replicas, interrupt=lambda: self.control.signals.received != 0)
        except RoundInterrupted:
            self.out.sync()
            self.save_checkpoint("thermalize", step, round_pending=True)
            raise Interrupted(checkpoint_path(self.path), "thermalize", step) from None
        if kept in ("previous", "identity"):
            self.log(f"training round after step {step}: the trained layers fit its data worse than the "
                     f"{'layers it started with' if kept == 'previous' else 'head alone'}; kept those")
        return time.perf_counter() - begin

    # -- measurement -------------------------------------------------------------------

    def measure(self, start: int) -> None:
        """Measured steps with replica exchanges every [temperatures] exchange_every steps.
        Temperature labels move, spins stay; each slot's frozen linear models move with its
        label. Each replica's records go to the row of the slot it holds at that step."""
        cfg, run, comm, log, R = self.cfg, self.cfg.run, self.comm, self.log, self.R
        every = self.every
        slot_models = {}  # replica r trained the models of slot r; every rank needs them all
        for part in comm.allgather({r: rep.slot_models for r, rep in self.local.items()}):
            slot_models.update(part)
        for r, chain in self.resumed_chains.items():  # resumed at a slot another replica trained for
            slot = int(self.slot_of_replica[r])
            if slot != r:
                self.local[r].set_beta(self.betas[slot], *slot_models[slot])
                self.local[r].restore_chain(chain)
        self.segments = {r: _Segments(int(self.slot_of_replica[r]), start) for r in self.local}
        self.pending_exchanges = []  # (slots, accepted) of exchange rounds not yet written
        self.written = start  # measured steps in the file
        log(f"measuring {run.measure} steps" + (f", exchanging every {every}" if every else "")
            + (f", from step {start}" if start else ""))
        prog = Progress("meas", run.measure, run.progress_every, log, done=start)
        t0, reduce_before = time.perf_counter(), self.comm.allreduce_seconds
        # wall seconds outside the Monte Carlo steps: waiting for the slowest rank before an
        # exchange (load imbalance), the exchange itself, and writing the file
        spent = {"waiting": 0.0, "exchange": 0.0, "output": 0.0}
        for k in range(start, run.measure):
            for r, rep in self.local.items():
                info = rep.step()
                self.counts[self.slot_of_replica[r]] += (info.n_tests, info.n_accepted, info.n_middle_tests,
                                                         info.n_middle_accepted)
                record = rep.record(info)
                if (k + 1) % run.snapshot_every == 0:
                    record["spins"] = rep.state.spins.copy()
                self.segments[r].append(record)
            t_out = time.perf_counter()
            if k + 1 - self.written >= MAX_PENDING_STEPS:  # the same step on every rank
                self.write_pending(k + 1)
            t_ex = time.perf_counter()
            spent["output"] += t_ex - t_out
            if every and (k + 1) % every == 0:
                comm.barrier()
                t_wait = time.perf_counter()
                spent["waiting"] += t_wait - t_ex
                self.exchange(k + 1, slot_models)
                spent["exchange"] += time.perf_counter() - t_wait
            prog.update(k + 1, self.counts[:, 1].sum() / max(self.counts[:, 0].sum(), 1), force=k + 1 == run.measure)
            if k + 1 < run.measure:
                self.poll("measure", k + 1)
        t_out = time.perf_counter()
        self.write_pending(run.measure)
        spent["output"] += time.perf_counter() - t_out
        total = time.perf_counter() - t0
        spent["control"] = self.comm.allreduce_seconds - reduce_before  # the per-step poll, waiting included
        shares = {key: value / total for key, value in spent.items()} if total > 0 else dict.fromkeys(spent, 0.0)
        log("wall-time share of measurement on rank 0: exchanges {exchange:.1%}, output {output:.1%}, "
            "waiting for other ranks {waiting:.1%}, control all-reduce {control:.1%}".format(**shares))
        self.seconds_per_step = total / (max(run.measure - start, 1) * len(self.local))

    def exchange(self, step: int, slot_models: dict) -> None:
        """One exchange round: rank 0 decides from everyone's log W table and broadcasts."""
        comm, R = self.comm, self.R
        log_w = np.empty((R, R))
        for part in comm.allgather({r: rep.log_weights(self.betas) for r, rep in self.local.items()}):
            for r, row in part.items():
                log_w[r] = row
        decision = (exchange(log_w, self.slot_of_replica, self.n_exchange, self.controller_rng)
                    if comm.rank == 0 else None)
        new_slots, accepted = comm.bcast(decision)
        for r, rep in self.local.items():
            if new_slots[r] != self.slot_of_replica[r]:
                rep.set_beta(self.betas[new_slots[r]], *slot_models[new_slots[r]])
                self.segments[r].move(int(new_slots[r]), step)
        self.slot_of_replica = new_slots
        self.trips.update(self.slot_of_replica)
        self.pending_exchanges.append((self.slot_of_replica, accepted))
        self.n_exchange += 1

    def write_pending(self, step: int) -> None:
        """Everything measured up to ``step`` goes to the file, which is flushed (collective)."""
        _write_block(self.out, self.segments, self.comm, self.R, self.written, step)
        self.written = step
        if self.pending_exchanges and self.comm.rank == 0:
            pending = self.pending_exchanges
            self.out.write_exchanges(self.n_exchange - len(pending), np.array([p[0] for p in pending]),
                                     np.array([p[1] for p in pending]))
        self.pending_exchanges = []
        self.out.flush()

    def summarize(self) -> None:
        counts = self.comm.allreduce_sum(self.counts)
        _summarize(self.out, self.lattice, self.temperatures, counts, self.seconds_per_step, self.trips,
                   self.log, self.comm)


class _Segments:
    """One replica's records not yet written: runs of consecutive measured steps at one slot
    each (a new run starts when an exchange moves the replica)."""

    def __init__(self, slot: int, start: int):
        self.runs = [(slot, start, [])]

    def append(self, record: dict) -> None:
        self.runs[-1][2].append(record)

    def move(self, slot: int, start: int) -> None:
        self.runs.append((slot, start, []))

    def take(self) -> list:
        """All runs so far as (slot, start, columns): one array per field (sending arrays
        between ranks is far cheaper than sending thousands of small dicts); the replica goes
        on in a new, empty run at the same slot."""
        runs = [(slot, start, _columns(records)) for slot, start, records in self.runs if records]
        slot, start, records = self.runs[-1]
        self.runs = [(slot, start + len(records), [])]
        return runs


def _columns(records: list[dict]) -> dict:
    """Records of consecutive steps as one array per field; "spins": the snapshots among them."""
    columns = {name: np.array([r[name] for r in records]) for name in MEASURE_DTYPES}
    columns["spins"] = np.array([r["spins"] for r in records if "spins" in r])
    return columns


def _write_block(out: RunOutput, segments: dict, comm, n_slots: int, start: int, stop: int) -> None:
    """Write measured steps [start, stop) of every slot. Each run of records goes to the rank
    that owns its slot (slot % ranks); every rank then writes each of its slots as one
    contiguous block, so under MPI-IO every rank makes the same collective writes."""
    outgoing = [[] for _ in range(comm.size)]
    for seg in segments.values():
        for run in seg.take():
            outgoing[run[0] % comm.size].append(run)
    runs = {slot: [] for slot in range(comm.rank, n_slots, comm.size)}
    for part in comm.alltoall(outgoing):
        for slot, first, columns in part:
            runs[slot].append((first, columns))
    for slot, parts in runs.items():
        parts.sort(key=lambda part: part[0])
        lengths = [len(columns["free_energy"]) for _, columns in parts]
        contiguous = all(first == start + sum(lengths[:k]) for k, (first, _) in enumerate(parts))
        assert contiguous and sum(lengths) == stop - start, f"slot {slot}: steps missing from the block"
        block = {name: np.concatenate([columns[name] for _, columns in parts]) if parts else np.empty(0)
                 for name in MEASURE_DTYPES}
        snaps = [columns["spins"] for _, columns in parts if len(columns["spins"])]
        block["spins"] = np.concatenate(snaps) if snaps else np.empty(0)
        out.write_block(slot, start, block)


def _summarize(out: RunOutput, lattice, temperatures, counts, seconds_per_step, trips, log, comm) -> None:
    """Per-slot means and errors from the rows just written; computed identically on every
    rank, because creating the /summary datasets is collective."""
    comm.barrier()
    seconds_per_step = float(np.mean(comm.allgather(seconds_per_step)))
    if out.file is None:  # gathered output: rank 0 alone reads and writes the summary
        return
    summary = {k: [] for k in ("acceptance", "middle_acceptance", "moved", "free_energy_per_site",
                               "free_energy_per_site_error", "abs_magnetization", "abs_magnetization_error",
                               "tau_free_energy", "seconds_per_step")}
    for slot, T in enumerate(temperatures):
        F = out.file["measure/free_energy"][slot] / lattice.N
        m = np.linalg.norm(out.file["measure/magnetization"][slot], axis=-1)
        eF, em = estimate(F), estimate(m)
        tests, acc, mid_tests, mid_acc = counts[slot]
        acceptance = acc / tests if tests else float("nan")
        middle = mid_acc / mid_tests if mid_tests else float("nan")
        moved = float(np.mean(out.file["measure/accepted"][slot]))
        for key, v in zip(summary, (acceptance, middle, moved, eF.mean, eF.error, em.mean, em.error, eF.tau,
                                    seconds_per_step)):
            summary[key].append(v)
        log(f"T={T:<8.4g} acceptance {acceptance:.3f}  F/N = {eF.mean:.6f} ± {eF.error:.6f}  "
            f"|m| = {em.mean:.4f} ± {em.error:.4f}  tau_int(F) = {eF.tau:.1f} steps")
    if out.file["tempering/accepted"].shape[0]:
        acc = out.file["tempering/accepted"][:]
        pair = [float(np.mean(acc[acc[:, p] >= 0, p])) if np.any(acc[:, p] >= 0) else float("nan")
                for p in range(acc.shape[1])]
        summary["pair_acceptance"] = pair
        summary["round_trips"] = trips.completed
        log("exchange acceptance per pair: " + " ".join(f"{a:.2f}" for a in pair)
            + f"; round trips {int(trips.completed.sum())}")
    out.write_summary(summary)
