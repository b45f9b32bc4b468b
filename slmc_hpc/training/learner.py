"""One temperature slot's online learning, beside its chain (the Replica): the replay buffer
of exactly evaluated proposals, the trainers, the round schedule and the rounds' records;
and the training round itself.

Who owns which model: a linear effective model (and nested SLMC's inner linear model)
belongs to its temperature slot and is fitted on that slot's samples alone. The Transformer
is one network shared by all slots, conditioned on β (its head is affine in log β), and
trained on every slot's samples at once, each sample at its own β: ``train_round`` over all
slots of every rank, collective over the network trainer's communicator. A slot without a
shared network trains by itself (``train_alone``; ``solo_step`` is a step and that round)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..models.transformer import TransformerModel
from ..parallel.allreduce import assert_same_parameters
from ..parallel.comm import SerialComm
from ..samplers import AcceptanceCounts, ChainState, StepInfo
from .data import ROUND_FIELDS, ReplayBuffer, Samples
from .least_squares import LinearTrainer
from .network import TorchTrainer


def is_refit_step(step: int, thermalize: int, every: int) -> bool:
    """True after thermalization step ``step`` (0-based) if a training round follows it.
    Never during measurement (step >= thermalize)."""
    return step < thermalize and (step + 1) % every == 0


def n_refits(thermalize: int, every: int) -> int:
    return thermalize // every


class Learner:
    """The learning of one temperature slot. ``linear``: the slot's own linear (or downfolded)
    model's trainer; ``network``: the Transformer's (shared by all slots, or private to this
    one); ``inner``: the trainer of nested SLMC's inner linear model. ``buffer`` is None when there is
    nothing to collect (no thermalization)."""

    def __init__(self, buffer: ReplayBuffer | None, linear: LinearTrainer | None = None,
                 network: TorchTrainer | None = None, inner: LinearTrainer | None = None, *,
                 every: int, thermalize: int, validation_fraction: float):
        self.buffer, self.linear, self.network, self.inner = buffer, linear, network, inner
        self.every, self.thermalize, self.validation_fraction = every, thermalize, validation_fraction
        self.rounds: list[dict] = []  # one per training round, keys ROUND_FIELDS
        self.counts = AcceptanceCounts()  # of the steps since the last round

    @property
    def head_size(self) -> int:
        """Parameters of the widest least-squares fit of this slot's training round: a
        linear model's (E_0, J_n and any bond-pair K_o; nested SLMC's inner one too), or the
        Transformer's head at one β (E_0, J_n, K_o; the β-slopes are fitted only with data at
        several β)."""
        sizes = [t.model.n_parameters for t in (self.linear, self.inner) if t is not None]
        if self.network is not None:
            sizes.append(1 + self.network.net.couplings.shape[1])
        return max(sizes, default=0)

    @property
    def slot_models(self) -> tuple:
        """(model, inner model) trained for this slot: what travels with its temperature label
        during measurement. None for the shared Transformer (every slot has it) and where
        there is no inner model."""
        return (self.linear.model if self.linear is not None else None,
                self.inner.model if self.inner is not None else None)

    def models(self, beta: float) -> tuple:
        """(model, inner model) to sample with at β: the frozen network, or the slot's model
        taken at β (the downfolded model depends on β; the linear model does not)."""
        model, inner = self.slot_models
        if self.network is not None:
            model = TransformerModel.frozen(self.network.net, beta)
        elif model is not None:
            model = model.with_beta(beta)
        return model, inner

    def move_to(self, beta: float) -> None:
        """Take the slot's own model to the slot's (new) β: a model that depends on β (the
        downfolded model's F_low) computes its training rows at the β of its samples."""
        if self.linear is not None:
            self.linear.model = self.linear.model.with_beta(beta)

    def observe(self, before: ChainState, free_energy_before: float, info: StepInfo, beta: float) -> None:
        """Count a thermalization step and keep its exactly evaluated proposal (with the state
        it was proposed from, F at ``beta``) as training data."""
        self.counts.add(info)
        if self.buffer is not None and info.proposal is not None:
            self.buffer.add(info.proposal, info.proposal_free_energy, beta, before.spins, free_energy_before)

    def round_due(self, step: int) -> bool:
        """Whether a training round follows 0-based thermalization step ``step``."""
        return self.buffer is not None and is_refit_step(step, self.thermalize, self.every)

    def forget_samples(self, beta: float) -> None:
        """The slot's β moved to ``beta``: drop the training data (no sample is trained at a β
        it was not made at); the models keep their parameters, are taken at the new β
        (move_to) and are refitted from the new samples."""
        if self.buffer is not None:
            self.buffer = self.buffer.emptied()
        self.move_to(beta)

    def freeze(self) -> None:
        """Stop collecting training data (the end of thermalization): the models stay as they are."""
        self.buffer = None

    def finish_round(self, train: Samples, validation: Samples, beta: float, step: int) -> tuple:
        """This slot's part of a training round after ``step`` chain steps (the shared network,
        if any, is trained already; its losses recorded here are on this slot's samples): fit
        the linear model (or nested SLMC's inner one) and record the round. Returns the
        (model, inner model) the chain samples with from now on."""
        if self.network is None:
            result = self.linear.train(train, validation, beta)
        else:
            result = self.network.local_losses(train, validation)
        if self.inner is not None:
            self.inner.train(train, validation, beta)
        c = self.counts
        self.rounds.append({"step": step, "n_train": len(train), "train_loss": result.train_loss,
                            "validation_loss": result.validation_loss, "acceptance": c.acceptance,
                            "middle_acceptance": c.middle_acceptance})
        self.counts = AcceptanceCounts()
        return self.models(beta)

    def state_dict(self) -> dict:
        """The learning part of a slot's checkpoint (the shared network is saved once, by the
        run): counters, rounds, training data and the linear models."""
        tree = {"counts": self.counts.as_array(),
                "rounds": {name: np.array([r[name] for r in self.rounds]) for name in ROUND_FIELDS},
                "buffer": self.buffer.state_dict() if self.buffer is not None else None}
        for key, trainer in (("linear", self.linear), ("inner", self.inner)):
            if trainer is not None:
                tree[key] = {"parameters": trainer.model.parameters()[0]}
        return tree

    def load_state_dict(self, tree: dict) -> None:
        self.counts = AcceptanceCounts.from_array(tree["counts"])
        self.rounds = [{name: (int if name in ("step", "n_train") else float)(tree["rounds"][name][k])
                        for name in ROUND_FIELDS} for k in range(len(tree["rounds"]["step"]))]
        featurize = self.buffer.featurize if self.buffer is not None else None
        self.buffer = ReplayBuffer.from_state(tree["buffer"], featurize) if "buffer" in tree else None
        for key, trainer in (("linear", self.linear), ("inner", self.inner)):
            if key in tree:
                saved, old = tree[key], trainer.model
                # checkpoints written before linear models had bond-pair terms hold e0 and the J_n
                # of a model that ignored bond_shells: the same model is K_o = 0
                vector = (saved["parameters"] if "parameters" in saved
                          else np.r_[saved["e0"], saved["couplings"], np.zeros(len(old.bond_couplings))])
                trainer.model = old.with_parameters(vector)


def collect(replica, learner: Learner) -> StepInfo:
    """One thermalization step of ``replica`` whose proposal ``learner`` keeps.

    Where nested SLMC's middle tests rejected every inner proposal, no exact test ran; the
    last inner proposal is then diagonalized here, for training only (the chain's step is as
    it was), so that every step yields a sample, as in two-level SLMC. Without it a middle
    model that rejects what an ill-trained inner chain proposes starves both models of data:
    at L = 10 on a ferromagnet (J = 8, μ = -5, T = 0.01) the downfolded chain rejected every
    middle test from its first fit on, and never moved again (analysis/BENCHMARKS.md)."""
    before = replica.state
    info = replica.step()
    kept = info
    if info.rejected_proposal is not None and learner.buffer is not None:
        spins = info.rejected_proposal
        kept = replace(info, proposal=spins, proposal_free_energy=float(replica.physics.free_energy_of(spins, replica.beta)))
    learner.observe(before, replica.sampler.free_energy(before), kept, replica.beta)
    return info


def train_round(slots: list, comm, interrupt=None) -> str:
    """One training round for (replica, learner) slots stepping in lockstep (every slot of
    this process, at the same step). The network, if the learners have one, trains on all
    their samples together, collectively over ``comm`` (its trainer's communicator: every rank
    calls this at the same step); each slot's linear model on its own samples. A round is
    skipped everywhere while any slot has fewer training samples than twice the widest
    least-squares head it fits (Learner.head_size): with bond-pair terms that is hundreds of
    couplings, which a handful of samples would only interpolate. ``interrupt``: see
    TorchTrainer.train (a RoundInterrupted leaves every slot and the network as they were).
    Returns which layers the network kept (TorchTrainer.kept_layers), "" if none trained."""
    learners = [learner for _, learner in slots]
    splits = [learner.buffer.split(learner.validation_fraction) for learner in learners]
    network = learners[0].network
    fewest = min(len(train) for train, _ in splits)
    if network is not None:
        fewest = min(comm.allgather(fewest))
    if fewest < 2 * max(learner.head_size for learner in learners):
        return ""
    if network is not None:
        network.train(Samples.concat([t for t, _ in splits]), Samples.concat([v for _, v in splits]),
                      interrupt=interrupt)
        assert_same_parameters(network.net, comm)  # cheap, and a silent split would be fatal
    for (replica, learner), (train, validation) in zip(slots, splits):
        replica.use_models(*learner.finish_round(train, validation, replica.beta, replica.steps_done))
    return network.kept_layers if network is not None else ""


def train_alone(replica, learner: Learner) -> None:
    """The training round of a slot that learns by itself (its linear model, or a network
    private to it), when one is due after the replica's latest step."""
    if learner.round_due(replica.steps_done - 1):
        train_round([(replica, learner)], SerialComm())


def solo_step(replica, learner: Learner) -> StepInfo:
    """One thermalization step of a slot that learns by itself: the step, its training data,
    and the round when one is due."""
    info = collect(replica, learner)
    train_alone(replica, learner)
    return info
