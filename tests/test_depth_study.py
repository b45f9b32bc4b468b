"""analysis/depth_study.py on a tiny problem: every variant runs, the table names them, and a
study killed mid-variant continues from that variant's checkpoint to the same files as an
uninterrupted study (earlier versions skipped the killed variant's partial file)."""

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from slmc_hpc import driver
from slmc_hpc.testing import assert_same_files

from configs import small_toml
from test_checkpoint import stop_at

SCRIPT = Path(__file__).resolve().parents[1] / "analysis" / "depth_study.py"
CONFIG = small_toml(effective_model={"kind": "transformer", "bond_shells": 1, "layers": 1, "block_shells": 1},
                    slmc={"local_updates": 16, "inner_bond_shells": 1}, training={"every": 40, "epochs": 2},
                    run={"thermalize": 120, "measure": 40, "snapshot_every": 20, "seed": 5})


def load_script(path=SCRIPT):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_depth_study_runs_every_variant_and_resumes_a_killed_one(tmp_path, monkeypatch):
    study = load_script()
    (tmp_path / "c.toml").write_text(CONFIG)
    args = [str(tmp_path / "c.toml"), "--layers", "0", "1", "--gate-channels", "2", "--timing-rounds", "2",
            "--timing-block", "5"]
    assert study.main(args + ["--outdir", str(tmp_path / "whole")]) == 0
    table = (tmp_path / "whole" / "depth_study.txt").read_text()
    for name in ("linear ", "linear-bonds", "transformer-0", "transformer-1"):
        assert name in table
    rows = [line.split() for line in table.splitlines()[1:]]
    params = {row[0]: int(row[1]) for row in rows if row[0].startswith("transformer") and row[1].isdigit()}
    # one head, block shells 0..1: Q, K, V (6) and two gate channels (U 4, A 4, b 2)
    assert params["transformer-1"] - params["transformer-0"] == 6 + 10
    assert (tmp_path / "whole" / "depth_study.png").stat().st_size > 0
    timed = json.loads((tmp_path / "whole" / study.TIMING_FILE).read_text())["seconds_per_step"]
    assert sorted(timed) == ["linear", "linear-bonds"] + sorted(params) and min(timed.values()) > 0
    for name in timed:  # the timed chain is the measured one: its model(s) at its last snapshot
        path = tmp_path / "whole" / f"{name}.h5"
        rep = study.frozen_replica(path, seed=0)
        with h5py.File(path, "r") as f:
            assert np.any(f["training/n_train"][0] > 0)  # every variant trained (so its model is not zero)
            k = f["snapshots/n_written"][0] - 1  # snapshot k follows measured step (k + 1) * 20
            recorded = f["measure/effective_energy"][0, (k + 1) * 20 - 1], f["snapshots/free_energy"][0, k]
            stored = f["model/parameters"][0], f["model/inner_parameters"][0] if "inner_parameters" in f["model"] else None
        np.testing.assert_array_equal(rep.model.parameters()[0], stored[0])
        if name.startswith("transformer"):
            np.testing.assert_array_equal(rep.sampler.inner.parameters()[0], stored[1])
        assert rep.state.e_eff == pytest.approx(recorded[0], rel=1e-10, abs=1e-10)
        assert rep.sampler.free_energy(rep.state) == pytest.approx(recorded[1], rel=1e-12)

    with monkeypatch.context() as m:
        stop_at(m, "measure", 17)  # a stop signal in the first variant's measurement
        with pytest.raises(driver.Interrupted):
            study.main(args + ["--outdir", str(tmp_path / "cut")])
    assert (tmp_path / "cut" / "linear.h5.ckpt").exists()
    seeds = load_script(SCRIPT.with_name("depth_seeds.py"))
    with pytest.raises(SystemExit, match="no finished linear.h5"):  # the stopped variant is left out
        seeds.load_rows(tmp_path / "cut")
    assert study.main(args + ["--outdir", str(tmp_path / "cut")]) == 0
    for name in ("linear", "linear-bonds", "transformer-0", "transformer-1"):
        assert_same_files(tmp_path / "whole" / f"{name}.h5", tmp_path / "cut" / f"{name}.h5")


def test_depth_seeds_table_reads_each_study_against_its_own_linear_row(tmp_path, capsys):
    seeds = load_script(SCRIPT.with_name("depth_seeds.py"))
    row = {"acceptance": 0.5, "tau": 10.0, "seconds_per_step": 1e-3}
    studies = {"s1": {"linear": row, "linear-bonds": dict(row, acceptance=0.9),
                      "transformer-1": dict(row, acceptance=0.6, tau=5.0), "transformer-2": dict(row, acceptance=0.7)},
               "s2": {"linear": dict(row, seconds_per_step=2e-3), "transformer-2": dict(row, acceptance=0.8),
                      "transformer-1": dict(row, acceptance=0.85)}}
    assert seeds.rises_strictly(studies["s1"])  # linear-bonds above every Transformer is a control, not a step
    assert not seeds.rises_strictly(studies["s2"])  # in order of depth, not of the dict
    lines = seeds.table(studies).splitlines()
    cost = [line.split()[4:] for line in lines if line.startswith("transformer-1") and "cost" in line]
    assert cost == [["0.500", "0.500", "0.500"]]  # s2's linear steps took twice as long
    assert not any(line.startswith("linear-bonds") for line in lines)  # not in every study
    assert lines[-1].endswith("s1: yes, s2: no")
