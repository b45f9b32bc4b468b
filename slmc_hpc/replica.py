"""One temperature's serial simulation: a chain (exact local, SLMC, or nested SLMC), its
random stream, and its online training. Knows nothing of MPI or files; a driver (serial now,
parallel tempering later) calls ``step`` and ``record``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .fermions import DoubleExchange, fermi, fermion_energy
from .models import LinearModel
from .models.transformer import EquivariantTransformer, TransformerModel
from .observables import magnetization, nn_correlation, random_spins
from .samplers import ExactLocalSampler, SLMCSampler, StepInfo
from .samplers.nested import NestedSLMCSampler
from .training import LinearTrainer, ReplayBuffer, TorchTrainer, is_refit_step

ROUND_FIELDS = ("step", "n_train", "train_loss", "validation_loss", "acceptance", "middle_acceptance")


def initial_spins(kind: str, n_sites: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ferro":
        spins = np.zeros((n_sites, 3))
        spins[:, 2] = 1.0
        return spins
    return random_spins(n_sites, rng)


def build_network(cfg, lattice, beta_ref: float) -> EquivariantTransformer:
    """The Transformer of ``[effective_model]``; its initial weights depend only on [run] seed,
    so every replica (and every MPI rank) builds the same network."""
    em = cfg.effective_model
    return EquivariantTransformer(
        lattice, layers=em.layers, heads=em.heads, block_shells=em.block_shells,
        attention_shells=None if em.attention_shells == "global" else em.attention_shells,
        shells=em.shells, normalize=em.normalize, beta_ref=beta_ref,
        dtype=getattr(torch, em.dtype), seed=cfg.run.seed)


class Replica:
    def __init__(self, cfg, physics: DoubleExchange, beta: float, rng: np.random.Generator,
                 beta_ref: float | None = None):
        self.cfg, self.physics, self.rng = cfg, physics, rng
        lattice, run, tr = physics.lattice, cfg.run, cfg.training
        n_local, step_size = cfg.local_updates, run.step_size
        self.trainer = self.inner_trainer = None
        if run.sampler == "exact":
            self.sampler = ExactLocalSampler(physics, beta, n_local, step_size)
        elif cfg.effective_model.kind == "linear":
            self.trainer = LinearTrainer(LinearModel.zeros(lattice, cfg.effective_model.shells), tr.loss)
            self.sampler = SLMCSampler(physics, self.trainer.model, beta, n_local, step_size)
        else:
            net = build_network(cfg, lattice, beta if beta_ref is None else beta_ref)
            self.trainer = TorchTrainer(net, tr.epochs, tr.learning_rate, tr.weight_decay, tr.batch_size,
                                        seed=int(rng.integers(2**63)), loss=tr.loss)
            model = TransformerModel.frozen(net, beta)
            if cfg.slmc.scheme == "plain":
                self.sampler = SLMCSampler(physics, model, beta, n_local, step_size)
            else:
                self.inner_trainer = LinearTrainer(LinearModel.zeros(lattice, cfg.effective_model.shells), tr.loss)
                self.sampler = NestedSLMCSampler(physics, self.inner_trainer.model, model, beta, n_local,
                                                 step_size, cfg.slmc.middle_steps)
        self.state = self.sampler.init_state(initial_spins(run.initial, lattice.N, rng))
        # training data exist only while an SLMC replica thermalizes
        self.buffer = (ReplayBuffer(tr.buffer_size, lattice.N, pairs=tr.loss == "pair")
                       if self.trainer is not None and run.thermalize > 0 else None)
        self.steps_done = 0
        self.rounds: list[dict] = []  # one per training round, keys ROUND_FIELDS
        self.counts = np.zeros(4, dtype=np.int64)  # exact tests, accepted, middle tests, accepted; per round

    @property
    def beta(self) -> float:
        return self.sampler.beta

    @property
    def model(self):
        return getattr(self.sampler, "model", None)

    @property
    def n_model_parameters(self) -> int:
        return 0 if self.model is None else len(self.model.parameters()[0])

    def log_weights(self, betas) -> np.ndarray:
        """log W_β of the current configuration at each β (whole lattice), from the cached
        eigenvalues: what a replica exchange needs, without diagonalizing."""
        s = self.state
        return np.array([self.physics.log_weight(s.eigenvalues, s.classical_energy, b) for b in betas])

    def set_beta(self, beta: float, model=None, inner=None) -> None:
        """Move to another temperature (a replica exchange): spins and eigenvalues stay; the
        sampler switches to β, the effective model (this replica's, or ``model`` and for nested
        SLMC ``inner``: the new slot's) is taken at β, and E_eff is re-evaluated."""
        self.sampler = replace(self.sampler, beta=beta)
        if self.model is not None:
            self._use_models((model if model is not None else self.model).with_beta(beta), inner)

    def _use_models(self, model, inner=None) -> None:
        """Sample with ``model`` (and, nested SLMC, a new ``inner`` model); E_eff re-evaluated."""
        if inner is not None:
            self.sampler, self.state = self.sampler.with_model(model, self.state, inner)
        else:
            self.sampler, self.state = self.sampler.with_model(model, self.state)

    @property
    def slot_models(self) -> tuple:
        """(model, inner model or None): what travels with this replica's temperature label."""
        return self.model, getattr(self.sampler, "inner", None)

    def step(self) -> StepInfo:
        """One step; during thermalization an SLMC replica also learns from its proposals."""
        before = self.state
        self.state, info = self.sampler.step(self.state, self.rng)
        self.counts += (info.n_tests, info.n_accepted, info.n_middle_tests, info.n_middle_accepted)
        thermalize = self.cfg.run.thermalize
        if self.buffer is not None and self.steps_done < thermalize:
            if info.proposal is not None:
                self.buffer.add(info.proposal, info.proposal_free_energy, self.beta, before.spins,
                                self.sampler.free_energy(before))
            if is_refit_step(self.steps_done, thermalize, self.cfg.training.every):
                self._train_round()
        self.steps_done += 1
        if self.steps_done == thermalize:
            self.buffer = None  # the model is frozen from here on
        return info

    def _train_round(self) -> None:
        train, validation = self.buffer.split(self.cfg.training.validation_fraction)
        if len(train) < 2 * (self.cfg.effective_model.shells + 1):
            return  # too few exact samples yet for even the linear head
        result = self.trainer.train(train, validation, self.beta)
        if isinstance(self.trainer, LinearTrainer):
            self._use_models(self.trainer.model)
        else:
            if self.inner_trainer is not None:
                self.inner_trainer.train(train, validation, self.beta)
            self._use_models(TransformerModel.frozen(self.trainer.net, self.beta),
                             self.inner_trainer.model if self.inner_trainer is not None else None)
        tests, accepted, mid_tests, mid_accepted = self.counts
        self.rounds.append({"step": self.steps_done + 1, "n_train": len(train),
                            "train_loss": result.train_loss, "validation_loss": result.validation_loss,
                            "acceptance": accepted / tests if tests else float("nan"),
                            "middle_acceptance": mid_accepted / mid_tests if mid_tests else float("nan")})
        self.counts[:] = 0

    def record(self, info: StepInfo) -> dict:
        """Measurements of the current configuration after a step (whole-lattice energies)."""
        s = self.state
        return {
            "free_energy": self.sampler.free_energy(s),
            "effective_energy": s.e_eff,
            "magnetization": magnetization(s.spins),
            "accepted": int(info.accepted),
            "acceptance": info.n_accepted / info.n_tests if info.n_tests else float("nan"),
            "fermion_energy": float(fermion_energy(s.eigenvalues, self.beta)),
            "filling": float(fermi(s.eigenvalues, self.beta).sum() / self.physics.lattice.N),
            "nn_correlation": float(nn_correlation(s.spins, self.physics.lattice)),
        }
