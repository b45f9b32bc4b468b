"""Exactness of the samplers against distributions known independently.

Statistical tests use fixed seeds (so they are deterministic); each states the false-alarm
rate it would have for a correct sampler with a random seed."""

import copy
import functools

import numpy as np
import torch
import pytest
from scipy import integrate, stats

from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.training.learner import solo_step
from slmc_hpc.samplers import ExactLocalSampler, SLMCSampler
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.samplers.moves import draw_moves
from slmc_hpc.samplers.nested import NestedSLMCSampler
from slmc_hpc.samplers.exact_acceptance import accept_exactly
from slmc_hpc.samplers.slmc import effective_chain
from slmc_hpc.stats import binned_error, tau_int

from configs import small_config

TWO_SITE = DoubleExchange(Lattice.from_kind("chain", 2), t=1.0, J=4.0, mu=0.0)
BETA = 2.0
P_VALUE_THRESHOLD = 1e-3  # false-alarm rate of each goodness-of-fit test for a correct sampler


def two_site_density(beta):
    """Unnormalized density of c = S_1·S_2: for independent uniform spins c is uniform on
    [-1, 1], so the Boltzmann density is ∝ W_β(c) = exp(-β F_β(c))."""
    def F(c):
        s = np.array([[0.0, 0.0, 1.0], [np.sqrt(1 - c * c), 0.0, c]])
        return TWO_SITE.free_energy_of(s, beta)

    f0 = F(-1.0)
    return lambda c: np.exp(-beta * (F(c) - f0))


def expected_bin_probabilities(beta, edges):
    density = two_site_density(beta)
    mass = np.array([integrate.quad(density, a, b, epsabs=1e-12)[0] for a, b in zip(edges[:-1], edges[1:])])
    return mass / mass.sum()


@functools.cache
def sample_cos(sampler, n_steps, seed):
    rng = np.random.default_rng(seed)
    state = sampler.init_state(random_spins(2, rng))
    out = np.empty(n_steps)
    for k in range(n_steps):
        state, _ = sampler.step(state, rng)
        out[k] = state.spins[0] @ state.spins[1]
    return out


def chi_square_p_value(cos_samples, beta, n_bins=8):
    """Thin the chain by 5 τ_int so the kept samples are nearly independent, then χ² test
    the histogram of c against quadrature."""
    stride = max(1, int(np.ceil(5 * tau_int(cos_samples))))
    kept = cos_samples[::stride]
    edges = np.linspace(-1, 1, n_bins + 1)
    observed = np.histogram(kept, bins=edges)[0]
    expected = expected_bin_probabilities(beta, edges) * len(kept)
    assert expected.min() > 20, "too few samples for a χ² test"
    return stats.chisquare(observed, expected).pvalue


# An effective model that is wrong on purpose: favours parallel spins, the true weight favours
# antiparallel ones. SLMC must still be exact, only less efficient.
EXACT_TWO_SITE = ExactLocalSampler(TWO_SITE, BETA, n_local=2, step_size=1.0)
POOR_MODEL = LinearModel(TWO_SITE.lattice, couplings=np.array([0.8]), e0=0.0)
# two sites have one bond, paired only with itself: E = -J b - K b² (compiled chain with G)
BOND_PAIR_MODEL = LinearModel(TWO_SITE.lattice, couplings=np.array([0.8]), e0=0.0, bond_shells=1,
                              bond_couplings=np.array([-0.6]))


@pytest.mark.parametrize("name,sampler", [
    ("exact", EXACT_TWO_SITE),
    ("slmc-poor-model", SLMCSampler(TWO_SITE, POOR_MODEL, BETA, n_local=4, step_size=1.0)),
    ("slmc-no-model", SLMCSampler(TWO_SITE, LinearModel.zeros(TWO_SITE.lattice, 1), BETA, n_local=3,
                                  step_size=0.7)),
    ("slmc-bond-pairs", SLMCSampler(TWO_SITE, BOND_PAIR_MODEL, BETA, n_local=4, step_size=1.0)),
    ("slmc-overrelax", SLMCSampler(TWO_SITE, BOND_PAIR_MODEL, BETA, n_local=8, step_size=1.0, overrelax=0.5)),
])
def test_two_site_cos_theta_distribution(name, sampler):
    cos = sample_cos(sampler, 40000, seed=7)
    p = chi_square_p_value(cos, BETA)
    assert p > P_VALUE_THRESHOLD, f"{name}: χ² p-value {p:.2e}"


