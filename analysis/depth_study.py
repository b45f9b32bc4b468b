#!/usr/bin/env python3
"""Scaling-law (depth) study: the same problem with the linear model, the linear model with
the config's four-spin bond-pair terms (row linear-bonds, if bond_shells > 0), and 1, 2, 3, 4
Transformer layers, each run from the same seed with the same thermalization length and
training schedule. (The nested scheme diagonalizes only proposals that pass its middle test,
so a Transformer gets at most as many exact training samples as the linear model.)

Writes DIR/<variant>.h5 for each model, DIR/depth_study.txt (the table),
DIR/depth_study.png (validation loss and rejection rate vs parameter count, with power laws
fitted to the Transformer points) and DIR/interleaved_timing.json (below). Rerun on the same
DIR, it keeps the finished variants and only times them again.

    python analysis/depth_study.py analysis/reference.toml --layers 1 2 3 4 --outdir runs/depth
    python analysis/depth_study.py analysis/reference.toml --scheme plain --outdir runs/depth-plain
    python analysis/depth_study.py analysis/reference.toml --layers 0 1 2 3 --outdir runs/depth-0   # 0: head alone
    python analysis/depth_study.py analysis/reference.toml --bond-shells 0 --outdir runs/depth-nobonds
    python analysis/depth_study.py analysis/reference.toml --gate-channels 0 --outdir runs/depth-nogates

Columns: parameters; validation loss (per-site MSE of the last training round, held-out
proposals); middle = acceptance of nested SLMC's middle (Transformer) test (NaN for the
linear model); acceptance of the exact test; moved = fraction of steps that changed the
configuration; tau_int of F (steps); ms per step, timed side by side after all variants
ran: each variant's frozen chain restarts from its last snapshot and the variants take turns
in blocks of --timing-block steps for --timing-rounds rounds, the median kept (the variants'
own runs, column "(run)", happened at different times and their timings scatter with the
machine's other load by ±15%); cost = ms per effectively independent sample = 2 tau_int x
ms per step (interleaved).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from slmc_hpc.assemble import build_physics, build_slot
from slmc_hpc.config import load, parse
from slmc_hpc.driver import run
from slmc_hpc.replica import Replica
from slmc_hpc.results import read_model


TIMING_FILE = "interleaved_timing.json"  # seconds per step of each variant, timed side by side


def variants(cfg, layers):
    """The linear model of Liu et al. (no four-spin terms), the linear model with the config's
    bond_shells (if any; least squares, compiled local chain), then the Transformers."""
    yield "linear", cfg.replace("effective_model", kind="linear", bond_shells=0)
    if cfg.effective_model.bond_shells:
        yield "linear-bonds", cfg.replace("effective_model", kind="linear")
    for n in layers:
        yield f"transformer-{n}", cfg.replace("effective_model", kind="transformer", layers=n)


def read_row(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        val = f["training/validation_loss"][0]
        val = val[np.isfinite(val)]
        return {
            "parameters": f["model/parameters"].shape[1],
            "validation_loss": float(val[-1]) if len(val) else float("nan"),
            "acceptance": float(np.nanmean(f["measure/acceptance"][0])),
            "middle": float(f["summary/middle_acceptance"][0]) if "summary/middle_acceptance" in f else float("nan"),
            "moved": float(np.mean(f["measure/accepted"][0])),
            "tau": float(f["summary/tau_free_energy"][0]),
            "seconds_per_step": float(f["summary/seconds_per_step"][0]),
        }


def frozen_replica(path: Path, seed: int) -> Replica:
    """The measured chain of a finished variant, ready to step again: its configuration, its
    frozen model(s) (nested SLMC: the inner model too) and its last snapshot as the state,
    past thermalization (so it never trains)."""
    with h5py.File(path, "r") as f:
        cfg = parse(f.attrs["config"], legacy=True)
        beta = 1.0 / float(f["temperatures"][0])
        k = int(f["snapshots/n_written"][0]) - 1
        if k < 0:
            raise SystemExit(f"{path}: no snapshot to restart the chain from (measure < snapshot_every)")
        spins = f["snapshots/spins"][0, k]
    physics = build_physics(cfg)
    rep, _ = build_slot(cfg, physics, beta, np.random.default_rng(seed))  # no learner: it never trains
    rep.set_beta(beta, model=read_model(path), inner=read_model(path, inner=True) if cfg.has_middle_level else None)
    rep.restore_chain({"spins": spins, "eigenvalues": physics.eigenvalues(spins),
                       "classical_energy": physics.classical_energy(spins), "e_eff": rep.model.energy(spins)})
    return rep


def interleaved_seconds_per_step(paths: dict[str, Path], rounds: int, block: int, seed: int) -> dict[str, float]:
    """Seconds per step (step and record, as in a run) of every variant's frozen chain, timed
    in ``rounds`` rounds that each run ``block`` steps of every variant in turn; the median
    over rounds. The variants ran one after another, so their own timings also carry whatever
    else the machine did meanwhile (measured: ±15% between runs); interleaved blocks share
    that load, which makes the ratios between variants trustworthy."""
    replicas = {name: frozen_replica(path, seed) for name, path in paths.items()}
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, rep in replicas.items():
            start = time.perf_counter()
            for _ in range(block):
                rep.record(rep.step())
            times[name].append((time.perf_counter() - start) / block)
    return {name: float(np.median(t)) for name, t in times.items()}


def power_law(x, y):
    """(prefactor, exponent) of y = a x^b by least squares in log-log; NaN if < 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(np.exp(log_a)), float(b)


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(rows)
    trans = [n for n in names if n.startswith("transformer")]
    params = np.array([rows[n]["parameters"] for n in trans])
    for ax, key, label in ((axes[0], "validation_loss", "validation loss (per-site MSE)"),
                           (axes[1], "rejection", "rejection rate 1 - acceptance")):
        values = {n: (1 - rows[n]["acceptance"]) if key == "rejection" else rows[n][key] for n in names}
        ax.loglog(params, [values[n] for n in trans], "o-", label="Transformer (1, 2, ... layers)")
        ax.axhline(values["linear"], color="gray", ls="--")
        ax.loglog([rows["linear"]["parameters"]], [values["linear"]], "s", color="gray", label="linear model")
        a, b = power_law(params, [values[n] for n in trans])
        if np.isfinite(b):
            xs = np.geomspace(params.min(), params.max(), 50)
            ax.loglog(xs, a * xs**b, ":", label=f"fit ∝ P^{b:.2f}")
        ax.set_xlabel("parameters P")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--outdir", default="runs/depth")
    p.add_argument("--scheme", choices=("nested", "plain"), help="override [slmc] scheme for the Transformers")
    p.add_argument("--bond-shells", type=int, help="override [effective_model] bond_shells of the Transformers "
                                                   "and of the linear-bonds row (four-spin terms; 0: no such row)")
    p.add_argument("--gate-channels", type=int, help="override [effective_model] gate_channels of the "
                                                     "Transformers (0: attention layers without gates)")
    p.add_argument("--seed", type=int, help="override [run] seed (repeat the study with several seeds to see "
                                            "the run-to-run spread)")
    p.add_argument("--timing-rounds", type=int, default=10, help="rounds of interleaved timing of the frozen "
                                                                  "chains after all variants ran (0: none)")
    p.add_argument("--timing-block", type=int, default=2000, help="steps of each variant per timing round")
    p.add_argument("--overwrite", action="store_true", help="rerun variants whose file exists (otherwise a "
                                                             "finished variant is kept and a killed one resumed)")
    args = p.parse_args(argv)
    cfg = load(args.config)
    if args.timing_rounds and cfg.run.measure < cfg.run.snapshot_every:
        p.error(f"the interleaved timing restarts each chain from its last snapshot, and [run] measure = "
                f"{cfg.run.measure} < snapshot_every = {cfg.run.snapshot_every} leaves none (or --timing-rounds 0)")
    if args.scheme:
        cfg = cfg.replace("slmc", scheme=args.scheme)
    if args.seed is not None:
        cfg = cfg.replace("run", seed=args.seed)
    if args.bond_shells is not None:
        cfg = cfg.replace("effective_model", bond_shells=args.bond_shells)
    if args.gate_channels is not None:
        cfg = cfg.replace("effective_model", gate_channels=args.gate_channels)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / TIMING_FILE).unlink(missing_ok=True)  # written anew below, never left from other runs
    rows = {}
    for name, variant in variants(cfg, args.layers):
        path = outdir / f"{name}.h5"
        print(f"== {name}", flush=True)
        # resume: a variant that was killed continues from its checkpoint, a finished one is kept
        run(variant, output=path, overwrite=True) if args.overwrite else run(variant, output=path, resume=True)
        rows[name] = read_row(path)
    paths = {name: outdir / f"{name}.h5" for name in rows}
    if args.timing_rounds:
        print(f"== interleaved timing: {args.timing_rounds} rounds of {args.timing_block} steps per variant", flush=True)
        timed = interleaved_seconds_per_step(paths, args.timing_rounds, args.timing_block, cfg.run.seed)
        (outdir / TIMING_FILE).write_text(json.dumps({"rounds": args.timing_rounds, "block": args.timing_block,
                                                      "seconds_per_step": timed}, indent=1) + "\n")
    else:
        timed = {name: r["seconds_per_step"] for name, r in rows.items()}
    header = (f"{'model':<15} {'params':>6} {'val loss':>10} {'middle':>7} {'accept':>7} {'moved':>6} {'tau_F':>7} "
              f"{'ms/step':>8} {'(run)':>7} {'cost ms':>8}")
    lines = [header]
    for name, r in rows.items():
        cost = 2 * r["tau"] * timed[name]
        lines.append(f"{name:<15} {r['parameters']:>6d} {r['validation_loss']:>10.3e} {r['middle']:>7.3f} {r['acceptance']:>7.3f} "
                     f"{r['moved']:>6.3f} {r['tau']:>7.1f} {timed[name] * 1e3:>8.3f} {r['seconds_per_step'] * 1e3:>7.3f} "
                     f"{cost * 1e3:>8.2f}")
    lin = rows["linear"]
    for name, r in rows.items():
        if name != "linear":
            lines.append(f"{name}: rejection / linear rejection = {(1 - r['acceptance']) / (1 - lin['acceptance']):.3f}, "
                         f"cost / linear cost = {r['tau'] * timed[name] / (lin['tau'] * timed['linear']):.2f}")
    trans = [n for n in rows if n.startswith("transformer")]
    _, b_loss = power_law([rows[n]["parameters"] for n in trans], [rows[n]["validation_loss"] for n in trans])
    _, b_rej = power_law([rows[n]["parameters"] for n in trans], [1 - rows[n]["acceptance"] for n in trans])
    lines.append(f"power-law exponents vs parameters: validation loss {b_loss:.3f}, rejection rate {b_rej:.3f}")
    text = "\n".join(lines)
    print(text)
    (outdir / "depth_study.txt").write_text(text + "\n")
    plot(rows, outdir / "depth_study.png")
    print(f"wrote {outdir / 'depth_study.txt'} and {outdir / 'depth_study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
