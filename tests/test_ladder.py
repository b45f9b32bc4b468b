"""The self-tuning ladder's decisions (slmc_hpc/ladder.py) on a family of targets whose swap
rejection is known in closed form.

Toy family: π_β(x) ∝ exp(-(1 + β) x² / 2) on the real line, so log W_β(x) = -(1 + β) x²/2 up
to a β-dependent constant (which cancels in a swap). The swap of x (at β) with y (at β' < β) is
accepted with min(1, exp(k (x² - y²))), k = (β - β')/2; with σ_β² = 1/(1 + β):

    a(β, β') = E_y[ erfc(|y| / (√2 σ_β)) + exp(-k y²) (σ_β'/σ_β) erf(|y| / (√2 σ_β')) ],

one quadrature over y ~ N(0, σ_β'²) (the inner expectation over x is done in closed form: the
Gaussian times exp(k x²) is a Gaussian of variance σ_β'²). Its local barrier is
λ(β) = E|V(x₁) - V(x₂)| / 2 with V = x²/2 (Syed et al. 2022), = 1 / (π (1 + β)), so
Λ(β_a, β_b) = ln((1 + β_b)/(1 + β_a)) / π exactly, and the ladder of equal rejection is
geometric in 1 + β: not the geometric ladder in T that a run starts from.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special

from slmc_hpc.ladder import (adaptation_ends, barrier, barrier_increments, equalized_temperatures, estimated_rejections,
                             interval_barrier, local_barrier, recorded_in_round, replica_warning, suggested_replicas,
                             swap_acceptance, unsaturated)
from slmc_hpc.tempering import geometric_temperatures


def exact_acceptance(beta: float, beta_next: float) -> float:
    """a(β, β') of the toy family by quadrature of the closed-form inner expectation."""
    sx, sy = (1 + beta) ** -0.5, (1 + beta_next) ** -0.5
    k = (beta - beta_next) / 2

    def integrand(y):
        inner = (special.erfc(y / (sx * math.sqrt(2)))
                 + math.exp(-k * y * y) * (sy / sx) * special.erf(y / (sy * math.sqrt(2))))
        return inner * 2 * math.exp(-y * y / (2 * sy * sy)) / (sy * math.sqrt(2 * math.pi))
    return integrate.quad(integrand, 0, np.inf, epsabs=1e-12, epsrel=1e-10)[0]


def exact_rejections(temperatures) -> np.ndarray:
    b = 1 / np.asarray(temperatures)
    return np.array([1 - exact_acceptance(b[s], b[s + 1]) for s in range(len(b) - 1)])


def exact_barrier(t_min: float, t_max: float) -> float:
    return math.log((1 + 1 / t_min) / (1 + 1 / t_max)) / math.pi


def toy_differences(temperatures, rng, n, dim=1):
    """Each slot's up and down differences of log W for n independent draws at its β, and their
    energies U = |x|²/2 (= -∂ log W_β/∂β up to a constant); in ``dim`` dimensions (the toy
    family's product), where U = χ²_dim / (2 (1 + β))."""
    b = 1 / np.asarray(temperatures)
    u = [rng.chisquare(dim, n) / (2 * (1 + beta)) for beta in b]
    up = [-(b[s + 1] - b[s]) * u[s] if s + 1 < len(b) else None for s in range(len(b))]
    down = [-(b[s - 1] - b[s]) * u[s] if s > 0 else None for s in range(len(b))]
    return up, down, u


def adapt_toy(ladder, rng, rounds, n, dim=1, raw=False):
    """Rounds of the self-tuning ladder on the toy family (independent draws at each β);
    ``raw``: equalize the estimated rejections themselves (the negative control)."""
    for _ in range(rounds):
        up, down, u = toy_differences(ladder, rng, n, dim)
        rejections = estimated_rejections(up, down)
        increments = rejections if raw else barrier_increments(ladder, rejections, [local_barrier(x) for x in u])
        ladder = equalized_temperatures(ladder, increments)
    return ladder, rejections


def test_closed_form_of_the_toy_family():
    """The quadrature against a brute-force Monte Carlo of the swap, and the barrier against
    Σ r over a fine ladder (r ≈ |ΔΛ| + O(Δβ³))."""
    rng = np.random.default_rng(3)
    beta, beta_next = 4.0, 2.5
    x = rng.normal(0, (1 + beta) ** -0.5, 400000)
    y = rng.normal(0, (1 + beta_next) ** -0.5, 400000)
    mc = np.minimum(1, np.exp((beta - beta_next) * (x**2 - y**2) / 2))
    assert exact_acceptance(beta, beta_next) == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(len(mc)))
    fine = geometric_temperatures(0.05, 5.0, 200)
    assert exact_rejections(fine).sum() == pytest.approx(exact_barrier(0.05, 5.0), rel=2e-3)


