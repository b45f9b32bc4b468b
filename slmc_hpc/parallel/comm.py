"""The communicator the rest of the code talks to: ``SerialComm`` for one process, ``MPIComm``
around mpi4py's COMM_WORLD under mpirun/srun. Both offer the same few collectives, so the
run loop and the trainer are written once.

``world()`` imports mpi4py (which initializes MPI) only when a launcher's environment says
several ranks are running, so a plain ``slmc-hpc run`` never touches MPI.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

# set by mpirun (Open MPI), by PMI/PMIx launchers, and by srun for the tasks of a job step
LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")


class SerialComm:
    rank = 0
    size = 1
    node_rank = 0
    allreduce_seconds = 0.0

    def bcast(self, obj, root: int = 0):
        return obj

    def allgather(self, obj) -> list:
        return [obj]

    def gather(self, obj, root: int = 0) -> list:
        return [obj]

    def alltoall(self, objs: list) -> list:
        return list(objs)

    def scatter(self, objs: list, root: int = 0):
        return objs[0]

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPIComm:
    """mpi4py's COMM_WORLD behind the SerialComm interface."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # rank within the node, for choosing this rank's GPU
        self.node_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.allreduce_seconds = 0.0  # wall time in allreduce_sum (training), waiting included

    def bcast(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def gather(self, obj, root: int = 0) -> list | None:
        return self.comm.gather(obj, root=root)

    def alltoall(self, objs: list) -> list:
        """objs[j] goes to rank j; returns what each rank sent to this one."""
        return self.comm.alltoall(objs)

    def scatter(self, objs: list | None, root: int = 0):
        """objs[j] (given on root) goes to rank j."""
        return self.comm.scatter(objs, root=root)

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(array)
        out = np.empty_like(array)
        start = time.perf_counter()
        self.comm.Allreduce(array, out, op=self._mpi.SUM)
        self.allreduce_seconds += time.perf_counter() - start
        return out

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def on_rank0(comm, func, errors: tuple = (), share: bool = True):
    """func() on rank 0 alone. An exception of a type in ``errors`` is raised on every rank
    (same type and message), so no rank is left waiting in a later collective; the result
    is returned on every rank (``share``) or on rank 0 only (None elsewhere)."""
    result = failure = None
    if comm.rank == 0:
        try:
            result = func()
        except errors as exc:
            failure = (type(exc), str(exc))
    if share:
        result, failure = comm.bcast((result, failure))
    else:
        failure = comm.bcast(failure)
    if failure:
        raise failure[0](failure[1])
    return result


def abort_on_uncaught_exception(comm) -> None:
    """Make an uncaught exception on any rank print its traceback and abort the whole job
    (MPI_Abort), instead of leaving the other ranks waiting in a collective for ever."""
    if comm.size == 1:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.write(f"slmc-hpc: rank {comm.rank} failed; aborting all {comm.size} ranks\n")
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


def launched_with_several_ranks() -> bool:
    for var in LAUNCHER_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 1:
            return True
    return False


def world():
    """MPIComm when started by an MPI launcher with more than one rank, else SerialComm."""
    return MPIComm() if launched_with_several_ranks() else SerialComm()
