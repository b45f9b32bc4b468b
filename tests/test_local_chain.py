"""The compiled local chain (samplers/local_chain.py) makes exactly the decisions of the plain
Metropolis loop over the model's delta_energy, on the same random numbers, for the linear
model with and without four-spin bond-pair terms, also on lattices where a bond is its own
translate (L = 2, distance L/2). Its exactness as part of SLMC: tests/test_samplers.py."""

import dataclasses

import numpy as np
import pytest

from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.local_chain import BondForm
from slmc_hpc.samplers.moves import draw_moves, perturb


def random_model(kind, L, shells, bond_shells, rng, bond_range=0.0):
    lat = Lattice.from_kind(kind, L)
    model = LinearModel.zeros(lat, shells, bond_shells, bond_range)
    return model.with_parameters(np.r_[0.3, rng.normal(size=shells), 0.3 * rng.normal(size=len(model.bond_couplings))])


def reference_chain(model, spins, beta, sites, noise, log_u, step_size):
    """The generic loop of samplers.slmc.effective_chain, through delta_energy."""
    spins = spins.copy()
    accepted = 0
    for i, g, lu in zip(sites, noise, log_u):
        new = perturb(spins[i], g, step_size)
        if lu < -beta * model.delta_energy(spins, i, new):
            spins[i] = new
            accepted += 1
    return spins, accepted


# (kind, L, shells, bond_shells, bond_range): the last three with a finite bond-pair range, so that
# a site's update reaches only some of G's bonds (at L = 8 square, L = 4 cubic); at L = 4 a shell-3
# bond (2, 0) has two midpoints
MODELS = [("square", 6, 6, 0, 0.0), ("square", 4, 3, 2, 0.0), ("square", 5, 2, 3, 0.0), ("square", 2, 2, 2, 0.0),
          ("chain", 6, 3, 3, 0.0), ("cubic", 3, 2, 2, 0.0), ("cubic", 2, 3, 1, 0.0),
          ("square", 8, 3, 4, 1.5), ("cubic", 4, 2, 2, 1.0), ("square", 4, 3, 3, 1.2)]


