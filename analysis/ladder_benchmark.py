#!/usr/bin/env python3
"""The self-tuning ladder against the geometric one: round trips per 1000 exchange rounds, the
spread of the pair acceptances, and the communication barrier Λ with the suggested number of
replicas (issue: runs that tune and grow).

Each (variant, seed) is one run of `slmc-hpc run` with all replicas in one process (the chains
and decisions are those of an MPI run with one rank per replica: the tests hold them bit for
bit equal), ``--jobs`` at a time. The variants differ only in [temperatures] adapt; everything
else is the default (linear model, tuned path), at L = 8:

    ferro      J = 8, μ = -5,   T from 0.01 to 0.2   (the issue's ferromagnetic problem)
    reference  J = 4, μ = -2.5, T from 0.02 to 0.2   (the reference problem's point at the bottom)

    OMP_NUM_THREADS=1 python analysis/ladder_benchmark.py --point ferro --seeds 1 2 --outdir runs/ladder

Counts are not timings, so other work on the machine does not bias them. Round trips are
counted per replica (bottom -> top -> bottom) and summed; at ~100 per run their Poisson
error is ~10%.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

POINTS = {"ferro": {"J": 8.0, "mu": -5.0, "T_min": 0.01, "T_max": 0.2},
          "reference": {"J": 4.0, "mu": -2.5, "T_min": 0.02, "T_max": 0.2}}
VARIANTS = ("none", "barrier")


def config_text(point: str, adapt: str, seed: int, replicas: int, L: int, thermalize: int, measure: int,
                exchange_every: int) -> str:
    p = POINTS[point]
    return f"""[lattice]
L = {L}

[model]
J = {p["J"]}
mu = {p["mu"]}

[temperatures]
T_min = {p["T_min"]}
T_max = {p["T_max"]}
count = {replicas}
exchange_every = {exchange_every}
adapt = "{adapt}"

[effective_model]
kind = "linear"

[run]
thermalize = {thermalize}
measure = {measure}
snapshot_every = {measure}
seed = {seed}
progress_every = 120
"""


def run_one(job: tuple) -> Path:
    outdir, point, adapt, seed, args = job
    out = outdir / f"{point}-{adapt}-s{seed}.h5"
    if out.exists() and out.with_name(out.name + ".ckpt").exists():
        with h5py.File(out, "r") as f:
            if "summary" in f:
                return out  # done before
    cfg = outdir / f"{point}-{adapt}-s{seed}.toml"
    cfg.write_text(config_text(point, adapt, seed, args.replicas, args.L, args.thermalize, args.measure,
                               args.exchange_every))
    log = out.with_suffix(".log")
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", "slmc_hpc", "run", str(cfg), "--output", str(out), "--overwrite"],
                       check=True, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out


def row(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        s = f["summary"]
        pair = s["pair_acceptance"][()]
        rounds = f["tempering/accepted"].shape[0]
        adapted = "tempering/adaptation" in f
        return {"temperatures": f["temperatures"][()], "trips_per_1000": 1000 * s["round_trips"][()].sum() / rounds,
                "trips": int(s["round_trips"][()].sum()), "pair_min": pair.min(), "pair_max": pair.max(),
                "barrier": float(s["barrier"][()]), "suggested": int(s["suggested_replicas"][()]),
                "estimated": float(f["tempering/adaptation/rejection"][-1].sum()) if adapted else float("nan"),
                "tau_bottom": float(s["tau_free_energy"][0]), "F_bottom": float(s["free_energy_per_site"][0]),
                "F_bottom_err": float(s["free_energy_per_site_error"][0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--point", choices=sorted(POINTS), default="ferro")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--thermalize", type=int, default=4000)
    p.add_argument("--measure", type=int, default=20000)
    p.add_argument("--exchange-every", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--outdir", default="runs/ladder")
    args = p.parse_args(argv)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = [(outdir, args.point, adapt, seed, args) for seed in args.seeds for adapt in VARIANTS]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        paths = list(pool.map(run_one, jobs))
    rows = {(job[2], job[3]): row(path) for job, path in zip(jobs, paths)}
    print(f"# {args.point}, L = {args.L}, {args.replicas} replicas, {args.thermalize} thermalization + "
          f"{args.measure} measured steps, an exchange round every {args.exchange_every}")
    print("seed  ladder    trips  per 1000 rounds  pair acceptance min-max (spread)  Λ measured  "
          "(adaptation's estimate)  suggested  tau_F(bottom)  F/N(bottom)")
    for seed in args.seeds:
        for adapt in VARIANTS:
            r = rows[(adapt, seed)]
            print(f"{seed:4d}  {'adapted' if adapt == 'barrier' else 'geometric':9s} {r['trips']:5d}  "
                  f"{r['trips_per_1000']:15.1f}  {r['pair_min']:.2f}-{r['pair_max']:.2f} "
                  f"({r['pair_max'] - r['pair_min']:.2f}){'':17s}  {r['barrier']:10.2f}  ({r['estimated']:.2f}){'':17s}"
                  f"  {r['suggested']:9d}  {r['tau_bottom']:13.1f}  {r['F_bottom']:.6f}({1e6 * r['F_bottom_err']:.0f})")
        ratio = rows[("barrier", seed)]["trips_per_1000"] / max(rows[("none", seed)]["trips_per_1000"], 1e-9)
        print(f"      adapted / geometric round-trip rate: {ratio:.2f}; adapted ladder: "
              + " ".join(f"{t:.4g}" for t in rows[("barrier", seed)]["temperatures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
