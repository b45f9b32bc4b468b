"""Over-relaxation in the inner chain (samplers/local_chain.py): a reflection of S_i about
its local field H, accepted by Metropolis. Exact only if H does not depend on S_i (then the
reflection is an involution) and the move kinds are mixed at random. The compiled chain is
checked against a plain Python reference whose field comes from energy differences alone; the
reference is checked for exactness on a three-site ring against quadrature, with a field that
depends on S_i as the negative control. SLMC with reflections against the exact sampler:
tests/test_samplers.py."""

import numpy as np
import pytest
from scipy import integrate, stats

from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.moves import draw_moves, draw_reflections, perturb
from slmc_hpc.stats import tau_int

P_VALUE_THRESHOLD = 1e-3  # false-alarm rate of each goodness-of-fit test for a correct chain


def field_from_energies(model, spins, i):
    """H with E_eff = -S_i·H + (terms even in S_i) + const: H_k = [E(S_i = -e_k) - E(S_i = e_k)] / 2,
    so the reference needs nothing of the model but its energy (any vectors, not only unit ones)."""
    H = np.empty(3)
    for k in range(3):
        plus, minus = spins.copy(), spins.copy()
        plus[i] = np.eye(3)[k]
        minus[i] = -np.eye(3)[k]
        H[k] = 0.5 * (model.energy(minus) - model.energy(plus))
    return H


def reference_chain(model, spins, beta, sites, noise, log_u, step_size, reflect, field=field_from_energies):
    """Metropolis through model.delta_energy; reflections S_i -> 2 (S_i·H) H / |H|² - S_i."""
    spins = spins.copy()
    accepted = 0
    for i, g, lu, r in zip(sites, noise, log_u, reflect):
        if r:
            H = field(model, spins, i)
            new = 2 * (spins[i] @ H) / (H @ H) * H - spins[i]
            new /= np.linalg.norm(new)
        else:
            new = perturb(spins[i], g, step_size)
        if lu < -beta * model.delta_energy(spins, i, new):
            spins[i] = new
            accepted += 1
    return spins, accepted


def random_model(kind, L, shells, bond_shells, rng, scale=1.0):
    lat = Lattice.from_kind(kind, L)
    n_orbits = len(LinearModel.zeros(lat, shells, bond_shells).bond_couplings)
    return LinearModel(lat, couplings=scale * rng.normal(size=shells), e0=0.3, bond_shells=bond_shells,
                       bond_couplings=0.3 * scale * rng.normal(size=n_orbits))


@pytest.mark.parametrize("kind,L,shells,bond_shells", [("square", 4, 3, 0), ("square", 4, 3, 2),
                                                       ("chain", 6, 3, 3), ("cubic", 3, 2, 2)])
def test_compiled_reflections_make_the_reference_decisions(kind, L, shells, bond_shells, rng):
    model = random_model(kind, L, shells, bond_shells, rng)
    spins = random_spins(model.lattice.N, rng)
    n = 300
    sites, noise, u = draw_moves(rng, model.lattice.N, n)
    reflect = draw_reflections(rng, n, 0.5)
    beta = 2.0
    expected, accepted = reference_chain(model, spins, beta, sites, noise, np.log(u), 0.5, reflect)
    got, delta = model.bond_form.chain(spins, beta, sites, noise, np.log(u), 0.5, reflect)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert delta == pytest.approx(model.energy(got) - model.energy(spins), abs=1e-9)
    if bond_shells:  # the reflections' own four-spin terms change E: some are rejected
        assert accepted < n


def test_reflections_keep_the_linear_energy_and_are_all_accepted(rng):
    model = random_model("square", 4, 3, 0, rng)
    spins = random_spins(16, rng)
    sites, noise, u = draw_moves(rng, 16, 200)
    got, delta = model.bond_form.chain(spins, 5.0, sites, noise, np.log(u), 0.5, np.ones(200, dtype=bool))
    assert abs(delta) < 1e-10 and abs(model.energy(got) - model.energy(spins)) < 1e-10
    assert np.mean(np.abs(got - spins)) > 0.1  # and yet the spins moved


