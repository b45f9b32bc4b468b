"""Parallel tempering in one process, end to end: the exchange record is consistent with the
rows, and tempering does not change what each temperature samples."""

import h5py
import numpy as np

from slmc_hpc.cli import main
from slmc_hpc.stats import binned_error, tau_int

from configs import small_toml


def config(every, measure):
    return small_toml(temperatures={"values": [0.1, 0.2, 0.4], "exchange_every": every},
                      effective_model={"shells": 4},
                      run={"thermalize": 400, "measure": measure, "snapshot_every": 500, "seed": 5, "step_size": 0.8,
                           "progress_every": 60})


def run(tmp_path, every, measure):
    out = tmp_path / f"pt{every}.h5"
    cfg = tmp_path / f"pt{every}.toml"
    cfg.write_text(config(every, measure))
    assert main(["run", str(cfg), "--output", str(out)]) == 0
    return out


def test_exchange_record_is_consistent(tmp_path):
    path = run(tmp_path, every=5, measure=200)
    with h5py.File(path, "r") as f:
        slots, accepted = f["tempering/slot_of_replica"][:], f["tempering/accepted"][:]
        assert slots.shape == (40, 3) and accepted.shape == (40, 2)
        assert list(f["measure/n_written"][:]) == [200] * 3
        pair_acc = f["summary/pair_acceptance"][:]
    previous = np.arange(3)
    for k, (row, acc) in enumerate(zip(slots, accepted)):
        assert sorted(row) == [0, 1, 2]
        tried = [p for p in range(2) if p % 2 == k % 2]
        assert all((acc[p] >= 0) == (p in tried) for p in range(2))
        expected = previous.copy()
        for p in tried:
            if acc[p] == 1:  # the replicas at slots p and p+1 trade places
                a, b = np.flatnonzero(previous == p)[0], np.flatnonzero(previous == p + 1)[0]
                expected[a], expected[b] = p + 1, p
        assert np.array_equal(row, expected), k
        previous = row
    assert np.all((pair_acc > 0) & (pair_acc <= 1))


def error_with_long_bins(x):
    n_bins = min(32, int(len(x) / (20 * tau_int(x))))
    assert n_bins >= 16, "series too short for a reliable binned error"
    return binned_error(x, n_bins)


def test_tempering_samples_each_temperature_like_independent_runs(tmp_path):
    """Every slot's ⟨F⟩/N and ⟨|m|⟩ with exchanges agree with independent chains (no
    exchanges) within 3 combined binned standard errors (6 comparisons: false alarm ≈ 1.6%)."""
    pt, independent = run(tmp_path, every=4, measure=6000), run(tmp_path, every=0, measure=6000)
    with h5py.File(pt, "r") as a, h5py.File(independent, "r") as b:
        assert a["tempering/accepted"].shape[0] == 1500 and b["tempering/accepted"].shape[0] == 0
        assert np.mean(a["tempering/accepted"][:][a["tempering/accepted"][:] >= 0]) > 0.05  # swaps happen
        for slot in range(3):
            for name, get in (("F/N", lambda f: f["measure/free_energy"][slot] / 16),
                              ("|m|", lambda f: np.linalg.norm(f["measure/magnetization"][slot], axis=-1))):
                x, y = get(a), get(b)
                err = np.hypot(error_with_long_bins(x), error_with_long_bins(y))
                assert abs(x.mean() - y.mean()) < 3 * err, (slot, name, x.mean(), y.mean(), err)


def shared(temps):
    return small_toml(temperatures={"values": temps, "exchange_every": 5},
                      effective_model={"kind": "transformer", "layers": 1, "heads": 1, "block_shells": 1},
                      training={"every": 30, "epochs": 2},
                      run={"thermalize": 60, "measure": 20, "snapshot_every": 20, "seed": 3})


def test_one_transformer_serves_every_temperature(tmp_path):
    """The Transformer is one network for all slots, conditioned on β: every slot stores
    the same parameters, and with samples from several β the head's log-β slopes are
    fitted (with one β they cannot be, and stay zero)."""
    def slopes(temps):
        cfg, out = tmp_path / "s.toml", tmp_path / f"s{len(temps)}.h5"
        cfg.write_text(shared(temps))
        assert main(["run", str(cfg), "--output", str(out)]) == 0
        with h5py.File(out, "r") as f:
            params, names = f["model/parameters"][:], list(f["model"].attrs["parameter_names"])
            rounds = f["training/validation_loss"][:]
        assert params.shape[0] == len(temps) and all(np.array_equal(params[0], p) for p in params)
        assert rounds.shape == (len(temps), 2) and np.all(np.isfinite(rounds))
        # e0 = (E_0, E'_0); couplings flattened from (2, shells): J_n then the slopes J'_n
        slope = [names.index("e0[1]")] + [names.index(f"couplings[{3 + n}]") for n in range(3)]
        return params[0][slope]

    assert np.all(slopes([0.1, 0.2, 0.4]) != 0)
    assert np.all(slopes([0.1]) == 0)
