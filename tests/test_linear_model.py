import numpy as np
import pytest

from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.testing import assert_invariant, permutations, rotations


@pytest.fixture
def model():
    lat = Lattice.from_kind("square", 6)
    return LinearModel(lat, couplings=np.array([1.0, -0.4, 0.25, 0.1, -0.05, 0.3]), e0=-3.0)


def brute_force_energy(model, spins):
    """E_0 - Σ_n J_n Σ over unordered pairs at distance d_n, by explicit pair enumeration."""
    lat = model.lattice
    diff = lat.coords[None] - lat.coords[:, None]
    diff = (diff + lat.L // 2) % lat.L - lat.L // 2
    dist = np.sqrt((diff**2).sum(-1))
    e = model.e0
    for n, J in enumerate(model.couplings):
        for i in range(lat.N):
            for j in range(i + 1, lat.N):
                if np.isclose(dist[i, j], lat.shell_distances[n]):
                    e -= J * spins[i] @ spins[j]
    return e


def test_energy_equals_pair_enumeration(model, rng):
    spins = random_spins(model.lattice.N, rng)
    assert model.energy(spins) == pytest.approx(brute_force_energy(model, spins), abs=1e-12)


def test_local_delta_energy_equals_full_difference(model, rng):
    spins = random_spins(model.lattice.N, rng)
    for i in rng.integers(model.lattice.N, size=10):
        new = random_spins(1, rng)[0]
        moved = spins.copy()
        moved[i] = new
        assert model.delta_energy(spins, i, new) == pytest.approx(model.energy(moved) - model.energy(spins),
                                                                  abs=1e-12)


def test_energy_is_o3_and_lattice_invariant(model, rng):
    spins = random_spins(model.lattice.N, rng)
    for proper in (True, False):
        assert_invariant(model.energy, spins, rotations(rng, 3, proper))
    assert_invariant(model.energy, spins, permutations(model.lattice.translations() + model.lattice.point_group()))


def test_fit_recovers_couplings_from_exact_data(model, rng):
    spins = random_spins(model.lattice.N, rng, size=(50,))
    fitted = LinearModel.zeros(model.lattice, model.n_shells).fit(spins, model.energy(spins))
    assert np.allclose(fitted.couplings, model.couplings, atol=1e-10)
    assert fitted.e0 == pytest.approx(model.e0, abs=1e-10)


def test_fit_rejects_non_finite_data(model, rng):
    spins = random_spins(model.lattice.N, rng, size=(20,))
    targets = model.energy(spins)
    targets[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(spins, targets)


def test_pair_fit_recovers_couplings_and_matches_the_mean_energy(model, rng):
    spins = random_spins(model.lattice.N, rng, size=(40,))
    ref = random_spins(model.lattice.N, rng, size=(40,))
    fitted = LinearModel.zeros(model.lattice, model.n_shells).fit_pairs(
        spins, model.energy(spins), ref, model.energy(ref))
    assert np.allclose(fitted.couplings, model.couplings, atol=1e-10)
    assert fitted.e0 == pytest.approx(model.e0, abs=1e-10)
