"""Periodic hypercubic lattices: sites, hopping bonds, distance shells and symmetries.

Sites are numbered in C order of their integer coordinates, so a field on the lattice
reshapes to ``lattice.shape + (...)`` for FFTs. Distances use the minimum-image
convention. Everything here is pure NumPy and independent of the spins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

KINDS = {"chain": 1, "square": 2, "cubic": 3}


@dataclass(frozen=True)
class Lattice:
    """An L x L x ... periodic hypercubic lattice of dimension ``dim``."""

    L: int
    dim: int
    kind: str = field(default="square")

    def __post_init__(self):
        if self.L < 2:
            raise ValueError(f"lattice size L must be at least 2, got {self.L}")

    @classmethod
    def from_kind(cls, kind: str, L: int) -> "Lattice":
        if kind not in KINDS:
            raise ValueError(f"unknown lattice kind {kind!r}; expected one of {sorted(KINDS)}")
        return cls(L=L, dim=KINDS[kind], kind=kind)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.L,) * self.dim

    @property
    def N(self) -> int:
        return self.L**self.dim

    @cached_property
    def coords(self) -> np.ndarray:
        """Integer coordinates, shape (N, dim), C order (last axis fastest)."""
        grids = np.indices(self.shape).reshape(self.dim, -1)
        return np.ascontiguousarray(grids.T)

    def index(self, coords: np.ndarray) -> np.ndarray:
        """Site index of (possibly out-of-box) integer coordinates, periodic wrap."""
        return np.ravel_multi_index(tuple(np.moveaxis(np.asarray(coords) % self.L, -1, 0)), self.shape)

    @cached_property
    def bonds(self) -> np.ndarray:
        """Nearest-neighbour bonds (i, i + e_d) for every site and direction: shape (dim*N, 2).

        For L = 2 the bonds i -> i+e_d and i -> i-e_d join the same pair and both appear,
        so the hopping matrix carries 2t on that pair and the band is -2t Σ_d cos k_d for
        every L.
        """
        out = []
        for d in range(self.dim):
            step = np.zeros(self.dim, dtype=int)
            step[d] = 1
            out.append(np.stack([np.arange(self.N), self.index(self.coords + step)], axis=1))
        return np.concatenate(out)

    @cached_property
    def _displacements(self) -> np.ndarray:
        """Minimum-image displacement of every site from site 0, shape (N, dim)."""
        return (self.coords + self.L // 2) % self.L - self.L // 2

    @cached_property
    def shell_distances(self) -> np.ndarray:
        """Distinct non-zero minimum-image distances, ascending (lattice units)."""
        d2 = np.unique((self._displacements**2).sum(axis=1))
        return np.sqrt(d2[d2 > 0])

    def shell_neighbours(self, n_shells: int) -> list[np.ndarray]:
        """For shells n = 1..n_shells, an (N, z_n) array of the distinct sites at distance d_n.

        Each unordered pair {i, j} at distance d_n appears once as j in row i and once as i
        in row j, so Σ_<ij>_n S_i·S_j = (1/2) Σ_i S_i · Σ_{j in row i} S_j. Built from the
        displacements of site 0 (translation invariance), O(N z_n) per shell.
        """
        if n_shells > len(self.shell_distances):
            raise ValueError(
                f"{n_shells} distance shells requested but this {self.kind} lattice with L={self.L} "
                f"has only {len(self.shell_distances)} distinct distances"
            )
        sq = (self._displacements**2).sum(axis=1)
        d2 = np.rint(self.shell_distances**2).astype(int)
        out = []
        for n in range(n_shells):
            vectors = self._displacements[sq == d2[n]]  # distinct modulo L
            out.append(self.index(self.coords[:, None, :] + vectors[None, :, :]))
        return out

    def shell_bonds(self, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
        """(bonds, index): bonds (B, 2) the unordered site pairs {i, j}, i < j, at the first
        n_shells distances; index (N, N) the bond number of each such site pair (both
        orders), -1 elsewhere."""
        sites = []
        for nbrs in self.shell_neighbours(n_shells):
            rows = np.repeat(np.arange(self.N), nbrs.shape[1])
            sites.append(np.sort(np.stack([rows, nbrs.ravel()], axis=1), axis=1))
        bonds = np.unique(np.concatenate(sites), axis=0)
        index = np.full((self.N, self.N), -1, dtype=np.int64)
        index[bonds[:, 0], bonds[:, 1]] = index[bonds[:, 1], bonds[:, 0]] = np.arange(len(bonds))
        return bonds, index

    def bond_pair_orbits(self, n_shells: int, max_range: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Bonds of shells 1..n_shells (see shell_bonds) and the symmetry classes of pairs of them.

        Returns (bonds, pair_class): pair_class (B, B) symmetric, the class of the unordered
        bond pair {a, b} (a = b included) under the lattice's translations and point group,
        numbered 0..n_classes-1 in the order of each class's first pair (a ≤ b) in row-major
        order. A function of the pairs that depends only on the class is therefore invariant
        under every lattice symmetry. ``max_range`` > 0 keeps only the pairs whose bond
        midpoints lie at most that far apart (bond_distances, lattice spacings): the others get
        class -1 and the kept classes are numbered as above (the distance is the same for every
        pair of a class, so a class is kept or dropped whole).

        How: translate one of the four bond ends to the origin ("anchor"); the pair is then
        (the anchor bond's other end u, the other bond's ends {p, q}), up to the point group
        about the origin. The least code over anchors and point-group elements names the
        class. Classes are found for the pairs whose first bond touches site 0 (every bond is
        a translate of one of those) and copied to the rest by translation: O(z B |G|) for
        the classes and O(B²) to fill the table, instead of O(B² N |G|) over the whole space
        group (minutes at L = 24 in 2D, or L = 6 in 3D).
        """
        bonds, index = self.shell_bonds(n_shells)
        n = self.N
        at_origin = np.flatnonzero((bonds == 0).any(axis=1))  # bonds {0, v}
        first = np.repeat(at_origin, len(bonds))
        second = np.tile(np.arange(len(bonds)), len(at_origin))
        i, j = bonds[first].T
        k, l = bonds[second].T
        coords = self.coords
        code = None
        for anchor, u, p, q in ((i, j, k, l), (j, i, k, l), (k, l, i, j), (l, k, i, j)):
            rel = [self.index(coords[x] - coords[anchor]) for x in (u, p, q)]
            for g in self.point_group():
                gu, gp, gq = (g[x] for x in rel)
                key = (gu * n + np.minimum(gp, gq)) * n + np.maximum(gp, gq)
                code = key if code is None else np.minimum(code, key)
        _, cls = np.unique(code, return_inverse=True)
        cls = cls.reshape(len(at_origin), len(bonds))
        if max_range > 0:  # translation invariant, so the pairs at the origin decide for their classes
            far = np.unique(cls[self.bond_distances(bonds[at_origin], bonds) > max_range + 1e-9])
            cls = np.where(np.isin(cls, far), -1, cls)
        pair_class = np.empty((len(bonds), len(bonds)), dtype=np.int64)
        for t in self.translations():
            rows = index[t[bonds[at_origin, 0]], t[bonds[at_origin, 1]]]
            cols = index[t[bonds[:, 0]], t[bonds[:, 1]]]
            pair_class[rows[:, None], cols[None, :]] = cls
            pair_class[cols[:, None], rows[None, :]] = cls.T
        # number the classes by their first pair (a <= b) in row-major order (-1 stays -1)
        upper = pair_class[np.triu_indices(len(bonds))]
        labels, first_seen = np.unique(upper, return_index=True)
        kept = labels >= 0
        renumber = np.full(pair_class.max() + 2, -1, dtype=np.int64)  # the last entry maps -1 to -1
        renumber[labels[kept][np.argsort(first_seen[kept])]] = np.arange(kept.sum())
        return bonds, renumber[pair_class]

    def bond_distances(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(len(first), len(second)) distances between the midpoints of bonds (., 2), minimum
        image, lattice units. A bond whose shortest displacement is not unique (a component
        L/2) has several midpoints; the distance is the least over them, so it is invariant
        under every lattice symmetry."""
        best = np.full((len(first), len(second)), np.inf)
        for ca, oka in self._midpoints(first):
            for cb, okb in self._midpoints(second):
                r = (cb[None] - ca[:, None] + self.L / 2) % self.L - self.L / 2
                dist = np.where(oka[:, None] & okb[None, :], np.sqrt((r**2).sum(-1)), np.inf)
                best = np.minimum(best, dist)
        return best

    def _midpoints(self, bonds: np.ndarray):
        """i + e/2 for each shortest image e of the bonds' displacements j - i, with a mask of
        the bonds for which that choice of image is a shortest one."""
        start = self.coords[bonds[:, 0]]
        d = (self.coords[bonds[:, 1]] - start) % self.L
        for shift in itertools.product((0, 1), repeat=self.dim):
            e = d - self.L * np.array(shift)
            yield start + e / 2, np.all(np.abs(e) <= self.L / 2, axis=1)

    def translations(self) -> list[np.ndarray]:
        """Site permutations p for every lattice translation: (T S)_i = S_{p[i]}."""
        return [self.index(self.coords + np.array(v)) for v in itertools.product(range(self.L), repeat=self.dim)]

    def point_group(self) -> list[np.ndarray]:
        """Site permutations for the hypercube's point group (signed axis permutations, about site 0)."""
        perms = []
        for axes in itertools.permutations(range(self.dim)):
            for signs in itertools.product((1, -1), repeat=self.dim):
                perms.append(self.index(self.coords[:, axes] * np.array(signs)))
        return perms

    def momenta(self) -> np.ndarray:
        """Momenta k = 2π n / L for every site's n, shape (N, dim), same order as np.fft.fftn."""
        return 2 * np.pi * self.coords / self.L
