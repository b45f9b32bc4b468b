#!/usr/bin/env python3
"""Checkpoint cost: size on disk, time to write (gather + atomic HDF5 write + fsync) and time
to read and restore, for a nested-SLMC run with a 3-layer Transformer at L = 6 and L = 12,
its training buffer full (filled with random configurations: the size does not depend on
what the spins are). Prints numbers; asserts nothing.

    OMP_NUM_THREADS=1 python analysis/benchmark_checkpoint.py [--L 6 12] [--buffer 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from slmc_hpc.assemble import assemble
from slmc_hpc.checkpoint import checkpoint_path, read_checkpoint
from slmc_hpc.config import parse
from slmc_hpc.control import Control, StopSignals
from slmc_hpc.observables import random_spins
from slmc_hpc.output import open_output
from slmc_hpc.parallel.comm import SerialComm
from slmc_hpc.resume import restore, save_checkpoint
from slmc_hpc.run_loop import TemperingRun
from slmc_hpc.training.learner import collect

CONFIG = """
[lattice]
L = {L}
[model]
mu = -2.5
[temperatures]
values = [0.02]
[effective_model]
kind = "transformer"
layers = 3
heads = 2
block_shells = 2
shells = 6
[training]
buffer_size = {buffer}
loss = "pair"
every = 10
[run]
thermalize = 10
measure = 10
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, nargs="+", default=[6, 12])
    p.add_argument("--buffer", type=int, default=5000, help="[training] buffer_size (the default's)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'L':>3} {'params':>7} {'buffer':>7} {'size [MB]':>10} {'write [s]':>10} {'read+restore [s]':>17}")
    for L in args.L:
        cfg = parse(CONFIG.format(L=L, buffer=args.buffer))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.h5"
            comm = SerialComm()
            parts = assemble(cfg, comm)
            with StopSignals() as signals:
                job = TemperingRun(parts, comm, open_output(out, parts.layout, comm), Control(comm, 0, signals),
                                   out, log=lambda *a: None)
            rep, learner = job.replicas[0], job.learners[0]
            collect(rep, learner)
            n = rep.physics.lattice.N
            for _ in range(args.buffer):
                s, r = random_spins(n, rng), random_spins(n, rng)
                learner.buffer.add(s, -1.0, rep.beta, r, -1.0)
            t0 = time.perf_counter()
            save_checkpoint(job, "thermalize", 1)
            t1 = time.perf_counter()
            size = checkpoint_path(out).stat().st_size / 2**20
            tree = read_checkpoint(checkpoint_path(out))
            restore(job, tree)
            t2 = time.perf_counter()
            job.out.close()
        print(f"{L:>3} {job.network.net.n_parameters():>7} {args.buffer:>7} {size:>10.1f} {t1 - t0:>10.3f} "
              f"{t2 - t1:>17.3f}")


if __name__ == "__main__":
    main()
