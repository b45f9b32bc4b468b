import dataclasses

import numpy as np
import pytest

from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.models.bond_pairs import bond_matrix, bond_pair_energy, bond_pair_kernel, bond_pair_tables
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


@pytest.fixture
def bond_model(rng):
    """Linear model with four-spin terms over bonds of shells 1..2 on a 4 x 4 lattice."""
    lat = Lattice.from_kind("square", 4)
    n_orbits = len(LinearModel.zeros(lat, 3, bond_shells=2).bond_couplings)
    return LinearModel(lat, couplings=np.array([1.0, -0.4, 0.25]), e0=-3.0, bond_shells=2,
                       bond_couplings=0.2 * rng.normal(size=n_orbits))


def test_bond_pair_energy_equals_the_enumeration_of_bond_pairs(bond_model, rng):
    """E = E_0 - Σ J φ - Σ_{a <= b} K_class(a,b) b_a b_b over unordered bond pairs (a bond with
    itself once), enumerated; the model computes it as (1/2) bᵀ G b."""
    bonds, pair_class = bond_model.lattice.bond_pair_orbits(2)
    spins = random_spins(bond_model.lattice.N, rng)
    b = np.array([spins[i] @ spins[j] for i, j in bonds])
    four = sum(bond_model.bond_couplings[pair_class[a, c]] * b[a] * b[c]
               for a in range(len(b)) for c in range(a, len(b)))
    linear = LinearModel(bond_model.lattice, bond_model.couplings, bond_model.e0)
    assert bond_model.energy(spins) == pytest.approx(brute_force_energy(linear, spins) - four, abs=1e-12)


@pytest.mark.parametrize("kind, L, shells, max_range", [("chain", 7, 2, 0.0), ("chain", 8, 2, 0.0),
                                                      ("square", 5, 2, 0.0), ("square", 6, 3, 1.5),
                                                      ("cubic", 3, 1, 0.0), ("cubic", 4, 2, 1.0)])
def test_bond_pair_energy_by_half_spectrum_equals_the_bond_matrix(kind, L, shells, max_range, rng):
    """Σ_o K_o ψ_o through the half of the momenta (b real) equals (1/2) bᵀ G b, over a batch,
    for odd and even L (the momenta m_last = L/2 that pair with themselves exist only for even
    L) in one, two and three dimensions. Negative control: counting every momentum of the half
    once, instead of folding in -k, is caught."""
    lat = Lattice.from_kind(kind, L)
    tables = bond_pair_tables(lat, shells, max_range)
    couplings = rng.normal(size=tables.n_orbits)
    spins = np.stack([random_spins(lat.N, rng) for _ in range(3)])
    b = np.einsum("cak,cak->ca", spins[:, tables.bonds[:, 0]], spins[:, tables.bonds[:, 1]])
    expected = 0.5 * np.einsum("ca,ab,cb->c", b, bond_matrix(couplings, tables.pair_class), b)
    energy = bond_pair_energy(b, tables, bond_pair_kernel(couplings, tables))
    assert energy.shape == (3,) and np.allclose(energy, expected, rtol=0, atol=1e-11 * np.abs(expected).max())
    assert bond_pair_energy(b[0], tables, bond_pair_kernel(couplings, tables)) == pytest.approx(expected[0], abs=1e-11)
    assert bond_pair_energy(b[:0], tables, bond_pair_kernel(couplings, tables)).shape == (0,)
    columns, weight = tables.half_spectrum
    once = dataclasses.replace(tables)
    once.__dict__["half_spectrum"] = (columns, np.ones_like(weight))
    assert not np.allclose(bond_pair_energy(b, once, bond_pair_kernel(couplings, once)), expected, rtol=1e-6)


def test_bond_pair_energy_is_o3_and_lattice_invariant(bond_model, rng):
    spins = random_spins(bond_model.lattice.N, rng)
    for proper in (True, False):
        assert_invariant(bond_model.energy, spins, rotations(rng, 3, proper))
    lat = bond_model.lattice
    assert_invariant(bond_model.energy, spins, permutations(lat.translations() + lat.point_group()))


