"""The linear effective model of Liu, Shen, Qi, Meng & Fu, PRB 95, 241104 (2017):

    E_eff[S] = E_0 - Σ_{n=1..n_max} J_n Σ_<ij>_n S_i·S_j  [- Σ_o K_o ψ_o]      (whole lattice)

where <ij>_n runs over each unordered pair at the n-th minimum-image distance once. The
optional bracket (``bond_shells`` = k > 0) adds the four-spin bond-pair terms of
models/bond_pairs.py on the raw spins. Linear in its parameters, so fitted by least squares
to F_β. A proposed single-spin change costs O(z) without the bracket and O(z²) with it (z
the bonds at a site), an accepted one O(z u) more to keep G b current (u the bonds that
the terms couple to a site's bonds: all of the bond-pair shells' bonds at any range, a fixed
number within a finite ``bond_range``; see samplers/local_chain.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import torch

from ..lattice import Lattice
from ..samplers.local_chain import BondForm, bond_values_of
from .bond_pairs import bond_matrix, bond_pair_energy, bond_pair_kernel, bond_pair_sums, bond_pair_tables


@dataclass(frozen=True, eq=False)
class LinearModel:
    lattice: Lattice
    couplings: np.ndarray  # J_n, n = 1..n_shells
    e0: float = 0.0
    bond_shells: int = 0  # four-spin terms on bonds of shells 1..bond_shells (0: none)
    bond_couplings: np.ndarray | None = None  # K_o, one per bond-pair class; None: zeros
    bond_range: float = 0.0  # only bond pairs whose midpoints lie this close (lattice units); 0: any

    def __getstate__(self):
        # the cached bond form (with its P² bond matrix) and kernel are rebuilt on demand, not pickled:
        # slot models travel between MPI ranks
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self):
        n_orbits = self._tables.n_orbits
        if self.bond_couplings is None:
            object.__setattr__(self, "bond_couplings", np.zeros(n_orbits))
        if len(self.bond_couplings) != n_orbits:
            raise ValueError(f"{len(self.bond_couplings)} bond-pair couplings given, the lattice has "
                             f"{n_orbits} bond-pair classes within {self.bond_shells} shells"
                             + (f" and range {self.bond_range:g}" if self.bond_range else ""))

    @classmethod
    def zeros(cls, lattice: Lattice, n_shells: int, bond_shells: int = 0, bond_range: float = 0.0) -> "LinearModel":
        """E_eff = 0: the inner chain is a free random walk until the first fit."""
        lattice.shell_neighbours(max(n_shells, bond_shells))  # validates the shell counts now
        return cls(lattice=lattice, couplings=np.zeros(n_shells), e0=0.0, bond_shells=bond_shells,
                   bond_range=bond_range)

    def with_parameters(self, vector: np.ndarray) -> "LinearModel":
        """The model of this shape whose ``parameters()`` vector is ``vector`` (E_0, J_1.., K_1..)."""
        v = np.asarray(vector, dtype=np.float64)
        if len(v) != self.n_parameters:
            raise ValueError(f"{len(v)} parameters given, the model has {self.n_parameters}")
        return self._with_coefficients(v[0], v[1:])

    @property
    def n_shells(self) -> int:
        return len(self.couplings)

    @property
    def n_parameters(self) -> int:
        return self.n_shells + len(self.bond_couplings) + 1

    @property
    def _tables(self):
        return bond_pair_tables(self.lattice, self.bond_shells, self.bond_range)

    def with_beta(self, beta: float) -> "LinearModel":
        """The model at another β: the same (this model does not depend on β)."""
        return self

    def parameters(self) -> tuple[np.ndarray, list[str]]:
        """All parameters as one array and their names (for the output file)."""
        names = (["E0"] + [f"J{n + 1}" for n in range(self.n_shells)]
                 + [f"K{o + 1}" for o in range(len(self.bond_couplings))])
        return np.concatenate([[self.e0], self.couplings, self.bond_couplings]), names

    @cached_property
    def _bond_kernel(self) -> np.ndarray:
        return bond_pair_kernel(self.bond_couplings, self._tables)

    @cached_property
    def bond_form(self) -> BondForm:
        """This model as a bond form (see samplers/local_chain.py), for the compiled local chain:
        bonds of the bond-pair shells first (G acts on them), then the rest of the J shells;
        w_a = J_n(a), from the shell sums' weights as in ``features``."""
        every, weight, first = self._shell_sums  # first: G's bonds, in G's order
        order = np.concatenate([first, np.setdiff1d(np.arange(len(every)), first)])
        w = weight @ self.couplings
        return BondForm.from_bonds(self.lattice.N, every[order], w[order],
                                   bond_matrix(self.bond_couplings, self._tables.pair_class), self.lattice.translations())

    @cached_property
    def _shells(self) -> list[np.ndarray]:
        return self.lattice.shell_neighbours(self.n_shells)

    @cached_property
    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All shells' neighbours of each site side by side, (N, Z), and J_n for each column."""
        nbrs = np.concatenate(self._shells, axis=1)
        weights = np.concatenate([np.full(s.shape[1], J) for s, J in zip(self._shells, self.couplings)])
        return nbrs, weights

    @cached_property
    def _shell_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bonds, W, pair_bonds): the bonds (B, 2) of shells 1..max(n_shells, bond_shells), W
        (B, n_shells) with φ = b @ W (W[a, n] = 1/2 per listing of bond a in shell n's neighbour
        tables, as a sum over sites counts it: 1, as no table lists a neighbour twice), and the
        positions of the bond-pair tables' bonds among them. Why: the compiled b and one
        product take 9 µs where gathering every site's Z neighbours took 64 (L = 8, 8 shells),
        and the bond-pair energy reuses b: the downfolded model's correction
        (models/downfolded.py) is evaluated at every middle test."""
        every, index = self.lattice.shell_bonds(max(self.n_shells, self.bond_shells))
        weight = np.zeros((len(every), self.n_shells))
        for n, nbrs in enumerate(self._shells):
            listed = index[np.arange(self.lattice.N)[:, None], nbrs].ravel()
            assert np.all(listed >= 0), "a shell neighbour missing from the bond table"
            np.add.at(weight[:, n], listed, 0.5)
        pairs = self._tables.bonds
        return every, weight, index[pairs[:, 0], pairs[:, 1]]

    def _over_bonds(self, spins: np.ndarray, func) -> np.ndarray:
        """func(b) for the bond values b (C, B) of spins (..., N, 3), 256 configurations at a time
        (b of 256 configurations at L = 32 is 46 MB), reshaped to spins' leading axes."""
        every = self._shell_sums[0]
        spins = np.asarray(spins, dtype=np.float64)
        flat = spins.reshape((-1,) + spins.shape[-2:])
        out = np.concatenate([func(bond_values_of(flat[k:k + 256], every)) for k in range(0, max(len(flat), 1), 256)])
        return out.reshape(spins.shape[:-2] + out.shape[1:])[()]

    def features(self, spins: np.ndarray) -> np.ndarray:
        """φ_n[S] = Σ_<ij>_n S_i·S_j for each shell, shape (..., n_shells)."""
        return self._over_bonds(spins, lambda b: b @ self._shell_sums[1])

    def _bond_pair_sums(self, b: np.ndarray) -> np.ndarray:
        """ψ_o (C, n_orbits) from the bond values b (C, B) of ``_shell_sums``' bonds (memory: see
        bond_pairs.bond_pair_sums; ``_over_bonds`` hands 256 configurations at a time)."""
        t = self._tables
        args = [torch.as_tensor(a) for a in (t.slots, t.orbit, t.weight)]
        pair_b = torch.from_numpy(np.ascontiguousarray(b[:, self._shell_sums[2]]))
        return bond_pair_sums(pair_b, *args, t.n_orbits, t.shape).numpy()

    def bond_pair_features(self, spins: np.ndarray) -> np.ndarray:
        """ψ_o[S] for each bond-pair class, shape (C, n_orbits) for spins (C, N, 3)."""
        return self._over_bonds(spins, self._bond_pair_sums)

    def design(self, spins: np.ndarray) -> np.ndarray:
        """(C, n_shells + n_orbits) columns (φ_n, ψ_o) for spins (C, N, 3): E_eff = E_0 -
        design @ (J, K), both from one pass over the bond values. Depends on the lattice and
        the shell counts only, not on the couplings, so training data keep their rows
        (training/data.py)."""
        if not self.bond_shells:
            return self.features(spins)
        weight = self._shell_sums[1]
        return self._over_bonds(spins, lambda b: np.concatenate([b @ weight, self._bond_pair_sums(b)], axis=1))

    def energy(self, spins: np.ndarray) -> np.ndarray:
        _, weight, pair_bonds = self._shell_sums

        def energy_of(b):
            e = self.e0 - (b @ weight) @ self.couplings
            if self.bond_shells:
                e = e - bond_pair_energy(b[:, pair_bonds], self._tables, self._bond_kernel)
            return e
        return self._over_bonds(spins, energy_of)

    def local_field(self, spins: np.ndarray, i: int) -> np.ndarray:
        """h_i = Σ_n J_n Σ_{j in shell n of i} S_j, so that E_eff = E_0 - (1/2) Σ_i S_i·h_i."""
        nbrs, weights = self._flat
        return weights @ spins[nbrs[i]]

    def delta_energy(self, spins: np.ndarray, i: int, new_spin: np.ndarray) -> float:
        if self.bond_shells:
            moved = np.array(spins)
            moved[i] = new_spin
            return float(self.energy(moved) - self.energy(spins))
        # site i enters each of its pairs once, and h_i does not contain S_i itself
        return -float((new_spin - spins[i]) @ self.local_field(spins, i))

    def _with_coefficients(self, e0: float, coef: np.ndarray) -> "LinearModel":
        return replace(self, e0=float(e0), couplings=coef[:self.n_shells].copy(),
                       bond_couplings=coef[self.n_shells:].copy())

    def energy_of_design(self, design: np.ndarray) -> np.ndarray:
        """E_eff from rows of ``design`` (the same energy as ``energy`` of their spins)."""
        return self.e0 - design @ np.concatenate([self.couplings, self.bond_couplings])

    def fit(self, spins: np.ndarray, targets: np.ndarray, design: np.ndarray | None = None) -> "LinearModel":
        """Least-squares E_0, J_n (and K_o) so that E_eff[S] ≈ targets (whole-lattice F_β);
        ``design``: the spins' rows of ``design`` if already known."""
        design = self._checked_design(spins, design, targets)
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(design)), -design]), targets, rcond=None)
        return self._with_coefficients(coef[0], coef[1:])

    def fit_pairs(self, spins, targets, ref_spins, ref_targets, design=None, ref_design=None) -> "LinearModel":
        """Least-squares J_n (and K_o) so that E_eff[S] - E_eff[S_ref] ≈ F[S] - F[S_ref] over (proposal,
        current) pairs, the quantity the SLMC acceptance depends on; E_0 then matches the mean.
        ``design``, ``ref_design``: the rows of ``design`` if already known."""
        phi = self._checked_design(spins, design, targets)
        ref_phi = self._checked_design(ref_spins, ref_design, ref_targets)
        coef, *_ = np.linalg.lstsq(-(phi - ref_phi), np.asarray(targets) - np.asarray(ref_targets), rcond=None)
        return self._with_coefficients(np.mean(targets + phi @ coef), coef)

    def _checked_design(self, spins, design, targets) -> np.ndarray:
        arrays = [np.asarray(a, dtype=np.float64) for a in (spins if design is None else design, targets)]
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ValueError("training data for the linear model contains NaN or inf")
        return self.design(arrays[0]) if design is None else arrays[0]
