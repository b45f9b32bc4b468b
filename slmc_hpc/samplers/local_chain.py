"""The inner local chain of SLMC for models that are a quadratic form in bond variables.

A model of this family (see BondForm) has, with b_a = S_i·S_j on bond a = {i, j},

    E_eff[S] = E_0 - Σ_a w_a b_a - (1/2) Σ_ab b_a G_ab b_b          (whole lattice)

The linear model is the case G = 0 (w_a = J of the bond's shell); the four-spin bond-pair
terms give G. Changing S_i changes only the z bonds at i (by δ_a = (S_i' - S_i)·S_j), so

    ΔE = -Σ_{a at i} δ_a (w_a + h_a) - (1/2) Σ_{a,a' at i} δ_a G_aa' δ_a',   h = G b,

O(z²) per proposal with h kept up to date (O(P z) per accepted update, P the bonds G acts on).

Two kinds of move, mixed at random (samplers/moves.py):
  Metropolis   S_i -> normalize(S_i + δ g), accepted with min(1, exp(-β ΔE));
  reflection   S_i -> 2 (S_i·H) H / |H|² - S_i about the local field (over-relaxation)
               H = Σ_{a at i} (w_a + h'_a) S_j, h'_a = Σ_{r not at i} G_ar b_r,
               accepted with min(1, exp(-β ΔE)).
H does not depend on S_i (h' leaves out the bonds at i, which S_i changes), so reflecting
twice gives back S_i: the move is an involution and keeps the measure on the sphere, and the
Metropolis test makes it exact. E_eff's part linear in S_i is -S_i·H, which the reflection
keeps: for the linear model (G = 0) ΔE = 0 and every reflection is accepted; with G only the
bonds at i's own four-spin terms change.

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
        return cls(bonds, *bonds_at_sites(n_sites, bonds), np.ascontiguousarray(w, dtype=np.float64),
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
              step_size: float, reflect=None) -> tuple[np.ndarray, float]:
        """The end of the Metropolis chain on exp(-β E_eff) from ``spins`` (not modified),
        with proposals S_i -> normalize(S_i + step_size g) at sites[m], noise g = noise[m],
        or where ``reflect[m]`` the reflection of S_i about its local field, accepted when
        log_u[m] < -β ΔE (see samplers.moves); and E_eff[end] - E_eff[start], the sum of the
        accepted ΔE."""
        spins = np.array(spins, dtype=np.float64)
        b = self.bond_values(spins)
        h = self.G @ b[:len(self.G)]
        reflect = np.zeros(0, dtype=np.bool_) if reflect is None else np.asarray(reflect, dtype=np.bool_)
        total = _chain(spins, b, h, self.site_bonds, self.partner, self.w, self.G,
                       np.asarray(sites, dtype=np.int64), np.asarray(noise, dtype=np.float64),
                       np.asarray(log_u, dtype=np.float64), float(beta), float(step_size), reflect)
        return spins, total


def bonds_at_sites(n_sites: int, bonds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, z) the bonds at each site and (N, z) the other site of each, for bonds (B, 2);
    every site must lie on the same number of bonds (true for any translation-invariant set)."""
    at_site = [[] for _ in range(n_sites)]
    for a, (i, j) in enumerate(np.asarray(bonds, dtype=np.int64)):
        at_site[i].append((a, j))
        at_site[j].append((a, i))
    if len({len(x) for x in at_site}) != 1:
        raise ValueError("every site must lie on the same number of bonds")
    table = np.array(at_site, dtype=np.int64).reshape(n_sites, -1, 2)
    return table[..., 0].copy(), table[..., 1].copy()


@numba.njit(cache=True)
def _bond_values(spins, bonds, out):  # pragma: no cover
    for a in range(len(bonds)):
        i, j = bonds[a, 0], bonds[a, 1]
        out[a] = spins[i, 0] * spins[j, 0] + spins[i, 1] * spins[j, 1] + spins[i, 2] * spins[j, 2]


@numba.njit(cache=True)
def _chain(spins, b, h, site_bonds, partner, w, G, sites, noise, log_u, beta, step_size,
           reflect):  # pragma: no cover
    z = site_bonds.shape[1]
    p = G.shape[0]
    delta = np.empty(z)
    new = np.empty(3)
    field = np.empty(3)
    total = 0.0
    for m in range(len(sites)):
        i = sites[m]
        if len(reflect) and reflect[m]:
            for k in range(3):
                field[k] = 0.0
            for c in range(z):
                a = site_bonds[i, c]
                coef = w[a]
                if a < p:  # the bond-pair field of the bonds not at i (h' = h - G b over bonds at i)
                    coef += h[a]
                    for c2 in range(z):
                        a2 = site_bonds[i, c2]
                        if a2 < p:
                            coef -= G[a, a2] * b[a2]
                j = partner[i, c]
                for k in range(3):
                    field[k] += coef * spins[j, k]
            ff = field[0] * field[0] + field[1] * field[1] + field[2] * field[2]
            if ff == 0.0:  # no field: the reflection is undefined; no move
                continue
            sh = (spins[i, 0] * field[0] + spins[i, 1] * field[1] + spins[i, 2] * field[2]) / ff
            for k in range(3):
                new[k] = 2.0 * sh * field[k] - spins[i, k]
        else:
            for k in range(3):
                new[k] = spins[i, k] + step_size * noise[m, k]
        norm = math.sqrt(new[0] * new[0] + new[1] * new[1] + new[2] * new[2])  # a reflection: 1 up to round-off
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
