"""End-to-end: the CLI writes the documented HDF5 layout, and stored snapshots are exact."""

import h5py
import numpy as np
import pytest

from slmc_hpc.cli import main
from slmc_hpc.config import parse
from slmc_hpc.assemble import build_physics
from slmc_hpc.stats import independence_sampler

from configs import small_config, small_toml

RUN = {"model": {"J_direct": 0.05}, "temperatures": {"values": [0.1, 0.5]}, "effective_model": {"shells": 4},
       "slmc": {"local_updates": 16}, "training": {"every": 20},
       "run": {"thermalize": 40, "measure": 60, "snapshot_every": 20, "seed": 3, "progress_every": 0.01}}
TRANSFORMER = {"effective_model": {"kind": "transformer", "layers": 2, "heads": 2, "block_shells": 2,
                                   "attention_shells": 3, "gate_channels": 2},
               "training": {"epochs": 3}}


def config(output, sampler="slmc", *changes, **sections):
    """TOML text of this file's run, writing to ``output``, with ``small_toml``'s changes."""
    return small_toml(RUN, {"run": {"sampler": sampler, "output": str(output)}}, *changes, **sections)


@pytest.fixture(params=["slmc", "exact"])
def run_file(request, tmp_path, capsys):
    out = tmp_path / "run.h5"
    text = config(out, request.param)
    (tmp_path / "c.toml").write_text(text)
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    printed = capsys.readouterr().out
    return request.param, out, text, printed


