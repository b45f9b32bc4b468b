"""The compiled local chain (samplers/local_chain.py) makes exactly the decisions of the plain
Metropolis loop over the model's delta_energy, on the same random numbers, for the linear
model with and without four-spin bond-pair terms, also on lattices where a bond is its own
translate (L = 2, distance L/2). Its exactness as part of SLMC: tests/test_samplers.py."""

import numpy as np
import pytest

from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.local_chain import BondForm
from slmc_hpc.samplers.moves import draw_moves, perturb


def random_model(kind, L, shells, bond_shells, rng):
    lat = Lattice.from_kind(kind, L)
    model = LinearModel.zeros(lat, shells, bond_shells)
    return LinearModel(lat, couplings=rng.normal(size=shells), e0=0.3, bond_shells=bond_shells,
                       bond_couplings=0.3 * rng.normal(size=len(model.bond_couplings)))


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


MODELS = [("square", 6, 6, 0), ("square", 4, 3, 2), ("square", 5, 2, 3), ("square", 2, 2, 2),
          ("chain", 6, 3, 3), ("cubic", 3, 2, 2), ("cubic", 2, 3, 1)]


@pytest.mark.parametrize("kind,L,shells,bond_shells", MODELS)
def test_compiled_chain_makes_the_same_decisions_as_the_generic_loop(kind, L, shells, bond_shells, rng):
    model = random_model(kind, L, shells, bond_shells, rng)
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


@pytest.mark.parametrize("kind,L,shells,bond_shells", MODELS)
def test_bond_form_energy_equals_the_model_energy(kind, L, shells, bond_shells, rng):
    model = random_model(kind, L, shells, bond_shells, rng)
    for spins in random_spins(model.lattice.N, rng, size=(3,)):
        assert model.bond_form.energy(spins, model.e0) == pytest.approx(model.energy(spins), abs=1e-12)


def test_wrong_bond_matrix_diagonal_is_caught(rng):
    """Negative control: the same form with G's diagonal not doubled (K b_a² counted as
    (1/2) K b_a²) makes other decisions, so the comparison above can fail."""
    model = random_model("square", 4, 2, 2, rng)
    form = model.bond_form
    halved = form.G.copy()
    halved[np.diag_indices_from(halved)] /= 2
    wrong = BondForm(form.bonds, form.site_bonds, form.partner, form.w, halved)
    spins = random_spins(model.lattice.N, rng)
    sites, noise, u = draw_moves(rng, model.lattice.N, 400)
    args = (spins, 2.0, sites, noise, np.log(u), 0.5)
    assert not np.allclose(wrong.chain(*args)[0], form.chain(*args)[0], atol=1e-6)


def test_bond_form_rejects_irregular_bond_sets():
    with pytest.raises(ValueError, match="same number of bonds"):
        BondForm.from_bonds(3, np.array([[0, 1]]), np.zeros(1), np.zeros((0, 0)))
