"""The inner local chain of SLMC for models that are a quadratic form in bond variables.

A model of this family (see BondForm) has, with b_a = S_i·S_j on bond a = {i, j},

    E_eff[S] = E_0 - Σ_a w_a b_a - (1/2) Σ_ab b_a G_ab b_b          (whole lattice)

The linear model is the case G = 0 (w_a = J of the bond's shell); the four-spin bond-pair
terms give G. Changing S_i changes only the z bonds at i (by δ_a = (S_i' - S_i)·S_j), so

    ΔE = -Σ_{a at i} δ_a (w_a + h_a) - (1/2) Σ_{a,a' at i} δ_a G_aa' δ_a',   h = G b,

O(z²) per proposal with h kept up to date: O(u z) per accepted update, u the bonds that G
couples to the bonds at a site (all P of G's bonds at any range; a fixed number, independent
of N, for a model of finite bond-pair range).

Kinds of move, reflections mixed at random with one of the others (samplers/moves.py):
  Metropolis   S_i -> normalize(S_i + δ g), accepted with min(1, exp(-β ΔE));
  heat bath    S_i' drawn from exp(β S_i'·H) on the sphere ([slmc] move = "heatbath"),
               accepted with min(1, exp(-β [ΔE + (S_i' - S_i)·H])) (Metropolis-Hastings: the
               second term is the proposal ratio; with G = 0 it cancels ΔE and every move is
               accepted, with G the four-spin terms at i, quadratic in S_i, decide);
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
    bond matrix on the first P bonds (P = 0: no four-spin terms).

    Derived from G by translation invariance (from_bonds): the first zp bonds at each site
    are G's, listed in the same order at every site (translates of site 0's), so that
    ``local`` (zp, zp), G's block over them, is one table for all sites; ``reach`` (N, u)
    lists the bonds that G couples to the bonds at a site (the translates of site 0's list)
    and ``coupling`` (zp, u) = G[site_bonds[i, :zp]][:, reach[i]], the same for every i. An
    accepted update adds δ @ coupling to h at reach[i]: zp rows of u, contiguous in memory,
    instead of zp rows of G (P each) or zp scattered sparse rows. Rows, not columns: a sum
    along u vectorizes, where u dot products of zp terms each end in a horizontal sum (L = 8,
    4 shells within 2 spacings, zp = 20, u = 302: 0.89 µs per accepted update against 1.18,
    the whole chain 0.84×; analysis/BENCHMARKS.md, "The inner chain's update")."""

    bonds: np.ndarray
    site_bonds: np.ndarray
    partner: np.ndarray
    w: np.ndarray
    G: np.ndarray
    local: np.ndarray
    reach: np.ndarray
    coupling: np.ndarray

    @classmethod
    def from_bonds(cls, n_sites: int, bonds: np.ndarray, w: np.ndarray, G: np.ndarray,
                   translations=None) -> "BondForm":
        """Bonds (B, 2) with i < j, the first P = len(G) of them G's; every site must lie on the
        same number of bonds (true for any translation-invariant bond set). ``translations``
        (site permutations, Lattice.translations; needed where P > 0): G must be invariant
        under them."""
        bonds = np.asarray(bonds, dtype=np.int64)
        G = np.ascontiguousarray(G, dtype=np.float64)
        w = np.ascontiguousarray(w, dtype=np.float64)
        site_bonds, partner = bonds_at_sites(n_sites, bonds)
        p = len(G)
        zp = int((site_bonds[0] < p).sum())
        if np.any(site_bonds[:, :zp] >= p) or np.any(site_bonds[:, zp:] < p):
            raise ValueError("every site must lie on the same number of the bond matrix's bonds")
        if p == 0:
            return cls(bonds, site_bonds, partner, w, G, np.zeros((0, 0)), np.zeros((n_sites, 0), np.int64),
                       np.zeros((0, 0)))
        if translations is None:
            raise ValueError("a bond form with four-spin terms needs the lattice's translations")
        trans = np.asarray(translations, dtype=np.int64)  # site permutations (Lattice.translations)
        index = np.full((n_sites, n_sites), -1, dtype=np.int64)
        index[bonds[:, 0], bonds[:, 1]] = index[bonds[:, 1], bonds[:, 0]] = np.arange(len(bonds))
        own = site_bonds[0, :zp]
        near = np.flatnonzero(np.any(G[:, own] != 0, axis=1))  # the bonds G couples to site 0's
        trans = trans[np.argsort(trans[:, 0])]  # row i: the translation that moves site 0 to site i
        site_own = index[trans[:, bonds[own, 0]], trans[:, bonds[own, 1]]]  # site 0's bonds, moved to each site
        reach = index[trans[:, bonds[near, 0]], trans[:, bonds[near, 1]]]
        if np.any(np.sort(site_own, axis=1) != np.sort(site_bonds[:, :zp], axis=1)):
            raise ValueError("the bond set is not invariant under the translations")
        ends = bonds[site_own]
        site_bonds[:, :zp] = site_own
        partner[:, :zp] = np.where(ends[..., 0] == np.arange(n_sites)[:, None], ends[..., 1], ends[..., 0])
        local = np.ascontiguousarray(G[np.ix_(own, own)])
        coupling = np.ascontiguousarray(G[np.ix_(own, near)])
        # G's entries at every site are site 0's, and there are no others (each bond has two ends)
        invariant = np.array_equal(G, G.T) and 2 * np.count_nonzero(G) == n_sites * np.count_nonzero(coupling)
        if not invariant or any(not np.array_equal(G[np.ix_(site_own[i], reach[i])], coupling) for i in range(n_sites)):
            raise ValueError("the bond matrix is not invariant under the translations")
        return cls(bonds, site_bonds, partner, w, G, local, reach, coupling)

    def bond_values(self, spins: np.ndarray) -> np.ndarray:
        """b_a = S_i·S_j for every bond, shape (B,)."""
        return bond_values_of(spins, self.bonds)

    def bond_field(self, b: np.ndarray) -> np.ndarray:
        """h = G b over the first P bonds, as the chain adds it up: each bond's column of G
        through the sites at its two ends, halved (O(N u zp) instead of P²)."""
        h = np.zeros(len(self.G))
        _bond_field(self.site_bonds, self.reach, self.coupling, b, h)
        return h

    def energy(self, spins: np.ndarray, e0: float) -> float:
        b = self.bond_values(spins)
        p = len(self.G)
        pairs = 0.5 * b[:p] @ self.G @ b[:p]
        return float(e0 - self.w @ b - pairs)

    def fields(self, spins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, h): the bond values and the bond-pair field G b of ``spins``, the state the chain
        keeps current along its updates (``chain``'s ``fields``)."""
        b = self.bond_values(spins)
        return b, self.bond_field(b)

    def chain(self, spins: np.ndarray, beta: float, sites, noise, log_u,
              step_size: float, reflect=None, heat_bath: bool = False, fields=None) -> tuple[np.ndarray, float]:
        """The end of the Metropolis chain on exp(-β E_eff) from ``spins`` (not modified),
        with proposals S_i -> normalize(S_i + step_size g) at sites[m], noise g = noise[m],
        or where ``reflect[m]`` the reflection of S_i about its local field, accepted when
        log_u[m] < -β ΔE (see samplers.moves); and E_eff[end] - E_eff[start], the sum of the
        accepted ΔE.

        ``heat_bath``: the proposals other than reflections are drawn from exp(β S_i·H), H the
        local field (E_eff's part linear in S_i is -S_i·H), from the uniforms noise[m, :2]
        (step_size unused), and accepted when log_u[m] < -β [ΔE + (S_i' - S_i)·H]: the
        Metropolis-Hastings test, whose proposal ratio exp(β (S_i - S_i')·H) cancels the
        linear part of ΔE. For the linear model (G = 0) every such proposal is accepted; the
        four-spin terms' part of ΔE (quadratic in S_i) decides otherwise.

        ``fields``: (b, h) of ``spins`` as ``BondForm.fields`` gives them (or as an earlier
        chain left them), updated in place to the end's, so that a chain that starts where
        another ended need not set them up again (at L = 12 the set-up costs a fifth of a
        1152-update chain; samplers/nested.py); None: set up here."""
        spins = np.array(spins, dtype=np.float64)
        b, h = self.fields(spins) if fields is None else fields
        if b.shape != (len(self.bonds),) or h.shape != (len(self.G),) or b.dtype != np.float64 or h.dtype != np.float64:
            raise ValueError(f"bond fields of shapes {b.shape}, {h.shape} given for a form of {len(self.bonds)} "
                             f"bonds and a {len(self.G)}-bond matrix (float64 expected)")
        reflect = np.zeros(0, dtype=np.bool_) if reflect is None else np.asarray(reflect, dtype=np.bool_)
        total = _chain(spins, b, h, self.site_bonds, self.partner, self.w, self.local, self.reach, self.coupling,
                       np.asarray(sites, dtype=np.int64), np.asarray(noise, dtype=np.float64),
                       np.asarray(log_u, dtype=np.float64), float(beta), float(step_size), reflect,
                       bool(heat_bath))
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


def bond_values_of(spins: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """b_a = S_i·S_j for bonds (B, 2) and spins (..., N, 3), shape (..., B): compiled, O(B) per
    configuration (models/bond_pairs.bond_values reads them off the Gram matrix, O(N²))."""
    spins = np.ascontiguousarray(spins, dtype=np.float64)
    flat = spins.reshape((-1,) + spins.shape[-2:])
    out = np.empty((len(flat), len(bonds)))
    _bond_values(flat, np.asarray(bonds, dtype=np.int64), out)
    return out.reshape(spins.shape[:-2] + (len(bonds),))


@numba.njit(cache=True)
def _bond_values(spins, bonds, out):  # pragma: no cover
    for c in range(len(spins)):
        for a in range(len(bonds)):
            i, j = bonds[a, 0], bonds[a, 1]
            out[c, a] = spins[c, i, 0] * spins[c, j, 0] + spins[c, i, 1] * spins[c, j, 1] + spins[c, i, 2] * spins[c, j, 2]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _add_coupled(h, reach_i, coupling, delta, scale, row):  # pragma: no cover
    """h[reach_i] += scale * delta[:zp] @ coupling, summed in ``row`` (u,): four of coupling's
    rows per pass, so that row is read and written zp/4 times, not zp (the passes, not the
    products, bound this loop). Reassociated, so that it vectorizes; the order of a sum of
    zp terms does not matter. scale is 1 or 1/2: exact."""
    zp, u = coupling.shape
    for r in range(u):
        row[r] = 0.0
    c = 0
    while c + 4 <= zp:
        x0, x1, x2, x3 = scale * delta[c], scale * delta[c + 1], scale * delta[c + 2], scale * delta[c + 3]
        for r in range(u):
            row[r] += (coupling[c, r] * x0 + coupling[c + 1, r] * x1) + (coupling[c + 2, r] * x2 + coupling[c + 3, r] * x3)
        c += 4
    while c < zp:
        x = scale * delta[c]
        for r in range(u):
            row[r] += coupling[c, r] * x
        c += 1
    for r in range(u):
        h[reach_i[r]] += row[r]


@numba.njit(cache=True)
def _bond_field(site_bonds, reach, coupling, b, h):  # pragma: no cover
    zp = coupling.shape[0]
    own = np.empty(zp)
    row = np.empty(coupling.shape[1])
    for i in range(len(site_bonds)):
        for c in range(zp):
            own[c] = b[site_bonds[i, c]]
        _add_coupled(h, reach[i], coupling, own, 0.5, row)  # every bond has two ends


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _quadratic(local, delta):  # pragma: no cover
    """δᵀ local δ over the first zp entries of δ (reassociated: see _add_coupled)."""
    zp = local.shape[0]
    acc = 0.0
    for c in range(zp):
        row = 0.0
        for c2 in range(zp):
            row += local[c, c2] * delta[c2]
        acc += delta[c] * row
    return acc


@numba.njit(cache=True)
def _local_field(i, spins, b, h, site_bonds, partner, w, local, field):  # pragma: no cover
    """field = H at site i: E_eff's part linear in S_i is -S_i·H, H = Σ_{a at i} (w_a + h'_a) S_j
    with h'_a = h_a - Σ_{a' at i} G_aa' b_a' (the bond-pair field of the bonds not at i), so H
    does not depend on S_i."""
    z = site_bonds.shape[1]
    zp = local.shape[1]
    for k in range(3):
        field[k] = 0.0
    for c in range(z):
        a = site_bonds[i, c]
        coef = w[a]
        if c < zp:
            coef += h[a]
            for c2 in range(zp):
                coef -= local[c, c2] * b[site_bonds[i, c2]]
        j = partner[i, c]
        for k in range(3):
            field[k] += coef * spins[j, k]


@numba.njit(cache=True)
def _heat_bath_spin(field, beta, u_cos, u_phi, new):  # pragma: no cover
    """new drawn from exp(β S·H) on the unit sphere (H = field), from two uniforms in [0, 1):
    1 - cos θ = t = -log(1 - u_cos + u_cos e^{-2x}) / x with x = β|H| (the inverse of the
    truncated exponential's distribution function; its argument lies in (0, 1], so no log(0);
    written with log1p and expm1 so that t keeps its digits at small x), φ = 2π u_phi about H,
    in a basis perpendicular to H (any such basis: φ is uniform)."""
    norm = math.sqrt(field[0] * field[0] + field[1] * field[1] + field[2] * field[2])
    x = beta * norm
    if x > 1e-12:
        t = -math.log1p(u_cos * math.expm1(-2.0 * x)) / x
        ax, ay, az = field[0] / norm, field[1] / norm, field[2] / norm
    else:  # no field: uniform on the sphere (the limit x -> 0 of the above, t = 2 u_cos)
        t = 2.0 * u_cos
        ax, ay, az = 0.0, 0.0, 1.0
    t = min(max(t, 0.0), 2.0)
    c = 1.0 - t
    s = math.sqrt(t * (2.0 - t))
    # e1: the unit axis least aligned with a, made perpendicular to it; e2 = a x e1
    if abs(ax) <= abs(ay) and abs(ax) <= abs(az):
        e1x, e1y, e1z = 1.0 - ax * ax, -ax * ay, -ax * az
    elif abs(ay) <= abs(az):
        e1x, e1y, e1z = -ay * ax, 1.0 - ay * ay, -ay * az
    else:
        e1x, e1y, e1z = -az * ax, -az * ay, 1.0 - az * az
    n1 = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    e1x, e1y, e1z = e1x / n1, e1y / n1, e1z / n1
    e2x, e2y, e2z = ay * e1z - az * e1y, az * e1x - ax * e1z, ax * e1y - ay * e1x
    phi = 2.0 * math.pi * u_phi
    cp, sp = s * math.cos(phi), s * math.sin(phi)
    new[0] = c * ax + cp * e1x + sp * e2x
    new[1] = c * ay + cp * e1y + sp * e2y
    new[2] = c * az + cp * e1z + sp * e2z


@numba.njit(cache=True)
def _chain(spins, b, h, site_bonds, partner, w, local, reach, coupling, sites, noise,
           log_u, beta, step_size, reflect, heat_bath):  # pragma: no cover
    z = site_bonds.shape[1]
    zp = local.shape[1]  # the first zp bonds at each site are G's, in the order of local
    delta = np.empty(z)
    row = np.empty(coupling.shape[1])  # _add_coupled's sums
    new = np.empty(3)
    field = np.empty(3)
    total = 0.0
    for m in range(len(sites)):
        i = sites[m]
        # the proposal's log-density ratio q(S_i | S_i') / q(S_i' | S_i) over -β: 0 for the
        # symmetric moves, (S_i' - S_i)·H for the heat bath's (see BondForm.chain)
        linear_part = 0.0
        drew_heat_bath = False
        if len(reflect) and reflect[m]:
            _local_field(i, spins, b, h, site_bonds, partner, w, local, field)
            ff = field[0] * field[0] + field[1] * field[1] + field[2] * field[2]
            if ff == 0.0:  # no field: the reflection is undefined; no move
                continue
            sh = (spins[i, 0] * field[0] + spins[i, 1] * field[1] + spins[i, 2] * field[2]) / ff
            for k in range(3):
                new[k] = 2.0 * sh * field[k] - spins[i, k]
        elif heat_bath:
            _local_field(i, spins, b, h, site_bonds, partner, w, local, field)
            _heat_bath_spin(field, beta, noise[m, 0], noise[m, 1], new)
            drew_heat_bath = True
        else:
            for k in range(3):
                new[k] = spins[i, k] + step_size * noise[m, k]
        norm = math.sqrt(new[0] * new[0] + new[1] * new[1] + new[2] * new[2])  # a reflection: 1 up to round-off
        for k in range(3):
            new[k] /= norm
        if drew_heat_bath:
            for k in range(3):
                linear_part += (new[k] - spins[i, k]) * field[k]
        dx, dy, dz = new[0] - spins[i, 0], new[1] - spins[i, 1], new[2] - spins[i, 2]
        de = 0.0
        for c in range(z):  # G's bonds (c < zp) first: the bond-pair field h acts on them
            j = partner[i, c]
            d = dx * spins[j, 0] + dy * spins[j, 1] + dz * spins[j, 2]
            delta[c] = d
            a = site_bonds[i, c]
            de -= d * (w[a] + h[a] if c < zp else w[a])
        de -= 0.5 * _quadratic(local, delta)
        if log_u[m] < -beta * (de + linear_part):
            total += de
            for k in range(3):
                spins[i, k] = new[k]
            for c in range(z):
                b[site_bonds[i, c]] += delta[c]
            if zp:
                _add_coupled(h, reach[i], coupling, delta, 1.0, row)
    return total
