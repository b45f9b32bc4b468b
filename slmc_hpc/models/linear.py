"""The linear effective model of Liu, Shen, Qi, Meng & Fu, PRB 95, 241104 (2017):

    E_eff[S] = E_0 - Σ_{n=1..n_max} J_n Σ_<ij>_n S_i·S_j        (whole lattice)

where <ij>_n runs over each unordered pair at the n-th minimum-image distance once.
Fitted by least squares to F_β; a single-spin change costs O(Σ_n z_n), not O(N).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ..lattice import Lattice


@dataclass(frozen=True, eq=False)
class LinearModel:
    lattice: Lattice
    couplings: np.ndarray  # J_n, n = 1..n_shells
    e0: float = 0.0

    @classmethod
    def zeros(cls, lattice: Lattice, n_shells: int) -> "LinearModel":
        """E_eff = 0: the inner chain is a free random walk until the first fit."""
        lattice.shell_neighbours(n_shells)  # validates n_shells against the lattice now
        return cls(lattice=lattice, couplings=np.zeros(n_shells), e0=0.0)

    @property
    def n_shells(self) -> int:
        return len(self.couplings)

    @property
    def n_parameters(self) -> int:
        return self.n_shells + 1

    def with_beta(self, beta: float) -> "LinearModel":
        """The model at another β: the same (this model does not depend on β)."""
        return self

    def parameters(self) -> tuple[np.ndarray, list[str]]:
        """All parameters as one array and their names (for the output file)."""
        names = ["E0"] + [f"J{n + 1}" for n in range(self.n_shells)]
        return np.concatenate([[self.e0], self.couplings]), names

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
    def _shell_starts(self) -> np.ndarray:
        """First column of each shell in the side-by-side neighbour table."""
        return np.cumsum([0] + [s.shape[1] for s in self._shells[:-1]])

    def features(self, spins: np.ndarray) -> np.ndarray:
        """φ_n[S] = Σ_<ij>_n S_i·S_j for each shell, shape (..., n_shells)."""
        spins = np.asarray(spins)
        nbrs, _ = self._flat
        bonds = np.einsum("...ik,...izk->...z", spins, spins[..., nbrs, :])  # Σ_i S_i·S_nbr(i, z)
        return 0.5 * np.add.reduceat(bonds, self._shell_starts, axis=-1)

    def energy(self, spins: np.ndarray) -> np.ndarray:
        return self.e0 - self.features(spins) @ self.couplings

    def local_field(self, spins: np.ndarray, i: int) -> np.ndarray:
        """h_i = Σ_n J_n Σ_{j in shell n of i} S_j, so that E_eff = E_0 - (1/2) Σ_i S_i·h_i."""
        nbrs, weights = self._flat
        return weights @ spins[nbrs[i]]

    def delta_energy(self, spins: np.ndarray, i: int, new_spin: np.ndarray) -> float:
        # site i enters each of its pairs once, and h_i does not contain S_i itself
        return -float((new_spin - spins[i]) @ self.local_field(spins, i))

    def fit(self, spins: np.ndarray, targets: np.ndarray) -> "LinearModel":
        """Least-squares E_0 and J_n so that E_eff[S] ≈ targets (whole-lattice F_β)."""
        spins = np.asarray(spins)
        targets = np.asarray(targets, dtype=np.float64)
        if not (np.all(np.isfinite(spins)) and np.all(np.isfinite(targets))):
            raise ValueError("training data for the linear model contains NaN or inf")
        design = np.column_stack([np.ones(len(targets)), -self.features(spins)])
        coef, *_ = np.linalg.lstsq(design, targets, rcond=None)
        return replace(self, e0=float(coef[0]), couplings=coef[1:].copy())

    def fit_pairs(self, spins, targets, ref_spins, ref_targets) -> "LinearModel":
        """Least-squares J_n so that E_eff[S] - E_eff[S_ref] ≈ F[S] - F[S_ref] over (proposal,
        current) pairs, the quantity the SLMC acceptance depends on; E_0 then matches the mean."""
        arrays = [np.asarray(a, dtype=np.float64) for a in (spins, targets, ref_spins, ref_targets)]
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ValueError("training data for the linear model contains NaN or inf")
        spins, targets, ref_spins, ref_targets = arrays
        phi = self.features(spins)
        couplings, *_ = np.linalg.lstsq(-(phi - self.features(ref_spins)), targets - ref_targets, rcond=None)
        return replace(self, e0=float(np.mean(targets + phi @ couplings)), couplings=couplings)
