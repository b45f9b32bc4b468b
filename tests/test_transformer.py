"""The equivariant Transformer: symmetries to round-off, its relation to the linear model,
and training (beats linear, pair loss, NaN guard). Reloading from a run file: test_output.py."""

import copy

import numpy as np
import pytest
import torch

from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.models.bond_pairs import bond_pair_energy, bond_pair_kernel, bond_pair_tables
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.observables import random_spins
from slmc_hpc.testing import assert_equivariant, assert_invariant, permutations, rotations
from slmc_hpc.training.data import Samples
from slmc_hpc.training.errors import RoundInterrupted, TrainingError
from slmc_hpc.training.least_squares import LinearTrainer
from slmc_hpc.training.network import TorchTrainer


def random_net(lattice, seed=0, **kw):
    args = dict(layers=2, heads=2, block_shells=2, attention_shells=None, shells=3)
    args.update(kw)
    net = EquivariantTransformer(lattice, seed=seed, **args)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # value weights and head away from their zero start
        gates = (net.gate_weight, net.gate_bias) if net.gate_channels else ()
        for p in (net.wv, net.couplings, net.e0) + gates:
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return net


@pytest.mark.parametrize("kw", [{}, {"attention_shells": 2}, {"normalize": True}, {"layers": 3, "heads": 1},
                                {"bond_shells": 3}, {"layers": 0, "bond_shells": 2}, {"gate_channels": 3},
                                {"gate_channels": 2, "normalize": True, "attention_shells": 2, "bond_shells": 2}])
def test_equivariance_to_round_off(kw, rng):
    lat = Lattice.from_kind("square", 4)
    model = TransformerModel.frozen(random_net(lat, **kw), beta=7.0)
    spins = random_spins(lat.N, rng)
    for proper in (True, False):
        g = rotations(rng, 4, proper)
        assert_equivariant(model.effective_spins, spins, g)
        assert_invariant(model.energy, spins, g)
    g = permutations(lat.translations() + lat.point_group())
    assert_equivariant(model.effective_spins, spins, g)
    assert_invariant(model.energy, spins, g)


def test_equivariance_helper_fails_for_a_non_equivariant_map(rng):
    """Negative control: adding a fixed vector to every effective spin breaks rotations."""
    lat = Lattice.from_kind("square", 4)
    model = TransformerModel.frozen(random_net(lat), beta=2.0)
    spins = random_spins(lat.N, rng)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda s: model.effective_spins(s) + [0.0, 0.0, 0.1], spins, rotations(rng, 1, True))


@pytest.mark.parametrize("gate_channels", [0, 2])
def test_untrained_value_weights_make_it_the_linear_model(gate_channels, rng):
    """Zero value weights and zero gates: every layer is the identity."""
    lat = Lattice.from_kind("square", 4)
    net = EquivariantTransformer(lat, layers=3, heads=2, block_shells=2, attention_shells=None, shells=4,
                                 gate_channels=gate_channels)
    linear = LinearModel(lat, couplings=np.array([0.4, -0.1, 0.05, 0.02]), e0=-3.0)
    with torch.no_grad():
        net.couplings[0] = torch.as_tensor(linear.couplings)
        net.e0[0] = linear.e0
    spins = random_spins(lat.N, rng, size=(5,))
    assert np.allclose(TransformerModel.frozen(net, 3.0).energy(spins), linear.energy(spins), atol=1e-12)


def test_delta_energy_and_parameter_count(rng):
    lat = Lattice.from_kind("square", 4)
    model = TransformerModel.frozen(random_net(lat), beta=1.5)
    spins = random_spins(lat.N, rng)
    new = random_spins(1, rng)[0]
    moved = spins.copy()
    moved[5] = new
    assert model.delta_energy(spins, 5, new) == pytest.approx(model.energy(moved) - model.energy(spins), abs=1e-12)
    # 2 layers x 2 heads x 3 block shells x (Q, K, V) + 2 x 3 head couplings + 2 for E0
    assert model.n_parameters == 2 * 2 * 3 * 3 + 6 + 2 == len(model.parameters()[0])
    # 3 gate channels per layer: U's 3 block shells, A (3 x 3) and b (3)
    gated = TransformerModel.frozen(random_net(lat, gate_channels=3), beta=1.5)
    assert gated.n_parameters == model.n_parameters + 2 * 3 * (3 + 3 + 1) == len(gated.parameters()[0])