def test_the_estimate_without_swapping_agrees_with_the_exact_acceptance():
    """All-pairs estimate from 3000 independent draws per slot, for close and for distant
    temperatures: within 4 standard errors of the quadrature (a false alarm about once in 10^4
    per pair). The error is that of a two-sample U-statistic, from its projections:
    se² = var_i(mean_j a_ij)/n + var_j(mean_i a_ij)/m."""
    rng = np.random.default_rng(5)
    temperatures = np.array([0.05, 0.08, 0.3, 2.0])
    up, down, _ = toy_differences(temperatures, rng, 3000)
    estimate = estimated_rejections(up, down)
    exact = exact_rejections(temperatures)
    for s in range(len(exact)):
        a = np.exp(np.minimum(0.0, up[s][:, None] + down[s + 1][None, :]))
        se = math.sqrt(a.mean(axis=1).var() / a.shape[0] + a.mean(axis=0).var() / a.shape[1])
        assert 1 - a.mean() == pytest.approx(estimate[s], abs=1e-12)
        assert se < 0.01 and abs(estimate[s] - exact[s]) < 4 * se, (s, estimate[s], exact[s], se)
    assert 0.05 < estimate.min() and estimate.max() < 0.8  # a test of something: neither 0 nor 1


def test_the_adapted_ladder_converges_to_equal_rejection_and_the_exact_barrier():
    """From the geometric ladder in T (whose exact rejections run from 0.19 down to 0.05), four
    rounds of 4000 draws per slot reach a ladder whose exact rejections are all within ±0.015 of
    their mean (the estimates' noise, ~0.004 per pair, moves the points a little each round),
    with the ends kept; Λ from the estimates and Σ r from the quadrature agree with the exact
    Λ = ln((1 + β_max)/(1 + β_min))/π within 4% and 2% (finite spacing: Σ r < Λ by ~1%)."""
    rng = np.random.default_rng(7)
    t_min, t_max, R = 0.05, 5.0, 8
    ladder = geometric_temperatures(t_min, t_max, R)
    start = exact_rejections(ladder)
    assert start.max() - start.mean() > 0.05  # negative control: the starting ladder fails the test
    ladder, estimate = adapt_toy(ladder, rng, 4, 4000)
    assert ladder[0] == t_min and ladder[-1] == t_max and np.all(np.diff(ladder) > 0)
    final = exact_rejections(ladder)
    assert np.max(np.abs(final - final.mean())) < 0.015, final
    lam = exact_barrier(t_min, t_max)
    assert barrier(estimate) == pytest.approx(lam, rel=0.04)
    assert final.sum() == pytest.approx(lam, rel=0.02)
    # the optimum is geometric in 1 + β, not in T: the ladder moved there
    target = 1 / (np.geomspace(1 + 1 / t_min, 1 + 1 / t_max, R) - 1)
    np.testing.assert_allclose(ladder, target, rtol=0.08)
    assert np.max(np.abs(geometric_temperatures(t_min, t_max, R) / target - 1)) > 0.3


def test_equalizing_keeps_a_ladder_of_equal_rejection_and_the_ends():
    t = np.array([0.1, 0.2, 0.4, 0.7, 1.0])
    np.testing.assert_allclose(equalized_temperatures(t, [0.2] * 4), t, rtol=1e-12)
    moved = equalized_temperatures(t, [0.5, 0.1, 0.1, 0.1])  # the hard pair at the bottom gets more replicas
    assert moved[0] == 0.1 and moved[-1] == 1.0 and np.all(np.diff(moved) > 0) and moved[1] < 0.2
    assert np.all(np.diff(equalized_temperatures(t, [0.0, 0.0, 0.3, 0.0])) > 0)  # zero estimates: still ascending
    np.testing.assert_array_equal(equalized_temperatures([0.1, 0.2], [0.9]), [0.1, 0.2])
    with pytest.raises(ValueError, match="finite barrier increments"):
        equalized_temperatures(t, [0.1, np.nan, 0.1, 0.1])


def test_adaptation_rounds_double_and_fill_the_first_half():
    ends = adaptation_ends(4000, 8)
    assert ends == [133, 400, 933, 2000]
    lengths = np.diff([0] + ends)
    assert np.all(lengths[1:] >= 2 * lengths[:-1] - 1)
    assert adaptation_ends(60, 8) == [10, 30]  # short thermalization: fewer rounds
    assert adaptation_ends(15, 8) == [] and adaptation_ends(4000, 1) == []
    assert adaptation_ends(4000, 2) == ends  # two: the ends stay, but Λ is estimated


