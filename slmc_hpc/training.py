"""Online self-learning during thermalization: a replay buffer of exactly evaluated
proposals and the refit schedule. The model is frozen during measurement, so the measured
chain is one fixed Markov kernel."""

from __future__ import annotations

import numpy as np


def is_refit_step(step: int, thermalize: int, every: int) -> bool:
    """True after thermalization step ``step`` (0-based) if the model is refitted then.
    Never during measurement (step >= thermalize)."""
    return step < thermalize and (step + 1) % every == 0


def n_refits(thermalize: int, every: int) -> int:
    return thermalize // every


class ReplayBuffer:
    """The most recent ``capacity`` (spins, F_β) pairs, F whole-lattice at the chain's β."""

    def __init__(self, capacity: int, n_sites: int):
        self.spins = np.empty((capacity, n_sites, 3))
        self.targets = np.empty(capacity)
        self.size = 0
        self._next = 0

    def add(self, spins: np.ndarray, target: float) -> None:
        if not np.isfinite(target) or not np.all(np.isfinite(spins)):
            raise ValueError(f"non-finite training sample (F = {target!r})")
        self.spins[self._next] = spins
        self.targets[self._next] = target
        self._next = (self._next + 1) % len(self.targets)
        self.size = min(self.size + 1, len(self.targets))

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.spins[: self.size], self.targets[: self.size]
