#!/usr/bin/env python3
"""Cost of one inner-chain update against one exact weight: the compiled linear chain with
bond-pair terms (samplers/local_chain.py) and the Transformer's compiled chain with
incremental ΔE (samplers/transformer_chain.py) for several architectures, at L = 6 … 12.
Random parameters (the cost does not depend on their values, only on the acceptance, which
random small parameters keep high). Prints µs per update, the ratio to the linear chain and
the updates one diagonalization (F of one configuration) costs. Asserts nothing.

    OMP_NUM_THREADS=1 python analysis/benchmark_inner_update.py --L 6 8 10 12
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.models import LinearModel
from slmc_hpc.models.transformer import EquivariantTransformer, TransformerModel
from slmc_hpc.observables import random_spins
from slmc_hpc.samplers.moves import draw_moves

# name: network keywords (8 head shells and bond-pair terms within 2 shells, as the default head)
ARCHITECTURES = {
    "global": dict(layers=1, heads=1, block_shells=1, attention_shells=None),
    "w1": dict(layers=1, heads=1, block_shells=1, attention_shells=1),
    "w1-no-bonds": dict(layers=1, heads=1, block_shells=1, attention_shells=1, bond_shells=0),
    "w2-h2-g4": dict(layers=1, heads=2, block_shells=1, attention_shells=2, gate_channels=4),
    "w1-3layers": dict(layers=3, heads=1, block_shells=1, attention_shells=1),
}


def per_update(chain, spins, n, rng) -> float:
    sites, noise, u = draw_moves(rng, len(spins), n)
    chain(spins, 1.0, sites[:10], noise[:10], np.log(u[:10]), 0.5)  # compile
    start = time.perf_counter()
    chain(spins, 1.0, sites, noise, np.log(u), 0.5)
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[6, 8, 10, 12])
    ap.add_argument("--updates", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    print("µs per update (× the linear chain's); 'diag' = ms per exact weight, and in linear-chain updates")
    for L in args.L:
        lattice = Lattice.from_kind("square", L)
        spins = random_spins(lattice.N, rng)
        physics = DoubleExchange(lattice, t=1.0, J=4.0, mu=-2.5)
        physics.free_energy_of(spins, 50.0)
        start = time.perf_counter()
        for _ in range(20):
            physics.free_energy_of(spins, 50.0)
        diag = (time.perf_counter() - start) / 20
        n_orbits = len(LinearModel.zeros(lattice, 8, 2).bond_couplings)
        linear = LinearModel(lattice, couplings=0.1 * rng.normal(size=8), bond_shells=2,
                             bond_couplings=0.01 * rng.normal(size=n_orbits))
        t_lin = per_update(linear.bond_form.chain, spins, args.updates, rng)
        row = [f"L = {L:2d}: diag {diag * 1e3:.2f} ms ({diag / t_lin:.0f} updates); linear-bonds {t_lin * 1e6:.2f}"]
        for name, kw in ARCHITECTURES.items():
            net = EquivariantTransformer(lattice, shells=8, **({"bond_shells": 2} | kw), seed=3)
            gen = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            t = per_update(TransformerModel.frozen(net, 1.0).local_form.chain, spins, args.updates, rng)
            row.append(f"{name} {t * 1e6:.1f} ({t / t_lin:.0f}×)")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
