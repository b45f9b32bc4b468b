"""The run loop for one process: all temperature replicas in lockstep. Thermalization trains
each slot's effective model at its own β; measurement freezes the models and exchanges
temperature labels between neighbouring replicas (parallel tempering), every slot's model
moving with its label. Measurements, snapshots, the models, the exchanges and a summary go
to one HDF5 file, row r of every per-temperature dataset being slot r. (Distributing the
replicas over MPI ranks is the next layer around the same Replica.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backend import array_module
from .config import Config, ConfigError
from .fermions import DoubleExchange
from .lattice import Lattice
from .output import RunOutput
from .progress import Progress
from .replica import Replica
from .stats import estimate
from .tempering import RoundTrips, exchange
from .training import n_refits


WRITE_BLOCK = 100  # measured steps held in memory at most before they go to the file


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


def run(cfg: Config, output: str | Path | None = None, overwrite: bool = False, log=print) -> Path:
    physics = build_physics(cfg)
    lattice = physics.lattice
    temperatures = cfg.temperatures.values
    R = len(temperatures)
    betas = 1.0 / np.asarray(temperatures)
    # one stream per replica and one for the exchange decisions (SeedSequence.spawn)
    seeds = np.random.SeedSequence(cfg.run.seed).spawn(R + 1)
    controller_rng = np.random.default_rng(seeds[R])
    beta_ref = geometric_mean_beta(temperatures)
    replicas = [Replica(cfg, physics, b, np.random.default_rng(sd), beta_ref) for b, sd in zip(betas, seeds)]
    n_rounds = n_refits(cfg.run.thermalize, cfg.training.every) if replicas[0].model is not None else 0
    n_exchanges = cfg.run.measure // cfg.temperatures.exchange_every if R > 1 and cfg.temperatures.exchange_every else 0
    path = Path(output or cfg.run.output)
    out = RunOutput(path, cfg, lattice, temperatures, replicas[0].n_model_parameters, n_rounds, n_exchanges,
                    overwrite=overwrite)
    log(f"slmc-hpc: {cfg.run.sampler} on {lattice.kind} L={lattice.L} (N={lattice.N}), "
        f"{R} temperature(s), {cfg.local_updates} local updates/step -> {path}")
    if replicas[0].model is not None:
        log(f"effective model: {cfg.effective_model.kind}, {replicas[0].model.n_parameters} parameters")
    try:
        _thermalize(cfg, replicas, out, log)
        counts, seconds, trips = _measure(cfg, replicas, betas, controller_rng, out, log)
        _summarize(out, lattice, temperatures, counts, seconds, trips, log)
    finally:
        out.close()
    return path


def _thermalize(cfg: Config, replicas: list[Replica], out: RunOutput, log) -> None:
    """All replicas in lockstep, each at its own temperature, training its model. No exchanges
    yet: each slot's model is trained on data from that slot's β only."""
    log(f"thermalizing {cfg.run.thermalize} steps")
    prog = Progress("therm", cfg.run.thermalize, cfg.run.progress_every)
    n_acc = n_tests = 0
    for k in range(cfg.run.thermalize):
        for rep in replicas:
            info = rep.step()
            n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
        prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == cfg.run.thermalize)
    for slot, rep in enumerate(replicas):
        if rep.model is not None:
            out.write_model(slot, *rep.model.parameters(), getattr(getattr(rep.model, "net", None), "beta_ref", None))
            out.write_training(slot, rep.rounds)


def _measure(cfg: Config, replicas: list[Replica], betas: np.ndarray, controller_rng, out: RunOutput, log):
    """Measured steps with replica exchanges every [temperatures] exchange_every steps.
    Temperature labels move, spins stay; each slot's frozen model moves with its label.
    Records go to the row of the slot a replica holds at that step."""
    run, R = cfg.run, len(replicas)
    every = cfg.temperatures.exchange_every if R > 1 else 0
    models = [rep.slot_models for rep in replicas]  # replica r trained the models of slot r
    slot_of_replica = np.arange(R)
    trips = RoundTrips(R)
    records = [[] for _ in range(R)]
    start, snap, n_exchange = 0, 0, 0
    counts = np.zeros((R, 4), dtype=np.int64)  # per slot: exact tests, accepted, middle tests, accepted
    log(f"measuring {run.measure} steps" + (f", exchanging every {every}" if every else ""))
    prog = Progress("meas", run.measure, run.progress_every)
    t0 = time.perf_counter()
    for k in range(run.measure):
        for i, rep in enumerate(replicas):
            info = rep.step()
            s = slot_of_replica[i]
            counts[s] += (info.n_tests, info.n_accepted, info.n_middle_tests, info.n_middle_accepted)
            records[s].append(rep.record(info))
        if (k + 1) % run.snapshot_every == 0:
            for i, rep in enumerate(replicas):
                s = slot_of_replica[i]
                out.write_snapshot(s, snap, rep.state.spins, records[s][-1]["free_energy"], rep.steps_done)
            snap += 1
        if len(records[0]) == WRITE_BLOCK or (k + 1) % run.snapshot_every == 0:
            for s in range(R):
                out.write_measure(s, start, records[s])
            start, records = start + len(records[0]), [[] for _ in range(R)]
        if every and (k + 1) % every == 0:
            log_w = np.array([rep.log_weights(betas) for rep in replicas])
            new_slots, accepted = exchange(log_w, slot_of_replica, n_exchange, controller_rng)
            for i in np.flatnonzero(new_slots != slot_of_replica):
                replicas[i].set_beta(betas[new_slots[i]], *models[new_slots[i]])
            slot_of_replica = new_slots
            trips.update(slot_of_replica)
            out.write_exchange(n_exchange, slot_of_replica, accepted)
            n_exchange += 1
        prog.update(k + 1, counts[:, 1].sum() / max(counts[:, 0].sum(), 1), force=k + 1 == run.measure)
    for s in range(R):
        out.write_measure(s, start, records[s])
    return counts, (time.perf_counter() - t0) / (run.measure * R), trips


def _summarize(out: RunOutput, lattice, temperatures, counts, seconds_per_step, trips, log) -> None:
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
    n_ex = out.file["tempering/accepted"].shape[0]
    if n_ex:
        acc = out.file["tempering/accepted"][:]
        pair = [float(np.mean(acc[acc[:, p] >= 0, p])) if np.any(acc[:, p] >= 0) else float("nan")
                for p in range(acc.shape[1])]
        summary["pair_acceptance"] = pair
        summary["round_trips"] = trips.completed
        log("exchange acceptance per pair: " + " ".join(f"{a:.2f}" for a in pair)
            + f"; round trips {int(trips.completed.sum())}")
    out.write_summary(summary)
