"""Spin observables. Conventions: magnetization is per site, m = (1/N) Σ_i S_i;
the structure factor is S(q) = (1/N) |Σ_i S_i e^{-i q·r_i}|^2 (summed over the three
components), so S(0) = N |m|^2 and Σ_q S(q) = N for unit spins."""

from __future__ import annotations

import numpy as np

from .lattice import Lattice


def magnetization(spins: np.ndarray) -> np.ndarray:
    """m = (1/N) Σ_i S_i, shape (..., 3)."""
    return np.asarray(spins).mean(axis=-2)


def abs_magnetization(spins: np.ndarray) -> np.ndarray:
    """|m|, shape (...)."""
    return np.linalg.norm(magnetization(spins), axis=-1)


def structure_factor(spins: np.ndarray, lattice: Lattice) -> np.ndarray:
    """S(q) for every q = 2π n / L on the lattice, shape (..., *lattice.shape), via FFT.

    Index n of the result is the momentum lattice.momenta()[flat n]; q = 0 is at the origin.
    """
    spins = np.asarray(spins)
    grid = spins.reshape(spins.shape[:-2] + lattice.shape + (3,))
    axes = tuple(range(spins.ndim - 2, spins.ndim - 2 + lattice.dim))
    amp = np.fft.fftn(grid, axes=axes)
    return (np.abs(amp) ** 2).sum(axis=-1) / lattice.N


def nn_correlation(spins: np.ndarray, lattice: Lattice) -> np.ndarray:
    """Mean S_i·S_j over the nearest-neighbour bonds (per bond)."""
    spins = np.asarray(spins)
    i, j = lattice.bonds.T
    return np.einsum("...bk,...bk->...b", spins[..., i, :], spins[..., j, :]).mean(axis=-1)


def random_spins(n_sites: int, rng: np.random.Generator, size: tuple[int, ...] = ()) -> np.ndarray:
    """Independent spins uniform on the unit sphere, shape size + (n_sites, 3)."""
    v = rng.standard_normal(size + (n_sites, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
