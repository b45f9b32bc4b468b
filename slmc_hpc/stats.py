"""Error bars for correlated Monte Carlo series, and the τ_int that an SLMC chain's model
accuracy allows (independence_sampler)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from emcee.autocorr import integrated_time
from scipy.special import ndtr


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


def independence_sampler(sigma: float, nodes: int = 80) -> tuple[float, float]:
    """Acceptance and τ_int (steps, τ = 1 + 2 Σ ρ as tau_int) of an observable uncorrelated
    with the weights, for an independence sampler whose exact test's log-ratio between two
    independent proposals has spread ``sigma`` (Gaussian log-weights).

    SLMC whose inner path has forgotten its start is such a sampler: proposals y from
    q ∝ exp(-β E_eff), accepted with min(1, w(y)/w(x)), w = exp(-β (F - E_eff)). With
    log w ~ N(0, s²) under q (s = sigma / √2; a Gaussian log w is also N(s², s²) under the
    target π ∝ q w), the chance to leave x with log w(x) = a is
        α(a) = P(Y ≥ a) + E[e^{Y - a}; Y < a] = 1 - Φ(a/s) + e^{s²/2 - a} Φ((a - s²)/s),
    Y ~ N(0, s²). The observable then keeps its value until the chain moves, so its
    autocorrelation at lag k is E_π[(1 - α)^k] and τ_int = 1 + 2 E_π[(1 - α)/α] = 2 E_π[1/α] - 1,
    the acceptance E_π[α]; both by Gauss-Hermite quadrature over a ~ N(s², s²). A reference
    value, not a strict bound: an observable correlated with w can have a longer τ_int (F
    through its least-squares residual, typically) or a shorter one, and proposals that are
    anti-correlated with the current state can do better than independent ones. The tuned
    SLMC chains measured sit near it (analysis/BENCHMARKS.md). Above σ ≈ 2.5 it grows fast
    (189 at σ = 3), set by rare long stays at high w."""
    if not np.isfinite(sigma) or sigma < 0:
        return float("nan"), float("nan")
    s = sigma / np.sqrt(2.0)
    if s == 0.0:
        return 1.0, 1.0
    x, weights = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x²/2)
    weights = weights / weights.sum()
    a = s * s + s * x
    alpha = 1.0 - ndtr(a / s) + np.exp(s * s / 2.0 - a) * ndtr((a - s * s) / s)
    return float(weights @ alpha), float(weights @ (2.0 / alpha) - 1.0)
