"""A failure on one MPI rank ends the whole job with a non-zero exit and the traceback shown,
within seconds, instead of a hang (needs mpirun; skipped without it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MPIRUN = shutil.which("mpirun")


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")
def test_exception_on_one_rank_aborts_the_job():
    script = Path(__file__).parent / "mpi" / "failing_rank.py"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([MPIRUN, "-n", "3", "--oversubscribe", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert "deliberate failure on rank 1" in proc.stderr and "Traceback" in proc.stderr
    assert "rank 1 failed; aborting all 3 ranks" in proc.stderr