@pytest.mark.parametrize("overrelax", [0.0, 0.5])
def test_two_site_cos_theta_distribution_with_heat_bath(overrelax):
    """The same with heat-bath inner updates (and half of them reflections). They draw from
    the model itself, which is far from the exact weight here, so the exact test accepts
    less often than after a few short Metropolis moves (τ_int ≈ 20 steps): a longer chain."""
    sampler = SLMCSampler(TWO_SITE, BOND_PAIR_MODEL, BETA, n_local=4, step_size=1.0, overrelax=overrelax,
                          move="heatbath")
    p = chi_square_p_value(sample_cos(sampler, 150000, seed=7), BETA)
    assert p > P_VALUE_THRESHOLD, f"χ² p-value {p:.2e}"


def test_two_site_test_has_power():
    """Negative control: the same samples tested against the distribution at another β fail."""
    cos = sample_cos(EXACT_TWO_SITE, 40000, seed=7)
    assert chi_square_p_value(cos, 1.0) < P_VALUE_THRESHOLD


def test_slmc_without_the_effective_energy_correction_is_caught():
    """Negative control: accepting the model's proposal on exp(-β ΔF) alone (dropping the
    E_eff terms; the inner chain still runs on the model) samples a distribution biased
    towards the model, and the χ² test sees it."""

    class NoCorrection(SLMCSampler):
        def step(self, state, rng):
            proposal, _ = effective_chain(self.model, state.spins, self.beta, self.n_local, self.step_size, rng)
            new = self.init_state(proposal)
            if np.log(rng.random()) < -self.beta * (self.free_energy(new) - self.free_energy(state)):
                return new, None
            return state, None

    cos = sample_cos(NoCorrection(TWO_SITE, POOR_MODEL, BETA, n_local=4, step_size=1.0), 40000, seed=7)
    assert chi_square_p_value(cos, BETA) < P_VALUE_THRESHOLD


def test_inner_chain_sites_are_independent_and_uniform():
    """The SLMC acceptance rule needs a reversible inner chain: random sites, not a fixed sweep.
    χ² on consecutive (site, next site) pairs; a sweep 0, 1, 2, ... fails it completely."""
    n_sites, n = 5, 50000
    sites = draw_moves(np.random.default_rng(3), n_sites, n)[0]
    pairs = np.bincount(sites[:-1] * n_sites + sites[1:], minlength=n_sites**2)
    assert stats.chisquare(pairs).pvalue > P_VALUE_THRESHOLD
    sweep = np.arange(n) % n_sites
    assert stats.chisquare(np.bincount(sweep[:-1] * n_sites + sweep[1:], minlength=n_sites**2)).pvalue < 1e-10


@functools.cache
def run_replica(sampler, n_measure, seed, transformer_scheme=None, overrelax=0.0, move="metropolis"):
    """Thermalize (SLMC: with online training of the effective model), then measure F/N and |m|.
    With transformer_scheme ("plain" or "nested") the effective model is a 1-layer Transformer
    (nested: the inner linear model has bond-pair terms); ``overrelax``, ``move``: [slmc] overrelax, move."""
    cfg = small_config(effective_model={"shells": 5}, slmc={"overrelax": overrelax, "move": move},
                       run={"sampler": sampler, "thermalize": 1000, "measure": n_measure, "step_size": 0.8,
                            "progress_every": None})
    if transformer_scheme:
        cfg = cfg.replace("effective_model", kind="transformer", layers=1, heads=2, block_shells=2)
        cfg = cfg.replace("slmc", scheme=transformer_scheme).replace("training", every=250, epochs=10)
        if transformer_scheme == "nested":  # inner model with four-spin terms, as in analysis/reference.toml
            cfg = cfg.replace("slmc", inner_bond_shells=2)
    rep, learner = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(seed))
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner) if learner is not None else rep.step()
    assert rep.model is None or len(learner.rounds) == cfg.run.thermalize // cfg.training.every
    records = [rep.record(rep.step()) for _ in range(n_measure)]
    F = np.array([r["free_energy"] for r in records]) / 16
    m = np.linalg.norm([r["magnetization"] for r in records], axis=1)
    return F, m


def error_with_long_bins(x):
    """Binned error with every bin at least 20 τ_int long (at most 32 bins)."""
    n_bins = min(32, int(len(x) / (20 * tau_int(x))))
    assert n_bins >= 16, "series too short for a reliable binned error"
    return binned_error(x, n_bins)


