"""Online training: the data are exact F at the replica's β, and the model is frozen while
measuring. (A mistake here would only lower the acceptance, so the exactness tests would
not see it.)"""

import numpy as np
import pytest

from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.models import LinearModel
from slmc_hpc.replica import Replica
from slmc_hpc.samplers import SLMCSampler
from slmc_hpc.observables import random_spins
from slmc_hpc.training.data import ReplayBuffer
from slmc_hpc.training.errors import TrainingError
from slmc_hpc.training.learner import is_refit_step, solo_step

from configs import small_config

CFG = small_config(lattice={"L": 3}, model={"mu": -1.0, "J_direct": 0.1}, temperatures={"values": [0.25]},
                   effective_model={"shells": 2}, training={"every": 10},
                   run={"thermalize": 40, "measure": 10, "progress_every": None})


def make_slot(cfg, seed):
    """A temperature slot at β = 4 that learns by itself: (replica, learner)."""
    return build_slot(cfg, build_physics(cfg), 4.0, np.random.default_rng(seed))


def test_training_targets_are_exact_free_energies_at_the_replica_beta():
    rep, learner = make_slot(CFG, 0)
    for _ in range(12):
        solo_step(rep, learner)
    data = learner.buffer.samples()
    spins, targets = data.spins, data.targets
    assert len(targets) == 12
    assert np.allclose(targets, rep.physics.free_energy_of(spins, 4.0), atol=1e-12, rtol=0)
    assert not np.allclose(targets, rep.physics.free_energy_of(spins, 2.0), atol=1e-6, rtol=0)


def test_model_is_refitted_while_thermalizing_and_frozen_while_measuring():
    rep, learner = make_slot(CFG, 1)
    seen = []
    for _ in range(CFG.run.thermalize):
        solo_step(rep, learner)
        seen.append(rep.model.parameters()[0].copy())
    assert [r["step"] for r in learner.rounds] == [10, 20, 30, 40]
    assert not np.array_equal(seen[5], seen[-1])  # it learned
    frozen = rep.model.parameters()[0].copy()
    for _ in range(CFG.run.measure):
        solo_step(rep, learner)  # the schedule has no round after thermalization
        assert np.array_equal(rep.model.parameters()[0], frozen)
    assert not any(learner.round_due(k) for k in range(CFG.run.thermalize, CFG.run.thermalize + CFG.run.measure))
    learner.freeze()  # what the run loop does when measurement starts: no more data, no round
    assert learner.buffer is None and not learner.round_due(CFG.run.thermalize - 1)


def test_refit_schedule():
    assert [s for s in range(40) if is_refit_step(s, 30, 10)] == [9, 19, 29]
    assert not any(is_refit_step(s, 0, 1) for s in range(5))


def test_buffer_keeps_the_most_recent_samples_and_rejects_nan():
    buf = ReplayBuffer(3, 2)
    for k in range(5):
        buf.add(np.full((2, 3), float(k)), float(k), 1.0)
    assert sorted(buf.samples().targets) == [2.0, 3.0, 4.0]
    with pytest.raises(TrainingError, match="non-finite training sample"):
        buf.add(np.zeros((2, 3)), float("nan"), 1.0)


def test_pair_buffer_holds_the_current_configuration_and_its_exact_free_energy():
    cfg = CFG.replace("training", loss="pair")
    rep, learner = make_slot(cfg, 2)
    for _ in range(9):
        solo_step(rep, learner)
    data = learner.buffer.samples()
    assert len(data) == 9
    assert np.allclose(data.ref_targets, rep.physics.free_energy_of(data.ref_spins, 4.0), atol=1e-12, rtol=0)
    # the reference of step k+1 is the chain's state after step k: the proposal of step k if
    # it was accepted, otherwise the same reference again
    for k in range(8):
        nxt = data.ref_spins[k + 1]
        assert np.array_equal(nxt, data.spins[k]) or np.array_equal(nxt, data.ref_spins[k])
    assert any(np.array_equal(data.ref_spins[k + 1], data.spins[k]) for k in range(8))  # some accepted


