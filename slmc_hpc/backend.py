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


def device_for(node_rank: int, n_devices: int) -> int:
    """The GPU of a rank: its rank within the node modulo the devices it sees. With one GPU
    per task bound by the scheduler (SLURM --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per
    rank) every rank sees one device and takes it; otherwise ranks on a node share the
    node's GPUs round-robin."""
    if n_devices < 1:
        raise RuntimeError("no CUDA device is visible")
    return node_rank % n_devices


def use_device_of_rank(node_rank: int) -> int:
    """Make CuPy use this rank's GPU (see ``device_for``); returns its index."""
    import cupy

    index = device_for(node_rank, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(index).use()
    return index
