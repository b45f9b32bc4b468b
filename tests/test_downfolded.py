"""The downfolded model (models/downfolded.py) and three-level SLMC with it: closed forms of
the downfolding (the unitary change of basis, the Schur complement and its inertia, the
ferromagnet, the J → ∞ limit), its symmetries, and the exactness of the sampler."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.config import ConfigError
from slmc_hpc.hamiltonian import DoubleExchange, hopping_matrix, log_fermion_weight
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.models.downfolded import DownfoldedModel, LowBandMemo, site_spinors
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.nested import NestedSLMCSampler
from slmc_hpc.samplers.slmc import effective_chain
from slmc_hpc.training.learner import solo_step

from configs import small_config
from test_samplers import (BETA, P_VALUE_THRESHOLD, POOR_MODEL, TWO_SITE, chi_square_p_value, error_with_long_bins,
                           run_replica, sample_cos)


def model_on(kind, L, J=4.0, mu=-2.5, beta=10.0, J_direct=0.0):
    physics = DoubleExchange(Lattice.from_kind(kind, L), t=1.0, J=J, mu=mu, J_direct=J_direct)
    return DownfoldedModel(physics, beta, LinearModel.zeros(physics.lattice, 1))


@pytest.mark.parametrize("J", [4.0, -3.0])
def test_site_spinors_are_the_local_eigenvectors(J):
    spins = random_spins(50, np.random.default_rng(1))
    spins[0] = [0.0, 0.0, -1.0]  # the poles, where the azimuth is undefined
    spins[1] = [0.0, 0.0, 1.0]
    a, b = site_spinors(spins, J)
    sigma = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
    for s, ai, bi in zip(spins, a, b):
        h = 0.5 * J * np.einsum("k,kab->ab", s, sigma)
        np.testing.assert_allclose(h @ ai, -0.5 * abs(J) * ai, atol=1e-14)
        np.testing.assert_allclose(h @ bi, 0.5 * abs(J) * bi, atol=1e-14)
        assert abs(np.vdot(ai, bi)) < 1e-14 and abs(np.vdot(ai, ai) - 1) < 1e-14


@pytest.mark.parametrize("kind,L,J", [("square", 4, 4.0), ("chain", 6, -3.0), ("chain", 5, 4.0), ("cubic", 2, 4.0)])
def test_the_blocks_are_h_in_the_spinor_basis(kind, L, J):
    """[[A, B], [B†, C]] is H[S] after a unitary change of basis: the same spectrum (the odd
    chain is not bipartite: there the sign of t is not a gauge choice)."""
    m = model_on(kind, L, J=J)
    spins = random_spins(m.lattice.N, np.random.default_rng(2))
    a, b, c = m.blocks(spins)
    full = np.block([[a, b], [b.conj().T, c]])
    np.testing.assert_allclose(np.linalg.eigvalsh(full), m.physics.eigenvalues(spins), atol=1e-12)


def test_the_schur_complement_keeps_the_determinant_and_the_count_of_occupied_levels():
    """det H = det C det H_eff, and where C > 0 H_eff has as many negative eigenvalues as H
    (at T = 0 the same levels are occupied). Negative control: the projected A alone."""
    m = model_on("square", 4)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(20):
        spins = random_spins(16, rng)
        _, _, c = m.blocks(spins)
        h_eff, eps = m.effective_hamiltonian(spins), m.physics.eigenvalues(spins)
        _, log_h = np.linalg.slogdet(np.diag(eps))
        _, log_c = np.linalg.slogdet(c)
        _, log_eff = np.linalg.slogdet(h_eff)
        assert abs(log_h - (log_c + log_eff)) < 1e-9
        if np.linalg.eigvalsh(c).min() > 0:
            checked += 1
            assert (np.linalg.eigvalsh(h_eff) < 0).sum() == (eps < 0).sum()
    assert checked >= 10
    a, _, _ = m.blocks(spins)
    assert abs(np.linalg.slogdet(a)[1] + log_c - log_h) > 1e-3  # without the downfolding it is not exact


@pytest.mark.parametrize("kind,L", [("square", 4), ("cubic", 2), ("chain", 5)])
def test_the_effective_hamiltonian_is_the_dense_schur_complement(kind, L):
    """The Cholesky solve and rank-N update give A - B C⁻¹ B† of a dense solve, and F_low (in
    double and, to its rounding, in single precision: a fresh model each, so no memo answers)
    is the free energy of that matrix's eigenvalues: the triangle LAPACK reads is the one set."""
    m = model_on(kind, L)
    rng = np.random.default_rng(12)
    for _ in range(5):
        spins = random_spins(m.lattice.N, rng)
        a, b, c = m.blocks(spins)
        dense = a - b @ np.linalg.solve(c, b.conj().T)
        np.testing.assert_allclose(m.effective_hamiltonian(spins), dense, atol=1e-12)
        f = -log_fermion_weight(np.linalg.eigvalsh(dense), m.beta) / m.beta
        # single precision where config.py allows the model (on the cube 4.5 < 6: C is ill-conditioned)
        single = [(np.complex64, 2e-7 * abs(f))] if m.lattice.dim < 3 else []
        for dtype, tolerance in [(np.complex128, 1e-11)] + single:
            fresh = DownfoldedModel(m.physics, m.beta, m.correction)
            assert abs(fresh.low_band_free_energy(spins, dtype) - f) < tolerance