def test_replica_count_advice():
    assert suggested_replicas(3.2) == 7 and suggested_replicas(0.1) == 2 and suggested_replicas(float("nan")) is None
    assert replica_warning(7, 3.2) is None and replica_warning(4, 3.2) is None
    assert "about 7 are suggested" in replica_warning(3, 3.2)
    assert "cost CPU time" in replica_warning(16, 3.2)
    assert swap_acceptance([0.0], [-np.log(2)]) == pytest.approx(0.5)


def test_only_the_second_half_of_each_round_is_recorded():
    ends = [10, 30, 70]
    recorded = [k for k in range(100) if recorded_in_round(k, ends)]
    assert recorded == list(range(5, 10)) + list(range(20, 30)) + list(range(50, 70))


def test_local_barrier_and_its_integral():
    """λ(β) = E|U₁ - U₂|/2 of the toy family is 1/(π(1 + β)) in one dimension (|Z₁² - Z₂²| is a
    product of two independent N(0, 2) magnitudes): the estimate from 200000 draws within 1%;
    the power-law integral is exact for a power law, and Λ over the whole ladder from the
    slots' λ within 3% of ln((1 + β_max)/(1 + β_min))/π on a geometric ladder of 8."""
    rng = np.random.default_rng(11)
    beta = 3.0
    u = rng.chisquare(1, 200000) / (2 * (1 + beta))
    assert local_barrier(u) == pytest.approx(1 / (math.pi * (1 + beta)), rel=0.01)
    assert local_barrier([1.0, 2.0, 4.0]) == pytest.approx((1 + 3 + 2) / 3 / 2)
    drift = u + np.linspace(5, 0, len(u))  # a chain still settling: the drift is not spread
    assert local_barrier(drift) > 5 * local_barrier(u)
    assert local_barrier(drift, detrend=True) == pytest.approx(local_barrier(u), rel=0.01)
    assert interval_barrier(2.0, 8.0, 3 / 2.0, 3 / 8.0) == pytest.approx(3 * math.log(4))  # λ = 3/β
    assert interval_barrier(8.0, 2.0, 64.0, 4.0) == pytest.approx((8**3 - 2**3) / 3)  # λ = β², either order
    ladder = geometric_temperatures(0.05, 5.0, 8)
    b = 1 / ladder
    lam = [1 / (math.pi * (1 + x)) for x in b]
    total = sum(interval_barrier(b[s], b[s + 1], lam[s], lam[s + 1]) for s in range(7))
    assert total == pytest.approx(exact_barrier(0.05, 5.0), rel=0.03)


def test_with_too_few_replicas_the_ladder_is_still_placed():
    """200 dimensions, Λ ≈ 16 between T = 0.05 and 5 on 5 replicas: every swap rejection is
    near 1, so equalizing the raw rejections leaves the geometric ladder in T where it is (the
    negative control). Unsaturated (and, above 0.99, from the local barrier) the ladder moves to
    equal steps of Λ, which for this family (λ ∝ 1/(1 + β) in any dimension) is geometric in
    1 + β: within 25% (over 20 seeds: median 8%, worst 18%; the raw control was off by 115% or
    more in every seed)."""
    rng = np.random.default_rng(13)
    start = geometric_temperatures(0.05, 5.0, 5)
    target = 1 / (np.geomspace(1 + 1 / 0.05, 1 + 1 / 5.0, 5) - 1)
    stuck, rejections = adapt_toy(start, rng, 3, 2000, dim=200, raw=True)
    assert rejections.min() > 0.95
    assert np.max(np.abs(stuck / target - 1)) > 0.3
    moved, _ = adapt_toy(start, rng, 3, 2000, dim=200)
    np.testing.assert_allclose(moved, target, rtol=0.25)


def test_unsaturating_a_rejection_is_exact_for_a_gaussian_log_ratio():
    """log r ~ N(-σ²/2, σ²): the rejection 1 - E min(1, r) = 1 - 2Φ(-σ/2) (by quadrature here),
    and its unsaturated barrier √(2/π) Φ⁻¹((1 + r)/2) is σ/√(2π), linear in σ while r flattens
    toward 1; for small r it is r."""
    for sigma in (0.1, 1.0, 3.0, 6.0):
        acceptance = integrate.quad(lambda x: min(1.0, math.exp(x)) * math.exp(-(x + sigma**2 / 2) ** 2 / (2 * sigma**2))
                                    / (sigma * math.sqrt(2 * math.pi)), -sigma**2 / 2 - 12 * sigma,
                                    -sigma**2 / 2 + 12 * sigma, points=[0.0], limit=200)[0]
        assert unsaturated(1 - acceptance) == pytest.approx(sigma / math.sqrt(2 * math.pi), rel=1e-6)
    assert unsaturated(0.01) == pytest.approx(0.01, rel=1e-4) and unsaturated(0.0) == 0.0