def test_beta_conditioning_changes_the_head_only_through_log_beta(rng):
    lat = Lattice.from_kind("square", 3)
    net = random_net(lat, shells=2, beta_ref=2.0)
    spins = random_spins(lat.N, rng)
    e = [TransformerModel.frozen(net, b).energy(spins) for b in (2.0, 4.0, 8.0)]
    assert e[2] - e[1] == pytest.approx(e[1] - e[0], abs=1e-12)  # affine in log β


def test_bond_pair_terms_cover_every_pair_of_bonds_once(rng):
    """Closed forms: summed over classes, ψ_o = Σ_{a<=b} b_a b_b = ((Σ b)² + Σ b²)/2; for the
    ferromagnet (every b = 1) ψ_o counts the pairs in class o, and the classes are a
    partition of all B(B+1)/2 pairs. On a 6x6 lattice with bonds of shells 1..3 there are
    72 + 72 + 72 bonds."""
    lat = Lattice.from_kind("square", 6)
    net = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=2,
                                 bond_shells=3)
    bonds, pair_class = lat.bond_pair_orbits(3)
    assert np.array_equal(pair_class, pair_class.T)
    pairs = np.stack(np.triu_indices(len(bonds)), axis=1)  # every unordered pair a <= b once
    orbit = pair_class[pairs[:, 0], pairs[:, 1]]
    assert len(bonds) == 216 and len(pairs) == 216 * 217 // 2 and net.n_orbits == orbit.max() + 1
    spins = random_spins(lat.N, rng, size=(3,))
    with torch.no_grad():
        psi = net.head_features(torch.as_tensor(spins), 1.0)[:, 2 + 2:2 + 2 + net.n_orbits].neg().numpy()
    b = np.einsum("cak,cak->ca", spins[:, bonds[:, 0]], spins[:, bonds[:, 1]])
    assert np.allclose(psi.sum(axis=1), 0.5 * (b.sum(axis=1) ** 2 + (b**2).sum(axis=1)), rtol=1e-12)
    ferro = np.tile([0.0, 0.0, 1.0], (1, lat.N, 1))
    with torch.no_grad():
        counts = net.head_features(torch.as_tensor(ferro), 1.0)[0, 4:4 + net.n_orbits].neg().numpy()
    assert np.array_equal(counts, np.bincount(orbit))
    # one class per symmetry type: nearest-neighbour bond with itself, with a parallel
    # neighbour, ... a bond paired with itself forms one class per shell
    same = pairs[:, 0] == pairs[:, 1]
    assert len(np.unique(orbit[same])) == 3


@pytest.mark.parametrize("kind,L,k", [("square", 2, 2), ("square", 4, 5), ("square", 5, 4), ("chain", 6, 3),
                                      ("cubic", 2, 3), ("cubic", 3, 2)])