def test_an_upper_band_reaching_below_mu_is_an_error():
    """At μ = 0 (|J|/2 - μ = 2 < 2d|t| = 4) a ferromagnet's upper band dips below μ: C is not
    positive definite, and F_low has no meaning there (config.py refuses such runs)."""
    m = model_on("square", 4, mu=0.0)
    spins = np.tile([0.0, 0.0, 1.0], (16, 1))
    assert np.linalg.eigvalsh(m.blocks(spins)[2]).min() < 0
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        m.low_band_free_energy(spins)


def test_a_replica_takes_its_middle_tests_with_its_path():
    cfg = small_config(effective_model={"kind": "downfolded"})
    rep, _ = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(0))
    assert rep.path == (16, 0.5, 4)
    rep.set_path(32, 1.0, 8)
    assert rep.path == (32, 1.0, 8) and rep.sampler.middle_steps == 8
    plain = small_config()
    rep, _ = build_slot(plain, build_physics(plain), 10.0, np.random.default_rng(0))
    assert rep.path == (16, 0.5, 1)
    with pytest.raises(ValueError, match="8 middle tests asked of a sampler without a middle level"):
        rep.set_path(16, 0.5, 8)


def test_a_ferromagnet_is_exactly_its_lower_band():
    """Parallel spins: B = 0 and F_low is the free energy of the lower band, ε_k - |J|/2 - μ,
    plus J_direct on each of the 2N nearest-neighbour bonds."""
    m = model_on("square", 4, beta=7.0, J_direct=0.3)
    spins = np.tile(Rotation.from_rotvec([0.3, -1.1, 0.4]).apply([0.0, 0.0, 1.0]), (16, 1))
    _, b, _ = m.blocks(spins)
    assert np.abs(b).max() < 1e-14
    eps = np.linalg.eigvalsh(hopping_matrix(m.lattice, 1.0, 0.0)) - 2.0 + 2.5
    exact = -log_fermion_weight(eps, 7.0) / 7.0 + 0.3 * 32
    assert abs(m.low_band_free_energy(spins, np.complex128) - exact) < 1e-11
    assert abs(m.low_band_free_energy(spins) - exact) < 1e-5  # the default, single precision


def test_the_downfolding_term_falls_as_t_squared_over_j():
    spins = random_spins(16, np.random.default_rng(4))
    gaps = []
    for J in (100.0, 200.0):
        m = model_on("square", 4, J=J, mu=-J / 2)  # μ in the lower band at any J
        a, _, _ = m.blocks(spins)
        gaps.append(np.abs(m.effective_hamiltonian(spins) - a).max())
    assert 1.9 < gaps[0] / gaps[1] < 2.1


