"""Error bars of correlated series (slmc_hpc/stats.py) against the closed form of an AR(1)
process, x_t = φ x_{t-1} + √(1-φ²) ε_t: unit variance, τ_int = (1 + φ)/(1 - φ), and the
standard error of the mean of n steps ≈ √(τ_int / n). Bins of BIN_TAUS τ_int (the default
of ``estimate``, as in the report) give it; 32 fixed bins of a few τ read low (the negative
control). And the end-of-run summary marks a run too short to trust. The independence
sampler's closed-form acceptance and τ_int against a simulated chain."""

import numpy as np
import pytest

from slmc_hpc.stats import (BIN_TAUS, MAX_BINS, MIN_BINS, binned_error, estimate, independence_sampler, is_rough,
                             n_bins, tau_int)


def ar1(rng, phi, n, size):
    eps = rng.standard_normal((size, n))
    x = np.empty((size, n))
    x[:, 0] = eps[:, 0]
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi * phi) * eps[:, t]
    return x


def test_error_with_the_report_bins_matches_the_closed_form():
    """τ_int = 199 over 8000 steps: n_bins gives its floor of 8 bins (5 τ each), 32 fixed
    bins would be 1.25 τ each. Averaged over 200 series; measured 0.90-0.94 and 0.78-0.79
    for two generator seeds."""
    phi, n = 0.99, 8000
    tau = (1 + phi) / (1 - phi)
    series = ar1(np.random.default_rng(7), phi, n, 200)
    exact = np.sqrt(tau / n)
    tau_aware = np.mean([estimate(x).error for x in series]) / exact
    fixed = np.mean([binned_error(x, 32) for x in series]) / exact
    assert n_bins(n, tau) == MIN_BINS
    assert 0.85 < tau_aware < 1.05, tau_aware
    assert fixed < tau_aware - 0.08, (fixed, tau_aware)  # the negative control: short bins read low


def test_bin_rule_and_rough_mark():
    assert n_bins(10**6, 10.0) == MAX_BINS and n_bins(1000, 50.0) == MIN_BINS and n_bins(100, float("nan")) == MAX_BINS
    assert n_bins(16000, 50.0) == 16000 // (BIN_TAUS * 50)
    assert not is_rough(10000, 10.0, 10.0, n_bins(10000, 10.0))
    assert is_rough(4000, 10.0, 10.0, n_bins(4000, 10.0))  # 400 τ_int(F): fewer than 500
    assert is_rough(10000, 10.0, 100.0, n_bins(10000, 100.0))  # 8 bins of 12.5 τ of the slowest series
    assert is_rough(10000, float("nan"), float("nan"), MAX_BINS)


def test_summary_marks_a_short_run_rough(tmp_path):
    from configs import small_config
    from slmc_hpc.driver import run

    lines = []
    run(small_config(run={"thermalize": 200, "measure": 300, "progress_every": None}),
        output=tmp_path / "short.h5", log=lines.append)
    line = next(x for x in lines if x.startswith("T=") and "tau_int(F)" in x)
    assert "(rough:" in line and "want 500)" in line


def test_independence_sampler_against_a_simulated_chain():
    """Proposals with Gaussian log-weights of spread σ/√2, accepted with min(1, w'/w); the
    observable is independent of the weights. 300000 steps: τ_int within 6% (its estimate's
    error is about 2%), acceptance within 4 binomial errors; the closed form at another σ
    (1.4 against 1.0, τ_int 5.3 against 2.9) is far off (the negative control). σ = 0: every
    proposal accepted, τ_int = 1."""
    sigma, n = 1.0, 300000
    rng = np.random.default_rng(5)
    log_w = sigma / np.sqrt(2) * rng.standard_normal(n)
    value = rng.standard_normal(n)
    log_u = np.log(rng.random(n))
    chain, at, moved = np.empty(n), 0, 0
    for k in range(n):
        if log_u[k] < log_w[k] - log_w[at]:
            at, moved = k, moved + 1
        chain[k] = value[at]
    acceptance, tau = independence_sampler(sigma)
    measured = tau_int(chain)
    assert abs(moved / n - acceptance) < 4 * np.sqrt(acceptance * (1 - acceptance) / n)
    assert abs(measured / tau - 1) < 0.06, (measured, tau)
    assert abs(measured / independence_sampler(1.4)[1] - 1) > 0.3
    assert independence_sampler(0.0) == (1.0, 1.0)
    assert np.isnan(independence_sampler(float("nan"))[1])
    taus = [independence_sampler(x)[1] for x in (0.2, 0.8, 1.6, 2.4)]
    assert np.all(np.diff(taus) > 0)
