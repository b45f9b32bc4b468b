"""What every sampler shares: a chain state built from an exact diagonalization, F_β of a
state, and the exact Metropolis test that ends an SLMC step."""

from __future__ import annotations

import numpy as np

from ..hamiltonian import DoubleExchange
from .state import ChainState, StepInfo


def exact_state(physics: DoubleExchange, spins: np.ndarray, e_eff: float = float("nan"), fields=None) -> ChainState:
    spins = np.array(spins, dtype=np.float64)
    return ChainState(spins, physics.eigenvalues(spins), float(physics.classical_energy(spins)), e_eff, fields)


def free_energy(physics: DoubleExchange, state: ChainState, beta: float) -> float:
    """F_β of the state from its cached eigenvalues (whole lattice)."""
    return float(physics.free_energy(state.eigenvalues, state.classical_energy, beta))


def accept_exactly(physics: DoubleExchange, beta: float, state: ChainState, proposal: np.ndarray, e_proposal: float,
               rng: np.random.Generator, fields=None, **info) -> tuple[ChainState, StepInfo]:
    """Accept ``proposal`` (drawn by a chain reversible for exp(-β E_eff)) with
    min(1, exp(-β[(F[S'] - F[S]) - (E_eff[S'] - E_eff[S])])): one diagonalization.
    ``fields``: the inner chain's (b, h) at the proposal (ChainState.fields), kept if it is
    accepted."""
    new = exact_state(physics, proposal, e_proposal, fields)
    f_new = free_energy(physics, new, beta)
    log_ratio = -beta * ((f_new - free_energy(physics, state, beta)) - (e_proposal - state.e_eff))
    accepted = bool(np.log(rng.random()) < log_ratio)
    step = StepInfo(accepted=accepted, n_tests=1, n_accepted=int(accepted), proposal=new.spins,
                    proposal_free_energy=f_new, log_ratio=float(log_ratio), **info)
    return (new if accepted else state), step
