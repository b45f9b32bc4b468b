"""The one array-backend switch: ``numpy`` (CPU, LAPACK) or ``cupy`` (GPU).

Chosen once per run and passed explicitly; nothing here imports CuPy or touches CUDA at
import time. Spins, eigenvalues and everything returned to the samplers are NumPy arrays;
only the large Hamiltonian and its diagonalization live on the device.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "cupy")


def array_module(name: str):
    """Return the array module for ``name`` ("numpy" or "cupy")."""
    if name == "numpy":
        return np
    if name == "cupy":
        try:
            import cupy
        except ImportError as exc:  # a clear message instead of a bare ImportError deep in a run
            raise RuntimeError("backend 'cupy' requested but CuPy is not installed (pip install '.[gpu]')") from exc
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("backend 'cupy' requested but no CUDA device is visible")
        return cupy
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


def to_numpy(x) -> np.ndarray:
    """Host copy of a NumPy or CuPy array."""
    return x.get() if hasattr(x, "get") else np.asarray(x)