def test_nested_transformer_replica_keeps_its_effective_energy_consistent():
    """After every training round (the Transformer and the inner linear model both change)
    the chain's cached E_eff is the new model's energy of the current spins, and during
    measurement nothing changes."""
    cfg = CFG.replace("effective_model", kind="transformer", layers=1, heads=2, block_shells=1).replace(
        "training", epochs=2, loss="pair")
    rep, learner = make_slot(cfg, 4)
    inner_before = None
    for _ in range(cfg.run.thermalize):
        rounds = len(learner.rounds)
        solo_step(rep, learner)
        if len(learner.rounds) > rounds:
            assert rep.state.e_eff == pytest.approx(float(rep.model.energy(rep.state.spins)), abs=1e-12)
            assert rep.sampler.inner is learner.inner.model
            inner_before = rep.sampler.inner
    assert len(learner.rounds) == 4 and inner_before is not None
    frozen = rep.model.parameters()[0].copy()
    for _ in range(cfg.run.measure):
        solo_step(rep, learner)
        assert np.array_equal(rep.model.parameters()[0], frozen) and rep.sampler.inner is inner_before
        assert rep.state.e_eff == pytest.approx(float(rep.model.energy(rep.state.spins)), abs=1e-12)


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_set_beta_moves_the_replica_without_diagonalizing(kind, monkeypatch):
    """A replica exchange keeps spins and eigenvalues; F, E_eff and log W at the new β are
    those of the same configuration, computed from the cached eigenvalues."""
    cfg = CFG if kind == "linear" else CFG.replace("effective_model", kind="transformer", layers=1, heads=1,
                                                   block_shells=1).replace("training", epochs=2)
    rep, learner = make_slot(cfg, 6)
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner)
    spins, eig = rep.state.spins.copy(), rep.state.eigenvalues.copy()
    log_w = rep.log_weights([4.0, 2.5])

    def no_diagonalization(*args, **kwargs):
        raise AssertionError("set_beta must not diagonalize")

    monkeypatch.setattr(rep.physics.__class__, "eigenvalues", no_diagonalization)
    rep.set_beta(2.5)
    monkeypatch.undo()
    assert rep.beta == 2.5
    if kind == "transformer":
        assert rep.model.beta == 2.5
    assert np.array_equal(rep.state.spins, spins) and np.array_equal(rep.state.eigenvalues, eig)
    assert rep.sampler.free_energy(rep.state) == pytest.approx(rep.physics.free_energy_of(spins, 2.5), abs=1e-10)
    assert log_w[1] == pytest.approx(-2.5 * rep.physics.free_energy_of(spins, 2.5), abs=1e-9)
    assert rep.state.e_eff == pytest.approx(float(rep.model.energy(spins)), abs=1e-12)
    solo_step(rep, learner)  # and it goes on at the new temperature


def test_linear_bond_pair_model_resumes_and_old_checkpoints_load_as_k_zero():
    """A linear model with bond-pair terms round-trips through the replica's state; a
    checkpoint from before those terms (E_0 and J_n only, bond_shells then ignored) loads as
    the same model: J_n kept, K_o = 0."""
    cfg = CFG.replace("effective_model", bond_shells=1)
    rep, learner = make_slot(cfg, 0)
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner)
    trained = learner.linear.model.parameters()[0]
    assert len(trained) == 1 + 2 + len(learner.linear.model.bond_couplings) and np.any(trained[3:] != 0)
    tree = rep.state_dict() | learner.state_dict()
    fresh, fresh_learner = make_slot(cfg, 1)
    fresh_learner.load_state_dict(tree)
    fresh.load_state_dict(tree, *fresh_learner.models(4.0))
    np.testing.assert_array_equal(fresh_learner.linear.model.parameters()[0], trained)
    np.testing.assert_array_equal(fresh.model.parameters()[0], trained)
    tree["linear"] = {"e0": trained[0], "couplings": trained[1:3]}
    old, old_learner = make_slot(cfg, 1)
    old_learner.load_state_dict(tree)
    np.testing.assert_array_equal(old_learner.linear.model.parameters()[0],
                                  np.r_[trained[:3], np.zeros(len(trained) - 3)])


