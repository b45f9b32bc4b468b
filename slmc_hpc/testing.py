"""Assertion helpers for symmetry tests, shipped with the package so users' own models can be
checked the same way (after e3nn.util.test), and a bit-for-bit comparison of run files.
Float64 throughout."""

from __future__ import annotations

import h5py
import numpy as np


def random_rotation(rng: np.random.Generator, proper: bool = True) -> np.ndarray:
    """A Haar-random 3x3 orthogonal matrix with det +1 (proper) or -1 (improper)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = -q
    return q


def assert_invariant(func, spins: np.ndarray, transforms, atol: float = 1e-10) -> None:
    """Assert func(g(spins)) == func(spins) within atol for every g in transforms.

    ``transforms`` are callables spins -> spins (rotations, site permutations, ...)."""
    ref = np.asarray(func(spins))
    for k, g in enumerate(transforms):
        val = np.asarray(func(g(spins)))
        err = float(np.max(np.abs(val - ref)))
        if not err <= atol:
            raise AssertionError(f"not invariant under transform {k}: max |f(g x) - f(x)| = {err:.3e} > {atol:.1e}")


def assert_equivariant(func, spins: np.ndarray, transforms, atol: float = 1e-10) -> None:
    """Assert func(g(spins)) == g(func(spins)) within atol for every g; func maps spins to
    per-site vectors of the same shape (effective spins)."""
    out = np.asarray(func(spins))
    for k, g in enumerate(transforms):
        err = float(np.max(np.abs(np.asarray(func(g(spins))) - g(out))))
        if not err <= atol:
            raise AssertionError(f"not equivariant under transform {k}: max error {err:.3e} > {atol:.1e}")


def rotations(rng: np.random.Generator, n: int, proper: bool):
    """n spin transforms S_i -> R S_i with random R of the given handedness."""
    return [(lambda R: (lambda s: s @ R.T))(random_rotation(rng, proper)) for _ in range(n)]


def permutations(perms):
    """Spin transforms S_i -> S_{p[i]} for each site permutation p."""
    return [(lambda p: (lambda s: s[..., p, :]))(p) for p in perms]


def assert_same_files(a_path, b_path) -> None:
    """Two run files hold the same datasets, equal bit for bit (NaN = NaN), except the
    wall-clock timing: what a resumed run must give."""
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        names = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        other = []
        b.visit(lambda n: other.append(n) if isinstance(b[n], h5py.Dataset) else None)
        assert sorted(names) == sorted(other)
        for name in names:
            if name == "summary/seconds_per_step":
                continue
            x, y = a[name][()], b[name][()]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