def test_bond_pair_sums_by_correlation_equal_the_pair_enumeration(kind, L, k, rng):
    """ψ_o computed as translation correlations of bond fields equals the plain sum over the
    enumerated bond pairs of each class, also where a bond is its own translate (L = 2,
    distance L/2) so that classes have multiplicity > 1."""
    lat = Lattice.from_kind(kind, L)
    net = EquivariantTransformer(lat, layers=0, heads=1, block_shells=0, attention_shells=None, shells=1, bond_shells=k)
    spins = torch.as_tensor(random_spins(lat.N, rng, size=(3,)))
    with torch.no_grad():
        psi = net._bond_pair_sums(spins).numpy()
        b = (spins[:, net.bp_bonds[:, 0]] * spins[:, net.bp_bonds[:, 1]]).sum(-1).numpy()
    tables = bond_pair_tables(lat, k)
    a, c = np.triu_indices(b.shape[1])
    orbit = tables.pair_class[a, c]
    expected = np.stack([np.bincount(orbit, weights=row, minlength=net.n_orbits) for row in b[:, a] * b[:, c]])
    assert np.allclose(psi, expected, rtol=0, atol=1e-12)
    # the frozen models' energy Σ_o K_o ψ_o, by Fourier transform over the lattice
    couplings = rng.standard_normal(net.n_orbits)
    energy = bond_pair_energy(b, tables, bond_pair_kernel(couplings, tables))
    assert np.allclose(energy, expected @ couplings, rtol=0, atol=1e-11)
    with torch.no_grad():  # an empty batch (MKL's FFT refuses one), and float32 networks
        assert net._bond_pair_sums(spins[:0]).shape == (0, net.n_orbits)
        psi32 = net.float()._bond_pair_sums(spins.float())
    assert psi32.dtype == torch.float32 and np.allclose(psi32.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_zero_layer_network_learns_bond_pair_couplings_exactly(rng):
    """Targets from a 0-layer network with random J_n and K_o: training (the closed-form head)
    recovers every coupling, so the four-spin columns are fitted like the others."""
    lat = Lattice.from_kind("square", 4)
    make = lambda: EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=3,
                                          bond_shells=2, beta_ref=5.0)
    true = make()
    with torch.no_grad():
        true.couplings[0] = 0.1 * torch.randn(true.couplings.shape[1], dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(3))
        true.e0[0] = -4.0
    spins = random_spins(lat.N, rng, size=(400,))
    with torch.no_grad():
        targets = true(torch.as_tensor(spins), 5.0).numpy()
    net = make()
    TorchTrainer(net, epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=64, seed=0).train(
        Samples(spins, targets), Samples(spins[:0], targets[:0]), 5.0)
    assert true.n_orbits > 10
    assert torch.allclose(net.head_vector(), true.head_vector(), atol=1e-8)


@pytest.fixture(scope="module")
def data_4x4():
    """Exact F of perturbed ordered and random 4x4 configurations at T = 0.1."""
    rng = np.random.default_rng(5)
    lat = Lattice.from_kind("square", 4)
    phys = DoubleExchange(lat, J=4.0, mu=-2.5)
    base = np.zeros((lat.N, 3))
    base[:, 2] = np.where(lat.coords[:, 0] % 2 == 0, 1.0, -1.0)  # stripes
    spins = base + 0.3 * rng.standard_normal((2500, lat.N, 3))
    spins /= np.linalg.norm(spins, axis=-1, keepdims=True)
    beta = 10.0
    targets = phys.free_energy_of(spins, beta)
    return lat, spins[:2000], targets[:2000], spins[2000:], targets[2000:], beta


def test_brief_training_beats_the_linear_model(data_4x4):
    lat, xs, ys, xv, yv, beta = data_4x4
    linear = LinearTrainer(LinearModel.zeros(lat, 4)).train(Samples(xs, ys), Samples(xv, yv), beta)
    net = EquivariantTransformer(lat, layers=1, heads=2, block_shells=2, attention_shells=None, shells=4,
                                 beta_ref=beta)
    trainer = TorchTrainer(net, epochs=15, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0)
    result = trainer.train(Samples(xs, ys), Samples(xv, yv), beta)
    assert result.validation_loss < 0.9 * linear.validation_loss, (result, linear)


def test_attention_layers_train_under_a_head_wider_than_the_minibatch(data_4x4):
    """With bond-pair terms the head (40 columns) is too wide for a 128-sample minibatch's own
    least-squares fit; trained against the epoch's full-data head, one attention layer still
    beats the same head on the raw spins (0 layers)."""
    lat, xs, ys, xv, yv, beta = data_4x4
    losses = []
    for layers in (0, 1):
        net = EquivariantTransformer(lat, layers=layers, heads=2, block_shells=2, attention_shells=None, shells=4,
                                     beta_ref=beta, bond_shells=2)
        trainer = TorchTrainer(net, epochs=15, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0)
        losses.append(trainer.train(Samples(xs, ys), Samples(xv, yv), beta).validation_loss)
    assert losses[1] < 0.95 * losses[0], losses


def test_gated_layers_train_and_beat_attention_alone(data_4x4):
    """The trainer steps the gate parameters too (they start at zero), and with them one layer
    fits better than the same attention layer without gates."""
    lat, xs, ys, xv, yv, beta = data_4x4
    losses = []
    for gate_channels in (0, 2):
        net = EquivariantTransformer(lat, layers=1, heads=2, block_shells=2, attention_shells=None, shells=4,
                                     beta_ref=beta, gate_channels=gate_channels)
        trainer = TorchTrainer(net, epochs=15, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0)
        losses.append(trainer.train(Samples(xs, ys), Samples(xv, yv), beta).validation_loss)
    assert torch.count_nonzero(net.gate_weight) > 0 and torch.count_nonzero(net.gate_bias) > 0
    assert losses[1] < 0.95 * losses[0], losses


