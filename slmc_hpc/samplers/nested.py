"""Nested (multilevel) SLMC: keeps the O(N^2) Transformer off the innermost loop.

  inner:  n_local single-spin Metropolis updates on a cheap model E_in (the linear model,
          optionally with bond-pair terms; local, compiled: samplers/local_chain.py),
  middle: accept the inner chain's end with min(1, exp(-β[ΔE_mid - ΔE_in]))  (Transformer, or
          the downfolded model: models/downfolded.py),
          repeated middle_steps times,
  outer:  accept the middle chain's end with min(1, exp(-β[ΔF - ΔE_mid]))     (exact).

The inner chain is reversible for exp(-β E_in); the middle level is then an SLMC chain that
is reversible for exp(-β E_mid); the outer test makes the whole exact for exp(-β F) (each
level corrects the one below). If the middle level rejected everything the proposal is the
current state: the step ends there, without a diagonalization (recorded as no exact test
and not accepted: nothing moved); the last inner proposal is reported, for training only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..hamiltonian import DoubleExchange
from .slmc import effective_chain
from .exact_acceptance import accept_exactly, exact_state, free_energy
from .state import ChainState, StepInfo, trial_fields, with_fields


@dataclass(frozen=True)
class NestedSLMCSampler:
    physics: DoubleExchange
    inner: object  # cheap effective model (LinearModel, with or without bond-pair terms)
    model: object  # the middle model (Transformer, or the downfolded model); state.e_eff is its energy
    beta: float
    n_local: int
    step_size: float
    middle_steps: int = 1
    overrelax: float = 0.0  # fraction of inner-chain updates that are reflections (local_chain.py)
    move: str = "metropolis"  # the inner chain's other updates: "metropolis" or "heatbath" (effective_chain)

    def init_state(self, spins: np.ndarray) -> ChainState:
        return exact_state(self.physics, spins, float(self.model.energy(spins)))

    def with_model(self, model, state: ChainState, inner=None):
        sampler = replace(self, model=model, inner=self.inner if inner is None else inner)
        return sampler, replace(state, e_eff=float(model.energy(state.spins)), fields=None)

    def free_energy(self, state: ChainState) -> float:
        return free_energy(self.physics, state, self.beta)

    def step(self, state: ChainState, rng: np.random.Generator) -> tuple[ChainState, StepInfo]:
        # the inner model's bond values and field at the state's spins (carried from the step
        # before: ChainState.fields), handed from one middle test to the next: a chain updates
        # its copy to its end, kept if the test passes
        state = with_fields(self.inner, state)
        spins, e_mid, fields = state.spins, state.e_eff, state.fields
        n_mid = 0
        for _ in range(self.middle_steps):
            trial = trial_fields(fields)
            # the inner chain reports ΔE_in itself: two fewer model evaluations per step
            proposal, d_in = effective_chain(self.inner, spins, self.beta, self.n_local, self.step_size, rng,
                                            self.overrelax, self.move, trial)
            p_mid = float(self.model.energy(proposal))
            if np.log(rng.random()) < -self.beta * ((p_mid - e_mid) - d_in):
                spins, e_mid, n_mid, fields = proposal, p_mid, n_mid + 1, trial
        middle = {"n_middle_tests": self.middle_steps, "n_middle_accepted": n_mid}
        if not n_mid:
            return state, StepInfo(accepted=False, n_tests=0, n_accepted=0, rejected_proposal=proposal, **middle)
        return accept_exactly(self.physics, self.beta, state, spins, e_mid, rng, fields, **middle)
