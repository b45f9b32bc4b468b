"""The inner local chain of SLMC for models that are a quadratic form in bond variables.

A model of this family (see BondForm) has, with b_a = S_i·S_j on bond a = {i, j},

    E_eff[S] = E_0 - Σ_a w_a b_a - (1/2) Σ_ab b_a G_ab b_b          (whole lattice)

The linear model is the case G = 0 (w_a = J of the bond's shell); the four-spin bond-pair
terms give G. Changing S_i changes only the z bonds at i (by δ_a = (S_i' - S_i)·S_j), so

    ΔE = -Σ_{a at i} δ_a (w_a + h_a) - (1/2) Σ_{a,a' at i} δ_a G_aa' δ_a',   h = G b,

O(z²) per proposal with h kept up to date (O(P z) per accepted update, P the bonds G acts on).

Why compiled: the chain is ~10^5 sequential proposals per second of a handful of flops
each, where NumPy's per-call overhead (µs) would be the whole cost (measured: 6.8 µs per
linear update in NumPy). numba compiles the loop once per machine (cached on disk).
The random numbers are drawn by draw_moves exactly as for the generic chain, so both
paths make the same decisions (tests/test_local_chain.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True, eq=False)
class BondForm:
    """E_eff as a bond form: bonds (B, 2) the site pairs, site_bonds (N, z) the bonds at each
    site, partner (N, z) the other site of each, w (B,) the linear couplings, G (P, P) the
    bond matrix on the first P bonds (P = 0: no four-spin terms)."""

    bonds: np.ndarray
    site_bonds: np.ndarray
    partner: np.ndarray
    w: np.ndarray
    G: np.ndarray

    @classmethod
    def from_bonds(cls, n_sites: int, bonds: np.ndarray, w: np.ndarray, G: np.ndarray) -> "BondForm":
        """Bonds (B, 2) with i < j; every site must lie on the same number of bonds (true
        for any translation-invariant bond set)."""
        bonds = np.asarray(bonds, dtype=np.int64)
        at_site = [[] for _ in range(n_sites)]
        for a, (i, j) in enumerate(bonds):
            at_site[i].append((a, j))
            at_site[j].append((a, i))
        if len({len(x) for x in at_site}) != 1:
            raise ValueError("every site must lie on the same number of bonds")
        table = np.array(at_site, dtype=np.int64).reshape(n_sites, -1, 2)
        return cls(bonds, table[..., 0].copy(), table[..., 1].copy(), np.ascontiguousarray(w, dtype=np.float64),
                   np.ascontiguousarray(G, dtype=np.float64))

    def bond_values(self, spins: np.ndarray) -> np.ndarray:
        """b_a = S_i·S_j for every bond, shape (B,)."""
        b = np.empty(len(self.bonds))
        _bond_values(np.ascontiguousarray(spins, dtype=np.float64), self.bonds, b)
        return b

    def energy(self, spins: np.ndarray, e0: float) -> float:
        b = self.bond_values(spins)
        p = len(self.G)
        pairs = 0.5 * b[:p] @ self.G @ b[:p]
        return float(e0 - self.w @ b - pairs)

    def chain(self, spins: np.ndarray, beta: float, sites, noise, log_u,
              step_size: float) -> tuple[np.ndarray, float]:
        """The end of the Metropolis chain on exp(-β E_eff) from ``spins`` (not modified),
        with proposals S_i -> normalize(S_i + step_size g) at sites[m], noise g = noise[m],
        accepted when log_u[m] < -β ΔE (see samplers.moves); and E_eff[end] - E_eff[start],
        the sum of the accepted ΔE."""
        spins = np.array(spins, dtype=np.float64)
        b = self.bond_values(spins)
        h = self.G @ b[:len(self.G)]
        total = _chain(spins, b, h, self.site_bonds, self.partner, self.w, self.G,
                       np.asarray(sites, dtype=np.int64), np.asarray(noise, dtype=np.float64),
                       np.asarray(log_u, dtype=np.float64), float(beta), float(step_size))
        return spins, total


@numba.njit(cache=True)
def _bond_values(spins, bonds, out):  # pragma: no cover
    for a in range(len(bonds)):
        i, j = bonds[a, 0], bonds[a, 1]
        out[a] = spins[i, 0] * spins[j, 0] + spins[i, 1] * spins[j, 1] + spins[i, 2] * spins[j, 2]


@numba.njit(cache=True)
def _chain(spins, b, h, site_bonds, partner, w, G, sites, noise, log_u, beta, step_size):  # pragma: no cover
    z = site_bonds.shape[1]
    p = G.shape[0]
    delta = np.empty(z)
    new = np.empty(3)
    total = 0.0
    for m in range(len(sites)):
        i = sites[m]
        norm = 0.0
        for k in range(3):
            new[k] = spins[i, k] + step_size * noise[m, k]
            norm += new[k] * new[k]
        norm = math.sqrt(norm)
        for k in range(3):
            new[k] /= norm
        de = 0.0
        for c in range(z):
            j = partner[i, c]
            d = 0.0
            for k in range(3):
                d += (new[k] - spins[i, k]) * spins[j, k]
            delta[c] = d
            a = site_bonds[i, c]
            de -= d * (w[a] + (h[a] if a < p else 0.0))
        for c in range(z):
            a = site_bonds[i, c]
            if a < p:
                for c2 in range(z):
                    a2 = site_bonds[i, c2]
                    if a2 < p:
                        de -= 0.5 * delta[c] * G[a, a2] * delta[c2]
        if log_u[m] < -beta * de:
            total += de
            for k in range(3):
                spins[i, k] = new[k]
            for c in range(z):
                a = site_bonds[i, c]
                b[a] += delta[c]
                if a < p:
                    for r in range(p):
                        h[r] += G[a, r] * delta[c]  # G is symmetric; rows are contiguous
    return total
