"""Self-learning Monte Carlo with the cumulative update (Liu et al. 2017; DESIGN.md §3).

One step from S (F_β[S] and E_eff[S] known):
  1. n_local Metropolis single-spin updates on exp(-β E_eff) at the same β, random site
     choice (reversible): S -> S'.
  2. One diagonalization: F_β[S'].
  3. Accept S' with min(1, exp(-β[(F[S'] - F[S]) - (E_eff[S'] - E_eff[S])])).
Exact for any effective model; the model only sets the acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..fermions import DoubleExchange
from .moves import draw_moves, perturb
from .state import ChainState, StepInfo


def effective_chain(model, spins: np.ndarray, beta: float, n_local: int, step_size: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Run n_local Metropolis updates on exp(-β E_eff) starting from spins; return the end."""
    spins = spins.copy()
    sites, noise, u = draw_moves(rng, len(spins), n_local)
    log_u = np.log(u)
    for i, g, lu in zip(sites, noise, log_u):
        new = perturb(spins[i], g, step_size)
        if lu < -beta * model.delta_energy(spins, i, new):
            spins[i] = new
    return spins


@dataclass(frozen=True)
class SLMCSampler:
    physics: DoubleExchange
    model: object  # an effective model, see slmc_hpc.models
    beta: float
    n_local: int
    step_size: float

    def init_state(self, spins: np.ndarray) -> ChainState:
        spins = np.array(spins, dtype=np.float64)
        return ChainState(spins, self.physics.eigenvalues(spins), float(self.physics.classical_energy(spins)),
                          float(self.model.energy(spins)))

    def with_model(self, model, state: ChainState) -> tuple["SLMCSampler", ChainState]:
        """The sampler with a new effective model, and the state's E_eff re-evaluated under it."""
        return replace(self, model=model), replace(state, e_eff=float(model.energy(state.spins)))

    def free_energy(self, state: ChainState) -> float:
        return float(self.physics.free_energy(state.eigenvalues, state.classical_energy, self.beta))

    def step(self, state: ChainState, rng: np.random.Generator) -> tuple[ChainState, StepInfo]:
        proposal = effective_chain(self.model, state.spins, self.beta, self.n_local, self.step_size, rng)
        eig = self.physics.eigenvalues(proposal)
        ecl = float(self.physics.classical_energy(proposal))
        f_new = float(self.physics.free_energy(eig, ecl, self.beta))
        e_new = float(self.model.energy(proposal))
        log_ratio = -self.beta * ((f_new - self.free_energy(state)) - (e_new - state.e_eff))
        accepted = bool(np.log(rng.random()) < log_ratio)
        info = StepInfo(accepted=accepted, n_tests=1, n_accepted=int(accepted),
                        proposal=proposal, proposal_free_energy=f_new)
        if accepted:
            state = ChainState(proposal, eig, ecl, e_new)
        return state, info
