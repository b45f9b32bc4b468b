"""One temperature's serial simulation: a chain (SLMC or exact local), its random stream,
and its online training. Knows nothing of MPI or files; a driver (serial now, parallel
tempering later) calls ``step`` and ``record``."""

from __future__ import annotations

import numpy as np

from .fermions import DoubleExchange, fermion_energy, fermi
from .models import LinearModel
from .observables import magnetization, nn_correlation, random_spins
from .samplers import ExactLocalSampler, SLMCSampler, StepInfo
from .training import ReplayBuffer, is_refit_step

RECORD_FIELDS = ("free_energy", "magnetization", "accepted", "acceptance", "fermion_energy", "filling",
                 "nn_correlation")


def initial_spins(kind: str, n_sites: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ferro":
        spins = np.zeros((n_sites, 3))
        spins[:, 2] = 1.0
        return spins
    return random_spins(n_sites, rng)


def make_model(cfg, lattice):
    if cfg.effective_model.kind == "linear":
        return LinearModel.zeros(lattice, cfg.effective_model.shells)
    raise ValueError(f"unknown effective model {cfg.effective_model.kind!r}")


class Replica:
    def __init__(self, cfg, physics: DoubleExchange, beta: float, rng: np.random.Generator):
        self.cfg, self.physics, self.rng = cfg, physics, rng
        n_local, step_size = cfg.local_updates, cfg.run.step_size
        if cfg.run.sampler == "slmc":
            self.sampler = SLMCSampler(physics, make_model(cfg, physics.lattice), beta, n_local, step_size)
        else:
            self.sampler = ExactLocalSampler(physics, beta, n_local, step_size)
        self.state = self.sampler.init_state(initial_spins(cfg.run.initial, physics.lattice.N, rng))
        # training data exists only while an SLMC replica thermalizes
        self.buffer = (ReplayBuffer(cfg.training.buffer_size, physics.lattice.N)
                       if self.model is not None and cfg.run.thermalize > 0 else None)
        self.steps_done = 0
        self.fits: list[tuple[int, float]] = []  # (steps done at the refit, rms of (E_eff - F)/N on the buffer)

    @property
    def beta(self) -> float:
        return self.sampler.beta

    @property
    def model(self):
        return getattr(self.sampler, "model", None)

    def step(self) -> StepInfo:
        """One step; during thermalization an SLMC replica also learns from its proposal."""
        self.state, info = self.sampler.step(self.state, self.rng)
        thermalize = self.cfg.run.thermalize
        if self.model is not None and self.steps_done < thermalize:
            self.buffer.add(info.proposal, info.proposal_free_energy)
            if is_refit_step(self.steps_done, thermalize, self.cfg.training.every):
                self._refit()
        self.steps_done += 1
        if self.steps_done == thermalize:
            self.buffer = None  # the model is frozen from here on
        return info

    def _refit(self) -> None:
        spins, targets = self.buffer.data()
        if len(targets) < 2 * self.model.n_parameters:
            return
        model = self.model.fit(spins, targets)
        self.sampler, self.state = self.sampler.with_model(model, self.state)
        rms = float(np.sqrt(np.mean((model.energy(spins) - targets) ** 2)) / self.physics.lattice.N)
        self.fits.append((self.steps_done + 1, rms))

    def record(self, info: StepInfo) -> dict:
        """Measurements of the current configuration after a step (whole-lattice energies)."""
        s = self.state
        return {
            "free_energy": self.sampler.free_energy(s),
            "magnetization": magnetization(s.spins),
            "accepted": int(info.accepted),
            "acceptance": info.n_accepted / info.n_tests,
            "fermion_energy": float(fermion_energy(s.eigenvalues, self.beta)),
            "filling": float(fermi(s.eigenvalues, self.beta).sum() / self.physics.lattice.N),
            "nn_correlation": float(nn_correlation(s.spins, self.physics.lattice)),
        }
