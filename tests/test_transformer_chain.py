"""The Transformer's compiled inner chain (samplers/transformer_chain.py): its incremental ΔE
equals the difference of two full NumPy evaluations of the model (TransformerModel.energy)
to 1e-10 along whole chains, accepted and rejected proposals mixed, for windowed, global,
gated, normalised and multi-layer networks, with and without bond-pair terms; so it makes
the decisions of the generic loop over delta_energy on the same random numbers. Its
exactness inside SLMC (two-site χ², 4×4 against the exact sampler) is in
tests/test_samplers.py, which runs the plain scheme through this chain."""

import numpy as np
import pytest
import torch

from slmc_hpc.lattice import Lattice
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.moves import draw_moves, perturb
from slmc_hpc.samplers.slmc import effective_chain
from slmc_hpc.samplers.transformer_chain import TransformerForm

NETS = [  # (lattice kind, L, network keywords)
    ("square", 6, dict(layers=1, heads=2, block_shells=1, attention_shells=2, shells=3)),
    ("square", 6, dict(layers=2, heads=2, block_shells=2, attention_shells=None, shells=4, gate_channels=3,
                       bond_shells=2)),
    ("square", 8, dict(layers=3, heads=1, block_shells=1, attention_shells=1, shells=8, gate_channels=2,
                       normalize=True, bond_shells=2)),
    ("square", 7, dict(layers=2, heads=1, block_shells=0, attention_shells=1, shells=2, bond_shells=1)),
    ("chain", 9, dict(layers=2, heads=2, block_shells=1, attention_shells=2, shells=3, gate_channels=1,
                      bond_shells=2)),
    ("cubic", 3, dict(layers=1, heads=1, block_shells=1, attention_shells=1, shells=2, gate_channels=2,
                      bond_shells=1)),
    ("square", 5, dict(layers=0, heads=1, block_shells=1, attention_shells=1, shells=3, bond_shells=2)),  # head alone
    ("square", 6, dict(layers=1, heads=1, block_shells=1, attention_shells=1, shells=3, bond_shells=3,
                       bond_range=1.5)),  # bond pairs of finite range
]


