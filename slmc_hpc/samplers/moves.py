"""The single-spin move: S_i -> normalize(S_i + δ g), g a standard Gaussian 3-vector.

The proposal density depends only on the angle between old and new spin (the construction
is invariant under rotations about S_i), so q(S->S') = q(S'->S): symmetric, and the
Metropolis test needs no proposal ratio. Large δ approaches the uniform distribution.
"""

from __future__ import annotations

import math

import numpy as np


def perturb(spin: np.ndarray, noise: np.ndarray, step_size: float) -> np.ndarray:
    v = spin + step_size * noise
    return v / math.sqrt(v @ v)  # not np.linalg.norm: this runs ~10^5 times per second


def draw_moves(rng: np.random.Generator, n_sites: int, n_moves: int, heat_bath: bool = False):
    """Random sites, noise and uniforms for n_moves local updates, drawn in one go. The
    noise is Gaussian (n_moves, 3) for S_i + δ g; for heat-bath moves (local_chain.py) it is
    two uniforms per move (n_moves, 2), cos θ and φ about the local field.

    Random site choice (not a fixed sweep order) keeps the local chain reversible, which the
    SLMC acceptance formula requires.
    """
    sites = rng.integers(n_sites, size=n_moves)
    noise = rng.random((n_moves, 2)) if heat_bath else rng.standard_normal((n_moves, 3))
    return sites, noise, rng.random(n_moves)


def draw_reflections(rng: np.random.Generator, n_moves: int, fraction: float) -> np.ndarray:
    """Which of n_moves local updates are over-relaxation reflections (samplers/local_chain.py):
    each one independently with probability ``fraction``. A random mixture, not a schedule:
    the reversed sequence of move kinds is then as likely as the sequence itself, which keeps
    the inner chain reversible, as the SLMC acceptance requires. Drawn after draw_moves, and
    only when ``fraction`` > 0, so that chains without reflections keep their random streams."""
    return rng.random(n_moves) < fraction