def test_layout_is_complete(run_file):
    sampler, path, text, printed = run_file
    R, n, m, N = 2, 60, 3, 16
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "slmc-hpc/1" and f.attrs["version"]
        # every key written out (defaults too), meaning what the user's text means
        assert f.attrs["config"] == parse(text).complete_text
        assert f["temperatures"].dtype == np.float64 and list(f["temperatures"][:]) == [0.1, 0.5]
        assert f["measure/free_energy"].shape == (R, n) and f["measure/free_energy"].dtype == np.float64
        assert f["measure/magnetization"].shape == (R, n, 3)
        assert f["measure/accepted"].shape == (R, n) and f["measure/accepted"].dtype == np.int8
        assert f["snapshots/spins"].shape == (R, m, N, 3) and f["snapshots/spins"].dtype == np.float64
        assert f["snapshots/free_energy"].shape == (R, m) and f["snapshots/step"].dtype == np.int64
        assert list(f["measure/n_written"][:]) == [n, n] and list(f["snapshots/n_written"][:]) == [m, m]
        for name in ("free_energy", "magnetization", "acceptance", "fermion_energy", "filling", "nn_correlation"):
            assert np.all(np.isfinite(f[f"measure/{name}"][:])), name
        assert set(np.unique(f["measure/accepted"][:])) <= {0, 1}
        assert list(f["snapshots/step"][0]) == [60, 80, 100]
        # each snapshot is the configuration after its step, so its F is that step's F
        assert np.array_equal(f["snapshots/free_energy"][:], f["measure/free_energy"][:, 19::20])
        if sampler == "slmc":
            assert np.all(np.isfinite(f["model/parameters"][:]))
            assert list(f["model"].attrs["parameter_names"]) == ["E0", "J1", "J2", "J3", "J4"]
            assert list(f["training/step"][0]) == [20, 40]
            assert np.all(f["training/train_loss"][:] >= 0) and np.all(f["training/n_train"][:] > 0)
        assert f["summary/acceptance"].shape == (R,)
        # the floor of τ_int that each slot's log-ratio spread sets; none for the exact sampler
        spread = [np.std(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in f["measure/exact_log_ratio"][:]]
        expected = [independence_sampler(x)[1] for x in spread]
        np.testing.assert_allclose(f["summary/tau_floor"][:], expected, rtol=1e-12)
        assert np.all(np.isfinite(expected)) == (sampler == "slmc")
    assert "steps/s" in printed and "ETA" in printed and "acceptance" in printed


def test_snapshot_free_energy_recomputes_from_spins(run_file):
    _, path, text, _ = run_file
    physics = build_physics(parse(text))
    with h5py.File(path, "r") as f:
        temps = f["temperatures"][:]
        spins, stored = f["snapshots/spins"][:], f["snapshots/free_energy"][:]
    assert np.allclose(np.linalg.norm(spins, axis=-1), 1.0, atol=1e-12)
    for r, T in enumerate(temps):
        recomputed = physics.free_energy_of(spins[r], 1.0 / T)
        assert np.max(np.abs(recomputed - stored[r])) < 1e-10


def test_transformer_run_stores_rounds_and_a_reloadable_model(tmp_path):
    out = tmp_path / "t.h5"
    (tmp_path / "t.toml").write_text(config(out, "slmc", TRANSFORMER))
    assert main(["run", str(tmp_path / "t.toml")]) == 0
    from slmc_hpc.results import read_model

    with h5py.File(out, "r") as f:
        assert f["model"].attrs["kind"] == "transformer"
        assert list(f["training/step"][0]) == [20, 40]
        for name in ("train_loss", "validation_loss", "acceptance"):
            assert np.all(np.isfinite(f[f"training/{name}"][:])), name
        spins = f["snapshots/spins"][1]
        T = f["temperatures"][1]
        # the snapshot after measured step 20k is the configuration whose E_eff was recorded then
        e_eff = f["measure/effective_energy"][1, 19::20]
        assert f["model"].attrs["beta_ref"] == pytest.approx(np.sqrt(10 * 2))  # geometric mean of β
    model = read_model(out, slot=1)
    # Q, K, V; the gates' U, A and b; the head (E_0 and 4 shells, each with its β-slope)
    assert model.beta == 1.0 / T and model.n_parameters == 2 * 2 * 3 * 3 + 2 * (2 * 3 + 2 * 2 + 2) + 2 * 4 + 2
    assert np.allclose(model.energy(spins), e_eff, rtol=0, atol=1e-10)


@pytest.mark.parametrize("inner_bond_shells", [0, 2])
def test_nested_run_stores_the_inner_model_each_slot_measured_with(tmp_path, monkeypatch, inner_bond_shells):
    """Nested SLMC: /model/inner_parameters row s is the inner linear model the chain at slot
    s's temperature used in every measured step (the models travel with the labels), also
    with four-spin terms in the inner model."""
    from slmc_hpc.results import read_model
    from slmc_hpc.samplers.nested import NestedSLMCSampler

    used = []
    step = NestedSLMCSampler.step

    def spy(self, state, rng):
        used.append((self.beta, self.inner.parameters()[0]))
        return step(self, state, rng)

    monkeypatch.setattr(NestedSLMCSampler, "step", spy)
    out = tmp_path / "t.h5"
    # 200 thermalization steps: with inner_bond_shells = 2 a round needs 2 x 38 training samples
    (tmp_path / "t.toml").write_text(config(out, "slmc", TRANSFORMER, training={"every": 100},
                                            slmc={"scheme": "nested", "inner_bond_shells": inner_bond_shells},
                                            run={"thermalize": 200, "snapshot_every": 100}))
    assert main(["run", str(tmp_path / "t.toml")]) == 0
    with h5py.File(out, "r") as f:
        temps = f["temperatures"][:]
        measured = f["measure/n_written"][0]
        names = list(f["model"].attrs["inner_parameter_names"])
        assert names[0] == "E0" and ("K1" in names) == (inner_bond_shells > 0)
    assert measured == 60
    for slot, T in enumerate(temps):
        inner = read_model(out, slot, inner=True)
        stored = inner.parameters()[0]
        in_measurement = [p for beta, p in used[-measured * len(temps):] if beta == 1.0 / T]
        assert len(in_measurement) == measured and np.all(np.isfinite(stored))
        for p in in_measurement:
            np.testing.assert_array_equal(p, stored)
    assert not np.array_equal(read_model(out, 0, inner=True).couplings, read_model(out, 1, inner=True).couplings)


def test_a_run_whose_rounds_never_get_enough_samples_says_so(tmp_path, capsys):
    # bond_shells = 2 at any range on the 4x4 lattice: E_0, 4 J_n and 33 bond-pair couplings, so a
    # round needs 76 training samples; 40 thermalization steps give at most 32 per slot
    printed = {}
    for bond_shells in (0, 2):
        out = tmp_path / f"run{bond_shells}.h5"
        (tmp_path / "c.toml").write_text(config(out, effective_model={"bond_shells": bond_shells, "bond_range": 0.0}))
        assert main(["run", str(tmp_path / "c.toml")]) == 0
        printed[bond_shells] = capsys.readouterr().out
        with h5py.File(out, "r") as f:
            assert np.any(f["training/n_train"][:] > 0) == (bond_shells == 0)
    assert "no training round ran" not in printed[0]
    assert "no training round ran for temperature slot(s) [0, 1]: a round needs twice the model's 38 " in printed[2]


def test_read_model_inner_of_a_run_without_one(run_file):
    from slmc_hpc.config import ConfigError
    from slmc_hpc.results import read_model

    with pytest.raises(ConfigError, match="no inner model"):
        read_model(run_file[1], 0, inner=True)


def test_training_failure_exits_3_and_keeps_the_file(tmp_path, capsys, monkeypatch):
    from slmc_hpc.training.errors import TrainingError
    from slmc_hpc.training.network import TorchTrainer

    def diverge(self, train, validation, beta=None, interrupt=None):
        raise TrainingError("training loss became nan in round 1, epoch 1")

    monkeypatch.setattr(TorchTrainer, "train", diverge)
    out = tmp_path / "t.h5"
    (tmp_path / "t.toml").write_text(config(out, "slmc", TRANSFORMER))
    assert main(["run", str(tmp_path / "t.toml")]) == 3
    assert "training failed: training loss became nan" in capsys.readouterr().err
    with h5py.File(out, "r") as f:  # closed cleanly, still a valid file
        assert f.attrs["format"] == "slmc-hpc/1"


def test_records_written_in_blocks_of_any_size_give_the_same_file(tmp_path, monkeypatch):
    """Where the writes fall (a cap of 7 steps, or one write at the end) changes nothing in
    the file, including a block that ends exactly at the last step."""
    from slmc_hpc import driver, run_loop
    from slmc_hpc.testing import assert_same_files

    cfg = small_config(lattice={"L": 3}, model={"mu": -1.0}, temperatures={"values": [0.2, 0.3], "exchange_every": 2},
                       effective_model={"shells": 2}, training={"every": 10},
                       run={"thermalize": 10, "measure": 28, "snapshot_every": 3})
    driver.run(cfg, output=tmp_path / "one.h5", log=lambda *a: None)
    monkeypatch.setattr(run_loop, "MAX_PENDING_STEPS", 7)
    driver.run(cfg, output=tmp_path / "blocks.h5", log=lambda *a: None)
    assert_same_files(tmp_path / "one.h5", tmp_path / "blocks.h5")


def test_read_model_of_a_linear_file_from_before_bond_pair_terms(tmp_path):
    """Older versions ignored [effective_model] bond_shells for the linear model and stored
    E_0 and J_n only; such a file reloads as that model (no bond-pair terms)."""
    from slmc_hpc.results import read_model

    out = tmp_path / "old.h5"
    (tmp_path / "c.toml").write_text(config(out))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    with h5py.File(out, "r+") as f:
        stored = f["model/parameters"][0]
        # the file keeps every key: set the one an old run ignored
        f.attrs["config"] = f.attrs["config"].replace("bond_shells = 0", "bond_shells = 2")
        assert "bond_shells = 2" in f.attrs["config"]
    model = read_model(out, 0)
    assert model.bond_shells == 0
    np.testing.assert_array_equal(model.parameters()[0], stored)


def test_a_stored_configuration_from_before_0_2_keeps_its_defaults(tmp_path):
    """Files written before 0.2 store the user's text, omitted keys omitted; they meant the
    defaults of then (3 shells, no bond-pair terms), not today's (LEGACY_DEFAULTS)."""
    from slmc_hpc.results import read_model

    out = tmp_path / "old.h5"
    (tmp_path / "c.toml").write_text(config(out, "slmc", effective_model={"shells": 3}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    with h5py.File(out, "r+") as f:
        assert "\nbond_shells = 0" in f.attrs["config"] and "\nshells = 3" in f.attrs["config"]
        stored = f["model/parameters"][0]
        old = "\n".join(line for line in f.attrs["config"].splitlines()
                        if not line.startswith(("shells", "bond_shells", "inner_bond_shells")))
        f.attrs["config"] = old
    assert parse(old).effective_model.shells == 5  # what the text means today (all 5 distances of 4x4) ...
    model = read_model(out, 0)  # ... and what it meant when it was stored
    assert model.n_shells == 3 and model.bond_shells == 0
    np.testing.assert_array_equal(model.parameters()[0], stored)
