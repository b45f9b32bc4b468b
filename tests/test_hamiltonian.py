"""The exact weight against closed forms and symmetries."""

import numpy as np
import pytest
from scipy.linalg import lapack

from slmc_hpc.hamiltonian import DoubleExchange, fermion_energy, hermitian_eigenvalues, log_fermion_weight
from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import random_spins
from slmc_hpc.testing import assert_invariant, permutations, random_rotation, rotations


def ferro_free_energy(lattice, t, J, mu, beta, J_direct=0.0):
    """Closed form: bands ε_k ± J/2 - μ with ε_k = -2t Σ_d cos k_d, whole lattice."""
    eps_k = -2 * t * np.cos(lattice.momenta()).sum(axis=1)
    bands = np.concatenate([eps_k + J / 2 - mu, eps_k - J / 2 - mu])
    return -np.logaddexp(0, -beta * bands).sum() / beta + J_direct * lattice.dim * lattice.N


def collinear(lattice, direction):
    return np.tile(np.asarray(direction, float) / np.linalg.norm(direction), (lattice.N, 1))


@pytest.mark.parametrize("kind,L", [("square", 2), ("square", 3), ("square", 4), ("square", 6), ("chain", 7),
                                    ("cubic", 3)])
@pytest.mark.parametrize("J,mu,beta", [(4.0, -2.5, 50.0), (1.0, 0.3, 1.0), (8.0, 0.0, 0.5), (2.0, -1.0, 1e3)])
def test_ferromagnet_matches_closed_form(kind, L, J, mu, beta, rng):
    lat = Lattice.from_kind(kind, L)
    phys = DoubleExchange(lat, t=1.3, J=J, mu=mu, J_direct=0.2)
    expected = ferro_free_energy(lat, 1.3, J, mu, beta, J_direct=0.2)
    for direction in ([0, 0, 1], rng.standard_normal(3)):
        F = phys.free_energy_of(collinear(lat, direction), beta)
        assert abs(F - expected) < 1e-10, (F, expected)


def test_closed_form_check_detects_a_wrong_convention():
    """Negative control: J instead of J/2 in the closed form must not match."""
    lat = Lattice.from_kind("square", 4)
    F = DoubleExchange(lat, J=4.0, mu=-1.0).free_energy_of(collinear(lat, [0, 0, 1]), 2.0)
    assert abs(F - ferro_free_energy(lat, 1.0, 8.0, -1.0, 2.0)) > 1e-3


def test_hamiltonian_is_hermitian_with_the_documented_onsite_block(rng):
    lat = Lattice.from_kind("square", 3)
    phys = DoubleExchange(lat, t=1.0, J=3.0, mu=0.7)
    spins = random_spins(lat.N, rng)
    h = phys.hamiltonian(spins)
    assert np.array_equal(h, h.conj().T)
    sx, sy, sz = spins[4]
    block = h[8:10, 8:10]
    expected = 1.5 * np.array([[sz, sx - 1j * sy], [sx + 1j * sy, -sz]]) - 0.7 * np.eye(2)
    assert np.allclose(block, expected, atol=1e-15)
    assert h[0, 2] == -1.0 and h[0, 1] == (1.5 * (spins[0, 0] - 1j * spins[0, 1]))


@pytest.mark.parametrize("L", [3, 4])
def test_free_energy_invariant_under_o3_translations_and_point_group(L, rng):
    lat = Lattice.from_kind("square", L)
    phys = DoubleExchange(lat, t=1.0, J=4.0, mu=-2.5, J_direct=0.3)
    spins = random_spins(lat.N, rng)

    def F(s):
        return phys.free_energy_of(s, 7.0)

    assert_invariant(F, spins, rotations(rng, 5, proper=True))
    assert_invariant(F, spins, rotations(rng, 5, proper=False))
    assert_invariant(F, spins, permutations(lat.translations()))
    assert_invariant(F, spins, permutations(lat.point_group()))


def test_invariance_helper_fails_for_a_non_invariant_change(rng):
    """Negative control for assert_invariant: rotating one spin changes F."""
    lat = Lattice.from_kind("square", 3)
    phys = DoubleExchange(lat)
    spins = random_spins(lat.N, rng)
    R = random_rotation(rng)

    def rotate_one(s):
        s = s.copy()
        s[0] = R @ s[0]
        return s

    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda s: phys.free_energy_of(s, 2.0), spins, [rotate_one])


def test_log_weight_is_stable_at_very_low_temperature(rng):
    """β → ∞: F → Σ_{ε<0} ε (the ground-state energy), with no overflow."""
    lat = Lattice.from_kind("square", 4)
    phys = DoubleExchange(lat, J=4.0, mu=-2.5)
    eig = phys.eigenvalues(random_spins(lat.N, rng))
    with np.errstate(over="raise"):
        F = phys.free_energy(eig, 0.0, 1e8)
    assert abs(F - eig[eig < 0].sum()) < 1e-6


