"""Thermodynamics at fixed μ from a run's measured series (whole-lattice values per step), with
jackknife errors over bins.

The weight of a spin configuration S is W_β(S) = exp(-β F_β(S)), with
F_β(S) = -(1/β) Σ_n log(1 + e^{-β ε_n(S)}) + E_cl(S), ε_n the single-particle energies
measured from μ and E_cl = J_direct Σ_<ij> S_i·S_j. With Z(β) = ∫ dS W_β(S):

    U = -∂ log Z/∂β = ⟨u⟩,      u(S) = ∂(β F_β(S))/∂β = Σ_n ε_n f(ε_n) + E_cl(S),

the grand-canonical energy ⟨H - μN⟩ + classical part. Differentiating ⟨u⟩ = ∫ u W / Z once
more, W brings -u and u itself depends on β through f:

    ∂U/∂β = ⟨∂u/∂β⟩ - (⟨u²⟩ - ⟨u⟩²),   ∂u/∂β = Σ_n ε_n ∂f_n/∂β = -Σ_n ε_n² f_n (1 - f_n) = -g(S),

    C = dU/dT = -β² ∂U/∂β = β² (Var u + ⟨g⟩)          (whole lattice; per site: / N).

The second term is why C needs the measured g (``fermion_energy_fluctuation``) besides the
spread of u; tests/test_thermodynamics.py checks the formula against a finite difference of
U(T) by quadrature on two sites.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def energy(fermion_energy: np.ndarray, nn_correlation: np.ndarray, J_direct: float, n_bonds: int) -> np.ndarray:
    """u = Σ_n ε_n f(ε_n) + J_direct Σ_<ij> S_i·S_j per step (whole lattice), from the
    measured fermion energy and the mean nearest-neighbour S·S over the lattice's ``n_bonds``
    bonds (Lattice.bonds, as hamiltonian.DoubleExchange.classical_energy sums them)."""
    return np.asarray(fermion_energy) + J_direct * n_bonds * np.asarray(nn_correlation)


def specific_heat(u: np.ndarray, g: np.ndarray, beta: float) -> float:
    """C = β² (Var u + ⟨g⟩), whole lattice (k_B = 1), from series of u and g = Σ ε² f(1 - f)."""
    u = np.asarray(u, dtype=np.float64)
    return float(beta**2 * (u.var() + np.mean(g)))


def jackknife(function: Callable[..., float], *series: np.ndarray, n_bins: int = 32) -> tuple[float, float]:
    """(value, error) of ``function(*series)`` with the delete-one-bin jackknife: the series
    (equal length, one entry per step) are cut into ``n_bins`` consecutive bins, the estimate
    recomputed without each bin in turn, and error² = (n - 1)/n Σ_i (θ_i - θ̄)². Bins must be
    much longer than τ_int for the error to hold. The value is the estimate on all data."""
    arrays = [np.asarray(x, dtype=np.float64) for x in series]
    n = len(arrays[0])
    if any(len(x) != n for x in arrays):
        raise ValueError("series of different lengths")
    n_bins = min(n_bins, n)
    if n_bins < 2:
        return float(function(*arrays)), float("nan")
    size = n // n_bins
    kept = [x[: size * n_bins] for x in arrays]
    leave_out = np.array([function(*(np.delete(x, slice(i * size, (i + 1) * size)) for x in kept))
                          for i in range(n_bins)])
    error = np.sqrt((n_bins - 1) / n_bins * np.sum((leave_out - leave_out.mean()) ** 2))
    return float(function(*arrays)), float(error)


def susceptibility(m_abs: np.ndarray, beta: float, n_sites: int) -> float:
    """χ = β N (⟨m²⟩ - ⟨|m|⟩²) per site from a series of |m| (m per site, m = (1/N) Σ_i S_i):
    the finite-lattice susceptibility, which has no spurious N⟨|m|⟩² peak in the ordered phase."""
    m = np.asarray(m_abs, dtype=np.float64)
    return float(beta * n_sites * (np.mean(m * m) - np.mean(m) ** 2))


def binder_ratio(m_abs: np.ndarray) -> float:
    """R = ⟨|m|⁴⟩ / ⟨|m|²⟩² of an order parameter's magnitude: 1 in a perfectly ordered phase,
    (n + 2)/n for n independent Gaussian components (5/3 for a 3-vector such as m) deep in
    the disordered phase; curves of R(T) for several L cross near T_c."""
    m2 = np.asarray(m_abs, dtype=np.float64) ** 2
    return float(np.mean(m2 * m2) / np.mean(m2) ** 2)
