"""A run file's results as tables (pandas DataFrames): the loader behind ``slmc-hpc report``,
and for notebooks, so that they need not re-read the HDF5 layout:

    from slmc_hpc.tables import load
    run = load("runs/example.h5")
    run.thermodynamics      # one row per temperature
    run.pairs, run.slots    # tempering: per neighbouring pair, per slot
    run.training            # one row per slot and training round
    run.couplings           # learned J_n per slot and shell, beside second-order perturbation theory

Conventions. Every per-temperature value uses all measured steps written so far
(``n_written``): thermalization is already discarded by the run, so there is no further
warm-up cut. Means carry the delete-one-bin jackknife error (for a mean this is the binned
standard error) and τ_int from emcee's integrated_time; the effective sample size is
n / τ_int. The bins: as many as give each bin 20 τ_int of the slowest series of the row,
between 8 and 32 (column ``bins``); shorter bins make the error read low
(analysis/error_bar_check.py measured that). A row is marked ``rough`` when its run is
shorter than 500 τ_int(F), or its bins shorter than 20 τ_int: τ_int and the errors of such
runs read low. Per-site values: F/N, E/N (E = Σ ε f + J_direct
Σ S·S, ε from μ), C/N; m is per site. See thermodynamics.py for χ, the Binder ratio and C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .config import Config, ConfigError, parse
from .ladder import barrier, suggested_replicas
from .lattice import Lattice
from .observables import structure_factor
from .output import FORMAT
from .perturbation import rkky_couplings
from .stats import MAX_BINS, independence_sampler, is_rough, n_bins, slowest, tau_int
from .tempering import RoundTrips
from .thermodynamics import binder_ratio, energy, jackknife, specific_heat, susceptibility



@dataclass
class RunTables:
    """The tables of one run file. ``partial``: the run has not written all its measured
    steps (still running, or stopped); the tables then cover what was written."""

    path: Path
    config: Config
    partial: bool
    measured: np.ndarray  # steps written per slot
    thermodynamics: pd.DataFrame
    pairs: pd.DataFrame  # per neighbouring pair of slots: exchange acceptance and rejection
    slots: pd.DataFrame  # per slot: up-moving fraction f, round trips of the replica started there
    # (f from /tempering/slot_of_replica, written as the run goes, so also for a partial run)
    training: pd.DataFrame
    structure_factors: dict  # T -> mean S(q) over the snapshots, shaped as the lattice
    lattice: Lattice
    n_parameters: int  # of the effective model (0 for the exact sampler)
    couplings: pd.DataFrame  # per slot and shell: J_learned (linear model, or nested SLMC's inner one), J_rkky
    accuracy: pd.DataFrame  # per slot: spread of F - E_eff and of β(ΔF - ΔE_eff) over the measured chain
    adaptation: pd.DataFrame = field(default_factory=pd.DataFrame)  # per round of a self-tuning ladder

    @property
    def barrier(self) -> float:
        """Λ ≈ Σ over pairs of the swap rejection rate: the global communication barrier of
        non-reversible tempering (Syed et al., JRSS-B 2022); NaN without exchanges."""
        return barrier(self.pairs["rejection"].to_numpy() if len(self.pairs) else [])

    @property
    def round_trip_rate(self) -> float:
        """Completed round trips (all replicas) per exchange round; NaN without exchanges."""
        rounds = self.slots.attrs.get("exchange_rounds", 0)
        return float(self.slots["round_trips"].sum() / rounds) if rounds else float("nan")

    @property
    def suggested_replicas(self) -> int | None:
        """About 2Λ replicas (at least 2) for alternating even/odd exchanges; None without Λ."""
        return suggested_replicas(self.barrier)


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise ConfigError(f"run file {str(path)!r} does not exist")
    try:
        # no file locking: a run still writing the file holds it open (HDF5 would refuse a reader)
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r} as an HDF5 file ({exc}); is it truncated or not a run file?") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ConfigError(f"{str(path)!r} is not an {FORMAT} run file")
    return f


def load(path: str | Path) -> RunTables:
    """Read and tabulate a run file. ConfigError (exit 2 from the CLI) for a missing, foreign
    or damaged file, or one with no measured step yet."""
    path = Path(path)
    f = _open(path)
    try:
        with f:
            return _tables(path, f)
    except (KeyError, ValueError, OSError, TypeError, IndexError) as exc:
        raise ConfigError(f"{str(path)!r} is damaged or incomplete ({type(exc).__name__}: {exc})") from None


def _tables(path: Path, f: h5py.File) -> RunTables:
    cfg = parse(f.attrs["config"], legacy=True)
    lattice = Lattice.from_kind(cfg.lattice.kind, cfg.lattice.L)
    temperatures = f["temperatures"][:]
    measured = f["measure/n_written"][:]
    if not measured.any():
        raise ConfigError(f"{str(path)!r} has no measured step yet (the run is still thermalizing, or stopped "
                          f"before measuring)")
    partial = bool(np.any(measured < cfg.run.measure))
    rows, maps = [], {}
    for r, T in enumerate(temperatures):
        row, sq = _thermodynamics_row(f, r, float(T), int(measured[r]), cfg, lattice)
        rows.append(row)
        if sq is not None:
            maps[float(T)] = sq
    pairs, slots = _tempering(f, temperatures, int(measured.min()))
    n_parameters = f["model/parameters"].shape[1] if "model/parameters" in f else 0
    return RunTables(path, cfg, partial, measured, pd.DataFrame(rows), pairs, slots, _training(f, temperatures),
                     maps, lattice, n_parameters, _couplings(f, cfg, lattice, temperatures),
                     _accuracy(f, temperatures, measured), _adaptation(f))


def _adaptation(f) -> pd.DataFrame:
    """Per round of a self-tuning ladder: the step it ended at, its barrier estimate Λ (sum of
    the intervals' barriers), the spread of its estimated rejections and its ladder; empty
    without one."""
    if "tempering/adaptation" not in f:
        return pd.DataFrame()
    g = f["tempering/adaptation"]
    done = g["step"][:] >= 0
    rejection = g["rejection"][:][done]
    return pd.DataFrame({"step": g["step"][:][done], "barrier": g["barrier"][:][done].sum(axis=1),
                         "rejection_min": rejection.min(axis=1), "rejection_max": rejection.max(axis=1),
                         "temperatures": [" ".join(f"{t:.4g}" for t in row) for row in g["temperatures"][:][done]]})


def model_errors(f, r: int, n: int, beta: float) -> tuple[np.ndarray, np.ndarray, str]:
    """For slot r's first n measured steps: F - E_eff of each configuration (whole lattice),
    and the exact test's log-ratio β[(ΔE_eff - ΔF)] with what it was taken over: every
    proposal (/measure/exact_log_ratio, files from 0.2 on), or else the accepted steps
    (leaving out those after an exchange round, whose predecessor was swapped in). Empty
    without a model."""
    F, E = f["measure/free_energy"][r, :n], f["measure/effective_energy"][r, :n]
    if not np.isfinite(E).any():
        return np.array([]), np.array([]), ""
    if "exact_log_ratio" in f["measure"]:
        ratio = f["measure/exact_log_ratio"][r, :n]
        return F - E, ratio[np.isfinite(ratio)], "every proposal"
    every = exchange_every(f)
    step = np.arange(1, n)  # the row each difference ends at
    keep = (f["measure/accepted"][r, 1:n] == 1) & ((step % every != 0) if every else True)
    return F - E, -beta * (np.diff(F) - np.diff(E))[keep], "accepted steps"


def _accuracy(f, temperatures, measured) -> pd.DataFrame:
    """Per slot: the spread (std) of F - E_eff over the measured configurations (per site), and
    of the exact test's log-ratio, whose spread sets the acceptance; with every proposal's
    ratio also the acceptance it implies, ⟨min(1, e^ratio)⟩ (the Metropolis average), and
    tau_floor, the τ_int (steps) of a chain whose proposals were independent at that spread
    (stats.independence_sampler): a reference for how far a longer inner path could still
    lower τ_int, not a strict bound."""
    rows = []
    N = int(f.attrs["N"])
    for r, T in enumerate(temperatures):
        offset, log_ratio, over = model_errors(f, r, int(measured[r]), 1.0 / T)
        if len(offset):
            spread = float(np.std(log_ratio)) if len(log_ratio) > 1 else np.nan
            every = over == "every proposal" and len(log_ratio) > 0  # accepted steps only: a biased spread
            rows.append({"T": float(T), "std_F_minus_E_per_site": float(np.std(offset) / N),
                         "std_log_ratio": spread, "log_ratio_over": over, "tests": len(log_ratio),
                         "implied_acceptance": (float(np.mean(np.minimum(1.0, np.exp(np.minimum(log_ratio, 0)))))
                                                if every else np.nan),
                         "tau_floor": independence_sampler(spread)[1] if every else np.nan})
    return pd.DataFrame(rows)


def _couplings(f, cfg: Config, lattice: Lattice, temperatures) -> pd.DataFrame:
    """The learned J_n against distance for each slot, beside the couplings of second-order
    perturbation theory in J at the run's t, μ, J_direct and the slot's β (perturbation.py;
    at the J of a typical run only their shape is comparable). ``model``: "linear" (a linear
    run's model), "inner linear" (nested SLMC's inner model), "transformer head" (J_n(β) =
    J_n + J'_n log(β/β_ref) of the head, which acts on the effective spins)."""
    if "model" not in f:
        return pd.DataFrame()
    attrs = f["model"].attrs
    learned = {}  # model -> (R, n_shells) J_n
    for model, key, names_key in (("linear", "parameters", "parameter_names"),
                                  ("inner linear", "inner_parameters", "inner_parameter_names")):
        if key in f["model"] and (model != "linear" or attrs.get("kind") == "linear"):
            names = [str(n) for n in attrs[names_key]]
            columns = [k for k, name in enumerate(names) if name[:1] == "J" and name[1:].isdigit()]
            learned[model] = f["model"][key][:, columns]
    if attrs.get("kind") == "transformer":
        names = [str(n) for n in attrs["parameter_names"]]
        flat = [k for k, name in enumerate(names) if name.startswith("couplings[")]
        width = len(flat) // 2  # couplings is (2, shells + orbits): values, then β-slopes
        shells = cfg.effective_model.shells
        x = np.log(1.0 / np.asarray(temperatures) / float(attrs["beta_ref"]))[:, None]
        values = f["model/parameters"][:, flat]
        learned["transformer head"] = values[:, :shells] + x * values[:, width:width + shells]
    m = cfg.model
    rows = []
    for r, T in enumerate(temperatures):
        for model, table in learned.items():
            rkky = rkky_couplings(lattice, table.shape[1], m.t, m.J, m.mu, 1.0 / T, m.J_direct)
            for n in range(table.shape[1]):
                rows.append({"T": float(T), "model": model, "shell": n + 1,
                             "distance": float(lattice.shell_distances[n]), "J_learned": float(table[r, n]),
                             "J_rkky": float(rkky[n])})
    return pd.DataFrame(rows)


def _thermodynamics_row(f, r: int, T: float, n: int, cfg: Config, lattice: Lattice) -> tuple[dict, np.ndarray | None]:
    N, beta = lattice.N, 1.0 / T
    m = f["measure"]
    row = {"T": T, "steps": n}
    if n == 0:
        return row, None
    F = m["free_energy"][r, :n] / N
    u = energy(m["fermion_energy"][r, :n], m["nn_correlation"][r, :n], cfg.model.J_direct, len(lattice.bonds))
    m_abs = np.linalg.norm(m["magnetization"][r, :n], axis=-1)
    series = {"F_per_site": F, "E_per_site": u / N, "filling": m["filling"][r, :n], "abs_m": m_abs,
              "m2": m_abs**2, "nn_SS": m["nn_correlation"][r, :n]}
    taus = {name: tau_int(x) for name, x in series.items()}
    tau_max = slowest(taus.values())
    bins = row["bins"] = n_bins(n, tau_max)
    for name, x in series.items():
        value, error = jackknife(np.mean, x, n_bins=bins)
        row.update({name: value, f"{name}_err": error, f"{name}_tau": taus[name]})
    tau_F = taus["F_per_site"]
    row["chi"], row["chi_err"] = jackknife(lambda x: susceptibility(x, beta, N), m_abs, n_bins=bins)
    row["binder_m"], row["binder_m_err"] = jackknife(binder_ratio, m_abs, n_bins=bins)
    if "fermion_energy_fluctuation" in m:  # files before 0.2 lack it
        c, err = jackknife(lambda a, b: specific_heat(a, b, beta), u, m["fermion_energy_fluctuation"][r, :n],
                           n_bins=bins)
        row["C_per_site"], row["C_per_site_err"] = c / N, err / N
    # the electron number's spread over configurations: ~0 where μ lies in a finite-size gap
    # between one-electron levels (a closed shell), of order 1 where levels lie within a few T
    # of μ, whose occupation no local effective model follows (analysis/BENCHMARKS.md, the Fermi level)
    row["electrons_sd"] = float(N * np.std(m["filling"][r, :n]))
    row["acceptance"] = float(np.nanmean(m["acceptance"][r, :n]))
    row["moved"] = float(np.mean(m["accepted"][r, :n]))
    row["ess_F"] = n / tau_F if np.isfinite(tau_F) and tau_F > 0 else float("nan")
    # wall time per step and per independent sample (τ_int(F) steps): only a finished run has them
    seconds = float(f["summary/seconds_per_step"][r]) if "summary/seconds_per_step" in f else float("nan")
    row["seconds_per_step"], row["cost_per_sample_s"] = seconds, seconds * tau_F
    row["rough"] = is_rough(n, tau_F, tau_max, bins)
    k = int(f["snapshots/n_written"][r])
    if k == 0:
        return row, None
    spins = f["snapshots/spins"][r, :k]
    sq = structure_factor(spins, lattice)  # (k, *shape)
    mean_sq = sq.mean(axis=0)
    peak = int(np.argmax(mean_sq))
    q = lattice.momenta()[peak]
    row["Sq_peak"] = float(mean_sq.flat[peak])
    row["q_peak"] = " ".join(f"{x:.3f}" for x in q / np.pi)  # in units of π
    star = _star(lattice, peak)
    # order parameter at the peak: |M|² = Σ_{q in the star} S(q)/N, the point-group images of q
    M = np.sqrt(sq.reshape(k, -1)[:, star].sum(axis=1) / N)
    if k >= 2:
        row["binder_q"], row["binder_q_err"] = jackknife(binder_ratio, M, n_bins=min(MAX_BINS, k))
    # real Gaussian components (3 per momentum of the star; ±q together are one complex 3-vector):
    # the disordered limit of the Binder ratio is (n + 2)/n
    row["binder_q_components"] = 3 * len(star)
    return row, mean_sq


def _star(lattice: Lattice, index: int) -> np.ndarray:
    """Indices of the momenta that the point group maps momentum ``index`` onto (q and -q
    included: ±q are one complex amplitude). Momentum k is 2π coords[k] / L, so the point
    group acts on momentum indices as Lattice.point_group's permutations act on sites."""
    return np.unique([g[index] for g in lattice.point_group()])


def _tempering(f, temperatures, measured: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    R = len(temperatures)
    history = exchange_rounds(f, measured)
    acc = f["tempering/accepted"][:len(history)]
    pairs = pd.DataFrame({
        "T_low": temperatures[:-1], "T_high": temperatures[1:],
        "attempts": [int(np.sum(acc[:, p] >= 0)) for p in range(R - 1)],
        "acceptance": [float(np.mean(acc[acc[:, p] >= 0, p])) if np.any(acc[:, p] >= 0) else np.nan
                       for p in range(R - 1)]})
    pairs["rejection"] = 1 - pairs["acceptance"]
    trips = replay_round_trips(history, R)
    slots = pd.DataFrame({"T": temperatures, "up_fraction": trips.up_fraction(), "round_trips": trips.completed})
    slots.attrs["exchange_rounds"] = len(history)
    return pairs, slots


COMPARED = ("acceptance", "moved", "F_per_site_tau", "seconds_per_step", "cost_per_sample_s", "F_per_site",
            "F_per_site_err", "abs_m", "abs_m_err", "C_per_site", "C_per_site_err", "rough")


def compare(paths) -> pd.DataFrame:
    """Several runs side by side, one row per run and temperature: acceptance, τ_int(F), wall
    seconds per step and per independent sample, and the main observables with errors.
    Compare costs only between runs timed on the same machine at the same time."""
    frames = []
    for path in paths:
        t = load(path).thermodynamics
        frames.append(t[["T"] + [c for c in COMPARED if c in t]].assign(run=Path(path).name))
    table = pd.concat(frames, ignore_index=True)
    return table[["T", "run"] + [c for c in table.columns if c not in ("T", "run")]].sort_values(
        ["T", "run"], kind="stable", ignore_index=True)


def exchange_every(f) -> int:
    """Measured steps between exchange rounds (0: none), as the file records it."""
    return int(f["tempering"].attrs.get("exchange_every", 0))


def exchange_rounds(f, measured: int) -> np.ndarray:
    """slot_of_replica after each exchange round done within the first ``measured`` steps and
    written (a file still being written, or stopped, can end before a due round: rows of -1)."""
    every = exchange_every(f)
    history = f["tempering/slot_of_replica"][: measured // every if every else 0]
    unwritten = np.flatnonzero((history < 0).any(axis=1))
    return history[: unwritten[0]] if len(unwritten) else history


def replay_round_trips(history: np.ndarray, n_replicas: int) -> RoundTrips:
    """RoundTrips after the exchange rounds ``history`` ([rounds, R] slot of each replica)."""
    trips = RoundTrips(n_replicas)
    for row in history:
        trips.update(np.asarray(row))
    return trips


def _training(f, temperatures) -> pd.DataFrame:
    if "training" not in f or "step" not in f["training"]:
        return pd.DataFrame()
    t = f["training"]
    rows = []
    for r, T in enumerate(temperatures):
        for k in range(t["step"].shape[1]):
            rows.append({"T": float(T), "round": k, **{name: t[name][r, k].item() for name in
                                                        ("step", "n_train", "train_loss", "validation_loss",
                                                         "acceptance", "middle_acceptance")}})
    return pd.DataFrame(rows)
