"""Run under mpirun: rank 1 raises while the others wait in a collective. With the abort
hook installed the job must end (non-zero) instead of hanging."""

import sys

from slmc_hpc.parallel.comm import MPIComm, abort_on_uncaught_exception

comm = MPIComm()
abort_on_uncaught_exception(comm)
if comm.rank == 1:
    raise RuntimeError("deliberate failure on rank 1")
comm.barrier()  # never completes: rank 1 is gone
sys.exit(0)
