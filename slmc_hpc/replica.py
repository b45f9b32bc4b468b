"""One temperature's Markov chain: its sampler (exact local, SLMC or nested SLMC), chain
state, random stream and β, and the record of each measured step. No MPI, no learning, no
files: the run loop steps it, the learner (training/learner.py) installs new models in it,
and a replica exchange moves it to another β.

Energies in records are whole-lattice; β = 1/T."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from .hamiltonian import DoubleExchange, fermi, fermion_energy, fermion_energy_fluctuation
from .observables import magnetization, nn_correlation
from .samplers import ChainState, StepInfo


class Replica:
    def __init__(self, physics: DoubleExchange, sampler, rng: np.random.Generator, spins: np.ndarray):
        """A chain of ``sampler`` (which fixes β and the models) started at ``spins``, drawing
        from ``rng``."""
        self.physics, self.sampler, self.rng = physics, sampler, rng
        self.state = sampler.init_state(spins)
        self.steps_done = 0

    @property
    def beta(self) -> float:
        return self.sampler.beta

    @property
    def model(self):
        """The effective model the chain samples with (the middle model of nested SLMC); None
        for the exact sampler."""
        return getattr(self.sampler, "model", None)

    def step(self) -> StepInfo:
        self.state, info = self.sampler.step(self.state, self.rng)
        self.steps_done += 1
        return info

    def log_weights(self, betas) -> np.ndarray:
        """log W_β of the current configuration at each β (whole lattice), from the cached
        eigenvalues: what a replica exchange needs, without diagonalizing."""
        s = self.state
        return np.array([self.physics.log_weight(s.eigenvalues, s.classical_energy, b) for b in betas])

    def energy(self) -> float:
        """U = -∂ log W_β/∂β of the current configuration at the replica's β (whole lattice):
        the electrons' energy Σ ε f(ε) (μ included in ε) plus the classical energy."""
        s = self.state
        return float(fermion_energy(s.eigenvalues, self.beta) + s.classical_energy)

    def set_beta(self, beta: float, model=None, inner=None) -> None:
        """Move to another temperature (a replica exchange): spins and eigenvalues stay; the
        sampler switches to β, the effective model (this replica's, or ``model`` and for nested
        SLMC ``inner``: the new slot's) is taken at β, and E_eff is re-evaluated."""
        self.sampler = replace(self.sampler, beta=beta)
        if self.model is not None:
            self.use_models((model if model is not None else self.model).with_beta(beta), inner)

    def set_path(self, n_local: int, step_size: float, middle_steps: int = 1) -> None:
        """Run ``n_local`` local updates of size δ = ``step_size`` per step from now on, and a
        sampler with a middle level ``middle_steps`` middle tests per exact test (others have
        none, and take 1)."""
        if (n_local, step_size, middle_steps) != self.path:
            changes = {"n_local": n_local, "step_size": step_size}
            if hasattr(self.sampler, "middle_steps"):
                changes["middle_steps"] = middle_steps
            elif middle_steps != 1:
                raise ValueError(f"{middle_steps} middle tests asked of a sampler without a middle level")
            self.sampler = replace(self.sampler, **changes)

    @property
    def path(self) -> tuple[int, float, int]:
        """(local updates per step, δ, middle tests per exact test: 1 without a middle level)."""
        return self.sampler.n_local, self.sampler.step_size, getattr(self.sampler, "middle_steps", 1)

    def use_models(self, model, inner=None) -> None:
        """Sample with ``model`` (and, nested SLMC, a new ``inner`` model); E_eff re-evaluated."""
        if inner is not None:
            self.sampler, self.state = self.sampler.with_model(model, self.state, inner)
        else:
            self.sampler, self.state = self.sampler.with_model(model, self.state)

    def configuration(self) -> dict:
        """What another slot takes in a swap (take_configuration): spins, eigenvalues and
        energies, without the inner chain's fields, which belong to this slot's model."""
        s = self.state
        return {"spins": s.spins.copy(), "eigenvalues": np.asarray(s.eigenvalues).copy(),
                "classical_energy": s.classical_energy, "e_eff": s.e_eff}

    def state_dict(self) -> dict:
        """The chain's part of a checkpoint: random stream, β, steps taken and chain state."""
        b, h = (None, None) if self.state.fields is None else (x.copy() for x in self.state.fields)
        return {"rng": json.dumps(self.rng.bit_generator.state), "beta": self.beta, "steps_done": self.steps_done,
                "chain": self.configuration() | {"bond_values": b, "bond_field": h}}

    def load_state_dict(self, tree: dict, model=None, inner=None) -> None:
        """Continue from ``state_dict``'s tree at the saved β, sampling with ``model`` (taken
        at that β) and ``inner`` where given; the chain state is restored exactly as saved."""
        self.rng.bit_generator.state = json.loads(tree["rng"])
        self.steps_done = int(tree["steps_done"])
        beta = float(tree["beta"])
        self.sampler = replace(self.sampler, beta=beta)
        if model is not None:
            self.use_models(model.with_beta(beta), inner)
        self.restore_chain(tree["chain"])

    def take_configuration(self, chain: dict) -> None:
        """Continue from another chain's ``configuration()``: a swap of configurations between
        temperature slots, where the slot, its β, models and random stream stay. E_eff is
        evaluated under this replica's model, and the inner chain's fields are set up at the
        next step."""
        e_eff = float(self.model.energy(chain["spins"])) if self.model is not None else float("nan")
        self.restore_chain(dict(chain, e_eff=e_eff, bond_values=None, bond_field=None))

    def restore_chain(self, chain: dict) -> None:
        """The chain state exactly as saved (E_eff and the inner chain's fields not re-evaluated:
        bit-identical resumes; a checkpoint without fields sets them up at the next step)."""
        saved = chain.get("bond_values"), chain.get("bond_field")
        fields = None if saved[0] is None else tuple(np.array(x, dtype=np.float64) for x in saved)
        self.state = ChainState(np.array(chain["spins"]), np.array(chain["eigenvalues"]),
                                float(chain["classical_energy"]), float(chain["e_eff"]), fields)

    def record(self, info: StepInfo) -> dict:
        """Measurements of the current configuration after a step (whole-lattice energies);
        the keys are output.MEASURE_DTYPES'."""
        s = self.state
        return {
            "free_energy": self.sampler.free_energy(s),
            "effective_energy": s.e_eff,
            "magnetization": magnetization(s.spins),
            "accepted": int(info.accepted),
            "acceptance": info.n_accepted / info.n_tests if info.n_tests else float("nan"),
            "exact_log_ratio": info.log_ratio,
            "fermion_energy": float(fermion_energy(s.eigenvalues, self.beta)),
            "fermion_energy_fluctuation": float(fermion_energy_fluctuation(s.eigenvalues, self.beta)),
            "filling": float(fermi(s.eigenvalues, self.beta).sum() / self.physics.lattice.N),
            "nn_correlation": float(nn_correlation(s.spins, self.physics.lattice)),
        }
