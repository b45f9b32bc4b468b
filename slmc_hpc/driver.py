"""The run loop for one process: every temperature slot is an independent chain, run one
after the other (MPI parallel tempering is a later layer around the same Replica).

Per slot: thermalize (SLMC: online training rounds of the effective model), then measure with the
model frozen, writing measurements, snapshots, the model and a summary to one HDF5 file."""

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


def replica_streams(seed: int, n: int) -> list[np.random.Generator]:
    """Independent generators per replica (SeedSequence.spawn, not seed + rank)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def run(cfg: Config, output: str | Path | None = None, overwrite: bool = False, log=print) -> Path:
    physics = build_physics(cfg)
    lattice = physics.lattice
    temperatures = cfg.temperatures.values
    rngs = replica_streams(cfg.run.seed, len(temperatures))
    beta_ref = geometric_mean_beta(temperatures)
    replicas = [Replica(cfg, physics, 1.0 / T, rng, beta_ref) for T, rng in zip(temperatures, rngs)]
    n_rounds = n_refits(cfg.run.thermalize, cfg.training.every) if replicas[0].model is not None else 0
    path = Path(output or cfg.run.output)
    out = RunOutput(path, cfg, lattice, temperatures, replicas[0].n_model_parameters, n_rounds,
                    overwrite=overwrite)
    log(f"slmc-hpc: {cfg.run.sampler} on {lattice.kind} L={lattice.L} (N={lattice.N}), "
        f"{len(temperatures)} temperature(s), {cfg.local_updates} local updates/step -> {path}")
    if replicas[0].model is not None:
        log(f"effective model: {cfg.effective_model.kind}, {replicas[0].model.n_parameters} parameters")
    summary = {k: [] for k in ("acceptance", "middle_acceptance", "moved", "free_energy_per_site",
                               "free_energy_per_site_error", "abs_magnetization", "abs_magnetization_error",
                               "tau_free_energy", "seconds_per_step")}
    try:
        for slot, (T, rep) in enumerate(zip(temperatures, replicas)):
            seconds_per_step, mid = _run_slot(cfg, slot, T, rep, out, log)
            F = out.file["measure/free_energy"][slot] / lattice.N
            m = np.linalg.norm(out.file["measure/magnetization"][slot], axis=-1)
            eF, em = estimate(F), estimate(m)
            acc = float(np.nanmean(out.file["measure/acceptance"][slot]))
            moved = float(np.mean(out.file["measure/accepted"][slot]))
            for k, v in zip(summary, (acc, mid, moved, eF.mean, eF.error, em.mean, em.error, eF.tau,
                                      seconds_per_step)):
                summary[k].append(v)
            log(f"T={T:<8.4g} acceptance {acc:.3f}  F/N = {eF.mean:.6f} ± {eF.error:.6f}  "
                f"|m| = {em.mean:.4f} ± {em.error:.4f}  tau_int(F) = {eF.tau:.1f} steps")
        out.write_summary(summary)
    finally:
        out.close()
    return path


def _run_slot(cfg: Config, slot: int, T: float, rep: Replica, out: RunOutput, log) -> tuple[float, float]:
    """Thermalize and measure one slot; returns the wall seconds per measured step and the
    middle-level acceptance while measuring (NaN unless nested SLMC)."""
    run = cfg.run
    label = f"T={T:.4g}"
    log(f"[slot {slot}] T = {T}: thermalizing {run.thermalize} steps")
    prog = Progress(f"{label} therm", run.thermalize, run.progress_every)
    n_acc = n_tests = 0
    for k in range(run.thermalize):
        info = rep.step()
        n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
        prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == run.thermalize)
    if rep.model is not None:
        out.write_model(slot, *rep.model.parameters(), getattr(getattr(rep.model, "net", None), "beta_ref", None))
        out.write_training(slot, rep.rounds)
    prog = Progress(f"{label} meas", run.measure, run.progress_every)
    records, start, snap = [], 0, 0
    n_acc = n_tests = 0
    mid_tests = mid_acc = 0
    t0 = time.perf_counter()
    for k in range(run.measure):
        info = rep.step()
        n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
        mid_acc, mid_tests = mid_acc + info.n_middle_accepted, mid_tests + info.n_middle_tests
        records.append(rep.record(info))
        if (k + 1) % run.snapshot_every == 0:
            out.write_snapshot(slot, snap, rep.state.spins, records[-1]["free_energy"], rep.steps_done)
            snap += 1
        if len(records) == WRITE_BLOCK or (k + 1) % run.snapshot_every == 0:
            out.write_measure(slot, start, records)
            start, records = start + len(records), []
        prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == run.measure)
    out.write_measure(slot, start, records)
    return (time.perf_counter() - t0) / run.measure, (mid_acc / mid_tests if mid_tests else float("nan"))