@pytest.mark.parametrize("kind,L,shells,bond_shells,bond_range", MODELS)
def test_compiled_chain_makes_the_same_decisions_as_the_generic_loop(kind, L, shells, bond_shells, bond_range, rng):
    model = random_model(kind, L, shells, bond_shells, rng, bond_range)
    spins = random_spins(model.lattice.N, rng)
    n = 400
    sites, noise, u = draw_moves(rng, model.lattice.N, n)
    beta = 2.0
    expected, accepted = reference_chain(model, spins, beta, sites, noise, np.log(u), 0.5)
    assert 0.1 * n < accepted < 0.9 * n  # both outcomes occur, so a wrong ΔE would show
    got, delta = model.bond_form.chain(spins, beta, sites, noise, np.log(u), 0.5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the reported energy change is the end's energy minus the start's (kept-up bond sums)
    assert delta == pytest.approx(model.energy(got) - model.energy(spins), abs=1e-10)


@pytest.mark.parametrize("kind,L,shells,bond_shells,bond_range", MODELS)
def test_bond_form_energy_equals_the_model_energy(kind, L, shells, bond_shells, bond_range, rng):
    model = random_model(kind, L, shells, bond_shells, rng, bond_range)
    for spins in random_spins(model.lattice.N, rng, size=(3,)):
        assert model.bond_form.energy(spins, model.e0) == pytest.approx(model.energy(spins), abs=1e-12)


@pytest.mark.parametrize("kind,L,shells,bond_shells,bond_range", [MODELS[1], MODELS[4], MODELS[7]])
def test_a_chain_goes_on_from_the_fields_another_left(kind, L, shells, bond_shells, bond_range, rng):
    """Two chains in a row, the second from the first's end with the (b, h) that the first
    left (a step's middle tests, samplers/nested.py): the same decisions and energy change as a
    second chain that sets them up anew, and the fields left are those of its end. Negative
    control: the fields of another configuration make other decisions."""
    model = random_model(kind, L, shells, bond_shells, rng, bond_range)
    form, n = model.bond_form, model.lattice.N
    spins = random_spins(n, rng)
    first, second = (draw_moves(rng, n, 400) for _ in range(2))
    fields = form.fields(spins)
    middle, _ = form.chain(spins, 2.0, first[0], first[1], np.log(first[2]), 0.5, fields=fields)
    args = (middle, 2.0, second[0], second[1], np.log(second[2]), 0.5)
    end, delta = form.chain(*args, fields=fields)
    fresh_end, fresh_delta = form.chain(*args)
    np.testing.assert_allclose(end, fresh_end, rtol=0, atol=1e-12)
    assert delta == pytest.approx(fresh_delta, abs=1e-10)
    for kept, anew in zip(fields, form.fields(end)):
        np.testing.assert_allclose(kept, anew, rtol=0, atol=1e-10)
    stale, _ = form.chain(*args, fields=form.fields(spins))
    assert not np.allclose(stale, fresh_end, atol=1e-6)


def test_wrong_bond_matrix_diagonal_is_caught(rng):
    """Negative control: the same form with G's diagonal not doubled (K b_a² counted as
    (1/2) K b_a²) makes other decisions, so the comparison above can fail."""
    model = random_model("square", 4, 2, 2, rng)
    form = model.bond_form
    halved = form.G.copy()
    halved[np.diag_indices_from(halved)] /= 2
    wrong = BondForm.from_bonds(model.lattice.N, form.bonds, form.w, halved, model.lattice.translations())
    spins = random_spins(model.lattice.N, rng)
    sites, noise, u = draw_moves(rng, model.lattice.N, 400)
    args = (spins, 2.0, sites, noise, np.log(u), 0.5)
    assert not np.allclose(wrong.chain(*args)[0], form.chain(*args)[0], atol=1e-6)


def test_bond_form_rejects_irregular_bond_sets():
    with pytest.raises(ValueError, match="same number of bonds"):
        BondForm.from_bonds(3, np.array([[0, 1]]), np.zeros(1), np.zeros((0, 0)))


def test_bond_form_rejects_a_bond_matrix_that_is_not_translation_invariant(rng):
    """At a bond of site 0, and (range 1.5 at L = 8) at a pair of bonds that no site's reach
    covers: both would be silently wrong fields."""
    form = random_model("square", 4, 2, 2, rng).bond_form
    G = form.G.copy()
    G[0, 1] = G[1, 0] = G[0, 1] + 1.0
    with pytest.raises(ValueError, match="not invariant under the translations"):
        BondForm.from_bonds(16, form.bonds, form.w, G, Lattice.from_kind("square", 4).translations())
    ranged = random_model("square", 8, 3, 4, rng, 1.5)
    form = ranged.bond_form
    far = np.flatnonzero(form.G[0] == 0)[-1]
    G = form.G.copy()
    G[0, far] = G[far, 0] = 1.0
    with pytest.raises(ValueError, match="not invariant under the translations"):
        BondForm.from_bonds(64, form.bonds, form.w, G, ranged.lattice.translations())


@pytest.mark.parametrize("bond_range", [1.5, 0.0])
def test_bond_field_of_the_coupling_table_is_the_bond_matrix_product(bond_range, rng):
    """h = G b from the translated coupling table equals the dense product; with a finite range
    (4 shells within 1.5 spacings at L = 8) a site reaches only a few of G's bonds. Negative
    control: one coupling zeroed makes other decisions."""
    ranged = random_model("square", 8, 3, 4, rng, bond_range)
    form = ranged.bond_form
    b = form.bond_values(random_spins(ranged.lattice.N, rng))
    np.testing.assert_allclose(form.bond_field(b), form.G @ b[:len(form.G)], rtol=0, atol=1e-12)
    assert form.reach.shape[1] < len(form.G) / 2 if bond_range else form.reach.shape[1] == len(form.G)
    coupling = form.coupling.copy()
    coupling[np.flatnonzero(coupling[:, 0])[-1], 0] = 0.0
    broken = dataclasses.replace(form, coupling=coupling)
    sites, noise, u = draw_moves(rng, ranged.lattice.N, 2000)
    args = (random_spins(ranged.lattice.N, rng), 2.0, sites, noise, np.log(u), 0.5)
    assert not np.allclose(broken.chain(*args)[0], form.chain(*args)[0], atol=1e-6)