def test_a_round_that_worsens_the_fit_keeps_the_better_layers(data_4x4):
    """A round keeps its trained layers only if they fit the round's data better than the
    layers it started with and than identity layers (the head on the raw spins, as a 0-layer
    network): a learning rate far too high after a good round keeps the good layers and their
    AdamW moments; bad layers that a round cannot mend give way to the identity."""
    lat, xs, ys, xv, yv, beta = data_4x4
    train, validation = Samples(xs, ys), Samples(xv, yv)
    make = lambda layers: EquivariantTransformer(lat, layers=layers, heads=2, block_shells=2, attention_shells=None,
                                                 shells=4, beta_ref=beta, gate_channels=2)
    head_only = TorchTrainer(make(0), epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=128,
                             seed=0).train(train, validation, beta).train_loss
    trainer = TorchTrainer(make(1), epochs=3, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0)
    good = trainer.train(train, validation, beta)
    assert trainer.kept_layers == "trained" and good.train_loss < 0.95 * head_only
    before = trainer.state_dict()
    trainer.optimizer.param_groups[0]["lr"] = 30.0
    wild = trainer.train(train, validation, beta)
    assert trainer.kept_layers == "previous" and wild.train_loss == pytest.approx(good.train_loss, rel=1e-10)
    after = trainer.state_dict()
    for name, value in before["net"].items():
        assert np.allclose(after["net"][name], value, rtol=1e-12, atol=1e-14), name
    for i, moments in before["optimizer"].items():
        for key, value in moments.items():
            assert np.array_equal(after["optimizer"][i][key], value), (i, key)
    with torch.no_grad():  # layers far from anything useful
        trainer.net.wv.fill_(3.0)
        trainer.net.gate_bias.fill_(2.0)
    trainer.optimizer.param_groups[0]["lr"] = 1e-9
    mended = trainer.train(train, validation, beta)
    assert trainer.kept_layers == "identity" and mended.train_loss == pytest.approx(head_only, rel=1e-8)
    assert not trainer.optimizer.state and torch.count_nonzero(trainer.net.wv) == 0


def test_zero_layer_network_trains_to_the_least_squares_linear_model(data_4x4):
    """With no attention layers the closed-form head is exactly the linear least-squares fit."""
    lat, xs, ys, xv, yv, beta = data_4x4
    linear = LinearTrainer(LinearModel.zeros(lat, 4))
    expected = linear.train(Samples(xs, ys), Samples(xv, yv), beta)
    net = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=4,
                                 beta_ref=beta)
    result = TorchTrainer(net, epochs=5, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0).train(
        Samples(xs, ys), Samples(xv, yv), beta)
    assert result.validation_loss == pytest.approx(expected.validation_loss, rel=1e-8)
    assert np.allclose(net.couplings[0].detach().numpy(), linear.model.couplings, rtol=1e-6, atol=1e-12)  # normal equations vs SVD


def test_nan_in_training_data_is_a_clear_error_and_keeps_the_model(data_4x4):
    lat, xs, ys, xv, yv, beta = data_4x4
    net = EquivariantTransformer(lat, layers=1, heads=1, block_shells=1, attention_shells=None, shells=2)
    trainer = TorchTrainer(net, epochs=2, learning_rate=1e-3, weight_decay=0.0, batch_size=64, seed=0)
    trainer.train(Samples(xs, ys), Samples(xv, yv), beta)
    before = torch.nn.utils.parameters_to_vector(net.parameters()).clone()
    bad = ys.copy()
    bad[7] = np.nan
    with pytest.raises(TrainingError, match="NaN or inf"):
        trainer.train(Samples(xs, bad), Samples(xv, yv), beta)
    assert torch.equal(torch.nn.utils.parameters_to_vector(net.parameters()), before)


def _snapshot(trainer):
    return (torch.nn.utils.parameters_to_vector(trainer.net.parameters()).clone(),
            copy.deepcopy(trainer.optimizer.state_dict()))


