"""The run loop for one process: all temperature replicas in lockstep. Thermalization trains
the effective models (each slot's linear model at its β; the one shared Transformer on all
slots' samples); measurement freezes them and exchanges temperature labels between
neighbouring replicas (parallel tempering), every slot's linear models moving with its label. Measurements, snapshots, the models, the exchanges and a summary go
to one HDF5 file, row r of every per-temperature dataset being slot r. (Distributing the
replicas over MPI ranks is the next layer around the same Replica.)"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

from .backend import array_module
from .config import Config, ConfigError, temperature_ladder
from .parallel.comm import SerialComm
from .fermions import DoubleExchange
from .lattice import Lattice
from .output import GatheredOutput, RunOutput
from .progress import Progress
from .replica import Replica, shared_trainer, train_round, uses_shared_network
from .stats import estimate
from .tempering import RoundTrips, exchange
from .training import n_refits


WRITE_BLOCK = 500  # measured steps held in memory before they go to the file (and the file is flushed)


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


def run(cfg: Config, output: str | Path | None = None, overwrite: bool = False, log=print, comm=None,
        gather_output: bool | None = None) -> Path:
    """Run the configuration. With ``comm`` of several ranks (MPI), rank r owns replica r;
    otherwise this process owns them all. Only rank 0 logs. Several ranks write the file
    with MPI-IO, or, when h5py has no MPI support (or ``gather_output`` is set), through
    rank 0 (GatheredOutput)."""
    comm = comm or SerialComm()
    physics = build_physics(cfg)
    lattice = physics.lattice
    temperatures = temperature_ladder(cfg, comm.size)
    R = len(temperatures)
    if comm.size > 1 and R != comm.size:
        raise ConfigError(f"[temperatures] gives {R} temperatures but {comm.size} MPI ranks run: "
                          f"one temperature per rank")
    log = log if comm.rank == 0 else (lambda *a, **k: None)
    betas = 1.0 / np.asarray(temperatures)
    # one stream per replica and one for the exchange decisions (SeedSequence.spawn)
    seeds = np.random.SeedSequence(cfg.run.seed).spawn(R + 1)
    beta_ref = geometric_mean_beta(temperatures)
    trainer = None
    if uses_shared_network(cfg):
        # the minibatch order of this rank's samples: its own stream, the same for any R
        order_seed = np.random.SeedSequence(cfg.run.seed, spawn_key=(R + 1, comm.rank)).generate_state(1, np.uint64)
        trainer = shared_trainer(cfg, lattice, beta_ref, int(order_seed[0]), comm)
    local = {r: Replica(cfg, physics, betas[r], np.random.default_rng(seeds[r]), beta_ref, trainer)
             for r in range(R) if r % comm.size == comm.rank}
    any_replica = next(iter(local.values()))
    n_rounds = n_refits(cfg.run.thermalize, cfg.training.every) if any_replica.model is not None else 0
    every = cfg.temperatures.exchange_every if R > 1 else 0
    n_exchanges = cfg.run.measure // every if every else 0
    path = Path(output or cfg.run.output)
    if gather_output is None:
        gather_output = comm.size > 1 and not h5py.get_config().mpi
    if gather_output and comm.size > 1:
        log("slmc-hpc: warning: h5py has no MPI support; rank 0 gathers and writes the output (slower)")
        out = GatheredOutput(comm, lambda: RunOutput(path, cfg, lattice, temperatures, any_replica.model,
                                                     n_rounds, n_exchanges, overwrite=overwrite))
    else:
        out = RunOutput(path, cfg, lattice, temperatures, any_replica.model, n_rounds, n_exchanges,
                        overwrite=overwrite, comm=comm)
    log(f"slmc-hpc: {cfg.run.sampler} on {lattice.kind} L={lattice.L} (N={lattice.N}), "
        f"{R} temperature(s) on {comm.size} process(es), {cfg.local_updates} local updates/step -> {path}")
    if any_replica.model is not None:
        log(f"effective model: {cfg.effective_model.kind}, {any_replica.model.n_parameters} parameters")
    try:
        _thermalize(cfg, local, out, log)
        controller_rng = np.random.default_rng(seeds[R]) if comm.rank == 0 else None
        counts, seconds, trips = _measure(cfg, local, betas, controller_rng, out, log, comm)
        _summarize(out, lattice, temperatures, counts, seconds, trips, log, comm)
    finally:
        out.close()
    return path


def _thermalize(cfg: Config, local: dict, out: RunOutput, log) -> None:
    """All replicas in lockstep, each at its own temperature, training the models: each
    slot's linear model on that slot's samples, the shared Transformer on every slot's
    samples at once (a collective round on all ranks). No exchanges yet, so every slot's
    samples come from one β and a slot's linear fit never mixes temperatures."""
    log(f"thermalizing {cfg.run.thermalize} steps")
    prog = Progress("therm", cfg.run.thermalize, cfg.run.progress_every, log)
    n_acc = n_tests = 0
    replicas = list(local.values())
    start, training = time.perf_counter(), 0.0
    comm = getattr(replicas[0].trainer, "comm", None)
    reduce_before = comm.allreduce_seconds if comm is not None else 0.0
    for k in range(cfg.run.thermalize):
        for rep in replicas:
            info = rep.step()
            n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
        if not replicas[0].trains_alone and replicas[0].round_due():
            t = time.perf_counter()
            train_round(replicas)
            training += time.perf_counter() - t
        prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == cfg.run.thermalize)
    if training:
        total = time.perf_counter() - start
        reduce = comm.allreduce_seconds - reduce_before
        log(f"shared-model training on rank 0: {training / total:.1%} of thermalization wall time, "
            f"all-reduce (waiting included) {reduce / total:.1%}")
    for slot, rep in local.items():
        if rep.model is not None:
            out.write_model(slot, rep.model.parameters()[0])
            out.write_training(slot, rep.rounds)


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
        """All runs so far; the replica goes on in a new, empty run at the same slot."""
        runs = [run for run in self.runs if run[2]]
        slot, start, records = self.runs[-1]
        self.runs = [(slot, start + len(records), [])]
        return runs