def test_a_chain_continued_from_its_state_carries_the_inner_fields_bit_for_bit():
    """The compiled inner chain's bond values and bond-pair field (ChainState.fields) are
    carried from step to step with the chain's round-off, like E_eff; the replica's state
    stores them, so a chain continued from state_dict repeats the uninterrupted one bit for
    bit. Negative control: continued with the fields set up afresh from the spins (what a
    checkpoint without them does), E_eff differs in its last bits."""
    cfg = CFG.replace("lattice", L=4).replace("effective_model", bond_shells=2)
    physics = build_physics(cfg)
    rng = np.random.default_rng(5)
    shape = LinearModel.zeros(physics.lattice, 2, bond_shells=2)
    model = shape.with_parameters(np.r_[0.0, 0.5, -0.2, 0.05 * rng.standard_normal(shape.n_parameters - 3)])
    sampler = SLMCSampler(physics, model, beta=0.5, n_local=48, step_size=1.0)  # an untrained model: small β accepts
    rep = Replica(physics, sampler, np.random.default_rng(6), random_spins(physics.lattice.N, rng))
    assert sum(rep.step().accepted for _ in range(60)) > 10
    tree = rep.state_dict()
    fresh_b, fresh_h = model.bond_form.fields(rep.state.spins)
    assert not (np.array_equal(tree["chain"]["bond_values"], fresh_b) and np.array_equal(tree["chain"]["bond_field"], fresh_h))

    def continued(chain_tree):
        other = Replica(physics, sampler, np.random.default_rng(7), random_spins(physics.lattice.N, rng))
        other.load_state_dict(chain_tree)
        return [(other.step(), other.state.e_eff)[1] for _ in range(20)], other.state.spins

    uninterrupted = [(rep.step(), rep.state.e_eff)[1] for _ in range(20)], rep.state.spins
    resumed = continued(tree)
    assert resumed[0] == uninterrupted[0] and np.array_equal(resumed[1], uninterrupted[1])
    afresh = continued(tree | {"chain": tree["chain"] | {"bond_values": None, "bond_field": None}})
    assert afresh[0] != uninterrupted[0]
    rep.take_configuration(rep.configuration())  # a swapped-in configuration: fields of this slot's model, anew
    assert rep.state.fields is None and "bond_values" not in rep.configuration()


def test_rounds_wait_for_twice_the_head_size_in_training_samples():
    # bond_shells = 1 at any range on the 3x3 lattice: E_0, J_1, J_2 and 7 bond-pair couplings, 10 in all;
    # a least-squares fit of them on the 8 or 16 training samples of the first rounds would
    # only interpolate (the old threshold counted E_0 and the J_n alone: 6 samples)
    cfg = CFG.replace("effective_model", bond_shells=1, bond_range=0.0).replace("run", thermalize=60)
    rep, learner = make_slot(cfg, 2)
    assert learner.head_size == rep.model.n_parameters == 10
    n_train = []
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner)
        if learner.round_due(rep.steps_done - 1):
            n_train.append(len(learner.buffer.split(cfg.training.validation_fraction)[0]))
    assert [r["step"] for r in learner.rounds] == [10 * (k + 1) for k, n in enumerate(n_train) if n >= 20]
    assert 2 * (2 + 1) <= n_train[0] < 20 <= n_train[-1] and len(learner.rounds) >= 2  # the old rule trained at once


def test_buffer_keeps_each_samples_design_rows_through_wrap_around_and_checkpoint():
    """With a linear model's ``design`` as featurize, the rows handed out are the design rows
    of the samples' spins and reference spins (those a fit on the spins would compute), also
    after the buffer wrapped and after a round trip through state_dict."""
    from slmc_hpc.lattice import Lattice
    from slmc_hpc.models import LinearModel

    model = LinearModel.zeros(Lattice.from_kind("square", 4), 3, 2)
    rng = np.random.default_rng(5)
    buf = ReplayBuffer(4, 16, pairs=True, featurize=model.design)

    def check(b):
        data = b.samples()
        np.testing.assert_allclose(data.features, model.design(data.spins), rtol=0, atol=1e-12)
        np.testing.assert_allclose(data.ref_features, model.design(data.ref_spins), rtol=0, atol=1e-12)
        return data

    for k in range(3):
        buf.add(*[random_spins(16, rng), float(k), 1.0, random_spins(16, rng), 0.0])
    check(buf)
    for k in range(3):  # wraps: two rows now stale, refreshed when handed out
        buf.add(*[random_spins(16, rng), float(k), 1.0, random_spins(16, rng), 0.0])
    assert buf.featurized.sum() == 1
    before = check(buf)
    again = ReplayBuffer.from_state(buf.state_dict(), model.design)
    np.testing.assert_array_equal(again.samples().features, before.features)  # kept, not recomputed
    # negative control: rows of other spins are told apart
    assert not np.allclose(before.features[0], model.design(before.spins[1:2])[0])