def test_fits_recover_bond_pair_couplings(bond_model, rng):
    """Least squares on the class sums ψ_o (translation correlations) recovers the couplings
    of the (1/2) bᵀ G b energy: both forms of the four-spin terms agree."""
    n = 3 * bond_model.n_parameters
    spins = random_spins(bond_model.lattice.N, rng, size=(n,))
    ref = random_spins(bond_model.lattice.N, rng, size=(n,))
    zero = LinearModel.zeros(bond_model.lattice, 3, bond_shells=2)
    for fitted in (zero.fit(spins, bond_model.energy(spins)),
                   zero.fit_pairs(spins, bond_model.energy(spins), ref, bond_model.energy(ref))):
        np.testing.assert_allclose(fitted.parameters()[0], bond_model.parameters()[0], rtol=0, atol=1e-9)


def test_parameters_round_trip(bond_model):
    vector, names = bond_model.parameters()
    assert names[:5] == ["E0", "J1", "J2", "J3", "K1"] and len(names) == bond_model.n_parameters
    back = LinearModel.zeros(bond_model.lattice, 3, bond_shells=2).with_parameters(vector)
    np.testing.assert_array_equal(back.parameters()[0], vector)
    with pytest.raises(ValueError, match="bond-pair couplings"):
        LinearModel(bond_model.lattice, np.zeros(3), bond_shells=2, bond_couplings=np.zeros(2))


def test_pickled_model_leaves_its_caches_behind(bond_model, rng):
    """Slot models travel between MPI ranks pickled: the cached bond form (with its P² bond
    matrix) and bond-pair kernel stay behind and are rebuilt, equal, on the other side."""
    import pickle

    form = bond_model.bond_form
    spins = random_spins(bond_model.lattice.N, rng)
    energy = bond_model.energy(spins)
    assert "_bond_kernel" in bond_model.__dict__
    back = pickle.loads(pickle.dumps(bond_model))
    assert "bond_form" not in back.__dict__ and "_bond_kernel" not in back.__dict__
    np.testing.assert_array_equal(back.bond_form.G, form.G)
    assert back.energy(spins) == energy


@pytest.mark.parametrize("kind, L, shells, bond_shells", [("chain", 8, 3, 0), ("square", 4, 5, 2), ("cubic", 4, 4, 2)])
def test_energy_and_design_agree_with_the_bond_form(kind, L, shells, bond_shells, rng):
    """``energy`` and ``design`` sum b = S_i·S_j over the list of bonds; the bond form (the compiled
    chain's energy, samplers/local_chain.py) sums w·b and bᵀGb over its own tables: the same energy
    by two routes, on small lattices where shells wrap around."""
    lattice = Lattice.from_kind(kind, L)
    zero = LinearModel.zeros(lattice, shells, bond_shells)
    model = zero.with_parameters(rng.standard_normal(zero.n_parameters))
    spins = np.stack([random_spins(lattice.N, rng) for _ in range(3)])
    expected = [model.bond_form.energy(s, model.e0) for s in spins]
    np.testing.assert_allclose(model.energy(spins), expected, atol=1e-10)
    np.testing.assert_allclose(model.energy_of_design(model.design(spins)), expected, atol=1e-10)
    assert model.energy(spins[0]) == pytest.approx(expected[0], abs=1e-10)
    # the shell sums against an enumeration of site pairs by distance (no neighbour tables)
    plain = LinearModel(lattice, couplings=np.eye(shells)[0])
    for n in range(shells):
        one = LinearModel(lattice, couplings=np.eye(shells)[n])
        np.testing.assert_allclose(model.features(spins)[:, n], [-brute_force_energy(one, s) for s in spins],
                                   atol=1e-12)
    assert plain.features(spins[None]).shape == (1, 3, shells)