def test_f_low_is_invariant_under_rotations_inversion_and_translations():
    m = model_on("square", 4, J_direct=0.3)
    spins = random_spins(16, np.random.default_rng(5))
    rotated = Rotation.from_rotvec([0.7, 0.2, -1.3]).apply(spins)
    for dtype, tolerance in ((np.complex128, 1e-10), (np.complex64, 1e-5)):
        f = m.low_band_free_energy(spins, dtype)
        for other in (rotated, -spins, spins[m.lattice.translations()[5]]):
            assert abs(m.low_band_free_energy(other, dtype) - f) < tolerance


def test_single_precision_f_low_is_double_precision_to_rounding():
    """The middle model's default (single precision) against double precision at L = 12 on
    random and on nearly parallel spins: within 2e-7 |F| but not equal (float32's ε is 1.2e-7;
    it reads 2e-8 and 3e-9). Negative control: one spin turned by 0.03 rad, a small middle-test move,
    moves F_low by more than that (by 1e-5 and 2e-6 |F|)."""
    m = model_on("square", 12, beta=50.0)
    rng = np.random.default_rng(6)
    parallel = np.array([0.0, 0.0, 1.0]) + 0.2 * rng.normal(size=(144, 3))
    for spins in (random_spins(144, rng), parallel / np.linalg.norm(parallel, axis=1, keepdims=True)):
        double = m.low_band_free_energy(spins, np.complex128)
        single = DownfoldedModel(m.physics, m.beta, m.correction).low_band_free_energy(spins)  # not from the memo
        assert 0 < abs(single - double) < 2e-7 * abs(double)  # rounded, so really single precision
        turned = spins.copy()
        turned[7] = Rotation.from_rotvec([0.03, 0.0, 0.0]).apply(turned[7])
        assert abs(m.low_band_free_energy(turned, np.complex128) - double) > 2e-7 * abs(double)


def test_a_configuration_too_near_singular_for_single_precision_is_done_in_double(monkeypatch):
    """Where single precision's Cholesky of C fails (|J|/2 - μ barely above 2d|t|), F_low is
    the double-precision value; where double fails too, the error stands (negative control)."""
    m = model_on("square", 4)
    spins = random_spins(16, np.random.default_rng(9))
    double = DownfoldedModel(m.physics, m.beta, m.correction).low_band_free_energy(spins, np.complex128)
    original = DownfoldedModel._lower_effective_hamiltonian

    def single_fails(self, spins, dtype):
        if np.dtype(dtype) == np.complex64:
            raise np.linalg.LinAlgError("the upper-band block C is not positive definite (LAPACK info 3)")
        return original(self, spins, dtype)

    monkeypatch.setattr(DownfoldedModel, "_lower_effective_hamiltonian", single_fails)
    assert m.low_band_free_energy(spins) == double
    monkeypatch.setattr(DownfoldedModel, "_lower_effective_hamiltonian",
                        lambda self, spins, dtype: single_fails(self, spins, np.complex64))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        DownfoldedModel(m.physics, m.beta, m.correction).low_band_free_energy(spins)


def test_the_memo_returns_what_a_new_evaluation_gives():
    """F_low remembered (training evaluates the chain's configurations again) equals a fresh
    model's to the bit, for every model made from this one by a refit or another β (they
    share the memo; β is in its key); a turned spin is not a hit; the memo keeps at most its
    size, the oldest going first. Negative control: a wrong value planted under the key is
    what the model returns, so the equalities above come from the memo."""
    m = model_on("square", 6, beta=30.0)
    spins = random_spins(36, np.random.default_rng(8))
    f = m.low_band_free_energy(spins)
    fresh = lambda beta: DownfoldedModel(m.physics, beta, m.correction).low_band_free_energy(spins)
    refit = m.with_parameters(np.ones(m.n_parameters))
    assert refit.memo is m.memo and m.with_beta(20.0).memo is m.memo
    assert refit.low_band_free_energy(spins) == f == fresh(30.0)
    assert m.with_beta(20.0).low_band_free_energy(spins) == fresh(20.0) != f
    turned = spins.copy()
    turned[3] = Rotation.from_rotvec([0.0, 0.02, 0.0]).apply(turned[3])
    assert m.low_band_free_energy(turned) != f
    assert m.low_band_free_energy(spins, np.complex128) != f  # the precision is in the key
    assert len(m.memo.values) == 4
    with pytest.raises(ValueError, match="at least one"):
        LowBandMemo(size=0)
    small = LowBandMemo(size=2)
    for k in range(3):
        small.put(("key", k), float(k))
    assert list(small.values) == [("key", 1), ("key", 2)]
    m.memo.put(m.memo.key(spins, 30.0, np.complex64), f + 1.0)
    assert m.low_band_free_energy(spins) == f + 1.0


