#!/usr/bin/env python3
"""Is the Fermi level in a finite-size gap? Levels near μ on the settled chain, and what they cost the model.

On a finite lattice the one-electron levels are discrete. Where μ lies in a gap between them
(a closed shell) the electron number is fixed and F_β[S] is a smooth function of the spins;
where levels lie within a few T of μ, each contributes -T log(1 + e^{-β ε}) with a kink of
width T as it crosses μ, and ε itself depends on every spin: no sum of local terms follows it,
so the exact test's log-ratio spread σ grows (analysis/BENCHMARKS.md, "The Fermi level").

Runs linear SLMC on the config's first temperature as ``model_capacity.py`` does, then prints,
over the recorded proposals: the levels within 1, 3 and 10 T of μ (ε_n are relative to μ),
the distance of the closest level from μ and the mean electron number; and σ of the config's
bond-pair model class fitted by least squares (80% fit, 20% held out) to F at a higher
temperature T' on the same configurations, in units of the run's β (T' = T is the model's
actual task; if σ falls fast with T', the error comes from the levels near μ).

    OMP_NUM_THREADS=1 python analysis/fermi_level.py analysis/capacity_l8.toml --pairs 4000
    OMP_NUM_THREADS=1 python analysis/fermi_level.py analysis/capacity_l8.toml --L 12   # 16 N updates per step
"""

from __future__ import annotations

import argparse

import numpy as np

from model_capacity import bond_pair_features, collect_pairs
from slmc_hpc.assemble import build_physics
from slmc_hpc.config import load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--pairs", type=int, default=4000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--L", type=int, help="another linear size, with 16 N local updates per step")
    p.add_argument("--smooth", type=float, nargs="*", default=[0.04, 0.08, 0.16],
                   help="temperatures T' > T to fit F_T' at (none: levels only)")
    args = p.parse_args(argv)
    cfg = load(args.config)
    if args.L is not None:
        cfg = cfg.replace("lattice", L=args.L).replace("slmc", local_updates=16 * args.L**2)
    lattice, beta, d = collect_pairs(cfg, args.pairs, args.seed)
    physics = build_physics(cfg)
    levels = np.array([physics.eigenvalues(s) for s in d["X"]])
    T = 1.0 / beta
    print(f"L = {lattice.L}, N = {lattice.N}, T = {T:g}: {args.pairs} proposals of the settled linear chain")
    for w in (1, 3, 10):
        near = (np.abs(levels) < w * T).sum(axis=1)
        print(f"  levels within {w:>2} T of mu: mean {near.mean():.2f}; configurations with none {np.mean(near == 0):.2f}")
    closest = np.abs(levels).min(axis=1)
    print(f"  closest level to mu: median {np.median(closest):.4f} = {np.median(closest) / T:.1f} T; "
          f"electrons (levels below mu) {np.mean((levels < 0).sum(axis=1)):.2f} ± {np.std((levels < 0).sum(axis=1)):.2f}")
    if not args.smooth:
        return 0
    em = cfg.effective_model
    design = (bond_pair_features(lattice, d["X"], em.bond_shells, em.bond_range)
              - bond_pair_features(lattice, d["XR"], em.bond_shells, em.bond_range))
    fit, held = slice(0, int(0.8 * args.pairs)), slice(int(0.8 * args.pairs), None)
    reference = np.array([physics.eigenvalues(s) for s in d["XR"]])
    cx, cr = physics.classical_energy(d["X"]), physics.classical_energy(d["XR"])
    print(f"  bond pairs 1..{em.bond_shells} within {em.bond_range:g} ({design.shape[1]} parameters) fitted to F_T':")
    for t_fit in [T, *args.smooth]:
        target = physics.free_energy(levels, cx, 1.0 / t_fit) - physics.free_energy(reference, cr, 1.0 / t_fit)
        coef, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
        residual = target[held] - design[held] @ coef
        print(f"    T' = {t_fit:<6g} held-out sigma (x beta = {beta:g}) {beta * residual.std():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
