"""The spin couplings of second-order perturbation theory in J (RKKY-like): what an effective
model's J_n should look like where J is small, for comparing with the learned ones.

With H = H_0 ⊗ 1 + Σ_i h_i·σ_i, h_i = (J/2) S_i, and H_0 the spin-independent hopping - μ
(real orbitals φ_n, energies ε_n from μ), the electrons' grand potential to second order is

    Ω = Ω_0 + (1/2) Σ_{n s, m s'} |⟨n s|V|m s'⟩|² L_nm,   L_nm = (f_n - f_m)/(ε_n - ε_m)
                                                           (-β f_n (1 - f_n) where ε_n = ε_m);

the first order vanishes (tr σ = 0). The spin trace tr[(h_i·σ)(h_j·σ)] = 2 h_i·h_j gives

    Ω^(2) = Σ_ij h_i·h_j Π_ij = (J²/4) Σ_ij Π_ij S_i·S_j,   Π_ij = Σ_nm φ_n(i)φ_m(i)φ_n(j)φ_m(j) L_nm,

so F ≈ const + (J²/2) Σ_{unordered pairs i≠j} Π_ij S_i·S_j + J_direct Σ_<ij> S_i·S_j. The third
order, ∝ J³ S_i·(S_j × S_k), is odd in J (tests/test_perturbation.py uses that). Against the
linear model E_eff = E_0 - Σ_n J_n Σ_<ij>_n S_i·S_j:

    J_n = -(J²/2) ⟨Π_0j⟩_{j in shell n}  (- J_direct for n = 1),

the mean over the shell's sites, since a distance shell can hold displacements that no
lattice symmetry relates (on a square lattice (5, 0) and (3, 4)).
"""

from __future__ import annotations

import functools

import numpy as np

from .hamiltonian import fermi, hopping_matrix
from .lattice import Lattice


def lindhard_kernel(energies: np.ndarray, beta: float) -> np.ndarray:
    """L_nm = (f_n - f_m)/(ε_n - ε_m), and its limit -β f_n (1 - f_n) between levels of equal
    energy (a lattice has many: every degenerate pair, n = m included, needs the limit)."""
    f = fermi(energies, beta)
    de = energies[:, None] - energies[None, :]
    same = np.abs(de) < 1e-9 * max(1.0, np.abs(energies).max())
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(same, -beta * f[:, None] * (1 - f[:, None]), (f[:, None] - f[None, :]) / de)


@functools.lru_cache(maxsize=4)
def _spectrum(lattice: Lattice, t: float, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies and orbitals of H_0 (the same for every temperature of a run)."""
    return np.linalg.eigh(hopping_matrix(lattice, t, mu))


def lindhard_row(lattice: Lattice, t: float, mu: float, beta: float) -> np.ndarray:
    """Π_0j for every site j (by translation invariance every row is a shift of this one)."""
    energies, phi = _spectrum(lattice, t, mu)
    L = lindhard_kernel(energies, beta)
    P = phi[0][:, None] * phi.T  # P[n, j] = φ_n(0) φ_n(j)
    return ((L @ P) * P).sum(axis=0)  # Σ_nm P_nj L_nm P_mj, as a matrix product


def rkky_couplings(lattice: Lattice, n_shells: int, t: float, J: float, mu: float, beta: float,
                   J_direct: float = 0.0) -> np.ndarray:
    """J_n, n = 1..n_shells, of second-order perturbation theory in J at (μ, β), in the linear
    model's convention (E_eff = E_0 - Σ_n J_n Σ_<ij>_n S_i·S_j, whole lattice)."""
    row = lindhard_row(lattice, t, mu, beta)
    shells = lattice.shell_neighbours(n_shells)
    couplings = np.array([-(J**2 / 2) * row[nbrs[0]].mean() for nbrs in shells])
    couplings[0] -= J_direct
    return couplings
