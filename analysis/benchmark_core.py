#!/usr/bin/env python3
"""Benchmarks of the physics core; prints ratios, asserts nothing (speed is not a test).

1. One F_β evaluation (build H, its eigenvalues by hetrd + sterf, softplus sum) vs those
   eigenvalues alone on the same matrix (hamiltonian.hermitian_eigenvalues on a copy), and
   vs numpy.linalg.eigvalsh (heevd), L = 6, 12, 16.
1b. One F_low evaluation (the downfolded middle model: H_eff and its N eigenvalues) in single
   precision (the default) and in double, against one F_β evaluation, L = 8, 10, 12, 16.
2. Linear-model local updates per second (the SLMC inner chain, compiled), L = 6 and 12, and
   with the four-spin bond-pair terms of bond_shells = 4, L = 6 and 8 (the class search for
   L = 12 takes minutes); the plain NumPy loop over delta_energy at L = 6 (linear) for comparison.
3. One frozen-Transformer energy: NumPy inference vs the PyTorch forward pass, L = 6, 10.
4. On a config (default: the shipped example), SLMC and the exact local sampler side by side:
   acceptance, seconds per step, τ_int of F, and cost per independent sample.

    OMP_NUM_THREADS=1 python analysis/benchmark_core.py [--config jobscripts/example.toml]
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np
import torch

from slmc_hpc.config import load
from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.hamiltonian import DoubleExchange, hermitian_eigenvalues
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.models.downfolded import DownfoldedModel
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.observables import random_spins
from slmc_hpc.training.learner import solo_step
from slmc_hpc.samplers.slmc import effective_chain
from slmc_hpc.stats import tau_int


def best_time(func, number: int) -> float:
    return min(timeit.repeat(func, number=number, repeat=7)) / number


def free_energy_vs_eigvalsh(rng):
    print("1. one F evaluation vs its eigensolver alone (hetrd + sterf) and numpy.linalg.eigvalsh (same matrix)")
    print(f"   {'L':>3} {'2N':>5} {'F [ms]':>10} {'hetrd+sterf [ms]':>17} {'eigvalsh [ms]':>14} {'F/hetrd':>8} "
          f"{'F/eigvalsh':>10}")
    for L in (6, 12, 16):
        phys = DoubleExchange(Lattice.from_kind("square", L), J=4.0, mu=-2.5)
        spins = random_spins(L * L, rng)
        h = phys.hamiltonian(spins)
        n = max(3, 3000 // L**3)
        t_f = best_time(lambda: phys.free_energy_of(spins, 33.3), n)
        t_l = best_time(lambda: hermitian_eigenvalues(np.asfortranarray(h)), n)
        t_e = best_time(lambda: np.linalg.eigvalsh(h), n)
        print(f"   {L:>3} {2 * L * L:>5} {t_f * 1e3:>10.3f} {t_l * 1e3:>17.3f} {t_e * 1e3:>14.3f} {t_f / t_l:>8.3f} "
              f"{t_f / t_e:>10.3f}")


def low_band_vs_exact(rng):
    print("1b. one F_low evaluation (downfolded model), single and double precision, vs one F evaluation")
    print(f"   {'L':>3} {'F_low c64 [ms]':>15} {'F_low c128 [ms]':>16} {'F [ms]':>8} {'c64/c128':>9} {'c64/F':>6}")
    for L in (8, 10, 12, 16):
        phys = DoubleExchange(Lattice.from_kind("square", L), J=4.0, mu=-2.5)
        model = DownfoldedModel(phys, 50.0, LinearModel.zeros(phys.lattice, 1))
        spins = random_spins(L * L, rng)
        n = max(3, 3000 // L**3)
        fresh = model.memo.values.clear  # F_low is remembered per configuration (LowBandMemo): time the evaluation
        t_single = best_time(lambda: (fresh(), model.low_band_free_energy(spins)), 4 * n)
        t_double = best_time(lambda: (fresh(), model.low_band_free_energy(spins, np.complex128)), 4 * n)
        t_f = best_time(lambda: phys.free_energy_of(spins, 50.0), n)
        print(f"   {L:>3} {t_single * 1e3:>15.3f} {t_double * 1e3:>16.3f} {t_f * 1e3:>8.3f} "
              f"{t_single / t_double:>9.2f} {t_single / t_f:>6.2f}")


def local_updates_per_second(rng):
    print("2. linear-model local updates (inner chain, 6 shells, random sites)")
    n = 20000

    class Uncompiled:  # the same model without its bond form: the NumPy loop over delta_energy
        def __init__(self, model):
            self.delta_energy = model.delta_energy

    for L, bond_shells in ((6, 0), (12, 0), (6, 4), (8, 4)):
        lat = Lattice.from_kind("square", L)
        n_orbits = len(LinearModel.zeros(lat, 6, bond_shells).bond_couplings)
        model = LinearModel(lat, couplings=rng.normal(size=6) * 0.1, e0=0.0, bond_shells=bond_shells,
                            bond_couplings=rng.normal(size=n_orbits) * 0.001)
        spins = random_spins(lat.N, rng)
        model.bond_form.chain(spins, 30.0, [0], np.zeros((1, 3)), [0.0], 0.5)  # compile outside the timing
        t = best_time(lambda: effective_chain(model, spins, 30.0, n, 0.5, rng), 1)
        print(f"   L = {L:>2}, bond_shells = {bond_shells}: {n / t:>12,.0f} updates/s")
        if L == 6 and not bond_shells:  # with bond terms delta_energy is a full-energy difference
            t_np = best_time(lambda: effective_chain(Uncompiled(model), spins, 30.0, 2000, 0.5, rng), 1) / 2000
            print(f"   {'':>20}NumPy loop: {1 / t_np:>12,.0f} updates/s ({t_np * n / t:.0f}x slower)")


def transformer_energy(rng):
    print("3. one frozen-Transformer energy (2 layers x 2 heads, global attention, 6 head shells):")
    print("   NumPy inference (what the samplers use) vs the PyTorch network's forward pass")
    print(f"   {'L':>3} {'NumPy [ms]':>11} {'PyTorch [ms]':>13} {'PyTorch/NumPy':>14}")
    for L in (6, 10):
        lat = Lattice.from_kind("square", L)
        net = EquivariantTransformer(lat, layers=2, heads=2, block_shells=2, attention_shells=None, shells=6)
        model = TransformerModel.frozen(net, 50.0)
        spins = random_spins(lat.N, rng)
        batch = torch.as_tensor(spins[None])
        n = 2000 // L
        t_np = best_time(lambda: model.energy(spins), n)
        with torch.inference_mode():
            maps = net.block_maps()  # computed once, as the PyTorch frozen model did
            t_torch = best_time(lambda: net(batch, 50.0, maps), n)
        print(f"   {L:>3} {t_np * 1e3:>11.3f} {t_torch * 1e3:>13.3f} {t_torch / t_np:>14.1f}")


def samplers_side_by_side(path: str, seed: int):
    cfg = load(path)
    T = cfg.temperatures.values[0]
    print(f"4. {path}: L = {cfg.lattice.L}, T = {T}, {cfg.local_updates} local updates/step, "
          f"thermalize {cfg.run.thermalize}, measure {cfg.run.measure}")
    rows = {}
    for sampler in ("slmc", "exact"):
        run_cfg = cfg.replace("run", sampler=sampler)
        rep, learner = build_slot(run_cfg, build_physics(run_cfg), 1.0 / T, np.random.default_rng(seed))
        for _ in range(cfg.run.thermalize):
            solo_step(rep, learner) if learner is not None else rep.step()
        F, acc = [], []
        t0 = time.perf_counter()
        for _ in range(cfg.run.measure):
            rec = rep.record(rep.step())
            F.append(rec["free_energy"])
            acc.append(rec["acceptance"])
        sec = (time.perf_counter() - t0) / cfg.run.measure
        tau = tau_int(np.array(F))
        rows[sampler] = (np.mean(acc), sec, tau, sec * max(tau, 0.5) * 2)
        print(f"   {sampler:>5}: acceptance {np.mean(acc):.3f}  {sec * 1e3:8.3f} ms/step  tau_int(F) {tau:6.1f} "
              f"steps  cost per independent sample (2 tau x time/step) {rows[sampler][3] * 1e3:8.2f} ms")
    print(f"   exact/SLMC cost per independent sample: {rows['exact'][3] / rows['slmc'][3]:.1f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="jobscripts/example.toml")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    free_energy_vs_eigvalsh(rng)
    low_band_vs_exact(rng)
    local_updates_per_second(rng)
    transformer_energy(rng)
    samplers_side_by_side(args.config, args.seed)


if __name__ == "__main__":
    main()