def _assert_same(trainer, snapshot):
    params, opt = snapshot
    assert torch.equal(torch.nn.utils.parameters_to_vector(trainer.net.parameters()), params)
    now = trainer.optimizer.state_dict()
    assert now["state"].keys() == opt["state"].keys()
    for k, state in opt["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(now["state"][k][name]), torch.as_tensor(value)), (k, name)


@pytest.mark.parametrize("poison_at_step", [3, "last"])
def test_diverging_training_restores_parameters_and_optimizer(data_4x4, poison_at_step):
    """The weights turn NaN after some optimizer steps of the second round (in the middle, or
    at its very last step): the error names the round and both the parameters and the AdamW
    state are back to where the round started."""
    lat, xs, ys, xv, yv, beta = data_4x4
    net = EquivariantTransformer(lat, layers=1, heads=1, block_shells=1, attention_shells=None, shells=2)
    trainer = TorchTrainer(net, epochs=1, learning_rate=1e-3, weight_decay=0.0, batch_size=128, seed=0)
    trainer.train(Samples(xs, ys), Samples(xv, yv), beta)
    before = _snapshot(trainer)
    n_steps = len(range(0, len(ys), 128))
    target = n_steps if poison_at_step == "last" else poison_at_step
    real_step, calls = trainer.optimizer.step, []

    def poisoned_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == target:
            with torch.no_grad():
                net.wv.fill_(float("nan"))
        return out

    trainer.optimizer.step = poisoned_step
    with pytest.raises(TrainingError, match="round 2.*last good parameters are kept"):
        trainer.train(Samples(xs, ys), Samples(xv, yv), beta)
    _assert_same(trainer, before)


def test_an_interrupted_round_leaves_the_trainer_as_before_and_redoing_it_is_exact(data_4x4):
    """A stop asked for after 3 minibatches of round 2 (of 2 epochs x 4) abandons the round:
    parameters, AdamW moments and minibatch stream are as before it, so the redone round
    gives bit for bit the parameters of a trainer that was never interrupted."""
    lat, xs, ys, xv, yv, beta = data_4x4

    def trainer():
        net = EquivariantTransformer(lat, layers=1, heads=1, block_shells=1, attention_shells=None, shells=2)
        return TorchTrainer(net, epochs=2, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0)

    train, validation = Samples(xs, ys), Samples(xv, yv)
    whole, cut = trainer(), trainer()
    for t in (whole, cut):
        t.train(train, validation, beta)
    whole.train(train, validation, beta)
    before, stream = _snapshot(cut), cut.generator.get_state()
    asked = []
    with pytest.raises(RoundInterrupted, match="round 2 interrupted in epoch 1"):
        cut.train(train, validation, beta, interrupt=lambda: asked.append(1) or len(asked) >= 3)
    assert len(asked) == 3 and len(ys) > 3 * 128  # it stopped inside the round, at the first ask that said so
    _assert_same(cut, before)
    assert torch.equal(cut.generator.get_state(), stream) and cut.rounds == 1
    cut.train(train, validation, beta, interrupt=lambda: False)
    assert torch.equal(torch.nn.utils.parameters_to_vector(cut.net.parameters()),
                       torch.nn.utils.parameters_to_vector(whole.net.parameters()))


def test_pair_loss_zero_layers_equals_the_linear_pair_fit(data_4x4):
    lat, xs, ys, xv, yv, beta = data_4x4
    # pairs: each configuration against the next one
    train = Samples(xs[1:], ys[1:], xs[:-1], ys[:-1])
    valid = Samples(xv[1:], yv[1:], xv[:-1], yv[:-1])
    linear = LinearTrainer(LinearModel.zeros(lat, 4), loss="pair")
    expected = linear.train(train, valid, beta)
    net = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=4,
                                 beta_ref=beta)
    result = TorchTrainer(net, epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=128, seed=0,
                          loss="pair").train(train, valid, beta)
    assert result.validation_loss == pytest.approx(expected.validation_loss, rel=1e-6)
    assert net.e0[0].item() == pytest.approx(linear.model.e0, rel=1e-8)
    energies = TransformerModel.frozen(net, beta).energy(xv[:5])
    assert np.allclose(energies, linear.model.energy(xv[:5]), rtol=0, atol=1e-8 * lat.N)