@pytest.mark.parametrize("overrelax,move", [(0.0, "metropolis"), (0.5, "metropolis"), (0.0, "heatbath")])
def test_slmc_agrees_with_exact_sampler_on_4x4(overrelax, move):
    """⟨F⟩/N and ⟨|m|⟩ within 3 combined binned standard errors (false alarm ≈ 0.5% for two
    observables if the error bars are right), also with half the inner updates reflections,
    and with heat-bath updates."""
    F_s, m_s = run_replica("slmc", 10000, seed=11, overrelax=overrelax, move=move)
    F_e, m_e = run_replica("exact", 5000, seed=12)
    for name, a, b in (("F/N", F_s, F_e), ("|m|", m_s, m_e)):
        err = np.hypot(error_with_long_bins(a), error_with_long_bins(b))
        assert abs(a.mean() - b.mean()) < 3 * err, f"{name}: {a.mean():.5f} vs {b.mean():.5f} ± {err:.5f}"


def test_default_sampler_agrees_with_exact_sampler_on_4x4(tmp_path):
    """The same for a configuration that names only the lattice, the model and the
    temperature (and the run's length): the default sampler, i.e. the linear model with
    bond-pair terms of 4 shells within 2 spacings (the compiled chain's translated coupling
    table) on the pair loss and local_updates, step_size "auto" (tuning in the second
    half of thermalization, run_loop.py). A whole run, read back from its file."""
    import h5py

    from slmc_hpc.config import parse, to_toml
    from slmc_hpc.driver import run

    cfg = parse(to_toml({"lattice": {"L": 4}, "model": {"mu": -2.5}, "temperatures": {"values": [0.1]},
                         "run": {"thermalize": 1000, "measure": 10000, "seed": 11}}))
    em = cfg.effective_model
    assert (cfg.slmc.local_updates, cfg.run.step_size, em.bond_shells, em.bond_range) == ("auto", "auto", 4, 2.0)
    with h5py.File(run(cfg, output=tmp_path / "tuned.h5", log=lambda *a: None), "r") as f:
        F_s = f["measure/free_energy"][0] / 16
        m_s = np.linalg.norm(f["measure/magnetization"][0], axis=-1)
        assert f["tuning/local_updates"][0] > 0
    F_e, m_e = run_replica("exact", 5000, seed=12)
    for name, a, b in (("F/N", F_s, F_e), ("|m|", m_s, m_e)):
        err = np.hypot(error_with_long_bins(a), error_with_long_bins(b))
        assert abs(a.mean() - b.mean()) < 3 * err, f"{name}: {a.mean():.5f} vs {b.mean():.5f} ± {err:.5f}"


@pytest.mark.parametrize("scheme,n_measure", [("nested", 6000), ("plain", 3000)])
def test_transformer_slmc_agrees_with_exact_sampler_on_4x4(scheme, n_measure):
    F_t, m_t = run_replica("slmc", n_measure, 13, transformer_scheme=scheme)
    F_e, m_e = run_replica("exact", 5000, seed=12)
    for name, a, b in (("F/N", F_t, F_e), ("|m|", m_t, m_e)):
        err = np.hypot(error_with_long_bins(a), error_with_long_bins(b))
        assert abs(a.mean() - b.mean()) < 3 * err, f"{name}: {a.mean():.5f} vs {b.mean():.5f} ± {err:.5f}"


