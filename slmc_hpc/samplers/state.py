"""Chain state and per-step record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ChainState:
    """Where a chain is: spins (N, 3), the eigenvalues of H[spins] (2N,), the classical
    J_direct energy and the effective energy E_eff[spins] (NaN when no model is used).
    Keeping eigenvalues (not F) lets F be re-evaluated at another β without diagonalizing."""

    spins: np.ndarray
    eigenvalues: np.ndarray
    classical_energy: float
    e_eff: float = float("nan")


@dataclass(frozen=True, eq=False)
class StepInfo:
    """What one step did. ``proposal``/``proposal_free_energy`` is the exactly evaluated
    proposal (SLMC: the end of the inner chain), which is training data whether accepted or
    not. ``n_tests``/``n_accepted`` count the exact Metropolis tests in the step."""


    accepted: bool
    n_tests: int
    n_accepted: int
    proposal: np.ndarray | None = None
    proposal_free_energy: float = float("nan")
    n_middle_tests: int = 0  # nested SLMC: Metropolis tests against the middle model
    n_middle_accepted: int = 0