def test_energy_of_design_rows_and_the_fit_of_the_correction():
    """E_eff from a design row equals E_eff from spins; a correction fitted to F - F_low on
    (proposal, current) pairs fits better than the linear model alone on the same pairs."""
    physics = DoubleExchange(Lattice.from_kind("square", 4), t=1.0, J=4.0, mu=-2.5)
    rng = np.random.default_rng(6)
    spins = random_spins(16, rng)
    xs, xr = [], []
    for _ in range(150):  # pairs of nearby configurations, as a chain proposes them
        ref = spins + 0.2 * rng.normal(size=spins.shape)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        new = ref + 0.2 * rng.normal(size=spins.shape)
        xs.append(new / np.linalg.norm(new, axis=1, keepdims=True))
        xr.append(ref)
    xs, xr = np.array(xs), np.array(xr)
    beta = 10.0
    y, yr = physics.free_energy_of(xs, beta), physics.free_energy_of(xr, beta)
    base = LinearModel.zeros(physics.lattice, 3)
    model = DownfoldedModel(physics, beta, base).fit_pairs(xs, y, xr, yr)
    np.testing.assert_allclose(model.energy_of_design(model.design(xs)), model.energy(xs), atol=1e-10)
    linear = base.fit_pairs(xs, y, xr, yr)
    spread = lambda mod: np.std((y - yr) - (mod.energy(xs) - mod.energy(xr)))
    assert spread(model) < 0.5 * spread(linear)


DOWNFOLDED_TWO_SITE = NestedSLMCSampler(
    TWO_SITE, POOR_MODEL,
    DownfoldedModel(TWO_SITE, BETA, LinearModel(TWO_SITE.lattice, couplings=np.array([-0.5]))),
    BETA, n_local=3, step_size=1.0, middle_steps=2)


def test_two_site_distribution_with_the_downfolded_middle_model():
    p = chi_square_p_value(sample_cos(DOWNFOLDED_TWO_SITE, 30000, seed=9), BETA)
    assert p > P_VALUE_THRESHOLD, f"χ² p-value {p:.2e}"


def test_an_outer_test_corrected_with_f_low_alone_is_caught():
    """Negative control: the exact test corrected with the middle model's F_low but without
    its correction term (which the middle tests used) samples the wrong distribution."""

    class OuterWithoutCorrection(NestedSLMCSampler):
        def step(self, state, rng):
            spins, e_mid = state.spins, state.e_eff
            for _ in range(self.middle_steps):
                proposal, d_in = effective_chain(self.inner, spins, self.beta, self.n_local, self.step_size, rng)
                p_mid = float(self.model.energy(proposal))
                if np.log(rng.random()) < -self.beta * ((p_mid - e_mid) - d_in):
                    spins, e_mid = proposal, p_mid
            if spins is state.spins:
                return state, None
            new = self.init_state(spins)
            d_f = self.free_energy(new) - self.free_energy(state)
            d_low = self.model.low_band_free_energy(spins) - self.model.low_band_free_energy(state.spins)
            return (new if np.log(rng.random()) < -self.beta * (d_f - d_low) else state), None

    n = DOWNFOLDED_TWO_SITE
    wrong = OuterWithoutCorrection(n.physics, n.inner, n.model, n.beta, n.n_local, n.step_size, n.middle_steps)
    assert chi_square_p_value(sample_cos(wrong, 30000, seed=9), BETA) < P_VALUE_THRESHOLD


