"""The downfolded effective model: the free energy of the electrons' lower band alone, from an
N x N Hamiltonian, plus a fitted linear correction. It is the middle model of three-level
SLMC (samplers/nested.py with kind = "downfolded"): too dear for the inner chain, about 0.3x
the exact weight's cost at L = 12 (a Cholesky inverse and an eigvalsh of N x N matrices
against a 2N x 2N eigvalsh),
and accurate where the linear model is not (levels crossing the Fermi level).

In each site's spinor basis, a_i with (J/2) S_i·σ a_i = -(|J|/2) a_i and b_i with +|J|/2,
H[S] (μ included; hopping T = -t on nearest-neighbour bonds) splits into

    A_ij = T_ij ⟨a_i|a_j⟩ - (|J|/2 + μ) δ_ij,   B_ij = T_ij ⟨a_i|b_j⟩,   C_ij = T_ij ⟨b_i|b_j⟩ + (|J|/2 - μ) δ_ij.

Löwdin downfolding at the Fermi level (energy 0, μ included) gives

    H_eff = A - B C⁻¹ B†,

the Schur complement: det H = det C det H_eff, and where C is positive definite (the upper
band lies above μ; config.py requires |J|/2 - μ > 2d|t|, which guarantees it) H_eff has exactly
as many negative eigenvalues as H (Haynsworth inertia additivity): the occupation of the levels at T = 0 is exact, and levels near μ are nearly
exact. Far from μ they are not; that error is smooth in the spins and the correction
(a LinearModel, fitted by least squares to F_β - F_low) absorbs most of it. So

    E_eff[S] = F_low[S] + E_corr[S],   F_low = -(1/β) Σ_n log(1 + e^{-β ε_n(H_eff)}) + J_direct Σ_<ij> S_i·S_j,

whole lattice, in F_β's units, at the slot's β (F_low depends on β: ``with_beta``); until the
correction is first fitted the model is zero (``fitted``), so that the chain starts as a
linear model's does. Offline
(analysis/BENCHMARKS.md, "Three-level SLMC") the spread σ of the exact test's log-ratio was
0.16 / 0.25 / 0.23 at L = 8 / 10 / 12 against the linear default's 1.10 / 1.67 / 1.53.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from ..hamiltonian import DoubleExchange, hopping_matrix, log_fermion_weight
from .linear import LinearModel


def site_spinors(spins: np.ndarray, J: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (N, 2) complex: per site the spinor of energy -|J|/2 and that of +|J|/2
    under (J/2) S_i·σ (a: anti-parallel to S_i for J > 0). The phase is a choice (a gauge):
    the spectrum does not depend on it."""
    z = np.clip(spins[:, 2], -1.0, 1.0)
    c, s = np.sqrt(0.5 * (1.0 + z)), np.sqrt(0.5 * (1.0 - z))
    r = np.hypot(spins[:, 0], spins[:, 1])
    phase = np.where(r > 0, (spins[:, 0] + 1j * spins[:, 1]) / np.where(r > 0, r, 1.0), 1.0)
    up = np.stack([c, phase * s], axis=1)  # S_i·σ up = +up
    down = np.stack([-np.conj(phase) * s, c + 0j], axis=1)  # S_i·σ down = -down
    return (down, up) if J >= 0 else (up, down)


