#!/usr/bin/env python3
"""Depth studies repeated with several seeds, side by side: one output directory of
analysis/depth_study.py per seed (run with --seed), read back and compared per seed.

    python analysis/depth_seeds.py runs/depth-s1 runs/depth-s2 runs/depth-s3 runs/depth-s4

Prints, for every model found in all directories, its acceptance and its cost per
independent sample relative to the linear model of the SAME seed (2 tau_int(F) x seconds per
step; timings are only comparable within one study, whose variants ran on the same machine),
each seed's value and their mean (timings: the study's interleaved timing, see
depth_study.py; a directory without it is an error); then, per seed, whether the acceptance rises strictly from
the linear model through the Transformer rows in order of depth. Asserts nothing: the
statistical error of one acceptance (about ±0.006 from 100000 steps at tau_int ≈ 15) is for
the reader to hold against the differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_study import TIMING_FILE, read_row  # noqa: E402  (a sibling script, not a package)


def depth(name: str) -> tuple[int, int]:
    """Sort key: the linear models first, then the Transformers by their number of layers."""
    return (1, int(name.rsplit("-", 1)[1])) if name.startswith("transformer-") else (0, 0)


def load_rows(directory: Path) -> dict[str, dict]:
    """Every finished variant of one study (its file has a summary): {name: read_row}, in the
    order of ``depth``."""
    finished = []
    for path in directory.glob("*.h5"):
        with h5py.File(path, "r") as f:
            if "summary" in f:
                finished.append(path)
    rows = {p.stem: read_row(p) for p in sorted(finished, key=lambda p: (depth(p.stem), p.stem))}
    if "linear" not in rows:
        raise SystemExit(f"{directory}: no finished linear.h5, the reference of every ratio")
    timing = directory / TIMING_FILE
    timed = json.loads(timing.read_text())["seconds_per_step"] if timing.exists() else {}
    if set(rows) - set(timed):  # mixing the two kinds of timing in one ratio would mislead
        raise SystemExit(f"{directory}: no interleaved timing of {sorted(set(rows) - set(timed))}; rerun "
                         f"depth_study.py on this directory (it keeps finished variants and times them)")
    for name, row in rows.items():
        row["seconds_per_step"] = timed[name]
    return rows


def rises_strictly(rows: dict[str, dict]) -> bool:
    """Acceptance of linear < transformer-1 < transformer-2 < ... (linear-bonds and
    transformer-0 are controls, not steps of the depth sequence); False without such rows."""
    chain = ["linear"] + sorted((n for n in rows if n.startswith("transformer-") and n != "transformer-0"), key=depth)
    acc = [rows[n]["acceptance"] for n in chain]
    return len(acc) > 1 and all(a < b for a, b in zip(acc, acc[1:]))


def table(studies: dict[str, dict[str, dict]]) -> str:
    names = [n for n in next(iter(studies.values())) if all(n in rows for rows in studies.values())]
    seeds = list(studies)
    lines = [f"{'model':<15} {'quantity':<15} " + " ".join(f"{s:>10}" for s in seeds) + f" {'mean':>8}"]
    for name in names:
        for label, value in (("acceptance", lambda rows: rows[name]["acceptance"]),
                             ("cost / linear", lambda rows: (rows[name]["tau"] * rows[name]["seconds_per_step"])
                              / (rows["linear"]["tau"] * rows["linear"]["seconds_per_step"]))):
            values = [value(studies[s]) for s in seeds]
            lines.append(f"{name:<15} {label:<15} " + " ".join(f"{v:>10.3f}" for v in values)
                         + f" {sum(values) / len(values):>8.3f}")
    lines.append("acceptance rises strictly from linear through the Transformer depths: "
                 + ", ".join(f"{s}: {'yes' if rises_strictly(studies[s]) else 'no'}" for s in seeds))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directories", nargs="+", type=Path, help="output directories of depth_study.py, one per seed")
    args = p.parse_args(argv)
    if len({d.name for d in args.directories}) < len(args.directories):
        p.error("the study directories must have different names (they label the columns)")
    print(table({d.name: load_rows(d) for d in args.directories}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
