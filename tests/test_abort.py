"""A failure on one MPI rank ends the whole job with a non-zero exit and the traceback shown,
within seconds, instead of a hang (needs mpirun; skipped without it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configs import small_toml

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


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")
def test_bad_input_under_mpirun_is_a_clear_error_not_a_hang(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(small_toml(lattice={"L": 3}, model={"mu": None}, temperatures={"values": [0.1, 0.2, 0.3]},
                              effective_model={"shells": 2},
                              run={"thermalize": 20, "measure": 10, "progress_every": None}))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([MPIRUN, "-n", "2", "--oversubscribe", sys.executable, "-m", "slmc_hpc", "run", str(cfg),
                           "--output", str(tmp_path / "o.h5")], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert "gives 3 temperatures but 2 MPI ranks run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.h5").exists()
