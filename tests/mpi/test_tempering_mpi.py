"""The tempering run distributed over MPI ranks (one replica per rank) writes exactly the file
a single process writes for the same configuration: same rows, same exchanges, same models."""

import h5py
import numpy as np
import pytest

from slmc_hpc.config import parse
from slmc_hpc.driver import run
from slmc_hpc.parallel.comm import MPIComm, SerialComm

pytestmark = pytest.mark.mpi

CONFIG = """
[lattice]
L = 3
[model]
mu = -1.0
[temperatures]
values = {temps}
exchange_every = 3
[effective_model]
shells = 2
[training]
every = 20
[run]
thermalize = 40
measure = 60
snapshot_every = 20
seed = 9
progress_every = 600
"""


def compare(a, b, path=""):
    for key in a:
        if isinstance(a[key], h5py.Group):
            compare(a[key], b[key], f"{path}/{key}")
        elif key != "seconds_per_step":
            x, y = a[key][()], b[key][()]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{path}/{key}"


def test_mpi_run_equals_single_process_run(tmp_path_factory):
    comm = MPIComm()
    temps = [round(0.2 * 1.6**r, 4) for r in range(comm.size)]
    cfg = parse(CONFIG.format(temps=temps))
    where = comm.bcast(str(tmp_path_factory.mktemp("pt")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/mpi.h5", comm=comm, log=lambda *a: None)
    if comm.rank == 0:
        run(cfg, output=f"{where}/serial.h5", comm=SerialComm(), log=lambda *a: None)
        with h5py.File(f"{where}/mpi.h5", "r") as a, h5py.File(f"{where}/serial.h5", "r") as b:
            assert a["tempering/slot_of_replica"].shape == (20, comm.size)
            assert list(a["measure/n_written"][:]) == [60] * comm.size
            compare(a, b)
    comm.barrier()
