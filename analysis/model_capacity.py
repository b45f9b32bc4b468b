#!/usr/bin/env python3
"""How well can a model class fit the SLMC acceptance's log-ratio? Offline, on one fixed data set.

Runs linear SLMC on a config's first temperature (thermalization with its training rounds),
then records ``--pairs`` (current, proposal, F_β) pairs of the settled chain. The first 80%
fit each model by least squares on F differences (the pair loss); the last 20% (a contiguous
block, so no held-out configuration served as a training reference) are held out. Printed per
model: fitted parameters (E_0 aside for the feature models), held-out per-site MSE, σ = β·std(ΔF - ΔE_eff) (the spread of the exact
test's log-ratio) and the proxy acceptance mean(min(1, exp(-β (ΔF - ΔE_eff)))) on the
held-out pairs (exact for the linear model that made them, a proxy for the others). For a
Gaussian log-ratio, acceptance = erfc(σ / 2√2): halving a rejection of 0.39 needs σ ≈ 0.5.

Models: the linear model with the config's shells and with every shell; with powers x², x³ of
each bond's S_i·S_j per shell; plus nearest-neighbour plaquette terms (4-spin products and the
squared scalar chirality); the linear model plus bond-pair terms (one coupling per symmetry
class of pairs of bonds within shells 1..k ≤ 4, any separation: the Transformer's head with
``bond_shells = k`` on the raw spins, 0 layers), and with the config's bond_shells within its
bond_range where that is finite (the linear default's model class), and the same classes on
the double-exchange hopping factors √((1 + S_i·S_j)/2) instead of S_i·S_j, alone and beside
them; the downfolded model (models/downfolded.py: F_low alone, and with the config's class
fitted to F - F_low); the config's class plus winding loops (square lattices: per row and
column, W = Π⟨a_i|a_i+1⟩ of the lower band's spinors around the torus, which sets the twist the
electrons see and is no sum of local terms; features Σ Re W, Σ Re W², Σ |W|²); and the
config's Transformer trained for ``--epochs`` passes, at each ``--layers`` and ``--widths``
(heads:gated channels), followed, for three or more sizes that kept trained layers, by power
laws of the held-out MSE and σ² against the fitted parameter count. ``--fit-sizes n ...``
refits the config's bond-pair model on only the last n fit pairs (how much data a round needs).
``--online STEPS`` then runs each Transformer, frozen, as the middle model of a nested chain
(the acceptance that the exact test then reaches: analysis/DEPTH_STUDY.md).

    OMP_NUM_THREADS=1 python analysis/model_capacity.py analysis/reference.toml --pairs 10000
    OMP_NUM_THREADS=1 python analysis/model_capacity.py analysis/capacity_l8.toml --layers 1 2 3 \\
        --widths 2:4 4:8 --epochs 10 --batch-size 64 --learning-rate 0.0003 --no-least-squares

(Wide or deep layers train only at a small learning rate: analysis/DEPTH_STUDY.md.)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from slmc_hpc.assemble import build_linear, build_network, build_physics, build_slot, initial_path
from slmc_hpc.config import load
from slmc_hpc.models import LinearModel
from slmc_hpc.models.bond_pairs import bond_pair_sums, bond_pair_tables, bond_values
from slmc_hpc.models.downfolded import DownfoldedModel, site_spinors
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.samplers.nested import NestedSLMCSampler
from slmc_hpc.samplers.state import AcceptanceCounts
from slmc_hpc.training.least_squares import LinearTrainer
from slmc_hpc.training.data import Samples
from slmc_hpc.training.learner import solo_step
from slmc_hpc.training.network import TorchTrainer

from depth_study import power_law  # noqa: E402  (a sibling script, not a package)


def collect_pairs(cfg, n_pairs: int, seed: int):
    """Linear SLMC on the first temperature: thermalize (with training), then n_pairs steps."""
    cfg = cfg.replace("effective_model", kind="linear").replace("temperatures", values=[cfg.temperatures.values[0]])
    beta = 1.0 / cfg.temperatures.values[0]
    rep, learner = build_slot(cfg, build_physics(cfg), beta, np.random.default_rng(seed))
    for _ in range(cfg.run.thermalize):
        solo_step(rep, learner)
    cols = {k: [] for k in ("X", "Y", "XR", "YR")}
    for _ in range(n_pairs):
        ref, f_ref = rep.state.spins, rep.sampler.free_energy(rep.state)
        info = rep.step()
        for k, v in zip(cols, (info.proposal, info.proposal_free_energy, ref, f_ref)):
            cols[k].append(v)
    return rep.physics.lattice, beta, {k: np.array(v) for k, v in cols.items()}


def bond_features(lattice, spins, n_shells: int, powers, transform=None) -> np.ndarray:
    """Σ_<ij>_n f(S_i·S_j)^p for each shell n < n_shells and power p, (B, n_shells·len(powers));
    f = ``transform``, or the identity."""
    cols = []
    for p in powers:
        for nbrs in lattice.shell_neighbours(n_shells):
            x = np.einsum("bik,bizk->biz", spins, spins[:, nbrs, :])
            cols.append(0.5 * ((x if transform is None else transform(x)) ** p).sum(axis=(1, 2)))
    return np.stack(cols, axis=1)


def plaquette_features(lattice, spins) -> np.ndarray:
    """Nearest-neighbour plaquettes (a, b, c, d counter-clockwise): Σ (ab·cd + bc·da),
    Σ ac·bd, Σ of products of adjacent bonds, and Σ χ² (χ over the two triangles abc, acd)."""
    c = lattice.coords
    a = np.arange(lattice.N)
    b, cc, d = (lattice.index((c + shift) % lattice.L) for shift in ([1, 0], [1, 1], [0, 1]))
    dot = lambda p, q: np.einsum("bik,bik->bi", spins[:, p], spins[:, q])
    ab, bc, cd, da, ac, bd = dot(a, b), dot(b, cc), dot(cc, d), dot(d, a), dot(a, cc), dot(b, d)
    chi = (np.einsum("bik,bik->bi", spins[:, a], np.cross(spins[:, b], spins[:, cc]))
           + np.einsum("bik,bik->bi", spins[:, a], np.cross(spins[:, cc], spins[:, d])))
    return np.stack([(ab * cd + bc * da).sum(1), (ac * bd).sum(1),
                     (ab * bc + bc * cd + cd * da + da * ab).sum(1), (chi ** 2).sum(1)], axis=1)


def bond_pair_features(lattice, spins, bond_shells: int, bond_range: float = 0.0) -> np.ndarray:
    """The head features φ_n (all shells) and ψ_o (bond-pair classes within ``bond_range``,
    0 = any) of a 0-layer network."""
    net = EquivariantTransformer(lattice, layers=0, heads=1, block_shells=0, attention_shells=None,
                                 shells=len(lattice.shell_distances), bond_shells=bond_shells, bond_range=bond_range)
    with torch.no_grad():
        return -net.head_features(torch.as_tensor(spins), 1.0).numpy()[:, 2:2 + net.couplings.shape[1]]


def hopping(x):
    """The double-exchange hopping factor of a bond, |cos(θ/2)| = √((1 + S_i·S_j) / 2): the
    amplitude of an electron aligned with S_i hopping onto a site aligned with S_j (J ≫ t)."""
    return np.sqrt(np.clip(0.5 * (1.0 + x), 0.0, None))


def hopping_features(lattice, spins, bond_shells: int, bond_range: float) -> np.ndarray:
    """Per shell Σ_<ij>_n √((1 + S_i·S_j)/2) over all shells, and the bond-pair class sums ψ_o
    of the hopping factors (instead of the b_a) within shells 1..bond_shells and bond_range."""
    tables = bond_pair_tables(lattice, bond_shells, bond_range)
    tau = hopping(bond_values(spins, tables.bonds))
    as_t = lambda a: torch.as_tensor(a)
    pairs = bond_pair_sums(as_t(tau), as_t(tables.slots), as_t(tables.orbit), as_t(tables.weight),
                           tables.n_orbits, tables.shape).numpy()
    return np.hstack([bond_features(lattice, spins, len(lattice.shell_distances), (1,), hopping), pairs])


def winding_loop_features(lattice, spins, J: float) -> np.ndarray:
    """Σ Re W, Σ Re W² and Σ |W|² over the 2L straight loops around an L x L torus, W = Π_i
    ⟨a_i|a_i+1⟩ along the loop (a_i the site's lower-band spinor: gauge invariant)."""
    L = lattice.L
    rows = []
    for s in spins:
        a = site_spinors(s, J)[0].reshape(L, L, 2)  # C order: a[x, y]
        w = np.concatenate([np.prod(np.einsum("xyk,xyk->xy", a.conj(), np.roll(a, -1, axis=ax)), axis=ax)
                            for ax in (0, 1)])
        rows.append([w.real.sum(), (w * w).real.sum(), (np.abs(w) ** 2).sum()])
    return np.array(rows)


def report(name, n_params, residual, n_sites, beta):
    mse = np.mean((residual / n_sites) ** 2)
    acc = np.mean(np.minimum(1.0, np.exp(-beta * residual)))
    print(f"{name:<44} {n_params:>6d} {mse:>10.3e} {beta * residual.std():>7.3f} {acc:>7.3f}", flush=True)
    return mse, beta * residual.std()


def part(d, rows, beta) -> Samples:
    """Pairs ``rows`` of the data as training samples at one β."""
    return Samples(d["X"][rows], d["Y"][rows], d["XR"][rows], d["YR"][rows], np.full(len(d["Y"][rows]), beta))


def inner_model(cfg, lattice, beta, d, fit):
    """Nested SLMC's inner model (the config's inner class) fitted by least squares to the fit pairs."""
    trainer = LinearTrainer(build_linear(cfg, lattice, inner=True), "pair")
    trainer.train(part(d, fit, beta), part(d, slice(0, 0), beta), beta)
    return trainer.model


def online_chain(cfg, inner, model, beta, start, steps: int, seed: int) -> str:
    """The nested chain that ``model`` (frozen) steers, from ``start``: ``steps`` steps of the
    config's path on the inner model ([slmc] local_updates, middle_steps, overrelax, move and
    [run] step_size; where "auto", what a run starts with: N updates, δ = 0.5, four middle
    tests), its generator seeded with ``seed`` for every model. Returns, as a line, the exact
    test's acceptance (of the steps whose middle tests passed), the middle test's, the
    fraction of steps that moved, and σ over the exact tests (the spread of their log-ratio,
    on this chain's own proposals, where the offline σ is on the linear chain's)."""
    slmc = cfg.slmc
    if slmc.scheme != "nested":
        raise SystemExit(f"--online runs the nested scheme; the config has [slmc] scheme = {slmc.scheme!r}")
    sampler = NestedSLMCSampler(build_physics(cfg), inner, model, beta, *initial_path(cfg, len(start)),
                                slmc.overrelax, slmc.move)
    rng, state = np.random.default_rng(seed), sampler.init_state(np.array(start))
    counts, moved, ratios = AcceptanceCounts(), 0, []
    for _ in range(steps):
        state, info = sampler.step(state, rng)
        counts.add(info)
        moved += int(info.accepted)
        if info.n_tests:
            ratios.append(info.log_ratio)
    return (f"online, {steps} steps: exact test {counts.acceptance:.4f} of {counts.tests}, middle "
            f"{counts.middle_acceptance:.4f}, moved {moved / steps:.4f}, sigma (exact tests) "
            f"{np.std(ratios) if ratios else float('nan'):.3f}")


def transformer_row(cfg, lattice, beta, d, fit, held, args, inner=None) -> tuple[int, float, float] | None:
    """Train the config's Transformer on the fit pairs and report it on the held-out ones.
    With ``inner`` (--online), then the chain it steers (online_chain). Returns (fitted
    parameters, held-out per-site MSE, σ) where the round kept trained layers, else None.
    Fitted: all but the head's β-slopes (E'_0, J'_n, K'_o), which pairs at one temperature
    leave at zero."""
    em = cfg.effective_model
    target = d["Y"] - d["YR"]
    net = build_network(cfg, lattice, beta)
    tr = cfg.training
    # one round of all the passes: a round keeps the trained layers only where they fit the
    # training data better than identity layers (TorchTrainer._keep_best_layers), so rounds of
    # one pass each would restart from the identity whenever one pass did not yet pay
    trainer = TorchTrainer(net, epochs=args.epochs, learning_rate=tr.learning_rate, weight_decay=tr.weight_decay,
                           batch_size=args.batch_size, seed=args.seed, loss="pair")
    t0 = time.perf_counter()
    trainer.train(part(d, fit, beta), part(d, held, beta))
    model = TransformerModel.frozen(net, beta)
    residual = target[held] - (model.energy(d["X"][held]) - model.energy(d["XR"][held]))
    name = (f"Transformer {em.layers} layers x {em.heads} heads x {em.gate_channels} gates, {args.epochs} "
            f"passes ({trainer.kept_layers} layers kept, {time.perf_counter() - t0:.0f} s)")
    result = report(name, net.n_parameters(), residual, lattice.N, beta)
    if inner is not None:  # the chain it steers, from the last held-out pair's current configuration
        print("    " + online_chain(cfg, inner, model, beta, d["XR"][-1], args.online, args.seed), flush=True)
    if trainer.kept_layers != "trained":
        return None
    return (net.n_parameters() - 1 - net.couplings.shape[1],) + result


def power_law_line(rows) -> str:
    """Held-out MSE and σ² against the fitted parameters of the trained Transformers: the exponent
    b of y ∝ x^b (least squares in log-log) and the largest factor by which a row departs from
    the fitted line (1.0: on it), over the range of parameter counts."""
    x, mse, sigma = (np.array(c, float) for c in zip(*rows))
    parts = [f"power laws over {len(rows)} trained Transformers, {x.min():.0f}-{x.max():.0f} fitted parameters "
             f"({x.max() / x.min():.1f}x):"]
    for name, y in (("held-out MSE", mse), ("sigma^2", sigma ** 2)):
        a, b = power_law(x, y)
        off = np.exp(np.abs(np.log(y / (a * x ** b))).max())
        parts.append(f"{name} ~ params^{b:.3f} (rows within a factor {off:.3f} of the line)")
    return " ".join(parts)


def pairs_made_by(cfg, n_pairs: int, seed: int) -> np.ndarray:
    """What makes the pairs, as stored beside them (``made_by``): a file made with other values
    is refused, not reused. Entries PHYSICS are the lattice, model and temperature."""
    return np.array([n_pairs, seed, cfg.lattice.L, cfg.model.t, cfg.model.J, cfg.model.mu,
                     cfg.temperatures.values[0], cfg.run.thermalize, cfg.slmc.local_updates, cfg.run.step_size])


PHYSICS = slice(2, 7)  # L, t, J, mu, T in pairs_made_by


def steps(text: str) -> int:
    """A positive number of steps, for --online."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of steps")
    return int(text)


def width(text: str) -> tuple[int, int]:
    """'HEADS:GATES' -> (heads, gated channels), for --widths."""
    try:
        heads, gates = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEADS:GATES, two integers (e.g. 4:8)") from None
    if heads < 1 or gates < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 head and 0 gated channels")
    return heads, gates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--pairs", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=8, help="passes over the pairs for the Transformer")
    p.add_argument("--layers", type=int, nargs="+", help="override [effective_model] layers of the Transformer; "
                   "several: one Transformer per depth, on the same pairs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256, help="the Transformer's minibatch (256 in the tables "
                   "before 2026-12-07)")
    p.add_argument("--learning-rate", type=float, help="override [training] learning_rate")
    p.add_argument("--widths", nargs="+", type=width, metavar="HEADS:GATES",
                   help="Transformers of these widths (attention heads and gated channels per layer), each at "
                        "every --layers; default the config's")
    p.add_argument("--no-transformer", action="store_true", help="the least-squares models only")
    p.add_argument("--no-least-squares", action="store_true", help="the Transformer(s) only")
    p.add_argument("--no-downfolded", action="store_true", help="leave out the downfolded model's rows")
    p.add_argument("--pairs-file", help="an .npz of the pairs: read if it exists, else written after they are "
                   "collected (so that several models, e.g. one Transformer per width, are fitted to the same pairs)")
    p.add_argument("--online", type=steps, default=0, metavar="STEPS",
                   help="also run each Transformer, frozen, as the middle model of a nested chain for STEPS "
                        "steps (inner model: the config's inner class fitted to the fit pairs; the generator "
                        "seeded alike for every Transformer) and print its exact-test and middle-test acceptance, "
                        "the fraction of steps that moved and sigma")
    p.add_argument("--fit-sizes", type=int, nargs="*", default=[],
                   help="also fit the config's bond-pair model on only the last n of the fit pairs, for each n "
                        "(how much data the online rounds need)")
    args = p.parse_args(argv)
    cfg = load(args.config)
    if args.learning_rate is not None:
        cfg = cfg.replace("training", learning_rate=args.learning_rate)
    if args.pairs_file and not args.pairs_file.endswith(".npz"):
        args.pairs_file += ".npz"  # what np.savez writes
    made_by = pairs_made_by(cfg, args.pairs, args.seed)
    if args.pairs_file and os.path.exists(args.pairs_file):
        with np.load(args.pairs_file) as saved:
            if "made_by" not in saved or not np.array_equal(saved["made_by"], made_by):
                raise SystemExit(f"{args.pairs_file} was made with other pairs, seed, lattice, model, temperature or "
                                 "path than this run's (--pairs, --seed and the config): give another --pairs-file")
            lattice, beta = build_physics(cfg).lattice, float(saved["beta"])
            d = {k: saved[k] for k in ("X", "Y", "XR", "YR")}
    else:
        lattice, beta, d = collect_pairs(cfg, args.pairs, args.seed)
        if args.pairs_file:
            np.savez(args.pairs_file, beta=beta, made_by=made_by, **d)
    n_fit, N = int(0.8 * args.pairs), lattice.N
    fit, held = slice(0, n_fit), slice(n_fit, None)
    target = d["Y"] - d["YR"]
    shells, all_shells = cfg.effective_model.shells, len(lattice.shell_distances)
    print(f"{args.pairs} pairs at T = {1 / beta}, L = {lattice.L}; {n_fit} fit, the rest held out")
    print(f"{'model':<44} {'params':>6} {'val MSE':>10} {'sigma':>7} {'accept':>7}")
    feature_sets = {
        f"linear, {shells} shells": lambda s: bond_features(lattice, s, shells, (1,)),
        f"linear, all {all_shells} shells": lambda s: bond_features(lattice, s, all_shells, (1,)),
        "+ x^2, x^3 per shell": lambda s: bond_features(lattice, s, all_shells, (1, 2, 3)),
        "+ plaquette 4-spin terms and chi^2": lambda s: np.hstack([bond_features(lattice, s, all_shells, (1, 2, 3)),
                                                                   plaquette_features(lattice, s)]),
    }
    for k in range(1, min(4, all_shells) + 1):
        feature_sets[f"linear + bond pairs within shells 1..{k}"] = lambda s, k=k: bond_pair_features(lattice, s, k)
    em = cfg.effective_model
    own = f"linear + bond pairs 1..{em.bond_shells} within {em.bond_range:g}"
    if em.bond_shells and em.bond_range:  # the config's own bond-pair classes (the linear default's: 4 within 2)
        feature_sets[own] = (
            lambda s: bond_pair_features(lattice, s, em.bond_shells, em.bond_range))
        # the per-shell sums of S_i·S_j (in bond_pair_features' head features) once in each set
        feature_sets["+ hopping √((1+x)/2) per shell, pairs of them"] = (
            lambda s: np.hstack([bond_features(lattice, s, all_shells, (1,)),
                                 hopping_features(lattice, s, em.bond_shells, em.bond_range)]))
        if lattice.kind == "square":
            feature_sets["+ winding loops (Re W, Re W^2, |W|^2)"] = (
                lambda s: np.hstack([bond_pair_features(lattice, s, em.bond_shells, em.bond_range),
                                     winding_loop_features(lattice, s, cfg.model.J)]))
        feature_sets["both: pairs of b and of the hopping"] = (
            lambda s: np.hstack([bond_pair_features(lattice, s, em.bond_shells, em.bond_range),
                                 hopping_features(lattice, s, em.bond_shells, em.bond_range)]))
    designs = {}
    for name, features in ({} if args.no_least_squares else feature_sets).items():
        design = designs[name] = features(d["X"]) - features(d["XR"])
        coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
        report(name, design.shape[1], target[held] - design[held] @ coef, N, beta)
    if own in designs and args.fit_sizes:
        design = designs[own]
        for n in args.fit_sizes:
            last = slice(max(0, n_fit - n), n_fit)
            coef, *_ = np.linalg.lstsq(design[last], target[last], rcond=None)
            report(f"bond pairs 1..{em.bond_shells} within {em.bond_range:g}, last {n} fit pairs",
                   design.shape[1], target[held] - design[held] @ coef, N, beta)
    if own in designs and not args.no_downfolded:  # the downfolded middle model: F_low + this class
        physics = build_physics(cfg)
        model = DownfoldedModel(physics, beta, LinearModel.zeros(lattice, 1))
        t0 = time.perf_counter()
        d_low = model.low_band_free_energy(d["X"]) - model.low_band_free_energy(d["XR"])
        seconds = (time.perf_counter() - t0) / (2 * len(d_low))
        report("F_low alone (downfolded, no correction)", 0, target[held] - d_low[held], N, beta)
        residual = target - d_low
        coef, *_ = np.linalg.lstsq(designs[own][fit], residual[fit], rcond=None)
        report(f"F_low + {own} (kind = downfolded; {1e3 * seconds:.2f} ms per F_low)", designs[own].shape[1],
               residual[held] - designs[own][held] @ coef, N, beta)
    if args.no_transformer:
        return 0
    inner = inner_model(cfg, lattice, beta, d, fit) if args.online else None
    rows = [transformer_row(cfg.replace("effective_model", layers=layers, heads=heads, gate_channels=gates),
                            lattice, beta, d, fit, held, args, inner)
            for heads, gates in args.widths or [(em.heads, em.gate_channels)]
            for layers in args.layers or [em.layers]]
    rows = [r for r in rows if r is not None]
    if len({r[0] for r in rows}) >= 3:
        print(power_law_line(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
