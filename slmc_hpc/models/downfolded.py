"""The downfolded effective model: the free energy of the electrons' lower band alone, from an
N x N Hamiltonian, plus a fitted linear correction. It is the middle model of three-level
SLMC (samplers/nested.py with kind = "downfolded"): too dear for the inner chain, about 0.2x
the exact weight's cost at L = 12 (a Cholesky solve and the eigenvalues of N x N matrices in
single precision, against those of a 2N x 2N matrix in double),
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

import hashlib
import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numba
import numpy as np
from scipy.linalg import blas, lapack

from ..hamiltonian import DoubleExchange, hermitian_eigenvalues, hopping_matrix, log_fermion_weight
from .linear import LinearModel


def site_spinors(spins: np.ndarray, J: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (N, 2) complex: per site the spinor of energy -|J|/2 and that of +|J|/2
    under (J/2) S_i·σ (a: anti-parallel to S_i for J > 0). The phase is a choice (a gauge):
    the spectrum does not depend on it."""
    a, b = np.empty((2, len(spins), 2), dtype=np.complex128)
    _site_spinors(np.ascontiguousarray(spins, dtype=np.float64), float(J), a, b)
    return a, b


@numba.njit(cache=True)
def _site_spinors(spins, J, a, b):  # pragma: no cover
    for i in range(len(spins)):
        z = min(max(spins[i, 2], -1.0), 1.0)
        c, s = math.sqrt(0.5 * (1.0 + z)), math.sqrt(0.5 * (1.0 - z))
        r = math.hypot(spins[i, 0], spins[i, 1])
        phase = complex(spins[i, 0], spins[i, 1]) / r if r > 0 else complex(1.0, 0.0)
        up0, up1 = complex(c, 0.0), phase * s  # S_i·σ up = +up
        down0, down1 = -phase.conjugate() * s, complex(c, 0.0)  # S_i·σ down = -down
        if J >= 0:
            a[i, 0], a[i, 1], b[i, 0], b[i, 1] = down0, down1, up0, up1
        else:
            a[i, 0], a[i, 1], b[i, 0], b[i, 1] = up0, up1, down0, down1


@numba.njit(cache=True)
def _fill_blocks(a, b, rows, cols, t, a_diagonal, c_diagonal, A, B_dagger, C):  # pragma: no cover
    """A, B† and C of the module docstring into zeroed (N, N) arrays, from the spinors: one pass
    over the hopping's non-zero entries (rows, cols, t), in place of NumPy's gathers and
    scatters (at L = 8 those took 60 of the 320 µs of F_low, the same as the Cholesky solve)."""
    for k in range(len(rows)):
        i, j = rows[k], cols[k]
        A[i, j] = t[k] * (a[i, 0].conjugate() * a[j, 0] + a[i, 1].conjugate() * a[j, 1])
        B_dagger[j, i] = (t[k] * (a[i, 0].conjugate() * b[j, 0] + a[i, 1].conjugate() * b[j, 1])).conjugate()
        C[i, j] = t[k] * (b[i, 0].conjugate() * b[j, 0] + b[i, 1].conjugate() * b[j, 1])
    for i in range(len(a)):
        A[i, i] = a_diagonal
        C[i, i] = c_diagonal


class LowBandMemo:
    """F_low of the configurations evaluated last, keyed by (β, precision, a 128-bit digest of
    the spins' bytes), at most ``size`` of them (the oldest go first). Why: training evaluates
    F_low again for every sample (its proposal and its current configuration, the design rows
    of training/least_squares.py), and the chain has evaluated each of them already in its
    middle tests; at L = 12 that second evaluation was 18% of thermalization. A hit returns
    the value computed before, the same bits a new evaluation gives."""

    def __init__(self, size: int = 16384):
        if size < 1:
            raise ValueError(f"a memo holds at least one value, not {size}")
        self.size, self.values = size, {}

    @staticmethod
    def key(spins: np.ndarray, beta: float, dtype) -> tuple:
        return beta, np.dtype(dtype).str, hashlib.blake2b(np.ascontiguousarray(spins).data, digest_size=16).digest()

    def get(self, key: tuple):
        return self.values.get(key)

    def put(self, key: tuple, value: float) -> None:
        if len(self.values) >= self.size:
            del self.values[next(iter(self.values))]
        self.values[key] = value


