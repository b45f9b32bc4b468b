"""The installed MPI stack: mpi4py talks to every rank and h5py writes one file collectively
with the MPI-IO driver (the way run output will be written)."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi


def test_allreduce_sums_over_ranks():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    buf = np.array([comm.rank + 1.0])
    out = np.empty(1)
    comm.Allreduce(buf, out, op=MPI.SUM)
    assert out[0] == comm.size * (comm.size + 1) / 2


def test_h5py_collective_write_with_mpio(tmp_path_factory):
    import h5py
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    assert h5py.get_config().mpi, "h5py was built without MPI; rerun jobscripts/install.sh"
    path = comm.bcast(str(tmp_path_factory.mktemp("mpio") / "rows.h5") if comm.rank == 0 else None)
    with h5py.File(path, "w", driver="mpio", comm=comm) as f:
        dset = f.create_dataset("rows", shape=(comm.size, 5), dtype="f8")
        with dset.collective:
            dset[comm.rank] = np.full(5, float(comm.rank))
    comm.Barrier()
    if comm.rank == 0:
        with h5py.File(path, "r") as f:
            assert np.array_equal(f["rows"][:], np.repeat(np.arange(comm.size, dtype=float)[:, None], 5, axis=1))