def random_model(kind, L, kw, beta=1.7, scale=0.3, seed=5):
    """A frozen network with every parameter random (value weights, gates and head too), at β."""
    net = EquivariantTransformer(Lattice.from_kind(kind, L), beta_ref=1.0, seed=3, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return TransformerModel.frozen(net, beta)


def replay(model, spins, beta, sites, noise, log_u, step_size, record):
    """The generic Metropolis loop with full evaluations, deciding on the chain's recorded
    ΔE (so one wrong ΔE does not derail the comparison of the rest); returns the largest
    difference |ΔE_full - ΔE_recorded|, the end and the number accepted."""
    spins = spins.copy()
    worst, accepted = 0.0, 0
    for m, (i, g, lu) in enumerate(zip(sites, noise, log_u)):
        new = perturb(spins[i], g, step_size)
        worst = max(worst, abs(model.delta_energy(spins, i, new) - record[m]))
        if lu < -beta * record[m]:
            spins[i] = new
            accepted += 1
    return worst, spins, accepted


@pytest.mark.parametrize("kind,L,kw", NETS)
def test_incremental_delta_energy_equals_full_evaluations(kind, L, kw, rng):
    model = random_model(kind, L, kw)
    form = model.local_form
    spins = random_spins(model.lattice.N, rng)
    np.testing.assert_allclose(form.effective_spins(spins), model.effective_spins(spins), rtol=0, atol=1e-12)
    n, beta = 300, 2.0
    sites, noise, u = draw_moves(rng, model.lattice.N, n)
    record = np.zeros(n)
    end, total = form.chain(spins, beta, sites, noise, np.log(u), 0.5, record=record)
    worst, expected, accepted = replay(model, spins, beta, sites, noise, np.log(u), 0.5, record)
    assert 0.1 * n < accepted < 0.9 * n  # both outcomes occur along the chain
    assert worst < 1e-10
    np.testing.assert_allclose(end, expected, rtol=0, atol=1e-12)
    assert total == pytest.approx(model.energy(end) - model.energy(spins), abs=1e-10)


def test_slmc_inner_chain_runs_the_compiled_form_on_the_same_random_numbers(rng):
    """effective_chain dispatches a Transformer to its local form; the decisions are those of
    the generic loop (delta_energy) on the same draws."""
    model = random_model(*NETS[1])
    spins = random_spins(model.lattice.N, rng)
    end, total = effective_chain(model, spins, 2.0, 200, 0.5, np.random.default_rng(4))
    sites, noise, u = draw_moves(np.random.default_rng(4), model.lattice.N, 200)
    record = np.zeros(200)
    model.local_form.chain(spins, 2.0, sites, noise, np.log(u), 0.5, record=record)
    _, expected, _ = replay(model, spins, 2.0, sites, noise, np.log(u), 0.5, record)
    np.testing.assert_allclose(end, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="need a model with a local field"):
        effective_chain(model, spins, 2.0, 10, 0.5, rng, overrelax=0.5)
    with pytest.raises(ValueError, match="need a model with a local field"):
        effective_chain(model, spins, 2.0, 10, 0.5, rng, move="heatbath")


def test_a_stale_attention_output_is_caught(monkeypatch, rng):
    """Negative control for the incremental bookkeeping: if a changed key or value did not
    reach the sites that attend to it (the attention outputs recomputed only where Q, K or V
    changed), ΔE differs from the full evaluations. Runs the chain's Python source, with
    that one dilation replaced."""
    from slmc_hpc.samplers import transformer_chain

    model = random_model(*NETS[0])
    f = model.local_form
    right = transformer_chain._dilate

    def no_window_dilation(src, n_src, nbrs, mark, stamp, out):
        if nbrs is f.window:
            out[:n_src] = src[:n_src]
            return n_src
        return right(src, n_src, nbrs, mark, stamp, out)

    monkeypatch.setattr(transformer_chain, "_dilate", no_window_dilation)
    monkeypatch.setattr(transformer_chain, "_chain", transformer_chain._chain.py_func)
    spins = random_spins(model.lattice.N, rng)
    sites, noise, u = draw_moves(rng, model.lattice.N, 60)
    record = np.zeros(60)
    f.chain(spins, 2.0, sites, noise, np.log(u), 0.5, record=record)
    assert replay(model, spins, 2.0, sites, noise, np.log(u), 0.5, record)[0] > 1e-6
    monkeypatch.setattr(transformer_chain, "_dilate", right)  # the same Python source, right: agrees
    f.chain(spins, 2.0, sites, noise, np.log(u), 0.5, record=record)
    assert replay(model, spins, 2.0, sites, noise, np.log(u), 0.5, record)[0] < 1e-10


def test_a_bond_matrix_with_its_diagonal_not_doubled_is_caught(rng):
    """Negative control for the head: K b_a² counted as (1/2) K b_a²."""
    model = random_model(*NETS[2])
    f = model.local_form
    g = f.G.copy()
    g[np.diag_indices_from(g)] /= 2
    wrong = TransformerForm(f.block_sites, f.block_shell, f.window, f.weights, f.heads, f.gate_a, f.gate_b,
                            f.normalize, f.pair, f.bond_sites, f.site_bonds, g)
    spins = random_spins(model.lattice.N, rng)
    sites, noise, u = draw_moves(rng, model.lattice.N, 100)
    record = np.zeros(100)
    wrong.chain(spins, 2.0, sites, noise, np.log(u), 0.5, record=record)
    assert replay(model, spins, 2.0, sites, noise, np.log(u), 0.5, record)[0] > 1e-6


def test_plain_scheme_with_global_attention_warns(tmp_path):
    """A whole run with the Transformer in the inner chain: global attention gets a warning
    (its updates cost O(N)), a finite window none."""
    from configs import small_config
    from slmc_hpc.driver import run

    for shells, warned in (("global", True), (1, False)):
        cfg = small_config(effective_model={"kind": "transformer", "layers": 1, "heads": 1, "block_shells": 1,
                                            "attention_shells": shells},
                           slmc={"scheme": "plain", "local_updates": 4},
                           training={"every": 4, "epochs": 1}, run={"thermalize": 4, "measure": 4, "progress_every": None})
        lines = []
        run(cfg, output=tmp_path / f"{shells}.h5", log=lines.append)
        assert any("attention_shells = \"global\" recomputes" in line for line in lines) == warned
