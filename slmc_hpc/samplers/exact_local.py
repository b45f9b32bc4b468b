"""Plain local-update Metropolis on the exact weight W_β: one full diagonalization per
single-spin proposal. The O(N^4)-per-sweep baseline every SLMC result is checked against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hamiltonian import DoubleExchange
from .moves import draw_moves, perturb
from .exact_acceptance import exact_state, free_energy
from .state import ChainState, StepInfo


@dataclass(frozen=True)
class ExactLocalSampler:
    physics: DoubleExchange
    beta: float
    n_local: int  # single-spin proposals per step
    step_size: float

    def init_state(self, spins: np.ndarray) -> ChainState:
        return exact_state(self.physics, spins)

    def free_energy(self, state: ChainState) -> float:
        return free_energy(self.physics, state, self.beta)

    def step(self, state: ChainState, rng: np.random.Generator) -> tuple[ChainState, StepInfo]:
        spins = state.spins.copy()
        eig, ecl = state.eigenvalues, state.classical_energy
        log_w = float(self.physics.log_weight(eig, ecl, self.beta))
        sites, noise, u = draw_moves(rng, len(spins), self.n_local)
        n_acc = 0
        for i, g, ui in zip(sites, noise, u):
            old = spins[i].copy()
            spins[i] = perturb(old, g, self.step_size)
            eig_new = self.physics.eigenvalues(spins)
            ecl_new = float(self.physics.classical_energy(spins))
            log_w_new = float(self.physics.log_weight(eig_new, ecl_new, self.beta))
            if np.log(ui) < log_w_new - log_w:
                eig, ecl, log_w = eig_new, ecl_new, log_w_new
                n_acc += 1
            else:
                spins[i] = old
        new_state = ChainState(spins, eig, ecl) if n_acc else state
        return new_state, StepInfo(accepted=n_acc > 0, n_tests=self.n_local, n_accepted=n_acc)