def random_two_site_transformer(seed, coupling=1.0):
    net = EquivariantTransformer(TWO_SITE.lattice, layers=2, heads=2, block_shells=1, attention_shells=None,
                                 shells=1, seed=seed)
    with torch.no_grad():  # deliberately poor: random values and head
        net.wv.copy_(0.5 * torch.randn(net.wv.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        net.couplings[0, 0] = coupling
    return TransformerModel.frozen(net, BETA)


# The middle model differs clearly from the inner one (coupling -0.5 vs +0.8), so an outer test
# that used the wrong level's energy would show (see the negative control below).
NESTED_TWO_SITE = NestedSLMCSampler(TWO_SITE, POOR_MODEL, random_two_site_transformer(2, coupling=-0.5), BETA,
                                    n_local=3, step_size=1.0, middle_steps=2)


@pytest.mark.parametrize("name,sampler,n_steps", [
    ("plain-transformer", SLMCSampler(TWO_SITE, random_two_site_transformer(1), BETA, n_local=2, step_size=1.0),
     20000),
    ("nested", NESTED_TWO_SITE, 30000),
    ("nested-bond-pair-inner", NestedSLMCSampler(TWO_SITE, BOND_PAIR_MODEL, random_two_site_transformer(2, -0.5),
                                                 BETA, n_local=3, step_size=1.0, middle_steps=2), 30000),
])
def test_two_site_distribution_with_transformer_models(name, sampler, n_steps):
    cos = sample_cos(sampler, n_steps, seed=9)
    p = chi_square_p_value(cos, BETA)
    assert p > P_VALUE_THRESHOLD, f"{name}: χ² p-value {p:.2e}"


def test_nested_outer_test_with_the_inner_energy_is_caught():
    """Negative control: correcting the exact test with ΔE_inner instead of ΔE_middle is wrong
    (the proposal comes from the middle chain), and the χ² test sees it."""

    class OuterUsesInner(NestedSLMCSampler):
        def step(self, state, rng):
            spins, e_mid = state.spins, state.e_eff
            e_in = e_in0 = float(self.inner.energy(spins))
            moved = False
            for _ in range(self.middle_steps):
                proposal, _ = effective_chain(self.inner, spins, self.beta, self.n_local, self.step_size, rng)
                p_in, p_mid = float(self.inner.energy(proposal)), float(self.model.energy(proposal))
                if np.log(rng.random()) < -self.beta * ((p_mid - e_mid) - (p_in - e_in)):
                    spins, e_mid, e_in, moved = proposal, p_mid, p_in, True
            if not moved:
                return state, None
            new = self.init_state(spins)
            d_f = self.free_energy(new) - self.free_energy(state)
            return (new if np.log(rng.random()) < -self.beta * (d_f - (e_in - e_in0)) else state), None

    n = NESTED_TWO_SITE
    wrong = OuterUsesInner(n.physics, n.inner, n.model, n.beta, n.n_local, n.step_size, n.middle_steps)
    assert chi_square_p_value(sample_cos(wrong, 30000, seed=9), BETA) < P_VALUE_THRESHOLD


def test_nested_step_hands_the_inner_fields_on_as_if_set_up_anew():
    """A nested step hands the inner model's (b, h = G b) from one middle test to the next and
    on to the next step (samplers/nested.py, ChainState.fields): its decisions are those of a
    step whose every inner chain sets them up anew, on the same random numbers. Negative control: a step that hands on
    a rejected chain's end fields (no copy) decides otherwise."""
    physics = DoubleExchange(Lattice.from_kind("square", 4), t=1.0, J=4.0, mu=-2.5)
    lat = physics.lattice

    def model(seed):
        zero = LinearModel.zeros(lat, 2, 2)
        return zero.with_parameters(np.random.default_rng(seed).normal(size=zero.n_parameters))

    class AnewEachChain(NestedSLMCSampler):
        copy = True

        def step(self, state, rng):
            spins, e_mid, n_mid = state.spins, state.e_eff, 0
            fields = self.inner.bond_form.fields(spins)
            for _ in range(self.middle_steps):
                trial = tuple(x.copy() for x in fields) if self.copy else fields
                proposal, d_in = effective_chain(self.inner, spins, self.beta, self.n_local, self.step_size, rng,
                                                 fields=None if self.copy else trial)
                p_mid = float(self.model.energy(proposal))
                if np.log(rng.random()) < -self.beta * ((p_mid - e_mid) - d_in):
                    spins, e_mid, n_mid, fields = proposal, p_mid, n_mid + 1, trial
            if not n_mid:
                return state, None
            return accept_exactly(self.physics, self.beta, state, spins, e_mid, rng)

    class Uncopied(AnewEachChain):
        copy = False

    args = (physics, model(1), model(2), 2.0, 16, 1.0, 4)
    proposals, mixed = [], 0
    for kind in (NestedSLMCSampler, AnewEachChain, Uncopied):
        sampler, rng = kind(*args), np.random.default_rng(3)
        state = sampler.init_state(random_spins(lat.N, np.random.default_rng(4)))
        seen = []
        for _ in range(40):
            state, info = sampler.step(state, rng)
            if info is not None and info.n_tests:  # the middle chain's end, handed to the exact test
                seen.append(info.proposal)
                mixed += kind is NestedSLMCSampler and 0 < info.n_middle_accepted < info.n_middle_tests
        proposals.append(np.array(seen))
    assert mixed > 5  # steps with passed and failed middle tests, so a leaked field would show
    np.testing.assert_allclose(proposals[0], proposals[1], rtol=0, atol=1e-12)
    assert proposals[2].shape != proposals[0].shape or not np.allclose(proposals[2], proposals[0], atol=1e-6)


@pytest.mark.parametrize("bond_shells,bond_range", [(0, 0.0), (2, 0.0), (4, 1.5)])
def test_slmc_keeps_e_eff_equal_to_the_model_energy(bond_shells, bond_range):
    """SLMC takes the proposal's E_eff from the inner chain's summed ΔE; after many steps the
    chain's E_eff is still the model's energy of its spins."""
    physics = DoubleExchange(Lattice.from_kind("square", 4), t=1.0, J=4.0, mu=-2.5)
    lat = physics.lattice
    n_orbits = len(LinearModel.zeros(lat, 2, bond_shells, bond_range).bond_couplings)
    model = LinearModel(lat, couplings=np.array([0.3, -0.1]), e0=1.0, bond_shells=bond_shells,
                        bond_couplings=0.01 * np.cos(np.arange(n_orbits)), bond_range=bond_range)
    sampler = SLMCSampler(physics, model, 5.0, n_local=16, step_size=0.5)
    rng = np.random.default_rng(4)
    state = sampler.init_state(random_spins(lat.N, rng))
    moved = 0
    for _ in range(2000):
        state, info = sampler.step(state, rng)
        moved += info.accepted
    assert moved > 100
    assert state.e_eff == pytest.approx(model.energy(state.spins), abs=1e-10)
    if bond_shells:  # a new model: the carried fields (ChainState.fields) are set up for it, not kept
        other = model.with_parameters(model.parameters()[0] * 1.5)
        sampler, state = sampler.with_model(other, state)
        for _ in range(200):
            state, info = sampler.step(state, rng)
        b, h = other.bond_form.fields(state.spins)
        np.testing.assert_allclose(state.fields[1], h, rtol=0, atol=1e-10)
        assert state.e_eff == pytest.approx(other.energy(state.spins), abs=1e-10)


def test_two_site_distribution_with_the_default_tuned_sampler(tmp_path):
    """The χ² test of the two-site cos θ distribution on a whole run with the defaults:
    the path (updates per step, δ) tuned by the wall clock in the second half of
    thermalization, bond-pair terms, pair loss; then the measured chain, read back from the
    file (c = S_1·S_2 = 2|m|² - 1 for two unit spins). Negative control: the same samples
    against the distribution at another β."""
    import h5py

    from slmc_hpc.config import parse, to_toml
    from slmc_hpc.driver import run

    cfg = parse(to_toml({"lattice": {"kind": "chain", "L": 2}, "model": {"t": 1.0, "J": 4.0, "mu": 0.0},
                         "temperatures": {"values": [1 / BETA]}, "run": {"thermalize": 2000, "measure": 40000}}))
    assert (cfg.slmc.local_updates, cfg.run.step_size) == ("auto", "auto")
    with h5py.File(run(cfg, output=tmp_path / "two.h5", log=lambda *a: None), "r") as f:
        m = f["measure/magnetization"][0]
        assert f["tuning/local_updates"][0] > 0
    cos = 2 * np.sum(m * m, axis=-1) - 1
    assert chi_square_p_value(cos, BETA) > P_VALUE_THRESHOLD
    assert chi_square_p_value(cos, 1.0) < P_VALUE_THRESHOLD


def test_plain_transformer_corrected_with_a_wrong_energy_difference_is_caught():
    """Negative control for the Transformer's own inner chain (samplers/transformer_chain.py):
    the exact test corrected with the head's energy difference on the raw spins (the network
    without its layers) instead of the Transformer's, which the chain followed."""
    model = random_two_site_transformer(1)
    net = copy.deepcopy(model.net)
    net.make_identity()  # the value weights and gates zeroed: each layer the identity
    head = TransformerModel.frozen(net, BETA)

    class HeadCorrected(SLMCSampler):
        def step(self, state, rng):
            proposal, _ = effective_chain(self.model, state.spins, self.beta, self.n_local, self.step_size, rng)
            d_head = float(head.energy(proposal) - head.energy(state.spins))
            return accept_exactly(self.physics, self.beta, state, proposal, state.e_eff + d_head, rng)

    right = SLMCSampler(TWO_SITE, model, BETA, n_local=2, step_size=1.0)
    wrong = HeadCorrected(TWO_SITE, model, BETA, n_local=2, step_size=1.0)
    assert chi_square_p_value(sample_cos(wrong, 40000, seed=9), BETA) < P_VALUE_THRESHOLD
    assert chi_square_p_value(sample_cos(right, 20000, seed=9), BETA) > P_VALUE_THRESHOLD
