"""The temperature ladder that tunes itself ([temperatures] adapt = "barrier"): pure decisions
on numbers the run loop gathers, no MPI and no physics.

Non-reversible tempering (alternating even/odd pairs) is limited by the global communication
barrier Λ = Σ_s r_s, the sum of the swap rejection rates r_s of neighbouring slots (Syed,
Bouchard-Côté, Deligiannidis, Doucet, JRSS-B 84, 321 (2022)): its round-trip rate is about
1 / (2 + 2Λ) per exchange round when the r_s are equal, and a ladder of about 2Λ replicas is
the cheapest that still communicates. For close temperatures r(β, β') ≈ |Λ(β) - Λ(β')|, so a
ladder whose cumulative barrier Λ(β_k) is equally spaced has equal rejections: that is the
ladder chosen here, with the two ends kept.

The rejection is estimated without swapping (while exchanges are off, during thermalization).
A configuration x of slot s knows log W at every β from its cached eigenvalues, and the swap
of x (slot s) with y (slot s+1) is accepted with min(1, exp(u(x) + d(y))), where

    u(x) = log W_{β_{s+1}}(x) - log W_{β_s}(x)     (slot s's "up" difference)
    d(y) = log W_{β_s}(y) - log W_{β_{s+1}}(y)     (slot s+1's "down" difference)

(tempering.py's log r with the two log weights regrouped). The expected acceptance is the mean
over independent pairs, here over all pairs of the two slots' recorded differences.

A rejection cannot exceed 1, so between distant temperatures it saturates and no longer
measures the barrier between them (with too few replicas for the problem most pairs sit near 1
and equalizing them would move nothing where it is needed). There the barrier of the interval
comes from the local barrier λ(β) = E|U(x₁) - U(x₂)|/2 over independent x₁, x₂ of one slot, with
U = -∂ log W_β/∂β the energy (Syed et al., eq. for λ; Λ = ∫ λ dβ), which each slot estimates
from its own configurations, integrated over the interval as a power law in β between the two
ends. Up to SATURATION the rejection itself is used, made additive by undoing its saturation for
a Gaussian log ratio (``unsaturated``): it is what is to be equalized, and for close
temperatures r = ΔΛ + O(Δβ³).

Slot 0 is the lowest temperature (largest β); temperatures ascend with the slot.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.special import ndtri

ADAPT_ROUNDS = 4  # rounds of doubling length in the first half of thermalization
MIN_ROUND_STEPS = 10  # a shorter first round leaves out rounds (too few samples to estimate with)
MIN_REJECTION = 1e-6  # floor on an estimate, so that the cumulative barrier rises strictly
# above this estimated rejection a pair's barrier may come from the local barrier λ. At 0.5 the λ of
# the ferromagnet's coldest slots (T = 0.01 ... 0.03, L = 8) read 6-13 per interval where the
# rejection said 0.5-0.9, in one round of four, and the ladder collapsed to the cold end: λ from
# a few hundred correlated steps is the less reliable of the two wherever the rejection still
# tells pairs apart
SATURATION = 0.99
REPLICA_WARN_FACTOR = 2.0  # warn when the run has more than this factor fewer or more replicas than suggested


def adaptation_ends(thermalize: int, n_replicas: int) -> list[int]:
    """Thermalization steps after which the ladder moves: rounds of doubling length filling
    the first half of thermalization (the second half trains the models and tunes the path at
    the final ladder), as many as ADAPT_ROUNDS with a first round of at least MIN_ROUND_STEPS
    steps; none with one replica. (Two replicas keep their ends, but the rounds still estimate
    Λ and the replica advice.)"""
    half = thermalize // 2
    if n_replicas < 2:
        return []
    for n in range(ADAPT_ROUNDS, 0, -1):
        first = half // (2**n - 1)
        if first >= MIN_ROUND_STEPS:
            return [round(half * (2 ** (k + 1) - 1) / (2**n - 1)) for k in range(n)]
    return []


def recorded_in_round(step: int, ends: list[int]) -> bool:
    """Whether 0-based thermalization step ``step`` is in the second half of a ladder round
    (rounds end after the steps ``ends``): a chain just moved to a new β first settles there,
    and its samples from before would bias the estimate toward the old ladder."""
    start = 0
    for end in ends:
        if step < end:
            return step >= (start + end) // 2
        start = end
    return False


def swap_acceptance(up_lower: np.ndarray, down_upper: np.ndarray, chunk: int = 512) -> float:
    """Expected swap acceptance of slots s and s+1: the mean of min(1, exp(u_i + d_j)) over every
    pair of slot s's up differences ``up_lower`` (u_i) and slot s+1's down differences
    ``down_upper`` (d_j), in nats (see the module docstring)."""
    u, d = np.asarray(up_lower, dtype=np.float64), np.asarray(down_upper, dtype=np.float64)
    if not len(u) or not len(d):
        raise ValueError("the swap acceptance needs samples of both slots")
    total = 0.0
    for start in range(0, len(u), chunk):
        total += np.exp(np.minimum(0.0, u[start:start + chunk, None] + d[None, :])).sum()
    return float(total / (len(u) * len(d)))


def estimated_rejections(up: list, down: list) -> np.ndarray:
    """(R - 1,) swap rejection rates of the neighbouring pairs, from each slot's recorded
    up differences ``up[s]`` and down differences ``down[s]`` (the top slot has no up, the
    bottom no down: those entries are unused)."""
    return np.array([1.0 - swap_acceptance(up[s], down[s + 1]) for s in range(len(up) - 1)])


def local_barrier(energies, detrend: bool = False) -> float:
    """λ = E|U₁ - U₂| / 2 over pairs of distinct samples of one slot's energy U (whole lattice,
    U = -∂ log W_β/∂β): half the mean absolute difference, from the sorted samples in O(n log n).
    ``detrend``: first subtract the least-squares line through U against its index, for a chain
    still settling (in a ferromagnet at low T the energy was still falling during the rounds,
    and the drift read as a spread ten times the equilibrium one)."""
    u = np.asarray(energies, dtype=np.float64)
    n = len(u)
    if n < 2:
        raise ValueError("the local barrier needs at least two samples")
    if detrend and n > 2:
        t = np.arange(n) - (n - 1) / 2
        u = u - np.dot(t, u) / np.dot(t, t) * t
    u = np.sort(u)
    # Σ_{i<j} (u_j - u_i) = Σ_k u_k (2k - n + 1) for sorted u; the mean over ordered pairs i ≠ j
    # is twice that over n(n - 1), and λ is half of it
    return float(np.dot(u, 2 * np.arange(n) - n + 1) / (n * (n - 1)))


def interval_barrier(beta_a: float, beta_b: float, lambda_a: float, lambda_b: float) -> float:
    """∫ λ dβ between β_a and β_b (either order) with λ a power law in β through the two ends
    (exact for λ ∝ β^p; the linear trapezoid where either λ is 0)."""
    lo, hi = sorted([(beta_a, lambda_a), (beta_b, lambda_b)])
    (b0, l0), (b1, l1) = lo, hi
    if l0 <= 0 or l1 <= 0:
        return 0.5 * (l0 + l1) * (b1 - b0)
    ratio = b1 / b0
    p = math.log(l1 / l0) / math.log(ratio)
    if abs(p + 1) < 1e-9:
        return l0 * b0 * math.log(ratio)
    return l0 * b0 * (ratio ** (p + 1) - 1) / (p + 1)


def unsaturated(rejection: float) -> float:
    """The barrier of an interval from its swap rejection r, undoing the saturation of r at 1
    for a Gaussian log ratio: ΔΛ = √(2/π) Φ⁻¹((1 + r)/2). For a Gaussian log r of variance σ²
    (mean -σ²/2, as detailed balance makes it) the rejection is 1 - 2Φ(-σ/2), and σ grows
    linearly with Δβ where r flattens; ΔΛ = r + O(r³) for small r. Equal ΔΛ means equal r, so
    the transform changes only how the cumulative barrier is interpolated between points."""
    r = min(max(float(rejection), 0.0), 1.0 - 1e-12)
    return math.sqrt(2 / math.pi) * float(ndtri(0.5 * (1.0 + r)))


def barrier_increments(temperatures, rejections, local_barriers) -> np.ndarray:
    """(R - 1,) barrier of each neighbouring interval: its estimated swap rejection made
    additive (unsaturated), or where the rejection is above SATURATION the larger of that and
    the integral of the slots' local barriers."""
    b = 1.0 / np.asarray(temperatures, dtype=np.float64)
    r = np.asarray(rejections, dtype=np.float64)
    lam = np.asarray(local_barriers, dtype=np.float64)
    return np.array([unsaturated(r[s]) if r[s] <= SATURATION
                     else max(unsaturated(r[s]), interval_barrier(b[s], b[s + 1], lam[s], lam[s + 1]))
                     for s in range(len(r))])