def test_three_level_slmc_agrees_with_exact_sampler_on_4x4():
    """⟨F⟩/N and ⟨|m|⟩ within 3 combined binned standard errors (false alarm ≈ 0.5% for two
    observables if the error bars are right); the models trained online, as in a run."""
    cfg = small_config(effective_model={"kind": "downfolded", "shells": 5},
                       run={"thermalize": 1000, "measure": 4000, "step_size": 0.8, "progress_every": None})
    assert cfg.slmc.middle_steps == 4
    rep, learner = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(14))
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner)
    # the first round waits for enough exact tests (a step whose middle tests all reject has none)
    assert len(learner.rounds) >= cfg.run.thermalize // cfg.training.every - 2
    assert np.any(rep.sampler.model.correction.couplings) and np.any(rep.sampler.inner.couplings)
    records = [rep.record(rep.step()) for _ in range(cfg.run.measure)]
    F_d = np.array([r["free_energy"] for r in records]) / 16
    m_d = np.linalg.norm([r["magnetization"] for r in records], axis=1)
    F_e, m_e = run_replica("exact", 5000, seed=12)
    for name, a, b in (("F/N", F_d, F_e), ("|m|", m_d, m_e)):
        err = np.hypot(error_with_long_bins(a), error_with_long_bins(b))
        assert abs(a.mean() - b.mean()) < 3 * err, f"{name}: {a.mean():.5f} vs {b.mean():.5f} ± {err:.5f}"


def test_the_inner_model_must_be_the_corrections_class():
    with pytest.raises(ConfigError, match="inner_bond_shells = 2 differs"):
        small_config(effective_model={"kind": "downfolded"}, slmc={"inner_bond_shells": 2})


def test_middle_tests_are_tuned_with_a_tuned_path_and_four_with_a_fixed_one():
    assert small_config(effective_model={"kind": "downfolded"}, slmc={"local_updates": "auto"}).slmc.middle_steps == "auto"
    assert small_config(effective_model={"kind": "downfolded"}).slmc.middle_steps == 4  # the tests' fixed path
    assert small_config(effective_model={"kind": "downfolded"}, slmc={"middle_steps": 8}).slmc.middle_steps == 8
    assert small_config(slmc={"local_updates": "auto"}).slmc.middle_steps == 1  # no middle level
    with pytest.raises(ConfigError, match="middle_steps = \"auto\" needs a middle level"):
        small_config(slmc={"middle_steps": "auto"})


def test_the_model_kind_defaults_to_downfolded_on_large_square_lattices_where_it_applies():
    """No [effective_model] kind: "downfolded" for SLMC on a square lattice with 10 <= L <= 16 (CPU),
    where |J|/2 - μ > 4|t|; "linear" wherever one of those fails, and wherever an inner
    model of another class is asked for (which the downfolded model would refuse)."""
    from slmc_hpc.config import parse
    base = '[model]\nJ = 4.0\nmu = -2.5\n[temperatures]\nvalues = [0.02]\n'

    def kind(L, extra="", lattice="square"):
        return parse(f'[lattice]\nkind = "{lattice}"\nL = {L}\n' + base + extra).effective_model.kind

    def kind_at(model, L=12):
        return parse(f'[lattice]\nL = {L}\n[model]\n{model}\n[temperatures]\nvalues = [0.02]\n').effective_model.kind

    assert kind(10) == kind(12) == "downfolded"
    assert parse('[lattice]\nL = 10\n' + base).slmc.middle_steps == "auto"  # with the tuned path
    assert kind(8) == kind(9) == "linear"  # below the size where a middle level pays
    assert kind(13) == kind(14) == kind(16) == "downfolded"  # since 0.8.3: 0.21-1.56x at L = 16, seven runs
    assert kind(17) == kind(24) == "linear"  # not measured above L = 16
    assert kind(5, lattice="cubic") == kind(100, lattice="chain") == "linear"  # not measured there
    assert kind(12, extra='[run]\nsampler = "exact"\n') == "linear"
    assert kind(12, extra='[run]\nbackend = "cupy"\n') == "linear"
    assert kind(12, extra="[slmc]\ninner_bond_shells = 2\n") == "linear"  # refused by downfolded
    assert kind(12, extra="[slmc]\ninner_bond_shells = 4\n") == "linear"  # given: the user's inner model
    assert kind(12, extra='[effective_model]\nkind = "linear"\n') == "linear"
    assert kind_at("J = 4.0\nmu = 0.0") == "linear"  # |J|/2 - μ = 2 < 4: the upper band reaches μ
    assert kind_at("J = 4.0\nmu = -2.0") == "linear"  # 4 = 4: C may be singular (the check is strict)
    assert kind_at("J = -4.0\nmu = -2.5") == "downfolded"  # |J|
    assert kind_at("t = -1.0\nJ = 4.0\nmu = -2.5") == "downfolded"  # |t|
    assert kind_at("t = 1.2\nJ = 4.0\nmu = -2.5") == "linear"  # 4.5 < 4.8
    cfg = parse('[lattice]\nL = 12\n' + base)
    assert parse(cfg.complete_text).effective_model.kind == "downfolded"  # as stored in files
    # a text stored before 0.2 (omitted keys took that version's defaults) stays linear
    assert parse('[lattice]\nL = 12\n' + base, legacy=True).effective_model.kind == "linear"