def test_data_at_several_beta_fit_the_beta_slopes(rng):
    """Targets from a β-dependent linear form at two β: a 0-layer network trained on both
    (each sample with its own β) recovers J_n, J'_n, E_0 and E'_0; from one β the slopes are
    left at zero."""
    lat = Lattice.from_kind("square", 4)
    true = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=3,
                                  beta_ref=5.0)
    with torch.no_grad():
        true.e0.copy_(torch.tensor([-9.0, 1.5], dtype=torch.float64))
        true.couplings.copy_(torch.tensor([[0.3, -0.1, 0.05], [0.02, 0.04, -0.03]], dtype=torch.float64))
    spins = random_spins(lat.N, rng, size=(200,))
    betas = np.where(np.arange(200) % 2 == 0, 2.0, 12.0)
    with torch.no_grad():
        targets = true(torch.as_tensor(spins), torch.as_tensor(betas)).numpy()
    net = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=3,
                                 beta_ref=5.0)
    empty = Samples(spins[:0], targets[:0])
    TorchTrainer(net, epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=64, seed=0).train(
        Samples(spins, targets, betas=betas), empty, beta=float("nan"))
    assert torch.allclose(net.head_vector(), true.head_vector(), atol=1e-8)
    one_beta = EquivariantTransformer(lat, layers=0, heads=1, block_shells=1, attention_shells=None, shells=3,
                                      beta_ref=5.0)
    TorchTrainer(one_beta, epochs=1, learning_rate=1e-2, weight_decay=0.0, batch_size=64, seed=0).train(
        Samples(spins[::2], targets[::2]), empty, beta=2.0)
    assert torch.all(one_beta.couplings[1] == 0) and one_beta.e0[1] == 0


@pytest.mark.parametrize("kw", [{}, {"attention_shells": 1}, {"normalize": True}, {"layers": 3, "heads": 3},
                                {"bond_shells": 3}, {"gate_channels": 3},
                                {"gate_channels": 2, "layers": 3, "normalize": True, "bond_shells": 2}])
def test_numpy_inference_equals_the_network(kw, rng):
    """The frozen model's NumPy evaluation is the network's forward pass (float64, to
    round-off), single configurations and batches, and at another β through with_beta."""
    lat = Lattice.from_kind("square", 4)
    net = random_net(lat, **kw)
    net.beta_ref = 5.0
    with torch.no_grad():
        net.couplings[1] = 0.2 * torch.arange(net.couplings.shape[1])  # β-slopes, so with_beta matters
        net.e0[1] = 0.7
    spins = random_spins(lat.N, rng, size=(4,))
    model = TransformerModel.frozen(net, 7.0)
    for beta, frozen in ((7.0, model), (3.0, model.with_beta(3.0))):
        with torch.no_grad():
            reference = net(torch.as_tensor(spins), beta).numpy()
            reference_spins = net.effective_spins(torch.as_tensor(spins)).numpy()
        # relative round-off too: random gated layers can make |E| ~ 1e3
        assert np.allclose(frozen.energy(spins), reference, rtol=1e-14, atol=1e-12)
        assert isinstance(frozen.energy(spins[1]), float)
        assert frozen.energy(spins[1]) == pytest.approx(reference[1], rel=1e-14, abs=1e-12)
        assert np.allclose(frozen.effective_spins(spins), reference_spins, rtol=0, atol=1e-13)
    assert not np.allclose(model.with_beta(3.0).energy(spins), model.energy(spins))


def test_numpy_inference_of_a_float32_network(rng):
    """A float32 network is evaluated in float64 when frozen: equal to its float32 forward
    pass to float32 round-off, and exactly to a float64 copy of the same weights."""
    lat = Lattice.from_kind("square", 4)
    net = random_net(lat, dtype=torch.float32)
    spins = random_spins(lat.N, rng, size=(3,))
    frozen = TransformerModel.frozen(net, 2.0)
    with torch.no_grad():
        single = net(torch.as_tensor(spins, dtype=torch.float32), 2.0).numpy()
        double = copy.deepcopy(net).double()(torch.as_tensor(spins), 2.0).numpy()
    assert np.allclose(frozen.energy(spins), single, rtol=0, atol=1e-4)
    assert np.allclose(frozen.energy(spins), double, rtol=0, atol=1e-12)
