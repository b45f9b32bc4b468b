"""Error bars for correlated Monte Carlo series."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from emcee.autocorr import integrated_time


MIN_SERIES = 32  # shorter series get no τ estimate (emcee returns 0 for a handful of points)


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


def estimate(x: np.ndarray, n_bins: int = 32) -> Estimate:
    x = np.asarray(x, dtype=np.float64)
    return Estimate(float(x.mean()), binned_error(x, n_bins), tau_int(x))