def test_reflecting_twice_gives_back_the_spin_with_four_spin_terms(rng):
    """The field leaves out the bonds at i, so a second reflection at the same site undoes the
    first (both forced by log u = -inf); a field with those bonds would not."""
    model = random_model("square", 4, 3, 2, rng)
    spins = random_spins(16, rng)
    sites = np.array([5, 5, 9, 9])
    got, delta = model.bond_form.chain(spins, 1.0, sites, np.zeros((4, 3)), np.full(4, -np.inf), 0.5,
                                       np.ones(4, dtype=bool))
    np.testing.assert_allclose(got, spins, atol=1e-12)
    assert abs(delta) < 1e-10
    once, _ = model.bond_form.chain(spins, 1.0, sites[:1], np.zeros((1, 3)), np.full(1, -np.inf), 0.5,
                                    np.ones(1, dtype=bool))
    assert np.abs(once[5] - spins[5]).max() > 1e-3  # the first reflection did move the spin


# three sites on a ring, E = -J (b01 + b12 + b20): integrating S_2 out leaves for c = S_0·S_1
# (uniform on [-1, 1] without the weight) the density exp(βJ c) sinh(βJ r) / (βJ r), r = |S_0 + S_1|
RING = Lattice.from_kind("chain", 3)
J_RING, BETA_RING = 1.0, 0.8


def ring_density(c):
    x = BETA_RING * J_RING * np.sqrt(2 + 2 * c)
    return np.exp(BETA_RING * J_RING * c) * (np.sinh(x) / x if x > 1e-12 else 1.0)


def ring_p_value(cos):
    stride = max(1, int(np.ceil(5 * tau_int(cos))))
    kept = cos[::stride]
    edges = np.linspace(-1, 1, 9)
    mass = np.array([integrate.quad(ring_density, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    expected = mass / mass.sum() * len(kept)
    assert expected.min() > 20, "too few samples for a χ² test"
    return stats.chisquare(np.histogram(kept, bins=edges)[0], expected).pvalue


def ring_chain(chain, n_blocks, block=6, seed=3):
    """c = S_0·S_1 after each block of local updates (half of them reflections)."""
    rng = np.random.default_rng(seed)
    model = LinearModel(RING, couplings=np.array([J_RING]))
    spins = random_spins(3, rng)
    out = np.empty(n_blocks)
    for k in range(n_blocks):
        sites, noise, u = draw_moves(rng, 3, block)
        spins = chain(model, spins, sites, noise, np.log(u), draw_reflections(rng, block, 0.5))
        out[k] = spins[0] @ spins[1]
    return out


def test_ring_distribution_with_reflections():
    assert len(LinearModel.zeros(RING, 1).couplings) == 1 and len(RING.bonds) == 3  # one shell, three bonds

    def compiled(model, spins, sites, noise, log_u, reflect):
        return model.bond_form.chain(spins, BETA_RING, sites, noise, log_u, 1.0, reflect)[0]

    assert ring_p_value(ring_chain(compiled, 40000)) > P_VALUE_THRESHOLD


def test_reflection_about_a_field_that_depends_on_the_spin_is_caught():
    """Negative control: H + S_i (the spin's own direction added) is no involution; accepted by
    the same Metropolis test it samples the wrong distribution, and the χ² test sees it. The
    correct field, in the same reference loop, passes."""
    def wrong(model, spins, i):
        return field_from_energies(model, spins, i) + spins[i]

    def reference(field):
        return lambda model, spins, sites, noise, log_u, reflect: reference_chain(
            model, spins, BETA_RING, sites, noise, log_u, 1.0, reflect, field)[0]

    assert ring_p_value(ring_chain(reference(wrong), 6000)) < P_VALUE_THRESHOLD
    assert ring_p_value(ring_chain(reference(field_from_energies), 6000)) > P_VALUE_THRESHOLD


def test_move_kinds_are_independent_draws():
    """The kinds must be a random mixture (a schedule would make the inner chain irreversible):
    χ² on consecutive (kind, next kind) pairs; an alternating schedule fails it completely."""
    kinds = draw_reflections(np.random.default_rng(5), 40000, 0.3).astype(int)
    pairs = np.bincount(2 * kinds[:-1] + kinds[1:], minlength=4)
    p = np.array([0.7 * 0.7, 0.7 * 0.3, 0.3 * 0.7, 0.3 * 0.3]) * (len(kinds) - 1)
    assert stats.chisquare(pairs, p).pvalue > P_VALUE_THRESHOLD
    schedule = np.arange(40000) % 2
    assert stats.chisquare(np.bincount(2 * schedule[:-1] + schedule[1:], minlength=4)).pvalue < 1e-10