def test_a_run_that_took_the_linear_default_before_0_8_resumes_once_kind_is_named():
    """A run of 0.7 at L = 12 stored kind = "linear" (every key is stored); resumed with its
    configuration file that names no kind, the refusal names kind with the run's value, and
    writing kind = "linear" in resumes it."""
    from slmc_hpc.config import parse, to_toml
    from slmc_hpc.resume import check_same_run

    text = {"lattice": {"L": 12}, "model": {"J": 4.0, "mu": -2.5}, "temperatures": {"values": [0.02]}}
    saved = parse(parse(to_toml({**text, "effective_model": {"kind": "linear"}})).complete_text)
    with pytest.raises(ConfigError, match=r"\[effective_model\] kind.* differ: kind = 'linear' there, 'downfolded' here"):
        check_same_run(parse(to_toml(text)), saved, "run")
    check_same_run(parse(to_toml({**text, "effective_model": {"kind": "linear"}})), saved, "run")


def test_the_upper_band_must_lie_above_mu():
    """|J|/2 - μ above the hopping width 2d|t| keeps C positive definite (the reference
    problem: 4.5 > 4); at μ = 0 it is 2, and C is indefinite for most configurations."""
    small_config(effective_model={"kind": "downfolded"})
    with pytest.raises(ConfigError, match=r"\|J\|/2 - mu = 2 must exceed its hopping width 2 d \|t\| = 4"):
        small_config(effective_model={"kind": "downfolded"}, model={"mu": 0.0})
    small_config(model={"mu": 0.0})  # the linear model has no such condition


def test_the_model_survives_pickling_after_use():
    """Slot models travel between MPI ranks: after evaluating, the model (with its physics'
    cached matrices) pickles to the same energies."""
    import pickle

    m = model_on("square", 4).with_parameters(np.r_[0.1, 0.02])
    spins = random_spins(16, np.random.default_rng(8))
    m.physics.eigenvalues(spins)
    e = m.energy(spins)
    assert pickle.loads(pickle.dumps(m)).energy(spins) == e


def test_before_its_first_fit_the_model_is_zero_and_the_middle_tests_pass():
    """An unfitted model (all parameters zero) is E = 0, as the untrained inner model, so the
    first steps reach the exact test and make training data; once fitted it is F_low + E_corr."""
    m = model_on("square", 4)
    spins = random_spins(16, np.random.default_rng(9))
    assert not m.fitted and m.energy(spins) == 0.0
    zero = LinearModel.zeros(m.lattice, 1)
    sampler = NestedSLMCSampler(m.physics, zero, m, 10.0, n_local=16, step_size=0.5, middle_steps=3)
    rng = np.random.default_rng(10)
    state = sampler.init_state(spins)
    for _ in range(20):
        state, info = sampler.step(state, rng)
        assert info.n_middle_accepted == 3 and info.n_tests == 1
    fitted = m.with_parameters(np.r_[0.1, 0.0])
    assert fitted.fitted and fitted.energy(spins) == pytest.approx(m.low_band_free_energy(spins) + 0.1)