def _write_block(out: RunOutput, segments: dict, comm, n_slots: int, start: int, stop: int) -> None:
    """Write measured steps [start, stop) of every slot. Each run of records goes to the rank
    that owns its slot (slot % ranks); every rank then writes each of its slots as one
    contiguous block, so under MPI-IO every rank makes the same collective writes."""
    outgoing = [[] for _ in range(comm.size)]
    for seg in segments.values():
        for run in seg.take():
            outgoing[run[0] % comm.size].append(run)
    blocks = {slot: [None] * (stop - start) for slot in range(comm.rank, n_slots, comm.size)}
    for part in comm.alltoall(outgoing):
        for slot, first, records in part:
            blocks[slot][first - start: first - start + len(records)] = records
    for slot, records in blocks.items():
        assert all(r is not None for r in records), f"slot {slot}: steps missing from the block"
        out.write_block(slot, start, records)


def _measure(cfg: Config, local: dict, betas: np.ndarray, controller_rng, out: RunOutput, log, comm):
    """Measured steps with replica exchanges every [temperatures] exchange_every steps.
    Temperature labels move, spins stay; each slot's frozen model moves with its label. Each
    replica's records go to the row of the slot it holds at that step."""
    run, R = cfg.run, len(betas)
    every = cfg.temperatures.exchange_every if R > 1 else 0
    slot_models = {}  # replica r trained the models of slot r; every rank needs them all
    for part in comm.allgather({r: rep.slot_models for r, rep in local.items()}):
        slot_models.update(part)
    slot_of_replica = np.arange(R)
    trips = RoundTrips(R)
    segments = {r: _Segments(r, 0) for r in local}
    pending_exchanges = []  # (slots, accepted) of exchange rounds not yet written
    written, n_exchange = 0, 0  # measured steps in the file; exchange rounds done
    counts = np.zeros((R, 4), dtype=np.int64)  # per slot: exact tests, accepted, middle tests, accepted
    log(f"measuring {run.measure} steps" + (f", exchanging every {every}" if every else ""))
    prog = Progress("meas", run.measure, run.progress_every, log)
    t0 = time.perf_counter()
    # wall seconds outside the Monte Carlo steps: waiting for the slowest rank before an
    # exchange (load imbalance), the exchange itself, and writing the file
    spent = {"waiting": 0.0, "exchange": 0.0, "output": 0.0}
    for k in range(run.measure):
        for r, rep in local.items():
            info = rep.step()
            counts[slot_of_replica[r]] += (info.n_tests, info.n_accepted, info.n_middle_tests, info.n_middle_accepted)
            record = rep.record(info)
            if (k + 1) % run.snapshot_every == 0:
                record["spins"] = rep.state.spins.copy()
            segments[r].append(record)
        t_out = time.perf_counter()
        if (k + 1) % WRITE_BLOCK == 0:
            _write_block(out, segments, comm, R, written, k + 1)
            written = k + 1
            _write_exchanges(out, pending_exchanges, n_exchange, comm)
            out.flush()
        t_ex = time.perf_counter()
        spent["output"] += t_ex - t_out
        if every and (k + 1) % every == 0:
            comm.barrier()
            t_wait = time.perf_counter()
            spent["waiting"] += t_wait - t_ex
            t_ex = t_wait
            log_w = np.empty((R, R))
            for part in comm.allgather({r: rep.log_weights(betas) for r, rep in local.items()}):
                for r, row in part.items():
                    log_w[r] = row
            decision = exchange(log_w, slot_of_replica, n_exchange, controller_rng) if comm.rank == 0 else None
            new_slots, accepted = comm.bcast(decision)
            for r, rep in local.items():
                if new_slots[r] != slot_of_replica[r]:
                    rep.set_beta(betas[new_slots[r]], *slot_models[new_slots[r]])
                    segments[r].move(int(new_slots[r]), k + 1)
            slot_of_replica = new_slots
            trips.update(slot_of_replica)
            pending_exchanges.append((slot_of_replica, accepted))
            n_exchange += 1
            spent["exchange"] += time.perf_counter() - t_ex
        prog.update(k + 1, counts[:, 1].sum() / max(counts[:, 0].sum(), 1), force=k + 1 == run.measure)
    t_out = time.perf_counter()
    _write_block(out, segments, comm, R, written, run.measure)
    _write_exchanges(out, pending_exchanges, n_exchange, comm)
    out.flush()
    spent["output"] += time.perf_counter() - t_out
    total = time.perf_counter() - t0
    counts = comm.allreduce_sum(counts)
    shares = {key: value / total for key, value in spent.items()}
    log("wall-time share of measurement on rank 0: exchanges {exchange:.1%}, output {output:.1%}, "
        "waiting for other ranks {waiting:.1%}".format(**shares))
    return counts, total / (run.measure * len(local)), trips


def _write_exchanges(out: RunOutput, pending: list, done: int, comm) -> None:
    """Write the exchange rounds done since the last call (rank 0 writes), and forget them."""
    if pending and comm.rank == 0:
        out.write_exchanges(done - len(pending), np.array([p[0] for p in pending]), np.array([p[1] for p in pending]))
    pending.clear()


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
