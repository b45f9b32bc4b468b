"""Parallel-tempering decisions, without MPI: pairs, the swap rule against brute force, and
exactness of the exchange move on a toy whose log-weight depends on β non-linearly (like the
fermion free energy)."""

import numpy as np
import pytest
from scipy import stats

from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import random_spins
from slmc_hpc.tempering import RoundTrips, exchange, geometric_temperatures, pairs_for_round, swap_log_ratio


def test_pairs_alternate_between_even_and_odd():
    assert pairs_for_round(5, 0) == [(0, 1), (2, 3)]
    assert pairs_for_round(5, 1) == [(1, 2), (3, 4)]
    assert pairs_for_round(1, 0) == [] and pairs_for_round(2, 1) == []


def test_geometric_temperatures():
    T = geometric_temperatures(0.02, 0.16, 4)
    assert np.allclose(T, [0.02, 0.04, 0.08, 0.16]) and np.allclose(T[1:] / T[:-1], 2.0)


def test_swap_ratio_from_cached_eigenvalues_equals_brute_force(rng):
    """log W at the other β from each replica's cached eigenvalues equals diagonalizing both
    configurations at both β; the naive Δβ·ΔE formula does not (the fermion F depends on β)."""
    phys = DoubleExchange(Lattice.from_kind("square", 3), J=4.0, mu=-1.0, J_direct=0.1)
    for _ in range(5):
        spins = random_spins(9, rng, size=(2,))
        betas = np.sort(rng.uniform(1.0, 20.0, size=2))
        eig = [phys.eigenvalues(s) for s in spins]
        ecl = [phys.classical_energy(s) for s in spins]
        log_w = np.array([[phys.log_weight(eig[i], ecl[i], b) for b in betas] for i in range(2)])
        brute = sum(-b * phys.free_energy_of(spins[i], b) for i, b in ((0, betas[1]), (1, betas[0]))) - sum(
            -b * phys.free_energy_of(spins[i], b) for i, b in ((0, betas[0]), (1, betas[1])))
        assert swap_log_ratio(log_w, 0, 1, 0, 1) == pytest.approx(brute, abs=1e-9)
        energy = [phys.free_energy(eig[i], ecl[i], betas[i]) for i in range(2)]
        naive = (betas[0] - betas[1]) * (energy[0] - energy[1])
        assert abs(naive - brute) > 1e-3


# Toy replicas: x in {0..K-1}; log W_β(x) = -β E(x) + β² G(x) is not linear in β.
E = np.array([0.0, 0.7, 1.1, 2.0, 0.4])
G = np.array([0.0, 0.3, -0.2, 0.5, 0.1])
BETAS = np.array([0.5, 1.0, 1.6, 2.5])


def log_w_toy(x, beta):
    return -beta * E[x] + beta**2 * G[x]


def run_toy(swap_rule, n_rounds=60000, seed=3, thin=10):
    """Each round: every replica does one Metropolis move at its slot's β, then one exchange
    round. Returns the histogram of x per slot, recorded every ``thin`` rounds (far beyond the
    few-round correlation time of this toy, so the recorded samples are nearly independent)."""
    rng = np.random.default_rng(seed)
    R, K = len(BETAS), len(E)
    x = rng.integers(K, size=R)
    slot = np.arange(R)
    hist = np.zeros((R, K), dtype=np.int64)
    for r in range(n_rounds):
        proposal = rng.integers(K, size=R)
        b = BETAS[slot]
        accept = np.log(rng.random(R)) < log_w_toy(proposal, b) - log_w_toy(x, b)
        x = np.where(accept, proposal, x)
        slot = swap_rule(x, slot, r, rng)
        if r % thin == 0:
            hist[slot, x] += 1
    return hist


def correct_rule(x, slot, r, rng):
    log_w = log_w_toy(x[:, None], BETAS[None, :])
    return exchange(log_w, slot, r, rng)[0]


def naive_rule(x, slot, r, rng):
    """Wrong on purpose: log w_β(x) = -β E(x), the Δβ·ΔE rule that forgets β-dependence."""
    return exchange(-BETAS[None, :] * E[x][:, None], slot, r, rng)[0]


def slot_p_values(hist):
    """χ² p-value per slot of the recorded x against exp(log W_β)."""
    out = []
    for s, beta in enumerate(BETAS):
        p = np.exp(log_w_toy(np.arange(len(E)), beta))
        p /= p.sum()
        out.append(stats.chisquare(hist[s], p * hist[s].sum()).pvalue)
    return np.array(out)


def test_exchange_keeps_every_slot_exact():
    """Each slot's histogram matches exp(log W_β) (false alarm about 1e-3 per slot)."""
    assert np.all(slot_p_values(run_toy(correct_rule)) > 1e-3)


def test_naive_swap_rule_is_caught():
    assert np.any(slot_p_values(run_toy(naive_rule)) < 1e-3)


def test_exchange_reports_tried_pairs():
    rng = np.random.default_rng(0)
    log_w = np.zeros((4, 4))  # all swaps have r = 1
    slots, accepted = exchange(log_w, np.arange(4), 1, rng)
    assert list(accepted) == [-1, 1, -1] and list(slots) == [0, 2, 1, 3]


def test_round_trips_and_up_fraction():
    trips = RoundTrips(3)
    # replica 0 goes 0 -> 1 -> 2 -> 1 -> 0 (one round trip); the others mirror it
    for s0 in (0, 1, 2, 1, 0):
        others = [s for s in range(3) if s != s0]
        trips.update(np.array([s0] + others))
    assert trips.completed[0] == 1
    f = trips.up_fraction()
    assert f[0] == 1.0  # at the bottom every labelled replica is an up-mover
    assert f[2] == 0.0  # at the top every labelled replica is a down-mover