def barrier(rejections) -> float:
    """Λ ≈ Σ_s r_s, the global communication barrier (NaN without pairs or with a NaN rate)."""
    r = np.asarray(rejections, dtype=np.float64)
    return float(r.sum()) if len(r) and np.all(np.isfinite(r)) else float("nan")


def suggested_replicas(lam: float) -> int | None:
    """About 2Λ replicas (at least 2) for alternating even/odd exchanges; None without Λ."""
    return None if not math.isfinite(lam) else max(2, math.ceil(2 * lam))


def replica_warning(n_replicas: int, lam: float) -> str | None:
    """A warning when the run has far fewer or far more replicas than about 2Λ, else None."""
    want = suggested_replicas(lam)
    if want is None or want / REPLICA_WARN_FACTOR <= n_replicas <= want * REPLICA_WARN_FACTOR:
        return None
    if n_replicas < want:
        return (f"{n_replicas} replicas for a communication barrier Λ ≈ {lam:.2f}: the swaps between neighbours "
                f"are mostly rejected and replicas rarely cross the ladder; about {want} are suggested")
    return (f"{n_replicas} replicas for a communication barrier Λ ≈ {lam:.2f}: about {want} would cross the "
            f"ladder as fast; the rest cost CPU time for little")


def equalized_temperatures(temperatures, increments) -> np.ndarray:
    """The ladder (ascending temperatures, the two ends kept) whose cumulative barrier
    Λ(β_k) = Σ_{s<k} ΔΛ_s is equally spaced, from each interval's barrier ``increments``
    (barrier_increments; the rejection rates where none saturates): β as a function of Λ
    interpolated through the current ladder's points by a monotone cubic (PCHIP,
    Fritsch-Carlson), evaluated at Λ_total k / (R - 1). Monotone, so the new temperatures
    ascend strictly."""
    t = np.asarray(temperatures, dtype=np.float64)
    r = np.maximum(np.asarray(increments, dtype=np.float64), MIN_REJECTION)
    if len(t) < 3:
        return t.copy()
    if len(r) != len(t) - 1 or not np.all(np.isfinite(r)):
        raise ValueError(f"need {len(t) - 1} finite barrier increments for {len(t)} temperatures, got {r}")
    cumulative = np.concatenate([[0.0], np.cumsum(r)])
    beta_of_barrier = PchipInterpolator(cumulative, 1.0 / t)
    betas = beta_of_barrier(cumulative[-1] * np.arange(len(t)) / (len(t) - 1))
    new = 1.0 / betas
    new[0], new[-1] = t[0], t[-1]  # exactly, not up to round-off
    return new
