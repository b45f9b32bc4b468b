"""The specific heat at fixed μ, C = β² (Var u + ⟨g⟩) (slmc_hpc/thermodynamics.py), against a
finite difference of U(T) computed by quadrature on two sites, where the configurations are
one angle: c = S_1·S_2 is uniform on [-1, 1] for independent uniform spins, so any average is
∫ dc x(c) W_β(c) / ∫ dc W_β(c)."""

import numpy as np
import pytest
from scipy import integrate

from slmc_hpc.hamiltonian import DoubleExchange, fermion_energy, fermion_energy_fluctuation
from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import nn_correlation, random_spins
from slmc_hpc.samplers import ExactLocalSampler
from slmc_hpc.stats import binned_error
from slmc_hpc.thermodynamics import energy, jackknife, specific_heat

# μ inside the band and a classical term, so that both parts of u and the Fermi-surface term g count
TWO = DoubleExchange(Lattice.from_kind("chain", 2), t=1.0, J=4.0, mu=-0.5, J_direct=0.3)
N_BONDS = len(TWO.lattice.bonds)


def spins_at(c):
    return np.array([[0.0, 0.0, 1.0], [np.sqrt(1 - c * c), 0.0, c]])


def u_and_g(c, beta):
    s = spins_at(c)
    eps = TWO.eigenvalues(s)
    u = energy(fermion_energy(eps, beta), nn_correlation(s, TWO.lattice), TWO.J_direct, N_BONDS)
    return float(u), float(fermion_energy_fluctuation(eps, beta))


def average(x, beta):
    """⟨x(c)⟩ at β by quadrature (weights shifted by their value at c = 1; the shift cancels)."""
    shift = TWO.log_weight(TWO.eigenvalues(spins_at(1.0)), TWO.classical_energy(spins_at(1.0)), beta)

    def w(c):
        s = spins_at(c)
        return np.exp(TWO.log_weight(TWO.eigenvalues(s), TWO.classical_energy(s), beta) - shift)

    num = integrate.quad(lambda c: x(c) * w(c), -1, 1, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    return num / integrate.quad(w, -1, 1, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


def log_z(beta):
    def w(c):
        s = spins_at(c)
        return np.exp(TWO.log_weight(TWO.eigenvalues(s), TWO.classical_energy(s), beta))
    return np.log(integrate.quad(w, -1, 1, epsabs=0, epsrel=1e-13, limit=200)[0])


def internal_energy(beta):
    return average(lambda c: u_and_g(c, beta)[0], beta)


def heat_by_formula(beta, with_g=True):
    u_mean = internal_energy(beta)
    var = average(lambda c: u_and_g(c, beta)[0] ** 2, beta) - u_mean**2
    g = average(lambda c: u_and_g(c, beta)[1], beta) if with_g else 0.0
    return beta**2 * (var + g)


@pytest.mark.parametrize("T", [0.3, 1.0])
def test_internal_energy_is_minus_the_beta_derivative_of_log_z(T):
    beta, h = 1 / T, 1e-4
    fd = -(log_z(beta + h) - log_z(beta - h)) / (2 * h)
    assert internal_energy(beta) == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("T", [0.3, 1.0])
def test_specific_heat_is_the_temperature_derivative_of_u(T):
    """C by the fluctuation formula equals dU/dT by central differences; without the ⟨g⟩
    term it does not (negative control: the term is a large part of C here)."""
    h = 1e-4 * T
    fd = (internal_energy(1 / (T + h)) - internal_energy(1 / (T - h))) / (2 * h)
    assert heat_by_formula(1 / T) == pytest.approx(fd, rel=1e-5)
    assert abs(heat_by_formula(1 / T, with_g=False) - fd) > 0.05 * abs(fd)


def test_energy_adds_the_classical_term_as_the_weight_does():
    lat = Lattice.from_kind("square", 4)
    phys = DoubleExchange(lat, J_direct=0.7)
    s = random_spins(lat.N, np.random.default_rng(2))
    assert energy(0.0, nn_correlation(s, lat), phys.J_direct, len(lat.bonds)) == pytest.approx(
        float(phys.classical_energy(s)), rel=1e-12)


def test_jackknife_of_the_mean_is_the_binned_error():
    """For the mean the delete-one-bin jackknife with its (n - 1)/n factor is exactly the
    binned standard error; the value is the mean of all data."""
    x = np.random.default_rng(3).standard_normal(1000).cumsum() * 0.01
    value, error = jackknife(np.mean, x, n_bins=20)
    assert value == pytest.approx(x.mean(), rel=1e-14)
    assert error == pytest.approx(binned_error(x, 20), rel=1e-10)


def test_sampled_specific_heat_agrees_with_quadrature():
    """C from an exact two-site chain (40000 steps) within 3 jackknife errors of the
    quadrature value (false alarm ≈ 0.3% if the error is right)."""
    beta = 1 / 0.3
    sampler = ExactLocalSampler(TWO, beta, n_local=2, step_size=1.0)
    rng = np.random.default_rng(8)
    state = sampler.init_state(random_spins(2, rng))
    u, g = np.empty(40000), np.empty(40000)
    for k in range(len(u)):
        state, _ = sampler.step(state, rng)
        u[k] = energy(fermion_energy(state.eigenvalues, beta), nn_correlation(state.spins, TWO.lattice),
                      TWO.J_direct, N_BONDS)
        g[k] = fermion_energy_fluctuation(state.eigenvalues, beta)
    value, error = jackknife(lambda a, b: specific_heat(a, b, beta), u, g, n_bins=40)
    assert abs(value - heat_by_formula(beta)) < 3 * error, (value, error, heat_by_formula(beta))
    assert specific_heat(u, g, beta) == value