@dataclass(frozen=True, eq=False)
class DownfoldedModel:
    physics: DoubleExchange
    beta: float
    correction: LinearModel  # fitted to F_β - F_low; its parameters are this model's

    def __getstate__(self):
        # without the cached bond lists and flags (rebuilt on demand): slot models travel between MPI ranks
        return {"physics": self.physics, "beta": self.beta, "correction": self.correction}

    @property
    def lattice(self):
        return self.physics.lattice

    @cached_property
    def _bonds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of the hopping matrix's non-zero entries (both directions)."""
        t = hopping_matrix(self.physics.lattice, self.physics.t, 0.0)
        rows, cols = np.nonzero(t)
        return rows, cols, t[rows, cols]

    def _block_entries(self, spins: np.ndarray):
        """The bond entries of A, B and C (each in the order of ``_bonds``) and their diagonals."""
        half, mu = 0.5 * abs(self.physics.J), self.physics.mu
        a, b = site_spinors(np.asarray(spins, dtype=np.float64), self.physics.J)
        rows, cols, t = self._bonds
        def overlap(left, right):
            return t * np.einsum("bk,bk->b", left[rows].conj(), right[cols])
        return (overlap(a, a), -half - mu), (overlap(a, b), None), (overlap(b, b), half - mu)

    def _dense(self, entries, diagonal) -> np.ndarray:
        n = self.physics.lattice.N
        rows, cols, _ = self._bonds
        m = np.zeros((n, n), dtype=np.complex128)
        m[rows, cols] = entries
        if diagonal is not None:
            m[np.diag_indices(n)] = diagonal
        return m

    def blocks(self, spins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, C) of the module docstring for one configuration (N, 3), dense."""
        return tuple(self._dense(*block) for block in self._block_entries(spins))

    def effective_hamiltonian(self, spins: np.ndarray) -> np.ndarray:
        """H_eff = A - B C⁻¹ B†, (N, N) Hermitian.

        C⁻¹ from its Cholesky factor (C > 0: config.py), then B C⁻¹ B† with B sparse (a
        bond's entries only, O(N² z)): at L = 12 0.7-0.8x the time of a dense solve C X = B†
        and a dense product."""
        (a, a_diag), (b, _), (c, c_diag) = self._block_entries(spins)
        rows, cols, _ = self._bonds
        n = self.physics.lattice.N
        factor, info = lapack.zpotrf(self._dense(c, c_diag), lower=1)
        if info == 0:
            c_inv, info = lapack.zpotri(factor, lower=1)  # the lower triangle of C⁻¹
        if info != 0:
            raise np.linalg.LinAlgError(f"the upper-band block C is not positive definite (LAPACK info {info}): "
                                        "the downfolded model needs |J|/2 - mu > 2 d |t|")
        c_inv = np.tril(c_inv)
        c_inv += np.tril(c_inv, -1).conj().T
        b_sparse = sparse.csr_matrix((b, (rows, cols)), shape=(n, n))
        x = b_sparse @ c_inv  # B C⁻¹
        h = self._dense(a, a_diag) - (b_sparse.conj() @ x.T).T  # A - (B C⁻¹) B†
        return 0.5 * (h + h.conj().T)  # Hermitian to round-off; eigvalsh reads one triangle

    def low_band_free_energy(self, spins: np.ndarray) -> np.ndarray:
        """F_low[S] (whole lattice) for spins (N, 3) or (C, N, 3)."""
        spins = np.asarray(spins, dtype=np.float64)
        if spins.ndim == 3:
            return np.array([self.low_band_free_energy(s) for s in spins])
        eps = np.linalg.eigvalsh(self.effective_hamiltonian(spins))
        return float(-log_fermion_weight(eps, self.beta) / self.beta + self.physics.classical_energy(spins))

    @cached_property
    def fitted(self) -> bool:
        """Whether the correction has been fitted (any parameter non-zero; a least-squares fit
        gives E_0 ≠ 0). Before that the model is zero, like an untrained linear model: F_low
        alone, against an untrained inner chain's random walk, would reject nearly every
        proposal in the middle tests, so no exact test would make the data of the first fit
        (at L = 16 a chain stuck that way through all of thermalization)."""
        return bool(np.any(self.correction.parameters()[0]))

    def energy(self, spins: np.ndarray):
        if not self.fitted:
            return self.correction.energy(spins)  # zero
        return self.low_band_free_energy(spins) + self.correction.energy(spins)

    def delta_energy(self, spins: np.ndarray, i: int, new_spin: np.ndarray) -> float:
        moved = np.array(spins)
        moved[i] = new_spin
        return float(self.energy(moved) - self.energy(spins))

    def with_beta(self, beta: float) -> "DownfoldedModel":
        """The model at another β: F_low at that β, the same correction."""
        return self if beta == self.beta else replace(self, beta=float(beta))

    @property
    def n_parameters(self) -> int:
        return self.correction.n_parameters

    def parameters(self) -> tuple[np.ndarray, list[str]]:
        return self.correction.parameters()

    def with_parameters(self, vector: np.ndarray) -> "DownfoldedModel":
        return replace(self, correction=self.correction.with_parameters(vector))

    # training (training/least_squares.py): design rows are (F_low, the correction's rows), so
    # a replay buffer computes F_low once per sample; the buffer is emptied when β moves
    def design(self, spins: np.ndarray) -> np.ndarray:
        return np.column_stack([self.low_band_free_energy(spins), self.correction.design(spins)])

    def energy_of_design(self, design: np.ndarray) -> np.ndarray:
        correction = self.correction.energy_of_design(design[:, 1:])
        return design[:, 0] + correction if self.fitted else correction

    def fit(self, spins, targets, design=None) -> "DownfoldedModel":
        design = self.design(spins) if design is None else np.asarray(design)
        return replace(self, correction=self.correction.fit(spins, np.asarray(targets) - design[:, 0], design[:, 1:]))

    def fit_pairs(self, spins, targets, ref_spins, ref_targets, design=None, ref_design=None) -> "DownfoldedModel":
        design = self.design(spins) if design is None else np.asarray(design)
        ref_design = self.design(ref_spins) if ref_design is None else np.asarray(ref_design)
        correction = self.correction.fit_pairs(spins, np.asarray(targets) - design[:, 0], ref_spins,
                                               np.asarray(ref_targets) - ref_design[:, 0], design[:, 1:],
                                               ref_design[:, 1:])
        return replace(self, correction=correction)