def test_fermion_energy_is_minus_beta_derivative_of_log_weight(rng):
    lat = Lattice.from_kind("square", 4)
    eig = DoubleExchange(lat, J=4.0, mu=-1.0).eigenvalues(random_spins(lat.N, rng))
    beta, h = 3.0, 1e-5
    derivative = (log_fermion_weight(eig, beta + h) - log_fermion_weight(eig, beta - h)) / (2 * h)
    assert abs(-derivative - fermion_energy(eig, beta)) < 1e-7


def test_reweighting_from_cached_eigenvalues_equals_recomputation(rng):
    lat = Lattice.from_kind("square", 3)
    phys = DoubleExchange(lat, J=4.0, mu=-2.5, J_direct=0.1)
    spins = random_spins(lat.N, rng)
    eig, ecl = phys.eigenvalues(spins), phys.classical_energy(spins)
    for beta in (0.5, 10.0, 33.3):
        assert phys.free_energy(eig, ecl, beta) == pytest.approx(phys.free_energy_of(spins, beta), abs=1e-12)


def test_batched_eigenvalues_equal_single(rng):
    lat = Lattice.from_kind("square", 3)
    phys = DoubleExchange(lat, J=2.0, mu=0.5)
    spins = random_spins(lat.N, rng, size=(2, 2))
    batched = phys.eigenvalues(spins)
    for b in np.ndindex(2, 2):
        assert np.array_equal(batched[b], phys.eigenvalues(spins[b]))  # the same bits alone or batched
    assert phys.eigenvalues(spins[:0]).shape == (0, 2, 2 * lat.N)


def test_classical_energy_counts_each_bond_once():
    lat = Lattice.from_kind("square", 4)
    spins = np.zeros((lat.N, 3))
    for i, (x, y) in enumerate(lat.coords):
        spins[i, 2] = (-1) ** (x + y)  # Néel state: every bond antiparallel
    assert DoubleExchange(lat, J_direct=0.5).classical_energy(spins) == pytest.approx(-0.5 * 2 * lat.N)


@pytest.mark.parametrize("kind,L", [("square", 4), ("chain", 6), ("cubic", 2)])
def test_reused_work_matrix_gives_the_bits_of_a_fresh_hamiltonian(kind, L, rng):
    """Single configurations reuse one work matrix that LAPACK overwrites: every configuration
    in a sequence, also after a batched call, gives exactly the eigenvalues of its freshly
    built H, and they agree with numpy's eigvalsh to round-off."""
    phys = DoubleExchange(Lattice.from_kind(kind, L), t=1.0, J=3.0, mu=-0.7)
    n = phys.lattice.N
    for k in range(6):
        spins = random_spins(n, rng)
        if k == 3:
            phys.eigenvalues(random_spins(n, rng, size=(2,)))
        eig = phys.eigenvalues(spins)
        assert np.array_equal(eig, hermitian_eigenvalues(phys.hamiltonian(spins).T))
        np.testing.assert_allclose(eig, np.linalg.eigvalsh(phys.hamiltonian(spins)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_hermitian_eigenvalues_read_the_lower_triangle_only(n, rng):
    """hetrd + sterf against numpy's eigvalsh on random Hermitian matrices, double and single
    precision, with noise in the upper triangle that must not be read; ascending order.
    Negative control: hetrd told to read the upper triangle gives another spectrum."""
    a = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    a = a + a.conj().T
    noise = np.triu(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)), 1)
    exact = np.linalg.eigvalsh(a)
    for dtype, tol in ((np.complex128, 1e-12), (np.complex64, 1e-4)):
        lower = np.asfortranarray(np.tril(a) + noise, dtype=dtype)
        eig = hermitian_eigenvalues(lower)
        assert eig.dtype == np.finfo(dtype).dtype
        assert np.all(np.diff(eig) >= 0)
        np.testing.assert_allclose(eig, exact, rtol=0, atol=tol * max(1.0, np.abs(exact).max()))
    # a C-ordered matrix is copied into Fortran order by SciPy's wrapper: the same lower triangle is read
    np.testing.assert_allclose(hermitian_eigenvalues(np.ascontiguousarray(np.tril(a) + noise)), exact, rtol=0,
                               atol=1e-12 * max(1.0, np.abs(exact).max()))
    if n > 1:  # negative control: what reading the upper triangle would give
        hetrd, = lapack.get_lapack_funcs(("hetrd",), dtype=np.complex128)
        _, d, e, _, _ = hetrd(np.asfortranarray(np.tril(a) + noise), lower=0)
        assert np.abs(np.sort(lapack.dsterf(d, e)[0]) - exact).max() > 1e-3
