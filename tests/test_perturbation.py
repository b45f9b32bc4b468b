"""Second-order perturbation theory in J (slmc_hpc/perturbation.py) against the exact free
energy at small J: the even part (F_J + F_-J)/2 - F_0 removes the odd (chiral, J³) terms and
leaves J² times the RKKY form up to O(J⁴)."""

import numpy as np
import pytest

from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.perturbation import lindhard_row, rkky_couplings

LAT = Lattice.from_kind("square", 4)  # each of its 5 distance shells is one symmetry orbit
T_HOP, MU, BETA = 1.0, -0.5, 3.0


def even_part(spins, J):
    F = [DoubleExchange(LAT, t=T_HOP, J=j, mu=MU).free_energy_of(spins, BETA) for j in (J, -J, 0.0)]
    return (F[0] + F[1]) / 2 - F[2]


def pi_matrix(row):
    """Π_ij = Π_0,(j - i) by translation invariance."""
    return np.array([[row[LAT.index(LAT.coords[j] - LAT.coords[i])] for j in range(LAT.N)] for i in range(LAT.N)])


def test_second_order_free_energy_is_the_lindhard_form():
    rng = np.random.default_rng(3)
    J = 0.01
    pi = pi_matrix(lindhard_row(LAT, T_HOP, MU, BETA))
    for _ in range(3):
        s = random_spins(LAT.N, rng)
        predicted = (J**2 / 4) * np.einsum("ij,ik,jk->", pi, s, s)
        assert even_part(s, J) == pytest.approx(predicted, rel=1e-3)


def test_rkky_couplings_predict_free_energy_differences():
    """Between two configurations, ΔF's J² part equals -Σ_n J_n Δφ_n of the linear model with
    the RKKY J_n. Negative control: dropping the degenerate-level term -β f (1 - f) of the
    Lindhard function (many levels of the 4x4 lattice are degenerate) breaks the agreement."""
    J = 0.01
    couplings = rkky_couplings(LAT, 5, T_HOP, J, MU, BETA)
    model = LinearModel(LAT, couplings=couplings)
    rng = np.random.default_rng(4)
    a, b = random_spins(LAT.N, rng), random_spins(LAT.N, rng)
    exact = even_part(a, J) - even_part(b, J)
    assert model.energy(a) - model.energy(b) == pytest.approx(exact, rel=1e-3)
    assert rkky_couplings(LAT, 5, T_HOP, J, MU, BETA, J_direct=0.2)[0] == pytest.approx(couplings[0] - 0.2)

    import slmc_hpc.perturbation as pert

    original = pert.lindhard_kernel

    def without_degenerate_terms(energies, beta):
        L = original(energies, beta)
        return np.where(np.abs(energies[:, None] - energies[None, :]) < 1e-9, 0.0, L)

    pert.lindhard_kernel = without_degenerate_terms
    try:
        broken = LinearModel(LAT, couplings=rkky_couplings(LAT, 5, T_HOP, J, MU, BETA))
    finally:
        pert.lindhard_kernel = original
    assert broken.energy(a) - broken.energy(b) != pytest.approx(exact, rel=0.1)
