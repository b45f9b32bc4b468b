"""analysis/depth_study.py on a tiny problem: every variant runs, the table names them, and a
study killed mid-variant continues from that variant's checkpoint to the same files as an
uninterrupted study (earlier versions skipped the killed variant's partial file)."""

import importlib.util
import signal
from pathlib import Path

import pytest

from slmc_hpc import driver
from slmc_hpc.testing import assert_same_files

SCRIPT = Path(__file__).resolve().parents[1] / "analysis" / "depth_study.py"
CONFIG = """
[lattice]
L = 4
[model]
mu = -2.5
[temperatures]
values = [0.1]
[effective_model]
kind = "transformer"
shells = 3
bond_shells = 1
layers = 1
block_shells = 1
[slmc]
local_updates = 16
inner_bond_shells = 1
[training]
every = 10
epochs = 2
[run]
thermalize = 30
measure = 40
snapshot_every = 20
seed = 5
progress_every = 600
"""


def depth_study():
    spec = importlib.util.spec_from_file_location("depth_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_depth_study_runs_every_variant_and_resumes_a_killed_one(tmp_path, monkeypatch):
    study = depth_study()
    (tmp_path / "c.toml").write_text(CONFIG)
    args = [str(tmp_path / "c.toml"), "--layers", "0", "1", "--gate-channels", "2"]
    assert study.main(args + ["--outdir", str(tmp_path / "whole")]) == 0
    table = (tmp_path / "whole" / "depth_study.txt").read_text()
    for name in ("linear ", "linear-bonds", "transformer-0", "transformer-1"):
        assert name in table
    rows = [line.split() for line in table.splitlines()[1:]]
    params = {row[0]: int(row[1]) for row in rows if row[0].startswith("transformer") and row[1].isdigit()}
    # one head, block shells 0..1: Q, K, V (6) and two gate channels (U 4, A 4, b 2)
    assert params["transformer-1"] - params["transformer-0"] == 6 + 10
    assert (tmp_path / "whole" / "depth_study.png").stat().st_size > 0

    original = driver._Run.poll

    def poll(self, phase, step):  # a stop signal in the first variant's measurement
        if (phase, step) == ("measure", 17):
            self.control.signals.received = signal.SIGUSR1
        return original(self, phase, step)

    with monkeypatch.context() as m:
        m.setattr(driver, "CONTROL_EVERY", 1)
        m.setattr(driver._Run, "poll", poll)
        with pytest.raises(driver.Interrupted):
            study.main(args + ["--outdir", str(tmp_path / "cut")])
    assert (tmp_path / "cut" / "linear.h5.ckpt").exists()
    assert study.main(args + ["--outdir", str(tmp_path / "cut")]) == 0
    for name in ("linear", "linear-bonds", "transformer-0", "transformer-1"):
        assert_same_files(tmp_path / "whole" / f"{name}.h5", tmp_path / "cut" / f"{name}.h5")
