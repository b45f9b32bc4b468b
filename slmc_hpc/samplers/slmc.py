"""Self-learning Monte Carlo with the cumulative update (Liu, Shen, Qi, Meng, Fu, PRB 95, 241104 (2017)).

One step from S (F_β[S] and E_eff[S] known):
  1. n_local Metropolis single-spin updates on exp(-β E_eff) at the same β, random site
     choice (reversible): S -> S'.
  2. One diagonalization: F_β[S'].
  3. Accept S' with min(1, exp(-β[(F[S'] - F[S]) - (E_eff[S'] - E_eff[S])])), where
     E_eff[S'] - E_eff[S] is the sum of the accepted local updates' ΔE.
Exact for any effective model; the model only sets the acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..hamiltonian import DoubleExchange
from .moves import draw_moves, draw_reflections, perturb
from .exact_acceptance import accept_exactly, exact_state, free_energy
from .state import ChainState, StepInfo, trial_fields, with_fields


def effective_chain(model, spins: np.ndarray, beta: float, n_local: int, step_size: float,
                    rng: np.random.Generator, overrelax: float = 0.0, move: str = "metropolis",
                    fields=None) -> tuple[np.ndarray, float]:
    """Run n_local Metropolis updates on exp(-β E_eff) starting from spins; return the end
    and E_eff[end] - E_eff[start] (the sum of the accepted updates' ΔE; equal to the
    difference of the two energies up to round-off, without evaluating them).
    A model with a ``bond_form`` (the linear model) runs the compiled chain of
    samplers/local_chain.py on the same random numbers, one with a ``local_form`` (the
    Transformer) that of samplers/transformer_chain.py; others call delta_energy per update.
    ``overrelax``: the fraction of updates that reflect the spin about its local field
    (bond forms only). ``move``: "metropolis" (S_i + δ g, symmetric) or "heatbath" (drawn from
    exp(β S_i·H) about the local field H, step_size unused; bond forms only). ``fields``: a
    bond form's (b, h) of ``spins``, updated in place to the end's (BondForm.chain)."""
    heat_bath = move == "heatbath"
    sites, noise, u = draw_moves(rng, len(spins), n_local, heat_bath)
    log_u = np.log(u)
    reflect = draw_reflections(rng, n_local, overrelax) if overrelax > 0 else None
    if hasattr(type(model), "bond_form"):  # not getattr: an error building it must not hide
        return model.bond_form.chain(spins, beta, sites, noise, log_u, step_size, reflect, heat_bath, fields)
    if fields is not None:
        raise ValueError(f"bond fields given for {type(model).__name__}, which is not a bond form")
    if reflect is not None or heat_bath:
        raise ValueError(f"over-relaxation and heat-bath moves need a model with a local field (a bond form), "
                         f"not {type(model).__name__}")
    if hasattr(type(model), "local_form"):
        return model.local_form.chain(spins, beta, sites, noise, log_u, step_size, reflect)
    spins = spins.copy()
    total = 0.0
    for i, g, lu in zip(sites, noise, log_u):
        new = perturb(spins[i], g, step_size)
        delta = model.delta_energy(spins, i, new)
        if lu < -beta * delta:
            spins[i] = new
            total += delta
    return spins, total


@dataclass(frozen=True)
class SLMCSampler:
    physics: DoubleExchange
    model: object  # an effective model, see slmc_hpc.models
    beta: float
    n_local: int
    step_size: float
    overrelax: float = 0.0  # fraction of inner-chain updates that are reflections (local_chain.py)
    move: str = "metropolis"  # the inner chain's other updates: "metropolis" or "heatbath" (effective_chain)

    def init_state(self, spins: np.ndarray) -> ChainState:
        return exact_state(self.physics, spins, float(self.model.energy(spins)))

    def with_model(self, model, state: ChainState) -> tuple["SLMCSampler", ChainState]:
        """The sampler with a new effective model, and the state's E_eff re-evaluated under it."""
        return replace(self, model=model), replace(state, e_eff=float(model.energy(state.spins)), fields=None)

    def free_energy(self, state: ChainState) -> float:
        return free_energy(self.physics, state, self.beta)

    def step(self, state: ChainState, rng: np.random.Generator) -> tuple[ChainState, StepInfo]:
        state = with_fields(self.model, state)
        trial = trial_fields(state.fields)  # updated to the proposal's
        proposal, delta = effective_chain(self.model, state.spins, self.beta, self.n_local, self.step_size, rng,
                                          self.overrelax, self.move, trial)
        # E_eff of the proposal from the chain's own ΔE: no second model evaluation. Round-off
        # (~1e-15 per step) random-walks until the model next changes and E_eff is re-evaluated:
        # ~1e-12 after 10^5 frozen-model steps, far below anything the acceptance resolves.
        # The same holds for the fields (b, h) carried from step to step.
        return accept_exactly(self.physics, self.beta, state, proposal, state.e_eff + delta, rng, trial)
