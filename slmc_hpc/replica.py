"""One temperature's serial simulation: a chain (exact local, SLMC, or nested SLMC), its
random stream, and its online training. Knows nothing of MPI or files; the driver calls
``step``, ``train_round`` and ``record``.

Who owns which model: a linear effective model (and nested SLMC's inner linear model)
belongs to its temperature slot and is fitted on that slot's samples alone. The Transformer
is one network shared by all slots, conditioned on β (its head is affine in log β), and
trained on every slot's samples at once, each sample at its own β; its trainer is passed in
by the driver (collective over MPI ranks), or built privately for a replica on its own."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from .fermions import DoubleExchange, fermi, fermion_energy
from .models import LinearModel
from .models.transformer import EquivariantTransformer, TransformerModel
from .observables import magnetization, nn_correlation, random_spins
from .samplers import ChainState, ExactLocalSampler, SLMCSampler, StepInfo
from .samplers.nested import NestedSLMCSampler
from .parallel.allreduce import assert_same_parameters, broadcast_parameters
from .parallel.comm import SerialComm
from .training import LinearTrainer, ReplayBuffer, Samples, TorchTrainer, is_refit_step

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
        dtype=getattr(torch, em.dtype), seed=cfg.run.seed, bond_shells=em.bond_shells,
        gate_channels=em.gate_channels)


def build_linear(cfg, lattice, inner: bool = False) -> LinearModel:
    """The untrained (zero) linear model of a slot: ``[effective_model]`` shells and
    bond_shells, or with ``inner`` nested SLMC's inner model (shells, ``[slmc] inner_bond_shells``)."""
    em = cfg.effective_model
    return LinearModel.zeros(lattice, em.shells, cfg.slmc.inner_bond_shells if inner else em.bond_shells)


def shared_trainer(cfg, lattice, beta_ref: float, seed: int, comm=None) -> TorchTrainer:
    """The trainer of the one Transformer all temperature slots share, collective over
    ``comm``: the same initial parameters on every rank (broadcast from rank 0); ``seed``
    only orders this rank's minibatches."""
    comm = comm or SerialComm()
    net = build_network(cfg, lattice, beta_ref)
    broadcast_parameters(net, comm)
    tr = cfg.training
    return TorchTrainer(net, tr.epochs, tr.learning_rate, tr.weight_decay, tr.batch_size, seed=seed,
                        loss=tr.loss, comm=comm)


def uses_shared_network(cfg) -> bool:
    return cfg.run.sampler == "slmc" and cfg.effective_model.kind == "transformer"


def train_round(replicas: list, interrupt=None) -> str:
    """One training round for replicas stepping in lockstep (every replica of this process,
    at the same step). The shared Transformer, if any, trains on all their samples together
    (collective over its trainer's ranks: every rank calls this at the same step); each
    slot's linear model on its own samples. A round is skipped everywhere while any replica
    has fewer training samples than twice the widest least-squares head it fits (Replica.head_size):
    with bond-pair terms that is hundreds of couplings, which a handful of samples would
    only interpolate. ``interrupt``: see TorchTrainer.train
    (a RoundInterrupted leaves every replica and the shared network as they were).
    Returns which layers the shared network kept (TorchTrainer.kept_layers), "" if none
    trained."""
    cfg = replicas[0].cfg
    splits = [rep.buffer.split(cfg.training.validation_fraction) for rep in replicas]
    shared = replicas[0].trainer if isinstance(replicas[0].trainer, TorchTrainer) else None
    fewest = min(len(train) for train, _ in splits)
    if shared is not None:
        fewest = min(shared.comm.allgather(fewest))
    if fewest < 2 * max(rep.head_size for rep in replicas):
        return ""
    if shared is not None:
        shared.train(Samples.concat([t for t, _ in splits]), Samples.concat([v for _, v in splits]),
                     interrupt=interrupt)
        assert_same_parameters(shared.net, shared.comm)  # cheap, and a silent split would be fatal
    for rep, (train, validation) in zip(replicas, splits):
        rep.finish_round(train, validation)
    return shared.kept_layers if shared is not None else ""


