"""The run report (slmc-hpc report; slmc_hpc/tables.py, report.py, thermodynamics.py): error
bars and τ_int on series with known answers, the Binder ratio's jackknife error, tempering
diagnostics on hand-made trajectories, and the report end to end on real, partial, foreign
and damaged files."""

import shutil

import h5py
import numpy as np
import pytest

from slmc_hpc.cli import main
from slmc_hpc.stats import independence_sampler, tau_int
from slmc_hpc.tables import load, replay_round_trips
from slmc_hpc.thermodynamics import binder_ratio, jackknife, susceptibility

from configs import small_toml


def ar1(phi, n, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.standard_normal() / np.sqrt(1 - phi**2)
    noise = rng.standard_normal(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def test_tau_and_error_of_an_ar1_series():
    """x_t = φ x_{t-1} + ε_t: τ_int = (1 + φ)/(1 - φ) = 9 for φ = 0.8, and the standard error
    of the mean √(Var x · τ / n), Var x = 1/(1 - φ²). Tolerances: τ within 15%, the error
    within 30% (the jackknife over 32 bins has itself a 13% spread)."""
    phi, n = 0.8, 200_000
    x = ar1(phi, n, seed=1)
    tau = (1 + phi) / (1 - phi)
    assert tau_int(x) == pytest.approx(tau, rel=0.15)
    _, error = jackknife(np.mean, x, n_bins=32)
    assert error == pytest.approx(np.sqrt(tau / (1 - phi**2) / n), rel=0.3)


def test_binder_jackknife_on_gaussian_vectors():
    """For independent Gaussian 3-vectors R = ⟨m⁴⟩/⟨m²⟩² = 15/9 = 5/3, and by the delta method
    its standard error is √(Var X / n), X = m⁴/b² - 2a m²/b³ (a = 15, b = 3 in units of the
    variance): Var X = (945 - 20·105 + 100·15)/81 - (15/9)² = 1.4815. The jackknife over 100
    bins (a 7% spread of its own) must give it within 25%, and R within 3 errors of 5/3."""
    n = 20_000
    m = np.linalg.norm(np.random.default_rng(4).standard_normal((n, 3)), axis=1)
    value, error = jackknife(binder_ratio, m, n_bins=100)
    known = np.sqrt((345 / 81 - (15 / 9) ** 2) / n)
    assert error == pytest.approx(known, rel=0.25)
    assert abs(value - 5 / 3) < 3 * known
    # ordered limit: |m| fixed gives R = 1 and no susceptibility
    assert binder_ratio(np.full(10, 0.7)) == pytest.approx(1.0)
    assert susceptibility(np.full(10, 0.7), beta=3.0, n_sites=16) == pytest.approx(0.0, abs=1e-12)
    assert susceptibility(np.array([0.0, 1.0]), beta=2.0, n_sites=4) == pytest.approx(2.0)  # 2·4·(0.5 - 0.25)


def test_round_trips_and_up_fraction_on_a_hand_made_trajectory():
    """Two slots, the replicas swapping every round. Replica 0: bottom, top, bottom, top, one
    round trip (completed at round 3). Replica 1: top, bottom, top, bottom: its first visit
    to the bottom only labels it, the trip bottom -> top -> bottom ends at round 4."""
    trips = replay_round_trips(np.array([[0, 1], [1, 0], [0, 1], [1, 0]]), 2)
    assert trips.completed.tolist() == [1, 1]
    assert trips.up_fraction().tolist() == [1.0, 0.0]  # every bottom visit is an up-mover's
    stay = replay_round_trips(np.array([[0, 1]] * 5), 2)  # no exchange: nobody travels
    assert stay.completed.tolist() == [0, 0]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run.h5"
    text = small_toml(temperatures={"values": [0.05, 0.08, 0.12], "exchange_every": 2},
                      model={"J_direct": 0.1}, run={"thermalize": 100, "measure": 400, "snapshot_every": 40,
                                                    "seed": 5, "output": str(out)})
    (out.parent / "c.toml").write_text(text)
    assert main(["run", str(out.parent / "c.toml")]) == 0
    return out


def test_tables_are_the_files_numbers(run_file):
    run = load(run_file)
    t = run.thermodynamics
    assert len(t) == 3 and not run.partial
    with h5py.File(run_file, "r") as f:
        N = int(f.attrs["N"])
        np.testing.assert_allclose(t["F_per_site"], f["measure/free_energy"][:].mean(axis=1) / N, rtol=1e-12)
        np.testing.assert_allclose(t["abs_m"], np.linalg.norm(f["measure/magnetization"][:], axis=-1).mean(axis=1),
                                   rtol=1e-12)
        np.testing.assert_allclose(t["electrons_sd"], N * f["measure/filling"][:].std(axis=1), rtol=1e-12)
        np.testing.assert_allclose(run.slots["up_fraction"], f["summary/up_fraction"][:], equal_nan=True)
        np.testing.assert_array_equal(run.slots["round_trips"], f["summary/round_trips"][:])
        np.testing.assert_allclose(run.pairs["acceptance"], f["summary/pair_acceptance"][:])
    assert np.all(t["F_per_site_err"] > 0) and np.all(t["C_per_site"] > 0)
    assert run.barrier == pytest.approx(float(np.sum(1 - run.pairs["acceptance"])))
    assert run.round_trip_rate == pytest.approx(run.slots["round_trips"].sum() / (400 // 2))
    # the learned couplings are the stored J_n; beside them perturbation theory at each slot's β
    from slmc_hpc.perturbation import rkky_couplings

    c = run.couplings
    with h5py.File(run_file, "r") as f:
        learned = f["model/parameters"][:, 1:1 + run.config.effective_model.shells]
    np.testing.assert_array_equal(c["J_learned"].to_numpy().reshape(learned.shape), learned)
    m = run.config.model
    np.testing.assert_allclose(c[c["T"] == 0.08]["J_rkky"], rkky_couplings(run.lattice, 3, m.t, m.J, m.mu, 1 / 0.08,
                                                                            m.J_direct))
    # model accuracy: the exact test's log-ratio of every proposal, and the acceptance it implies
    a = run.accuracy
    with h5py.File(run_file, "r") as f:
        ratios = f["measure/exact_log_ratio"][:]
        accepted = f["measure/accepted"][:]
    assert set(a["log_ratio_over"]) == {"every proposal"} and np.all(np.isfinite(ratios))
    np.testing.assert_allclose(a["std_log_ratio"], ratios.std(axis=1), rtol=1e-12)
    # ⟨min(1, e^ratio)⟩ is the Metropolis acceptance probability: it matches the accepted fraction
    # within 3 binomial errors (400 steps per slot)
    moved = accepted.mean(axis=1)
    assert np.all(np.abs(a["implied_acceptance"] - moved) < 3 * np.sqrt(moved * (1 - moved) / 400) + 1e-9)
    # the floor an independence sampler would have at that spread
    np.testing.assert_allclose(a["tau_floor"], [independence_sampler(x)[1] for x in a["std_log_ratio"]])


def test_the_report_sets_tau_int_beside_its_floor(run_file):
    from slmc_hpc.report import FLOOR_RATIO, _summary_lines

    run = load(run_file)  # T = 0.05, 0.08, 0.12
    said = lambda: [line for line in _summary_lines(run) if "τ_int of independent proposals" in line]
    floor = run.accuracy["tau_floor"].to_numpy()
    run.thermodynamics["F_per_site_tau"] = floor * [1.1, 0.9, 1.5]
    assert len(said()) == 1 and "a longer inner path would probably buy little" in said()[0]
    run.thermodynamics["F_per_site_tau"] = floor * [1.1, 3 * FLOOR_RATIO, 1.5]
    assert "T = 0.08) the inner path does not decorrelate" in said()[0]
    run.accuracy["tau_floor"] = np.nan  # a file without every proposal's log-ratio: no line
    assert not said()


def test_the_report_says_when_levels_lie_at_the_fermi_level_at_the_lowest_temperature(run_file):
    from slmc_hpc.report import OPEN_SHELL_SD, _summary_lines

    run = load(run_file)  # T = 0.05, 0.08, 0.12
    said = lambda: [line for line in _summary_lines(run) if "the electron number fluctuates" in line]
    run.thermodynamics["electrons_sd"] = [5 * OPEN_SHELL_SD, 0.0, 0.0]
    assert len(said()) == 1 and "T = 0.05" in said()[0] and "deviation 0.50" in said()[0]
    run.thermodynamics["electrons_sd"] = [0.5 * OPEN_SHELL_SD, 5 * OPEN_SHELL_SD, 5 * OPEN_SHELL_SD]
    assert not said()  # higher temperatures have levels near μ in any case


def test_accuracy_of_a_file_without_log_ratios_uses_accepted_steps(run_file, tmp_path):
    """Files before 0.2 lack /measure/exact_log_ratio: the spread is taken over the accepted
    steps from consecutive rows, leaving out those right after an exchange round (every 2)."""
    old = tmp_path / "old.h5"
    shutil.copy(run_file, old)
    with h5py.File(old, "r+") as f:
        del f["measure/exact_log_ratio"]
        moved = f["measure/accepted"][:, 1:] == 1
        after_exchange = np.arange(1, moved.shape[1] + 1) % 2 == 0
        F, E = f["measure/free_energy"][:], f["measure/effective_energy"][:]
    a = load(old).accuracy
    expected = [np.std(np.diff(F[r] - E[r])[moved[r] & ~after_exchange] / T) for r, T in enumerate([0.05, 0.08, 0.12])]
    np.testing.assert_allclose(a["std_log_ratio"], expected, rtol=1e-10)
    assert set(a["log_ratio_over"]) == {"accepted steps"} and a["implied_acceptance"].isna().all()
    assert a["tau_floor"].isna().all()  # a spread over accepted steps only is biased: no floor from it


def test_report_writes_every_file_and_figure(run_file, tmp_path):
    import matplotlib.image

    assert main(["report", str(run_file), "-o", str(tmp_path / "rep")]) == 0
    out = tmp_path / "rep"
    for name in ("report.html", "report.md", "report.json", "thermodynamics.csv", "tempering_pairs.csv",
                 "tempering_slots.csv", "training.csv", "couplings.csv", "accuracy.csv"):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"thermodynamics.png", "structure_factor.png", "tempering.png", "training.png",
                                      "couplings.png", "accuracy.png"}
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.std() > 0.01, f"{png.name} is blank"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    for section in ("Thermodynamics", "Tempering: pairs", "Tempering: slots", "Training", "Structure factor",
                    "Inside the model"):
        assert section in html, section
    assert "Partial run" not in html


def test_a_partial_run_is_reported_on_its_written_part(run_file, tmp_path):
    partial = tmp_path / "partial.h5"
    shutil.copy(run_file, partial)
    with h5py.File(partial, "r+") as f:
        f["measure/n_written"][:] = 150
    run = load(partial)
    assert run.partial and run.thermodynamics["steps"].tolist() == [150] * 3
    assert run.pairs["attempts"].sum() == 150 // 2  # exchange rounds within the written steps
    with h5py.File(partial, "r") as f:
        np.testing.assert_allclose(run.thermodynamics["F_per_site"],
                                   f["measure/free_energy"][:, :150].mean(axis=1) / int(f.attrs["N"]))
    assert main(["report", str(partial), "-o", str(tmp_path / "rep")]) == 0
    assert "Partial run" in (tmp_path / "rep" / "report.html").read_text()


def test_foreign_damaged_and_empty_files_are_clear_errors(run_file, tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 3])
    empty = tmp_path / "empty.h5"
    shutil.copy(run_file, empty)
    with h5py.File(empty, "r+") as f:
        f["measure/n_written"][:] = 0
    for path, words in ((foreign, "not an slmc-hpc/1 run file"), (truncated, "truncated"),
                        (empty, "no measured step"), (tmp_path / "missing.h5", "does not exist")):
        assert main(["report", str(path), "-o", str(tmp_path / "r")]) == 2, path
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1, err


def test_compare_puts_runs_side_by_side(run_file, tmp_path, capsys):
    other = tmp_path / "other.h5"
    shutil.copy(run_file, other)
    assert main(["compare", str(run_file), str(other), "--csv", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert "run.h5" in printed and "other.h5" in printed
    import pandas as pd

    table = pd.read_csv(tmp_path / "c.csv")
    assert len(table) == 6 and list(table["T"]) == [0.05, 0.05, 0.08, 0.08, 0.12, 0.12]
    np.testing.assert_allclose(table["cost_per_sample_s"], table["F_per_site_tau"] * table["seconds_per_step"])
    assert main(["compare", str(run_file), str(tmp_path / "missing.h5")]) == 2


def test_attention_weights_of_a_stored_model_are_its_forward_pass(tmp_path):
    """The attention maps the report draws: weights read from the network rebuilt from a
    run file (read_model) rows sum to 1, vanish outside the window, and rebuild that stored
    model's effective spins (its NumPy inference, an implementation of its own):
    Se_i = S_i + Σ_h Σ_j a^h_ij V^h_j for one layer without gates."""
    import torch

    from slmc_hpc.models.transformer import attention_weights
    from slmc_hpc.results import read_model

    out = tmp_path / "t.h5"
    (tmp_path / "c.toml").write_text(small_toml(
        effective_model={"kind": "transformer", "layers": 1, "heads": 2, "attention_shells": 2, "block_shells": 1},
        training={"epochs": 2}, run={"thermalize": 40, "measure": 40, "snapshot_every": 20, "output": str(out)}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    model = read_model(out, 0)
    with h5py.File(out, "r") as f:
        spins = f["snapshots/spins"][0, 1]
    weights = attention_weights(model.net, spins)
    assert weights.shape == (1, 2, 16, 16)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    outside = model.mask == -np.inf
    assert outside.any() and np.all(weights[:, :, outside] == 0)
    maps = model.net.block_maps().detach().double().numpy()
    values = maps[0, 4:6] @ spins  # V of both heads, (2, N, 3)
    rebuilt = spins + np.einsum("hij,hjk->ik", weights[0], values)
    np.testing.assert_allclose(rebuilt, model.effective_spins(spins), rtol=0, atol=1e-10)
    assert not np.allclose(rebuilt, spins)  # the layer does something
    with torch.no_grad():  # and the network's own pass agrees
        net_out = model.net.double().effective_spins(torch.as_tensor(spins[None]))[0].numpy()
    np.testing.assert_allclose(net_out, rebuilt, rtol=0, atol=1e-10)


def test_transformer_head_couplings_are_the_networks(tmp_path):
    """The report's J_n(β) of a Transformer's head, read from the stored parameter vector
    without torch, equal the rebuilt network's J_n + J'_n log(β/β_ref) at each slot's β;
    nested SLMC's inner linear model is tabulated beside them."""
    from slmc_hpc.results import read_model

    out = tmp_path / "t.h5"
    (tmp_path / "c.toml").write_text(small_toml(
        temperatures={"values": [0.1, 0.3]}, effective_model={"kind": "transformer", "layers": 1},
        training={"epochs": 2}, run={"thermalize": 40, "measure": 20, "output": str(out)}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    c = load(out).couplings
    assert set(c["model"]) == {"transformer head", "inner linear"}
    for slot, T in enumerate([0.1, 0.3]):
        net = read_model(out, slot).net
        x = np.log(1 / T / net.beta_ref)
        expected = (net.couplings[0] + x * net.couplings[1]).detach().numpy()[:3]
        got = c[(c["T"] == T) & (c["model"] == "transformer head")]["J_learned"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert np.any(expected != 0)


def test_a_file_a_running_job_holds_open_is_read(run_file, tmp_path):
    """A week-long job keeps its file open for writing; HDF5's file locking would refuse a
    second reader, so the report reads without locking."""
    import subprocess
    import sys

    live = tmp_path / "live.h5"
    shutil.copy(run_file, live)
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); "
                               "print('open', flush=True); time.sleep(60)", str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert len(load(live).thermodynamics) == 3
    finally:
        holder.kill()
        holder.wait()


def test_one_temperature_report_is_strict_json(tmp_path):
    """No exchanges, so no barrier: report.json must still be strict JSON (null, not NaN)."""
    import json

    out = tmp_path / "one.h5"
    (tmp_path / "c.toml").write_text(small_toml(run={"thermalize": 40, "measure": 60, "output": str(out)}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads((tmp_path / "rep" / "report.json").read_text(), parse_constant=refuse)
    assert data["run"]["barrier"] is None and len(data["thermodynamics"]) == 1


def test_report_into_an_unwritable_place_is_a_clear_error(run_file, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["report", str(run_file), "-o", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report" in err and "Traceback" not in err


def test_exchange_history_stops_at_an_unwritten_round():
    """A file can end before a due exchange round (rows of -1): the history stops there."""
    import h5py as h5
    from slmc_hpc.tables import exchange_rounds

    with h5.File("mem.h5", "w", driver="core", backing_store=False) as f:
        f.create_group("tempering").attrs["exchange_every"] = 10
        f["tempering/slot_of_replica"] = np.array([[0, 1], [1, 0], [-1, -1], [-1, -1]], dtype=np.int32)
        assert exchange_rounds(f, 40).tolist() == [[0, 1], [1, 0]]
        assert exchange_rounds(f, 15).tolist() == [[0, 1]]


def test_a_self_tuned_ladder_is_reported_with_its_rounds(tmp_path):
    out = tmp_path / "adapted.h5"
    (tmp_path / "c.toml").write_text(small_toml(
        temperatures={"values": [0.05, 0.08, 0.12, 0.2], "adapt": "barrier", "exchange_every": 2},
        run={"thermalize": 80, "measure": 60, "output": str(out)}))
    assert main(["run", str(tmp_path / "c.toml")]) == 0
    run = load(out)
    with h5py.File(out, "r") as f:
        g = f["tempering/adaptation"]
        assert run.adaptation["step"].tolist() == g["step"][:].tolist() == [13, 40]
        np.testing.assert_allclose(run.adaptation["barrier"], g["barrier"][:].sum(axis=1))
        final = f["temperatures"][:]
    np.testing.assert_array_equal(run.thermodynamics["T"], final)
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "adapted itself in 2 rounds" in text and " ".join(f"{t:.4g}" for t in final) in text
