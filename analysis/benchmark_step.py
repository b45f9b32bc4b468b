#!/usr/bin/env python3
"""Where the time of one SLMC step goes, per model: the exact weight (build H, its eigenvalues, F),
the inner chain (compiled, with the h = G b set-up of bond-pair models), the Transformer's
energy (nested SLMC's middle test), the rest (bookkeeping), and the share of thermalization
spent training. Prints shares; asserts nothing.

    OMP_NUM_THREADS=1 python analysis/benchmark_step.py --L 6 12 --steps 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.config import parse, to_toml
from slmc_hpc.parallel.comm import SerialComm
from slmc_hpc.samplers.slmc import effective_chain
from slmc_hpc.training.learner import collect, train_round

MODELS = {
    # the 0.4 default (4 bond shells within 2 spacings on the square lattice), 16 N updates as the tuner chose at L = 8, 12
    "default-16N": {"slmc": {"local_updates": "16N"}},
    "linear": {"effective_model": {"shells": 8, "bond_shells": 0}},
    "linear-bonds": {"effective_model": {"shells": 8, "bond_shells": 2, "bond_range": 0.0}},
    "transformer-nested": {"effective_model": {"kind": "transformer", "shells": 6, "layers": 1, "heads": 2,
                                               "block_shells": 2, "gate_channels": 4, "bond_shells": 2, "bond_range": 0.0},
                           "slmc": {"inner_bond_shells": 2}, "training": {"epochs": 5}},
}


def config(L: int, changes: dict, thermalize: int) -> str:
    # kind = "linear" by name: since 0.8 it is not the default at 10 <= L <= 12 (config._downfolded_by_default)
    sections = {"lattice": {"L": L}, "model": {"J": 4.0, "mu": -2.5}, "temperatures": {"values": [0.02]},
                "effective_model": {"kind": "linear"},
                "training": {"loss": "pair", "every": thermalize // 2, "buffer_size": thermalize},
                "run": {"thermalize": thermalize, "measure": 1, "step_size": 0.5}, "slmc": {"local_updates": 0}}
    for name, values in changes.items():
        sections.setdefault(name, {}).update(values)
    if sections["slmc"]["local_updates"] == "16N":
        sections["slmc"]["local_updates"] = 16 * L**2
    return to_toml(sections)


def clocked(func, *args):
    start = time.perf_counter()
    out = func(*args)
    return out, time.perf_counter() - start


def profile(L: int, name: str, changes: dict, steps: int, thermalize: int) -> None:
    cfg = parse(config(L, changes, thermalize))
    physics = build_physics(cfg)
    rep, learner = build_slot(cfg, physics, 50.0, np.random.default_rng(1))
    stepping = training = 0.0
    for k in range(thermalize):  # train, timing the steps and the rounds apart
        _, dt = clocked(collect, rep, learner)
        stepping += dt
        if learner.round_due(k):
            _, dt = clocked(train_round, [(rep, learner)], SerialComm())
            training += dt
    sampler, rng = rep.sampler, np.random.default_rng(2)
    inner = getattr(sampler, "inner", sampler.model)  # the model the inner chain runs on
    middle = sampler.model if hasattr(sampler, "inner") else None
    parts = {"exact weight": 0.0, "inner chain": 0.0, "transformer": 0.0}
    start = time.perf_counter()
    for _ in range(steps):
        (proposal, _), dt = clocked(effective_chain, inner, rep.state.spins, sampler.beta, sampler.n_local,
                                    sampler.step_size, rng)
        parts["inner chain"] += dt
        if middle is not None:
            _, dt = clocked(middle.energy, proposal)
            parts["transformer"] += dt
        _, dt = clocked(physics.free_energy_of, proposal, sampler.beta)
        parts["exact weight"] += dt
    parts_total = time.perf_counter() - start
    _, whole = clocked(lambda: [rep.step() for _ in range(steps)])
    per_step = whole / steps
    shares = "  ".join(f"{k} {v / parts_total:5.1%}" for k, v in parts.items() if v)
    print(f"L = {L:>2}  {name:<20} {per_step * 1e3:8.3f} ms/step ({sampler.n_local} updates)  {shares}  "
          f"training {training / (training + stepping):5.1%} of thermalization")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--thermalize", type=int, default=600)
    args = ap.parse_args()
    for L in args.L:
        for name in args.models:
            profile(L, name, MODELS[name], args.steps, args.thermalize)


if __name__ == "__main__":
    main()
