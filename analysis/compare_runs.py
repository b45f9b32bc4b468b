"""Compare two slmc-hpc run files dataset by dataset: equal bit for bit (NaN = NaN), except
/summary/seconds_per_step (wall clock), and their attributes (except when the run was
created and its random id). What a change that promises "no change in behaviour"
must show (for example a restructure), and what a resumed run must give.

    python analysis/compare_runs.py BEFORE.h5 AFTER.h5

Prints one line per dataset (equal / DIFFERENT / only in one file) and exits 1 if any
dataset present in both differs. Datasets present in only one file are listed, not failed."""

import argparse
import sys

import h5py
import numpy as np

SKIP = {"summary/seconds_per_step"}
SKIP_ATTRS = {"created", "run_id"}  # when and which run: differ between any two runs


def datasets(f: h5py.File) -> list[str]:
    names = []
    f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
    return names


def groups(f: h5py.File) -> list[str]:
    names = []
    f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Group) else None)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args(argv)
    different = 0
    with h5py.File(args.before, "r") as a, h5py.File(args.after, "r") as b:
        names_a, names_b = set(datasets(a)), set(datasets(b))
        for name in sorted(names_a | names_b):
            if name not in names_b:
                print(f"only in {args.before}: {name}")
            elif name not in names_a:
                print(f"only in {args.after}: {name}")
            elif name in SKIP:
                print(f"skipped (wall clock): {name}")
            else:
                x, y = a[name][()], b[name][()]
                same = x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
                different += not same
                print(f"{'equal' if same else 'DIFFERENT'}: {name} {x.shape}")
        for name in ["/"] + sorted(n for n in names_a & names_b) + sorted(
                n for n in set(groups(a)) & set(groups(b))):
            keys = (set(a[name].attrs) | set(b[name].attrs)) - SKIP_ATTRS
            for key in sorted(keys):
                x, y = a[name].attrs.get(key), b[name].attrs.get(key)
                if x is None or y is None or not np.array_equal(np.asarray(x), np.asarray(y)):
                    different += 1
                    print(f"DIFFERENT attribute: {name} {key}: {x!r} vs {y!r}")
    print(f"{len(names_a & names_b) - len(SKIP & names_a & names_b)} datasets and their attributes compared, "
          f"{different} different")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
