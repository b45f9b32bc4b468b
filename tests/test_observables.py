import numpy as np

from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import abs_magnetization, magnetization, nn_correlation, random_spins, structure_factor


def test_structure_factor_sum_rule_and_direct_sum(rng):
    lat = Lattice.from_kind("square", 5)
    spins = random_spins(lat.N, rng)
    sq = structure_factor(spins, lat).ravel()
    assert np.isclose(sq.sum(), lat.N)  # Parseval with unit spins
    assert np.isclose(sq[0], lat.N * abs_magnetization(spins) ** 2)
    q = lat.momenta()[7]
    amp = (spins * np.exp(-1j * lat.coords @ q)[:, None]).sum(axis=0)
    assert np.isclose(sq[7], (np.abs(amp) ** 2).sum() / lat.N)


def test_neel_state_peaks_at_pi_pi():
    lat = Lattice.from_kind("square", 4)
    spins = np.zeros((lat.N, 3))
    spins[:, 0] = (-1.0) ** lat.coords.sum(axis=1)
    sq = structure_factor(spins, lat)
    assert np.isclose(sq[2, 2], lat.N) and np.isclose(sq.sum(), lat.N)
    assert np.isclose(nn_correlation(spins, lat), -1.0)
    assert np.allclose(magnetization(spins), 0.0)


def test_random_spins_are_unit_vectors(rng):
    s = random_spins(10, rng, size=(3,))
    assert s.shape == (3, 10, 3) and np.allclose(np.linalg.norm(s, axis=-1), 1.0)
