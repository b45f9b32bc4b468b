"""Chain state and per-step record."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True, eq=False)
class ChainState:
    """Where a chain is: spins (N, 3), the eigenvalues of H[spins] (2N,), the classical
    J_direct energy and the effective energy E_eff[spins] (NaN when no model is used).
    Keeping eigenvalues (not F) lets F be re-evaluated at another β without diagonalizing.

    ``fields``: SLMC with a compiled inner chain (a bond form, samplers/local_chain.py): the
    inner model's bond values and bond-pair field (b, h) at spins, as the chain that reached
    them left them, carried to the next step so that it need not set them up (at L = 8 the
    set-up was 5% of a step); None: set up at the next step. Like e_eff they carry the chain's
    round-off, so a checkpoint stores them (Replica.state_dict) and a resumed run repeats the
    uninterrupted one bit for bit; a new model or another slot's configuration sets them to None."""

    spins: np.ndarray
    eigenvalues: np.ndarray
    classical_energy: float
    e_eff: float = float("nan")
    fields: tuple[np.ndarray, np.ndarray] | None = None


def with_fields(model, state: ChainState) -> ChainState:
    """The state with the inner chain's (b, h) at its spins: its own, else set up now for
    ``model`` (None for a model without a bond form). A chain takes a copy (``trial_fields``)."""
    if state.fields is not None or not hasattr(type(model), "bond_form"):
        return state
    return replace(state, fields=model.bond_form.fields(state.spins))


def trial_fields(fields):
    """A copy of (b, h) for a chain to update to its end (None stays None)."""
    return None if fields is None else tuple(x.copy() for x in fields)


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
    log_ratio: float = float("nan")  # SLMC: -β[(F' - F) - (E_eff' - E_eff)] of the exact test
    # nested SLMC: the last inner-chain end when every middle test rejected (no exact test ran,
    # so it is not evaluated); training evaluates it (training/learner.py: collect)
    rejected_proposal: np.ndarray | None = None


@dataclass
class AcceptanceCounts:
    """Metropolis tests and acceptances summed over steps: the exact tests and, for nested
    SLMC, the middle (Transformer) tests. Stored in checkpoints as four int64 numbers in
    this order (``as_array``)."""

    tests: int = 0
    accepted: int = 0
    middle_tests: int = 0
    middle_accepted: int = 0

    def add(self, info: StepInfo) -> None:
        self.tests += info.n_tests
        self.accepted += info.n_accepted
        self.middle_tests += info.n_middle_tests
        self.middle_accepted += info.n_middle_accepted

    @property
    def acceptance(self) -> float:
        """Accepted exact tests per exact test (NaN before any)."""
        return self.accepted / self.tests if self.tests else float("nan")

    @property
    def middle_acceptance(self) -> float:
        return self.middle_accepted / self.middle_tests if self.middle_tests else float("nan")

    def as_array(self) -> np.ndarray:
        return np.array([self.tests, self.accepted, self.middle_tests, self.middle_accepted], dtype=np.int64)

    @classmethod
    def from_array(cls, values) -> "AcceptanceCounts":
        return cls(*(int(v) for v in values))
