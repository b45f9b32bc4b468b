"""Heat-bath moves in the inner chain (samplers/local_chain.py, [slmc] move = "heatbath"):
S_i drawn from exp(β S_i·H) about its local field H, accepted by the Metropolis-Hastings
test log u < -β [ΔE + (S_i' - S_i)·H], whose second term is the proposal ratio. Exact only if
H does not depend on S_i and the ratio is in the test.

The compiled chain is checked against a plain Python reference whose field comes from energy
differences alone; the reference and the compiled chain are checked for exactness on two sites
with a four-spin term (where the test rejects) against quadrature, with the test that leaves out
the proposal ratio as the negative control. SLMC with heat-bath moves against quadrature and
the exact sampler: tests/test_samplers.py."""

import numpy as np
import pytest
from scipy import integrate, stats

from slmc_hpc.assemble import build_tuner
from slmc_hpc.config import ConfigError
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.moves import draw_moves
from slmc_hpc.stats import tau_int

from configs import small_config
from test_overrelaxation import field_from_energies, random_model

P_VALUE_THRESHOLD = 1e-3  # false-alarm rate of each goodness-of-fit test for a correct chain


def heat_bath_draw(H, beta, u_cos, u_phi):
    """S from exp(β S·H) by inverting the distribution function of cos θ about H (written
    independently of the compiled one: basis from the smallest component of H, then cross)."""
    x = beta * np.linalg.norm(H)
    v = 1.0 - u_cos
    t = -np.log(v + (1 - v) * np.exp(-2 * x)) / x
    axis = H / np.linalg.norm(H)
    e = np.eye(3)[np.argmin(np.abs(axis))]
    e1 = e - (e @ axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    phi = 2 * np.pi * u_phi
    new = (1 - t) * axis + np.sqrt(t * (2 - t)) * (np.cos(phi) * e1 + np.sin(phi) * e2)
    return new / np.linalg.norm(new)


def reference_chain(model, spins, beta, sites, noise, log_u, proposal_ratio=True):
    """Heat-bath proposals through field_from_energies, the test through model.delta_energy;
    ``proposal_ratio=False``: the plain Metropolis test log u < -β ΔE (wrong for this proposal)."""
    spins = spins.copy()
    accepted = 0
    for i, (u_cos, u_phi), lu in zip(sites, noise, log_u):
        H = field_from_energies(model, spins, i)
        new = heat_bath_draw(H, beta, u_cos, u_phi)
        exponent = model.delta_energy(spins, i, new) + ((new - spins[i]) @ H if proposal_ratio else 0.0)
        if lu < -beta * exponent:
            spins[i] = new
            accepted += 1
    return spins, accepted


@pytest.mark.parametrize("kind,L,shells,bond_shells", [("square", 4, 3, 0), ("square", 4, 3, 2),
                                                       ("chain", 6, 3, 3), ("cubic", 3, 2, 2)])
def test_compiled_heat_bath_makes_the_reference_decisions(kind, L, shells, bond_shells, rng):
    model = random_model(kind, L, shells, bond_shells, rng)
    spins = random_spins(model.lattice.N, rng)
    sites, noise, u = draw_moves(rng, model.lattice.N, 300, heat_bath=True)
    beta = 2.0
    expected, accepted = reference_chain(model, spins, beta, sites, noise, np.log(u))
    got, delta = model.bond_form.chain(spins, beta, sites, noise, np.log(u), 0.5, None, heat_bath=True)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert delta == pytest.approx(model.energy(got) - model.energy(spins), abs=1e-9)
    if bond_shells:  # the four-spin terms (quadratic in S_i) make the test reject some
        assert accepted < 300
    else:  # the proposal is the conditional distribution itself
        assert accepted == 300


def test_heat_bath_draw_follows_the_field(rng):
    """One site in a fixed field: cos θ about H from 20000 draws against exp(β|H| c) on [-1, 1]
    (χ²; a uniform cos θ fails it), and φ about H, in a basis built here, uniform (χ²)."""
    model = LinearModel(Lattice.from_kind("chain", 2), couplings=np.array([1.3]))
    spins = np.array([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])
    n, beta = 20000, 1.5
    sites = np.zeros(n, dtype=np.int64)
    noise, log_u = rng.random((n, 2)), np.full(n, -np.inf)  # every proposal forced: each draw is kept
    H = 1.3 * spins[1]
    drawn = np.array([model.bond_form.chain(spins, beta, sites[k:k + 1], noise[k:k + 1], log_u[k:k + 1], 0.5,
                                            None, heat_bath=True)[0][0] for k in range(n)])  # independent draws
    axis = H / np.linalg.norm(H)
    cos = drawn @ axis
    edges = np.linspace(-1, 1, 11)
    mass = np.diff(np.exp(beta * np.linalg.norm(H) * edges))
    assert stats.chisquare(np.histogram(cos, edges)[0], mass / mass.sum() * n).pvalue > P_VALUE_THRESHOLD
    assert stats.chisquare(np.histogram(cos, edges)[0], np.full(10, n / 10)).pvalue < P_VALUE_THRESHOLD
    e1 = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
    e1 /= np.linalg.norm(e1)
    phi = np.arctan2(drawn @ np.cross(axis, e1), drawn @ e1)
    assert stats.chisquare(np.histogram(phi, np.linspace(-np.pi, np.pi, 13))[0]).pvalue > P_VALUE_THRESHOLD
    about_z = np.arctan2(drawn[:, 1], drawn[:, 0])  # the azimuth about another axis is not uniform
    assert stats.chisquare(np.histogram(about_z, np.linspace(-np.pi, np.pi, 13))[0]).pvalue < P_VALUE_THRESHOLD


# two sites, one bond b = S_0·S_1 and its four-spin term: E = -J b - K b² (with K < 0 the
# test rejects). For uniform spins b is uniform on [-1, 1], so the density of b is exp(-β E(b)).
TWO = LinearModel(Lattice.from_kind("chain", 2), couplings=np.array([0.8]), e0=0.0, bond_shells=1,
                  bond_couplings=np.array([-0.9]))
BETA_TWO = 2.0


def two_energy(c):
    return TWO.energy(np.array([[0.0, 0.0, 1.0], [np.sqrt(1 - c * c), 0.0, c]]))


def two_p_value(cos):
    """χ² of the chain thinned by 5 τ_int, in 8 bins of equal probability under exp(-β E(b))."""
    stride = max(1, int(np.ceil(5 * tau_int(cos))))
    kept = cos[::stride]
    grid = np.linspace(-1, 1, 4001)
    density = np.exp(-BETA_TWO * np.array([two_energy(c) for c in grid]))
    cumulative = integrate.cumulative_trapezoid(density, grid, initial=0)
    edges = np.interp(np.linspace(0, 1, 9), cumulative / cumulative[-1], grid)
    edges[0], edges[-1] = -1, 1
    mass = np.array([integrate.quad(lambda c: np.exp(-BETA_TWO * two_energy(c)), a, b)[0]
                     for a, b in zip(edges[:-1], edges[1:])])
    expected = mass / mass.sum() * len(kept)
    assert expected.min() > 20, "too few samples for a χ² test"
    return stats.chisquare(np.histogram(kept, bins=edges)[0], expected).pvalue


def two_chain(chain, n_blocks, block=4, seed=3):
    """b = S_0·S_1 after each block of heat-bath updates."""
    rng = np.random.default_rng(seed)
    spins = random_spins(2, rng)
    out = np.empty(n_blocks)
    for k in range(n_blocks):
        sites, noise, u = draw_moves(rng, 2, block, heat_bath=True)
        spins = chain(spins, sites, noise, np.log(u))
        out[k] = spins[0] @ spins[1]
    return out


def test_two_site_distribution_with_heat_bath_and_a_four_spin_term():
    def compiled(spins, sites, noise, log_u):
        return TWO.bond_form.chain(spins, BETA_TWO, sites, noise, log_u, 0.5, None, heat_bath=True)[0]

    cos = two_chain(compiled, 40000)
    assert two_p_value(cos) > P_VALUE_THRESHOLD
    # the four-spin term matters here: the linear part alone would be a different distribution
    assert np.mean(cos) < 0.5


def test_heat_bath_without_the_proposal_ratio_is_caught():
    """Negative control: the plain Metropolis test (no proposal ratio) on heat-bath proposals
    samples exp(-2βE_linear - βE_four-spin) instead, and the χ² test sees it; the correct test,
    in the same reference loop, passes."""
    def reference(proposal_ratio):
        return lambda spins, sites, noise, log_u: reference_chain(TWO, spins, BETA_TWO, sites, noise, log_u,
                                                                  proposal_ratio)[0]

    assert two_p_value(two_chain(reference(False), 3000)) < P_VALUE_THRESHOLD
    assert two_p_value(two_chain(reference(True), 3000)) > P_VALUE_THRESHOLD


def test_heat_bath_is_refused_where_there_is_no_local_field():
    with pytest.raises(ConfigError, match="move"):
        small_config(run={"sampler": "exact"}, slmc={"move": "heatbath", "local_updates": 0})
    with pytest.raises(ConfigError, match="move"):
        small_config(effective_model={"kind": "transformer"}, slmc={"move": "heatbath", "scheme": "plain"})
    small_config(effective_model={"kind": "transformer"}, slmc={"move": "heatbath"})  # nested: the inner model


def test_heat_bath_tunes_the_length_only():
    cfg = small_config(slmc={"move": "heatbath", "local_updates": "auto"}, run={"step_size": "auto"})
    tuner = build_tuner(cfg, cfg.n_sites)
    metropolis = build_tuner(cfg.replace("slmc", move="metropolis"), cfg.n_sites)
    assert len({d for _, d, _ in tuner.candidates}) == 1
    assert len(tuner.candidates) * 2 == len(metropolis.candidates)
    # a fixed length leaves nothing to tune (δ unused), where Metropolis still tunes δ
    fixed = cfg.replace("slmc", local_updates=8)
    assert build_tuner(fixed, cfg.n_sites) is None
    assert len(build_tuner(fixed.replace("slmc", move="metropolis"), cfg.n_sites).candidates) == 2
