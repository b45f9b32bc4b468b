"""The CuPy backend gives the NumPy spectrum; without a GPU, asking for it is a clear error."""

import numpy as np
import pytest

from slmc_hpc.backend import device_for
from slmc_hpc.config import ConfigError
from slmc_hpc.assemble import build_physics
from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.observables import random_spins

from configs import small_config


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


GPU = _gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA device")
def test_cupy_eigenvalues_match_numpy(rng):
    lat = Lattice.from_kind("square", 6)
    spins = random_spins(lat.N, rng, size=(3,))
    cpu = DoubleExchange(lat, J=4.0, mu=-2.5, J_direct=0.1)
    gpu = DoubleExchange(lat, J=4.0, mu=-2.5, J_direct=0.1, backend="cupy")
    assert np.allclose(gpu.eigenvalues(spins), cpu.eigenvalues(spins), atol=1e-10)
    assert np.allclose(gpu.eigenvalues(spins[0]), cpu.eigenvalues(spins[0]), atol=1e-10)
    assert abs(gpu.free_energy_of(spins[1], 30.0) - cpu.free_energy_of(spins[1], 30.0)) < 1e-10


@pytest.mark.skipif(GPU, reason="a GPU is present")
def test_cupy_without_gpu_is_a_clear_config_error():
    cfg = small_config(model={"mu": None}, run={"backend": "cupy", "progress_every": None})
    with pytest.raises(ConfigError, match=r"\[run\] backend = 'cupy': .*(CuPy is not installed|no CUDA device)"):
        build_physics(cfg)


def test_each_rank_takes_the_gpu_of_its_node_local_rank():
    assert [device_for(r, 4) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [device_for(r, 1) for r in range(3)] == [0, 0, 0]  # one GPU bound per task
    with pytest.raises(RuntimeError, match="no CUDA device"):
        device_for(0, 0)