class Replica:
    def __init__(self, cfg, physics: DoubleExchange, beta: float, rng: np.random.Generator,
                 beta_ref: float | None = None, trainer: TorchTrainer | None = None):
        """``trainer``: the shared Transformer's (see ``shared_trainer``); the driver then
        calls ``train_round`` for all its replicas. Without it a Transformer replica builds a
        private network (β_ref = ``beta_ref`` or its own β) and trains it by itself."""
        self.cfg, self.physics, self.rng = cfg, physics, rng
        lattice, run, tr = physics.lattice, cfg.run, cfg.training
        n_local, step_size = cfg.local_updates, run.step_size
        self.trainer = self.inner_trainer = None
        self.trains_alone = trainer is None
        if run.sampler == "exact":
            self.sampler = ExactLocalSampler(physics, beta, n_local, step_size)
        elif cfg.effective_model.kind == "linear":
            self.trainer = LinearTrainer(build_linear(cfg, lattice), tr.loss)
            self.sampler = SLMCSampler(physics, self.trainer.model, beta, n_local, step_size)
        else:
            if trainer is None:
                trainer = shared_trainer(cfg, lattice, beta if beta_ref is None else beta_ref,
                                         seed=int(rng.integers(2**63)))
            self.trainer = trainer
            model = TransformerModel.frozen(trainer.net, beta)
            if cfg.slmc.scheme == "plain":
                self.sampler = SLMCSampler(physics, model, beta, n_local, step_size)
            else:
                self.inner_trainer = LinearTrainer(build_linear(cfg, lattice, inner=True), tr.loss)
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
    def head_size(self) -> int:
        """Parameters of the widest least-squares fit of this replica's training round: a
        linear model's (E_0, J_n and any bond-pair K_o; nested SLMC's inner one too), or the
        shared Transformer's head at one β (E_0, J_n, K_o; the β-slopes are fitted only with
        data at several β)."""
        sizes = [t.model.n_parameters for t in (self.trainer, self.inner_trainer) if isinstance(t, LinearTrainer)]
        if isinstance(self.trainer, TorchTrainer):
            sizes.append(1 + self.trainer.net.couplings.shape[1])
        return max(sizes, default=0)

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
        """(model, inner model) this replica trained for its starting slot: what travels with
        that temperature label during measurement. None for the shared Transformer (every
        slot has it) and where there is no inner model."""
        return (self.trainer.model if isinstance(self.trainer, LinearTrainer) else None,
                self.inner_trainer.model if self.inner_trainer is not None else None)

    def state_dict(self) -> dict:
        """Everything of this replica a resumed run needs (not the shared Transformer, which
        the driver saves once): random stream, chain state, counters, training data and the
        linear models it trained."""
        s = self.state
        tree = {"rng": json.dumps(self.rng.bit_generator.state), "beta": self.beta,
                "steps_done": self.steps_done, "counts": self.counts.copy(),
                "chain": {"spins": s.spins.copy(), "eigenvalues": np.asarray(s.eigenvalues).copy(),
                          "classical_energy": s.classical_energy, "e_eff": s.e_eff},
                "rounds": {name: np.array([r[name] for r in self.rounds]) for name in ROUND_FIELDS},
                "buffer": self.buffer.state_dict() if self.buffer is not None else None}
        for key, trainer in (("linear", self.trainer), ("inner", self.inner_trainer)):
            if isinstance(trainer, LinearTrainer):
                tree[key] = {"parameters": trainer.model.parameters()[0]}
        return tree

    def load_state_dict(self, tree: dict) -> None:
        """Continue from ``state_dict``'s tree (the shared Transformer already loaded), at the
        saved β with the models this replica trained (the driver installs another slot's
        afterwards, see ``set_beta``); the chain state is restored exactly as saved."""
        self.rng.bit_generator.state = json.loads(tree["rng"])
        self.steps_done = int(tree["steps_done"])
        self.counts[:] = tree["counts"]
        self.rounds = [{name: (int if name in ("step", "n_train") else float)(tree["rounds"][name][k])
                        for name in ROUND_FIELDS} for k in range(len(tree["rounds"]["step"]))]
        self.buffer = ReplayBuffer.from_state(tree["buffer"]) if "buffer" in tree else None
        for key, trainer in (("linear", self.trainer), ("inner", self.inner_trainer)):
            if key in tree:
                saved, old = tree[key], trainer.model
                # checkpoints written before linear models had bond-pair terms hold e0 and the J_n
                # of a model that ignored bond_shells: the same model is K_o = 0
                vector = (saved["parameters"] if "parameters" in saved
                          else np.r_[saved["e0"], saved["couplings"], np.zeros(len(old.bond_couplings))])
                trainer.model = LinearModel.from_parameters(old.lattice, vector, old.n_shells, old.bond_shells)
        beta = float(tree["beta"])
        self.sampler = replace(self.sampler, beta=beta)
        if self.model is not None:
            own, own_inner = self.slot_models
            if isinstance(self.trainer, TorchTrainer):
                own = TransformerModel.frozen(self.trainer.net, beta)
            self._use_models(own.with_beta(beta), own_inner)
        self.restore_chain(tree["chain"])

    def restore_chain(self, chain: dict) -> None:
        """The chain state exactly as saved (E_eff not re-evaluated: bit-identical resumes)."""
        self.state = ChainState(np.array(chain["spins"]), np.array(chain["eigenvalues"]),
                                float(chain["classical_energy"]), float(chain["e_eff"]))

    def step(self) -> StepInfo:
        """One step; during thermalization an SLMC replica also collects its proposals as
        training data (and, training alone, runs the training rounds)."""
        thermalize = self.cfg.run.thermalize
        if self.steps_done >= thermalize:
            self.freeze()
        before = self.state
        self.state, info = self.sampler.step(self.state, self.rng)
        self.counts += (info.n_tests, info.n_accepted, info.n_middle_tests, info.n_middle_accepted)
        self.steps_done += 1
        if self.buffer is not None:
            if info.proposal is not None:
                self.buffer.add(info.proposal, info.proposal_free_energy, self.beta, before.spins,
                                self.sampler.free_energy(before))
            if self.trains_alone and self.round_due():
                train_round([self])
        return info

    def freeze(self) -> None:
        """Stop collecting training data: from now on the models change only when installed
        from outside (what the end of thermalization does; analysis that reruns a measured
        chain calls it at once)."""
        self.buffer = None

    def round_due(self) -> bool:
        """Whether a training round follows the step just taken."""
        return self.buffer is not None and is_refit_step(self.steps_done - 1, self.cfg.run.thermalize,
                                                         self.cfg.training.every)

    def finish_round(self, train: Samples, validation: Samples) -> None:
        """This slot's part of a training round (see ``train_round``): fit the linear model
        (or nested SLMC's inner one), install the new models, record the round. The shared
        Transformer has been trained already; its losses recorded here are on this slot's
        samples."""
        if isinstance(self.trainer, LinearTrainer):
            result = self.trainer.train(train, validation, self.beta)
            self._use_models(self.trainer.model)
        else:
            result = self.trainer.local_losses(train, validation)
            if self.inner_trainer is not None:
                self.inner_trainer.train(train, validation, self.beta)
            self._use_models(TransformerModel.frozen(self.trainer.net, self.beta),
                             self.inner_trainer.model if self.inner_trainer is not None else None)
        tests, accepted, mid_tests, mid_accepted = self.counts
        self.rounds.append({"step": self.steps_done, "n_train": len(train),
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
