"""The double-exchange (spin-fermion) model: one-body Hamiltonian, its spectrum and weights.

Conventions (fixed for the whole project; README "Physics conventions"):

    H[S] = -t Σ_<ij>,σ (c†_iσ c_jσ + h.c.) + (J/2) Σ_i S_i·(c†_i σ c_i) - μ Σ_iσ n_iσ

basis index 2*i + σ (σ = 0 up, 1 down). Energies are in units of t's unit; temperatures
enter only as β = 1/T. All energies and free energies are for the WHOLE lattice (not per site):

    log W_β[S] = Σ_n log(1 + exp(-β ε_n[S])) - β J_direct Σ_<ij> S_i·S_j
    F_β[S]     = -(1/β) log W_β[S]           (the weight is P_β[S] ∝ exp(-β F_β[S]) = W_β[S])

log(1 + e^{-x}) is evaluated with ``np.logaddexp(0, -x)`` so that β ε ≫ 1 never overflows.
Only eigenvalues are ever computed, never eigenvectors: on the CPU by LAPACK's reduction to
tridiagonal form and root-free QR (``hermitian_eigenvalues``), on a GPU by CuPy's eigvalsh.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache, cached_property

import numpy as np
from scipy.linalg import lapack

from .backend import array_module, to_numpy
from .lattice import Lattice


# hetrd's block size, as its workspace (lwork = block x n): 8 was within 3% of the fastest
# block at n = 36 ... 512, single and double precision, where heevd's own choice (32, with its
# overhead) took 1.2-1.5x as long (OpenBLAS 0.3.31; analysis/BENCHMARKS.md, "The eigensolver")
HETRD_BLOCK = 8


@cache
def _lapack_routines(dtype):
    real = np.finfo(dtype).dtype
    return lapack.get_lapack_funcs(("hetrd",), dtype=dtype)[0], lapack.get_lapack_funcs(("sterf",), dtype=real)[0]


def hermitian_eigenvalues(lower: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the Hermitian matrix whose lower triangle ``lower`` holds, a
    Fortran-ordered complex64 or complex128 (n, n) array that LAPACK overwrites; the upper
    triangle is not read. Returned in the matrix's real precision.

    hetrd (Householder reduction to a real tridiagonal matrix) and sterf (its eigenvalues by
    root-free QR) are what heevd does without eigenvectors, with a smaller block (HETRD_BLOCK).
    A C-ordered Hermitian matrix h may be passed as h.T: that is conj(h), with h's eigenvalues."""
    hetrd, sterf = _lapack_routines(lower.dtype)
    _, diagonal, off_diagonal, _, info = hetrd(lower, lower=1, lwork=max(1, HETRD_BLOCK * lower.shape[0]),
                                               overwrite_a=1)
    if info == 0 and len(diagonal) == 1:
        return diagonal  # (sterf's wrapper takes no empty off-diagonal)
    if info == 0:
        eigenvalues, info = sterf(diagonal, off_diagonal, overwrite_d=1, overwrite_e=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK found no eigenvalues of a {lower.shape} Hermitian matrix (info {info})")
    return eigenvalues


def log_fermion_weight(eigenvalues: np.ndarray, beta: float) -> np.ndarray:
    """Σ_n log(1 + exp(-β ε_n)) over the last axis (the fermion part of log W_β)."""
    return np.logaddexp(0.0, -beta * np.asarray(eigenvalues)).sum(axis=-1)


def fermi(eigenvalues: np.ndarray, beta: float) -> np.ndarray:
    """Occupation f(ε) = 1/(1 + e^{βε}), written with tanh so it never overflows."""
    return 0.5 * (1.0 - np.tanh(0.5 * beta * np.asarray(eigenvalues)))


def fermion_energy(eigenvalues: np.ndarray, beta: float) -> np.ndarray:
    """Σ_n ε_n f(ε_n): the electrons' energy, whole lattice, μ included in ε."""
    eigenvalues = np.asarray(eigenvalues)
    return (eigenvalues * fermi(eigenvalues, beta)).sum(axis=-1)


def fermion_energy_fluctuation(eigenvalues: np.ndarray, beta: float) -> np.ndarray:
    """Σ_n ε_n² f(ε_n)(1 - f(ε_n)), whole lattice, ε from μ: minus the β-derivative of
    Σ_n ε_n f(ε_n) at fixed spins, the part of the specific heat that the spread of the
    energy over configurations leaves out (thermodynamics.py)."""
    eigenvalues = np.asarray(eigenvalues)
    t = np.tanh(0.5 * beta * eigenvalues)
    return (eigenvalues**2 * 0.25 * (1.0 - t * t)).sum(axis=-1)  # f (1 - f) = (1 - tanh²(βε/2)) / 4


def hopping_matrix(lattice: Lattice, t: float, mu: float) -> np.ndarray:
    """H_0 for one spin species, (N, N): -t on every nearest-neighbour bond, -μ on the diagonal."""
    h = np.zeros((lattice.N, lattice.N))
    i, j = lattice.bonds.T
    np.add.at(h, (i, j), -t)
    np.add.at(h, (j, i), -t)
    return h - mu * np.eye(lattice.N)


@dataclass(frozen=True)
class DoubleExchange:
    """Parameters of the double-exchange model on a lattice, and the exact weight of spins.

    ``spins`` are float64 arrays of unit vectors, shape (N, 3) or batched (..., N, 3).
    """

    lattice: Lattice
    t: float = 1.0
    J: float = 4.0
    mu: float = 0.0
    J_direct: float = 0.0
    backend: str = field(default="numpy")

    def __getstate__(self):
        # the parameters only: the cached H0, work matrix and array module are rebuilt on demand
        # (models that hold the physics travel between MPI ranks: models/downfolded.py)
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def _xp(self):
        return array_module(self.backend)

    @cached_property
    def _h0(self):
        """Spin-independent part: (hopping - μ) ⊗ 1_spin, shape (2N, 2N) complex128."""
        h0 = np.kron(hopping_matrix(self.lattice, self.t, self.mu), np.eye(2)).astype(np.complex128)
        return self._xp.asarray(h0)

    @cached_property
    def _work(self):
        # One reused matrix for single configurations: LAPACK on freshly allocated memory
        # was measured 20% slower at L = 12 (cold pages), more than building H itself. Each
        # configuration copies H0 into it, then its 4N spin entries (_fill); LAPACK overwrites it.
        return self._xp.array(self._h0)

    @cached_property
    def _spin_entries(self):
        """Flat indices of the entries the spins set: (up_i, up_i), (dn_i, dn_i), (up_i, dn_i),
        (dn_i, up_i); and H0's diagonal at the first two."""
        n2 = 2 * self.lattice.N
        up = 2 * self._xp.arange(self.lattice.N)
        dn = up + 1
        uu, dd = up * n2 + up, dn * n2 + dn
        flat = self._h0.reshape(-1)
        return uu, dd, up * n2 + dn, dn * n2 + up, flat[uu], flat[dd]

    def _fill_spins(self, h, spins):
        """Write the spin entries of H[S] into ``h`` (batched over leading axes), which already
        holds H0 everywhere else: O(N) per configuration."""
        uu, dd, ud, du, h0_uu, h0_dd = self._spin_entries
        flat = h.reshape(h.shape[:-2] + (-1,))
        half = 0.5 * self.J
        hz = half * spins[..., 2]
        flat[..., uu] = h0_uu + hz
        flat[..., dd] = h0_dd - hz
        off = half * (spins[..., 0] - 1j * spins[..., 1])
        flat[..., ud] = off
        flat[..., du] = off.conj()
        return h

    def hamiltonian(self, spins):
        """The 2N x 2N Hermitian matrix H[S] (batched over leading axes), on the backend."""
        spins = self._xp.asarray(spins, dtype=self._xp.float64)
        return self._fill(self._xp.empty(spins.shape[:-2] + self._h0.shape, dtype=self._h0.dtype), spins)

    def _fill(self, h, spins):
        """H[S] into ``h``: H0, then the spin entries."""
        h[...] = self._h0
        return self._fill_spins(h, spins)

    def eigenvalues(self, spins) -> np.ndarray:
        """Ascending eigenvalues ε_n of H[S] (μ included), float64 on the host, shape (..., 2N).
        On the CPU a batch is done one configuration at a time, so that a configuration's
        eigenvalues are the same bits alone or in a batch."""
        spins = self._xp.asarray(spins, dtype=self._xp.float64)
        if self.backend != "numpy":
            h = self.hamiltonian(spins) if spins.ndim > 2 else self._fill(self._work, spins)
            return to_numpy(self._xp.linalg.eigvalsh(h))
        if spins.ndim > 2:
            flat = spins.reshape((-1,) + spins.shape[-2:])
            return np.array([self.eigenvalues(s) for s in flat]).reshape(spins.shape[:-2] + (2 * self.lattice.N,))
        return hermitian_eigenvalues(self._fill(self._work, spins).T)  # H^T = conj(H): H's eigenvalues

    def classical_energy(self, spins) -> np.ndarray:
        """J_direct Σ_<ij> S_i·S_j over nearest-neighbour bonds (whole lattice)."""
        spins = np.asarray(spins)
        if self.J_direct == 0.0:
            return np.zeros(spins.shape[:-2])
        i, j = self.lattice.bonds.T
        return self.J_direct * np.einsum("...bk,...bk->...", spins[..., i, :], spins[..., j, :])

    def log_weight(self, eigenvalues, classical_energy, beta: float) -> np.ndarray:
        """log W_β from cached eigenvalues and classical energy, at any β (no diagonalization)."""
        return log_fermion_weight(eigenvalues, beta) - beta * np.asarray(classical_energy)

    def free_energy(self, eigenvalues, classical_energy, beta: float) -> np.ndarray:
        """F_β = -(1/β) log W_β, whole lattice."""
        return -self.log_weight(eigenvalues, classical_energy, beta) / beta

    def free_energy_of(self, spins, beta: float) -> np.ndarray:
        """F_β[S] straight from spins (one diagonalization per configuration)."""
        return self.free_energy(self.eigenvalues(spins), self.classical_energy(spins), beta)
