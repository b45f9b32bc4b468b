"""Error bars for correlated Monte Carlo series."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from emcee.autocorr import integrated_time


MIN_SERIES = 32  # shorter series get no τ estimate (emcee returns 0 for a handful of points)
MAX_BINS, MIN_BINS = 32, 8
BIN_TAUS = 20  # a bin at least this many τ_int long (else the binned error reads low), as far as MIN_BINS allow
ROUGH_TAUS = 500  # runs shorter than this many τ_int(F) are marked rough (README lessons)


@dataclass(frozen=True)
class Estimate:
    mean: float
    error: float  # standard error of the mean from binning
    tau: float  # integrated autocorrelation time in steps (emcee), NaN if undetermined


def binned_error(x: np.ndarray, n_bins: int = 32) -> float:
    """Standard error of the mean of a correlated series from ``n_bins`` equal bins.
    Valid when each bin is much longer than the autocorrelation time."""
    x = np.asarray(x, dtype=np.float64)
    n_bins = min(n_bins, len(x))
    if n_bins < 2:
        return float("nan")
    size = len(x) // n_bins
    means = x[: size * n_bins].reshape(n_bins, size).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(n_bins))


def tau_int(x: np.ndarray) -> float:
    """Integrated autocorrelation time (steps) with emcee's automatic window; NaN if x is constant
    or shorter than MIN_SERIES. Reliable only for series much longer (≳ 50×) than τ itself."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < MIN_SERIES or np.ptp(x) == 0:
        return float("nan")
    # quiet=True makes emcee log a warning for short series instead of raising; the caller
    # judges the length, so keep the log quiet too.
    logger = logging.getLogger("emcee.autocorr")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return float(integrated_time(x, quiet=True)[0])
    finally:
        logger.setLevel(level)


def slowest(taus) -> float:
    """The longest of the τ_int that are known (finite); NaN if none is."""
    known = [t for t in taus if np.isfinite(t)]
    return max(known) if known else float("nan")


def n_bins(n: int, tau: float) -> int:
    """Bins for n steps of series whose longest τ_int is ``tau``: BIN_TAUS τ each, within
    [MIN_BINS, MAX_BINS]; MAX_BINS when τ is unknown."""
    if not np.isfinite(tau) or tau <= 0:
        return MAX_BINS
    return int(np.clip(n // (BIN_TAUS * tau), MIN_BINS, MAX_BINS))


def is_rough(n: int, tau_F: float, tau_max: float, bins: int) -> bool:
    """Whether n steps are too few to trust τ_int and the errors: fewer than ROUGH_TAUS
    τ_int(F), or bins shorter than BIN_TAUS τ_int of the slowest series (``tau_max``)."""
    return not (np.isfinite(tau_F) and n >= ROUGH_TAUS * tau_F and n >= bins * BIN_TAUS * tau_max)


def estimate(x: np.ndarray, bins: int | None = None) -> Estimate:
    """Mean, binned error and τ_int of a series; ``bins``: how many (default: n_bins of its
    own τ_int, so that each bin is BIN_TAUS τ long where the series allows)."""
    x = np.asarray(x, dtype=np.float64)
    tau = tau_int(x)
    return Estimate(float(x.mean()), binned_error(x, n_bins(len(x), tau) if bins is None else bins), tau)