@dataclass(frozen=True, eq=False)
class DownfoldedModel:
    physics: DoubleExchange
    beta: float
    correction: LinearModel  # fitted to F_β - F_low; its parameters are this model's
    # shared by the models ``replace`` makes from this one (refits, other β): F_low depends on neither the correction nor,
    # by key, β. Other physics needs a new model (and memo): never replace(model, physics=...)
    memo: LowBandMemo = field(default_factory=LowBandMemo, repr=False)

    def __getstate__(self):
        # without the cached bond lists and flags (rebuilt on demand) and the memo: slot models travel between MPI ranks
        return {"physics": self.physics, "beta": self.beta, "correction": self.correction}

    def __setstate__(self, state):
        self.__dict__.update(state, memo=LowBandMemo())

    @property
    def lattice(self):
        return self.physics.lattice

    @cached_property
    def _bonds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of the hopping matrix's non-zero entries (both directions)."""
        t = hopping_matrix(self.physics.lattice, self.physics.t, 0.0)
        rows, cols = np.nonzero(t)
        return rows, cols, t[rows, cols]

    def _blocks(self, spins: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B†, C) of the module docstring for one configuration (N, 3), dense, in ``dtype``
        (the entries computed in double, then rounded), in Fortran order so that LAPACK's
        overwrite flags work in place rather than on a copy."""
        half, mu = 0.5 * abs(self.physics.J), self.physics.mu
        rows, cols, t = self._bonds
        n = self.physics.lattice.N
        a_block, b_dagger, c_block = (np.zeros((n, n), dtype=dtype, order="F") for _ in range(3))
        _fill_blocks(*site_spinors(spins, self.physics.J), rows, cols, t, -half - mu, half - mu,
                     a_block, b_dagger, c_block)
        return a_block, b_dagger, c_block

    def blocks(self, spins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, C) of the module docstring for one configuration (N, 3), dense."""
        a_block, b_dagger, c_block = self._blocks(spins, np.complex128)
        return a_block, b_dagger.conj().T, c_block

    def _lower_effective_hamiltonian(self, spins: np.ndarray, dtype) -> np.ndarray:
        """The lower triangle of H_eff = A - B C⁻¹ B† (the upper one is not set), in ``dtype``.

        With C = L L† (Cholesky; C > 0: config.py), B C⁻¹ B† = Y† Y for Y = L⁻¹ B†: a
        triangular solve and a rank-N update (herk), at L = 12 0.8x the time of C⁻¹ (potri)
        and two sparse products, the route of 0.8.0."""
        a_block, b_dagger, c_block = self._blocks(spins, dtype)
        potrf, = lapack.get_lapack_funcs(("potrf",), dtype=dtype)
        trsm, herk = blas.get_blas_funcs(("trsm", "herk"), dtype=dtype)
        factor, info = potrf(c_block, lower=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the upper-band block C is not positive definite (LAPACK info {info}): "
                                        "the downfolded model needs |J|/2 - mu > 2 d |t|")
        y = trsm(1.0, factor, b_dagger, lower=1, overwrite_b=1)
        return herk(-1.0, y, beta=1.0, c=a_block, trans=2, lower=1, overwrite_c=1)

    def effective_hamiltonian(self, spins: np.ndarray, dtype=np.complex128) -> np.ndarray:
        """H_eff = A - B C⁻¹ B†, (N, N) Hermitian, in ``dtype`` (complex128 or complex64)."""
        h = np.tril(self._lower_effective_hamiltonian(np.asarray(spins, dtype=np.float64), dtype))
        return h + np.tril(h, -1).conj().T

    def low_band_free_energy(self, spins: np.ndarray, dtype=np.complex64) -> np.ndarray:
        """F_low[S] (whole lattice) for spins (N, 3) or (C, N, 3).

        In single precision by default: H_eff and its eigenvalues in complex64 take 0.7-0.8x the
        time of complex128 at L = 10-16, and F_low 0.54x its time in 0.8.0 at L = 12
        (analysis/benchmark_core.py, 1b; analysis/BENCHMARKS.md). F_low is the middle
        model, not the exact weight: any deterministic function of the spins keeps the chain
        exact, and the rounding (|δF_low| ~ 2-5e-8 |F_low| at L = 12, tests/test_downfolded.py;
        β|δF_low| ~ 1-2e-4 at T = 0.02) is far below the exact test's spread (σ ≈ 0.2). Where
        C is too near singular for single precision's Cholesky (|J|/2 - μ barely above 2d|t|)
        that configuration is done in double. A run resumed on a machine whose LAPACK rounds
        differently takes one middle test with its saved E_eff of the other's rounding: a
        one-off error of that size. ``dtype=np.complex128`` gives F_low to round-off (the
        tests of closed forms)."""
        spins = np.asarray(spins, dtype=np.float64)
        if spins.ndim == 3:
            return np.array([self.low_band_free_energy(s, dtype) for s in spins])
        key = self.memo.key(spins, self.beta, dtype)
        known = self.memo.get(key)
        if known is not None:
            return known
        try:
            h = self._lower_effective_hamiltonian(spins, dtype)
        except np.linalg.LinAlgError:
            if np.dtype(dtype) == np.complex128:
                raise
            dtype = np.complex128  # C near singular: single precision's Cholesky failed
            h = self._lower_effective_hamiltonian(spins, dtype)
        eps = hermitian_eigenvalues(h).astype(np.float64)
        value = float(-log_fermion_weight(eps, self.beta) / self.beta + self.physics.classical_energy(spins))
        self.memo.put(key, value)
        return value

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
