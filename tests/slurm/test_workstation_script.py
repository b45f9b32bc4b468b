"""jobscripts/workstation.sh: mpirun with one rank per temperature; Ctrl-C (SIGINT to the
script) makes the ranks checkpoint and the script exit 75; running it again resumes and
completes the run; a third run sees the complete file and exits 0. Needs mpirun (no Slurm);
about 15-30 s."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "jobscripts" / "workstation.sh"
MEASURE = 20_000

CONFIG = f"""\
[lattice]
L = 4
[model]
mu = -2.5
[temperatures]
values = [0.05, 0.1]
[effective_model]
shells = 3
[slmc]
local_updates = 16
[run]
thermalize = 100
measure = {MEASURE}
snapshot_every = 5000
progress_every = 1
"""


def _default_sigint():
    # A shell cannot trap a signal that was ignored when it started (as SIGINT is for
    # background jobs of a non-interactive shell): give the script a fresh SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not found")
def test_workstation_script_interrupt_and_resume(slmc_venv, tmp_path):
    import h5py

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    output = tmp_path / "out" / "run.h5"
    env = dict(os.environ, VENV=str(slmc_venv))
    cmd = ["bash", str(SCRIPT), str(cfg), str(output)]
    log1 = tmp_path / "first.log"
    with open(log1, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                             preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 60
        while "measuring" not in log1.read_text():
            assert p.poll() is None, log1.read_text()
            assert time.monotonic() < deadline, log1.read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    text = log1.read_text()
    assert rc == 75, text
    assert "received SIGINT" in text and "run the same command again to resume" in text, text
    assert Path(f"{output}.ckpt").exists(), text

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2
    assert "resuming from" in out2, out2
    with h5py.File(output, "r") as f:
        assert f["measure/n_written"][:].tolist() == [MEASURE, MEASURE]
        assert "summary" in f
        assert np.isfinite(f["measure/free_energy"][:]).all()

    third = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "already complete" in third.stdout + third.stderr
