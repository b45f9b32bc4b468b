"""Four-spin bond-pair terms, shared by the linear model (raw spins) and the Transformer's head
(effective spins):

    -Σ_o K_o ψ_o,   ψ_o = Σ_{(a,b) in o} b_a b_b,   b_a = S_i·S_j on bond a = {i, j},

bonds of shells 1..k, o the symmetry classes of unordered bond pairs (Lattice.bond_pair_orbits),
at any separation or only those whose bond midpoints lie within a range. Why: integrating out
the electrons couples the bond kinetic energies over long distances (to second order
ΔF ≈ Σ_ab χ_ab δt_a δt_b); on the reference problem these terms cut the spread of the exact test's log-ratio from σ ≈ 1.0 (linear) to 0.51 offline
(analysis/model_capacity.py; analysis/DEPTH_STUDY.md). The same energy is (1/2) bᵀ G b with the
bond matrix G = K[class], diagonal doubled (bond_matrix): what a local update uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch

from ..lattice import Lattice


@dataclass(frozen=True, eq=False)
class BondPairTables:
    """bonds (B, 2), pair_class (B, B) symmetric, and the correlation tables of
    bond_pair_sums: slots (T, N), orbit and weight (T² N,), and the lattice's shape."""

    bonds: np.ndarray
    pair_class: np.ndarray
    slots: np.ndarray
    orbit: np.ndarray
    weight: np.ndarray
    shape: tuple[int, ...]

    @property
    def n_orbits(self) -> int:
        return int(self.pair_class.max()) + 1 if self.pair_class.size else 0

    @cached_property
    def half_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, w): R (N, 2H) real, whose columns (k, part) are cos(k·t) and -sin(k·t) for the H
        momenta k = 2π m / L with 0 <= m_last <= L/2, so that f @ R holds the real and imaginary
        parts of the discrete Fourier transform f̂(k) = Σ_t f(t) e^{-i k·t} of a real field f
        on the sites t; and w (H,) such that Σ_k g(k) = Σ_half w_k Re g(k) for any g with
        g(-k) = conj g(k): 1 where -k is in the half too (m_last = 0 or L/2), else 2."""
        coords = np.indices(self.shape).reshape(len(self.shape), -1).T
        n = self.shape[0]
        half = coords[coords[:, -1] <= n // 2]
        angle = 2 * np.pi * (coords @ half.T) / n  # (N, H)
        columns = np.stack([np.cos(angle), -np.sin(angle)], axis=-1).reshape(len(coords), 2 * len(half))
        paired = (half[:, -1] == 0) | (2 * half[:, -1] == n)
        return columns, np.where(paired, 1.0, 2.0)


@lru_cache(maxsize=8)
def bond_pair_tables(lattice: Lattice, n_shells: int, max_range: float = 0.0) -> BondPairTables:
    """The tables that turn ψ_o into translation correlations of bond fields (cached: the
    class search takes about a second at L = 6, k = 4). ``max_range`` > 0: only the pairs of
    bonds whose midpoints lie within that distance (Lattice.bond_pair_orbits); the others have
    pair_class -1 and weight 0 in the correlation tables.

    Bonds fall into translation classes τ (T of them); slots[τ, t] is the bond of class τ
    translated by translation t (site index t = its vector, t = 0 the identity), so a bond
    field b becomes b[slots] of shape (T, N). The periodic correlation
    C_ττ'(d) = Σ_t b[slots[τ, t]] b[slots[τ', t + d]] visits every ordered bond pair
    m_τ m_τ' times (m: translations that map a bond onto itself), so
    ψ_o = Σ_{(τ,τ',d) in o} weight · C_ττ'(d) with weight = 1/(m_τ m_τ'), halved for two
    different bonds (the unordered pair is visited in both orders).
    """
    if n_shells == 0:
        empty = np.zeros((0, 0), np.int64)
        return BondPairTables(np.zeros((0, 2), np.int64), empty, np.zeros((0, lattice.N), np.int64),
                              np.zeros(0, np.int64), np.zeros(0), lattice.shape)
    bonds, pair_class = lattice.bond_pair_orbits(n_shells, max_range)
    _, index = lattice.shell_bonds(n_shells)
    n_bonds, n = len(bonds), lattice.N
    trans = np.array(lattice.translations())  # (N, N): trans[t][i] = site i moved by vector t
    images = index[trans[:, bonds[:, 0]], trans[:, bonds[:, 1]]].T  # (bonds, N)
    slots, covered = [], np.zeros(n_bonds, dtype=bool)
    for a in range(n_bonds):
        if not covered[a]:
            slots.append(images[a])
            covered[images[a]] = True
    slots = np.array(slots)
    mult = np.array([n // len(np.unique(row)) for row in slots])
    a = np.broadcast_to(slots[:, 0][:, None, None], (len(slots), len(slots), n))
    b = np.broadcast_to(slots[None, :, :], (len(slots), len(slots), n))
    orbit = pair_class[a, b]
    weight = np.where(a == b, 1.0, 0.5) / (mult[:, None, None] * mult[None, :, None]) * (orbit >= 0)
    return BondPairTables(bonds, pair_class, slots, np.maximum(orbit, 0).ravel(), weight.ravel(), lattice.shape)


def bond_values(spins, bonds):
    """b_a = S_i·S_j for bonds (B, 2), spins (..., N, 3) -> (..., B); NumPy or torch.
    Read off the Gram matrix S Sᵀ: one matrix product beats gathering both ends of every
    bond (measured 3× faster at N = 36, and the same in a batch)."""
    n = spins.shape[-2]
    gram = spins @ spins.swapaxes(-1, -2)
    return gram.reshape(gram.shape[:-2] + (n * n,))[..., bonds[:, 0] * n + bonds[:, 1]]


def bond_pair_sums(b: torch.Tensor, slots: torch.Tensor, orbit: torch.Tensor, weight: torch.Tensor,
                   n_orbits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(C, B) bond values -> (C, n_orbits) ψ_o, with the tables of bond_pair_tables (as tensors
    on b's device). The correlations C_ττ'(d) by FFT over the lattice (sites are numbered in C
    order of their coordinates, so a field reshapes to ``shape``): T² N log N per
    configuration instead of T² N² as a direct sum over t and d (measured forward and backward
    3.6× faster at L = 6, 10× at L = 10). Memory: about 5 C T² N floats; callers chunk C."""
    if not len(b):  # MKL's FFT refuses an empty batch
        return b.new_zeros(0, n_orbits)
    spatial = tuple(range(-len(shape), 0))
    spectra = torch.fft.rfftn(b[:, slots].reshape(b.shape[:1] + slots.shape[:1] + tuple(shape)), dim=spatial)
    # Σ_t f(t) g(t + d) is the inverse transform of conj(f̂) ĝ (real fields)
    corr = torch.fft.irfftn(spectra.conj()[:, :, None] * spectra[:, None], s=tuple(shape), dim=spatial).flatten(1)
    return corr.new_zeros(len(b), n_orbits).index_add_(1, orbit, corr * weight.to(corr.dtype))


def bond_pair_kernel(couplings: np.ndarray, tables: BondPairTables) -> np.ndarray:
    """(H, 2T, 2T) real M such that Σ_o K_o ψ_o = Σ_k z_kᵀ M_k z_k, z_k = (Re f̂_τ(k), Im f̂_τ(k))
    over the bond fields f_τ = b[slots[τ]] and the half spectrum's momenta k
    (BondPairTables.half_spectrum; bond_pair_energy). With W_ττ'(d) = K_o weight for
    (τ, τ', d) in class o, Σ_d W(d) C(d) = (1/N) Σ_k conj(f̂_τ(k)) Ŵc_ττ'(k) f̂_τ'(k), Ŵc =
    conj(Ŵ) (W real; f̂(k) = Σ_t f(t) e^{-i k·t}); Ŵc(k) is Hermitian in (τ, τ') (the classes
    are symmetric, W_ττ'(d) = W_τ'τ(-d)), so with Ŵc = A + iB each term is real,
    Re(conj(f̂)ᵀ Ŵc f̂) = zᵀ [[A, -B], [B, A]] z, and the momenta -k, which repeat the terms of
    k, are folded into the half's weights."""
    n_slots, n = tables.slots.shape
    w = (np.asarray(couplings, dtype=np.float64)[tables.orbit] * tables.weight).reshape(n_slots, n_slots, n)
    columns, weight = tables.half_spectrum
    # Ŵc(k) = Σ_d W(d) e^{+i k·d}: the same cosines and sines as the fields' transform
    cos, minus_sin = columns.reshape(n, len(weight), 2).transpose(2, 0, 1)
    a, b = (w @ cos).transpose(2, 0, 1), -(w @ minus_sin).transpose(2, 0, 1)  # (H, T, T)
    # z_k's entries are (τ, part) as bond_pair_energy lays them out: real part 0, imaginary 1
    kernel = np.empty((len(weight), n_slots, 2, n_slots, 2))
    kernel[:, :, 0, :, 0], kernel[:, :, 0, :, 1], kernel[:, :, 1, :, 0], kernel[:, :, 1, :, 1] = a, -b, b, a
    return kernel.reshape(len(weight), 2 * n_slots, 2 * n_slots) * (weight / n)[:, None, None]


def bond_pair_energy(b: np.ndarray, tables: BondPairTables, kernel: np.ndarray) -> np.ndarray:
    """Σ_o K_o ψ_o for NumPy bond values b (..., B), with kernel = bond_pair_kernel(K, tables):
    the same sum as (1/2) bᵀ G b (bond_matrix), in about T N² + 4 T² N operations per
    configuration instead of B² = T² N²: the fields' transform over half of the momenta (b is
    real) as one real matrix product (np.fft's per-call overhead, 20 µs, would exceed the whole
    sum at L = 6), then a 2T x 2T quadratic form per momentum. Measured per configuration at
    L = 12 (4 shells within 2 spacings): 30 µs against 81 µs with complex transforms over
    every momentum (0.8.6)."""
    columns, weight = tables.half_spectrum
    n_slots = len(tables.slots)
    x = b[..., tables.slots] @ columns  # (..., T, 2H): τ, (k, part)
    z = x.reshape(x.shape[:-1] + (len(weight), 2)).swapaxes(-3, -2).reshape(x.shape[:-2] + (len(weight), 2 * n_slots))
    return np.einsum("...ka,...ka->...", z, (kernel @ z[..., None])[..., 0])


def bond_matrix(couplings: np.ndarray, pair_class: np.ndarray) -> np.ndarray:
    """G with Σ_o K_o ψ_o = (1/2) bᵀ G b: G_ab = K_class(a,b), the diagonal doubled (a bond
    paired with itself appears once in ψ, as (1/2) G_aa b_a² = K b_a²); 0 for pairs of class -1
    (beyond the model's range)."""
    g = np.where(pair_class >= 0, np.asarray(couplings, dtype=np.float64)[np.maximum(pair_class, 0)], 0.0)
    g[np.diag_indices_from(g)] *= 2
    return g
