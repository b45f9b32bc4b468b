"""`slmc-hpc keys` and `slmc-hpc check` need neither torch nor MPI: a login node or a laptop
without them can still list the keys and validate a configuration."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "jobscripts" / "example.toml"


def run_without_torch(tmp_path, *args):
    """Run Python with a ``torch`` package on the path whose import fails (as on a machine
    without torch)."""
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed here (test)')\n")
    env = {"PYTHONPATH": f"{fake.parent}:{ROOT}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.parametrize("command", [["keys"], ["check", str(CONFIG)]])
def test_keys_and_check_run_where_torch_cannot_be_imported(tmp_path, command):
    proc = run_without_torch(tmp_path, "-m", "slmc_hpc", *command)
    assert proc.returncode == 0, proc.stderr
    assert "[lattice]" in proc.stdout and "Traceback" not in proc.stderr


def test_the_blocked_torch_really_fails_to_import(tmp_path):
    """Negative control: in the same environment, building a run (which needs the network
    code) fails on the torch import; so the test above would see any torch import."""
    proc = run_without_torch(tmp_path, "-c", "import slmc_hpc.assemble")
    assert proc.returncode != 0 and "torch is not installed here (test)" in proc.stderr


def test_report_runs_where_torch_cannot_be_imported(tmp_path):
    """A report is read on a login node or a laptop: it needs h5py, pandas and matplotlib only."""
    from configs import small_toml
    from slmc_hpc.cli import main

    out = tmp_path / "run.h5"
    (tmp_path / "c.toml").write_text(small_toml(run={"thermalize": 40, "measure": 80, "output": str(out)}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    proc = run_without_torch(tmp_path, "-m", "slmc_hpc", "report", str(out), "-o", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "report.html").exists()