class _Wall:
    """A middle model that rejects every proposal: E = 0 at the chain's start, 1e6 elsewhere."""

    def __init__(self, start):
        self.start = start

    def energy(self, spins):
        return 0.0 if np.array_equal(spins, self.start) else 1e6


def test_a_step_whose_middle_tests_all_reject_still_trains_on_its_inner_proposal():
    """Where the middle level rejects everything no exact test runs; thermalization then
    diagonalizes the last inner proposal for training only, so that learning cannot starve
    (a downfolded chain on a ferromagnet at L = 10 once stuck that way for good). The chain
    itself is untouched: the same states and random numbers as a step without training.
    Negative control: without the evaluation (the step's own info) the buffer gets nothing."""
    from dataclasses import replace

    from slmc_hpc.training.learner import collect

    cfg = small_config(effective_model={"kind": "downfolded"}, run={"thermalize": 200, "progress_every": None})
    rep, learner = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(3))
    rep.sampler = replace(rep.sampler, model=_Wall(rep.state.spins.copy()), middle_steps=2)
    twin, _ = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(3))
    twin.sampler = rep.sampler
    start = rep.state.spins.copy()
    for k in range(5):
        info = collect(rep, learner)
        assert info.n_tests == 0 and info.n_middle_accepted == 0 and info.proposal is None
        assert learner.buffer.size == k + 1
        proposal = learner.buffer.spins[k]
        np.testing.assert_array_equal(proposal, info.rejected_proposal)
        assert learner.buffer.targets[k] == pytest.approx(rep.physics.free_energy_of(proposal, 10.0), abs=1e-12)
        assert not np.array_equal(proposal, start)
        twin.step()
        np.testing.assert_array_equal(rep.state.spins, start)
        assert rep.rng.bit_generator.state == twin.rng.bit_generator.state
    learner.observe(rep.state, 0.0, info, 10.0)  # the step's info alone carries no exactly evaluated proposal
    assert learner.buffer.size == 5


def test_a_moved_temperature_takes_the_model_and_its_training_rows_along():
    """When a self-tuning ladder moves a slot's β, the slot's model (F_low at β) and the rows
    its next training round fits are at the new β."""
    cfg = small_config(effective_model={"kind": "downfolded"}, run={"thermalize": 200, "progress_every": None})
    rep, learner = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(3))
    for _ in range(100):
        solo_step(rep, learner)
    learner.forget_samples(7.0)
    rep.set_beta(7.0)
    for _ in range(cfg.training.every):
        solo_step(rep, learner)
    assert learner.rounds[-1]["step"] == 120
    assert rep.sampler.model.beta == learner.linear.model.beta == 7.0
    spins = learner.buffer.spins[:1]
    assert learner.buffer.featurize(spins)[0, 0] == rep.sampler.model.low_band_free_energy(spins[0])


def test_a_run_file_gives_back_its_downfolded_models(tmp_path):
    """The slot's middle model (its correction fitted, F_low at the slot's β) and inner model
    from the file, as they sampled; and the report reads the file."""
    import h5py

    from slmc_hpc.driver import run
    from slmc_hpc.report import write_report
    from slmc_hpc.results import read_model

    cfg = small_config(effective_model={"kind": "downfolded"}, temperatures={"values": [0.1, 0.15]},
                       run={"thermalize": 100, "measure": 30, "seed": 3})
    path = run(cfg, output=tmp_path / "d.h5", log=lambda *a: None)
    model, inner = read_model(path, slot=1), read_model(path, slot=1, inner=True)
    assert isinstance(model, DownfoldedModel) and model.beta == pytest.approx(1 / 0.15)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["model/parameters"][1], model.parameters()[0])
        np.testing.assert_array_equal(f["model/inner_parameters"][1], inner.parameters()[0])
        assert f["model"].attrs["kind"] == "downfolded"
    assert np.any(model.correction.couplings) and np.any(inner.couplings)
    write_report(path, tmp_path / "report")
