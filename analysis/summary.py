#!/usr/bin/env python3
"""Per-temperature summary of a run file: acceptance, F/N, |m|, filling, nearest-neighbour
S_i·S_j, the specific heat per site at fixed μ (files from 0.2 on) and the peak of the
structure factor from the snapshots, with binned (C: jackknife) errors and τ_int. The bins are
the report's (slmc_hpc.stats.n_bins: 20 τ_int of F or |m|, whichever is slower, 8 to 32 bins).

    python analysis/summary.py runs/example.h5
"""

from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np

from slmc_hpc.config import parse
from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import structure_factor
from slmc_hpc.output import FORMAT
from slmc_hpc.stats import estimate, n_bins, slowest, tau_int
from slmc_hpc.thermodynamics import energy, jackknife, specific_heat


def summarize(path: str) -> list[dict]:
    rows = []
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise SystemExit(f"{path}: not an {FORMAT} file (format = {f.attrs.get('format')!r})")
        N = int(f.attrs["N"])
        lattice = Lattice.from_kind(str(f.attrs["lattice_kind"]), int(f.attrs["L"]))
        J_direct = parse(f.attrs["config"], legacy=True).model.J_direct
        for r, T in enumerate(f["temperatures"][:]):
            n = int(f["measure/n_written"][r])
            m_snap = int(f["snapshots/n_written"][r])
            series = {"F/N": f["measure/free_energy"][r, :n] / N,
                      "|m|": np.linalg.norm(f["measure/magnetization"][r, :n], axis=-1),  # |m| per step
                      "filling": f["measure/filling"][r, :n], "nn S.S": f["measure/nn_correlation"][r, :n]}
            bins = n_bins(n, slowest(tau_int(series[k]) for k in ("F/N", "|m|")))
            row = {"T": T, "steps": n, "bins": bins, "acceptance": float(np.nanmean(f["measure/acceptance"][r, :n]))}
            row.update({k: estimate(x, bins) for k, x in series.items()})
            if "fermion_energy_fluctuation" in f["measure"]:
                u = energy(f["measure/fermion_energy"][r, :n], f["measure/nn_correlation"][r, :n], J_direct,
                           len(lattice.bonds))
                c, err = jackknife(lambda a, b: specific_heat(a, b, 1.0 / T), u,
                                   f["measure/fermion_energy_fluctuation"][r, :n], n_bins=bins)
                row["C/N"] = (c / N, err / N)
            if m_snap:
                sq = structure_factor(f["snapshots/spins"][r, :m_snap], lattice).mean(axis=0)
                k = int(np.argmax(sq))
                row["S(q) peak"] = (lattice.momenta()[k] / np.pi, float(sq.flat[k]))
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    args = p.parse_args(argv)
    for row in summarize(args.file):
        F, m = row["F/N"], row["|m|"]
        print(f"T = {row['T']:.5g}  ({row['steps']} measured steps)")
        print(f"  acceptance      {row['acceptance']:.3f}")
        print(f"  F/N             {F.mean:.6f} ± {F.error:.6f}   tau_int {F.tau:.1f} steps")
        print(f"  |m|             {m.mean:.4f} ± {m.error:.4f}     tau_int {m.tau:.1f} steps")
        for key in ("filling", "nn S.S"):
            e = row[key]
            print(f"  {key:<15} {e.mean:.4f} ± {e.error:.4f}")
        if "C/N" in row:
            print(f"  C/N             {row['C/N'][0]:.4f} ± {row['C/N'][1]:.4f}   (fixed μ, jackknife over {row['bins']} bins)")
        if "S(q) peak" in row:
            q, val = row["S(q) peak"]
            print(f"  S(q) peak       S = {val:.3f} at q = {np.array2string(q, precision=3)} π  (from snapshots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
