"""Tuning the inner-chain length and δ ([slmc] local_updates = "auto", tuning.py): the schedule
and the choice as pure functions; in a run, nothing is tuned while measuring (every measured
step runs its slot's chosen path, which travels with the temperature label), the choice is in
the file, and a run stopped in the middle of tuning resumes bit for bit."""

import itertools

import h5py
import numpy as np
import pytest

from slmc_hpc import driver
from slmc_hpc.checkpoint import checkpoint_path, read_checkpoint
from slmc_hpc.config import ConfigError, parse
from slmc_hpc.replica import Replica
from slmc_hpc.testing import assert_same_files
from slmc_hpc.tuning import ACCEPTANCE_FLOOR, PathTuner, Trial, path_candidates, rank, round_sizes

from configs import small_config
from test_checkpoint import run_stopped_at


def test_candidates():
    assert path_candidates(16, "auto", 0.5) == [(n, 0.5, 1) for n in (16, 32, 64, 128, 256)]
    assert path_candidates(16, 0, "auto") == [(16, 0.5, 1), (16, 1.0, 1)]
    assert path_candidates(16, 20, 0.7) == [(20, 0.7, 1)]
    assert len(path_candidates(64, "auto", "auto")) == 10
    assert path_candidates(16, 20, 0.7, "auto") == [(20, 0.7, m) for m in (4, 8)]
    assert path_candidates(16, 20, 0.7, 3) == [(20, 0.7, 3)]
    # from L = 16 (256 sites) on, "auto" offers sixteen middle tests only; an explicit number stays
    assert path_candidates(255, 20, 0.7, "auto") == [(20, 0.7, m) for m in (4, 8)]
    assert path_candidates(256, 20, 0.7, "auto") == [(20, 0.7, 16)]
    assert len(path_candidates(256, "auto", "auto", "auto")) == 10
    assert path_candidates(256, 20, 0.7, 4) == [(20, 0.7, 4)]


def test_ranking_keeps_the_acceptance_floor():
    """A candidate that rarely moves is never preferred to one that moves often enough, however
    large its (few, lucky) jumps; among those below the floor, the one that moves most."""
    sticky = Trial(steps=100, seconds=1.0, moved=5, square_jump=50.0)  # huge proxy, moves 5%
    good = Trial(steps=100, seconds=1.0, moved=40, square_jump=1.0)
    better = Trial(steps=100, seconds=1.0, moved=30, square_jump=2.0)
    assert sticky.moved_fraction < ACCEPTANCE_FLOOR <= good.moved_fraction
    assert rank([sticky, good, better], [0, 1, 2]) == [2, 1, 0]
    low = Trial(steps=100, seconds=1.0, moved=10, square_jump=0.1)
    assert rank([sticky, low], [0, 1]) == [1, 0]


def test_round_sizes_halve_down_to_two():
    assert round_sizes(18) == [18, 9, 5, 3, 2]
    assert round_sizes(2) == [2]
    assert round_sizes(1) == [1]


def synthetic_tuning(candidates, start, stop, value):
    """Drive a tuner with steps whose seconds are the candidate's length and whose jump is
    value(candidate): what it ran at each step, and its choice."""
    tuner = PathTuner(candidates, start, stop)
    ran = []
    for step in range(stop + 20):
        path = tuner.candidate(step)
        ran.append(path)
        if path is not None:
            tuner.record(step, seconds=float(path[0]), moved=True, square_jump=value(path) ** 2)
    return tuner, ran


def test_the_schedule_tries_everyone_interleaved_and_then_keeps_the_best():
    candidates = path_candidates(16, "auto", "auto")
    best = (32, 0.5, 1)
    # proxy = jump² / seconds: largest for `best`
    value = lambda p: np.sqrt(p[0]) * (2.0 if p == best else 1.0)  # noqa: E731
    tuner, ran = synthetic_tuning(candidates, 100, 1100, value)
    assert ran[:100] == [None] * 100  # the first half of thermalization keeps the initial path
    C = len(candidates)
    block = (1000 // len(round_sizes(C))) // (C * 4)  # steps per block in round 0
    runs = [path for path, _ in itertools.groupby(ran[100: 100 + C * 4 * block])]
    assert len(runs) == C * 4 and all(runs.count(c) == 4 for c in candidates)  # everyone, in 4 blocks each
    assert tuner.chosen == best
    assert set(ran[1100:]) == {best}  # and from the end of tuning on, only the choice
    assert all(t.steps > 0 for t in tuner.trials)


def test_a_resumed_tuner_makes_the_same_choice():
    candidates = path_candidates(16, "auto", "auto")
    value = lambda p: p[1] * np.sqrt(p[0])  # noqa: E731
    whole, _ = synthetic_tuning(candidates, 10, 500, value)
    cut = PathTuner(candidates, 10, 500)
    for step in range(500):
        if step == 233:  # stop and resume from the state alone
            tree = cut.state_dict()
            cut = PathTuner(candidates, 10, 500)
            cut.load_state_dict(tree)
        path = cut.candidate(step)
        if path is not None:
            cut.record(step, seconds=float(path[0]), moved=True, square_jump=value(path) ** 2)
    assert cut.chosen == whole.chosen and cut.state_dict()["trials"].tolist() == whole.state_dict()["trials"].tolist()


def test_a_tuner_saved_with_the_old_middle_tests_goes_on_with_them():
    """A checkpoint of 0.8.1 or before holds a tuner over 2, 4, 8 and 16 middle tests (40
    candidates, and no candidate list in its state): resumed, it goes on over those and
    chooses as the uninterrupted old tuner; a state that fits no version is refused."""
    from slmc_hpc.tuning import LEGACY_MIDDLE_STEPS, MIDDLE_STEPS
    new = path_candidates(16, "auto", "auto", "auto")
    old = [(n, d, m) for n, d, _ in new[::len(MIDDLE_STEPS)] for m in LEGACY_MIDDLE_STEPS]
    assert len(old) == 40 and len(new) == 20
    value = lambda p: p[1] * np.sqrt(p[0]) * (3.0 if p[2] == 16 else 1.0)  # noqa: E731  (16: only the old offered it)
    whole, _ = synthetic_tuning(old, 10, 900, value)
    cut = PathTuner(old, 10, 900)
    for step in range(900):
        if step == 333:
            tree = {k: v for k, v in cut.state_dict().items() if k != "candidates"}  # as 0.8.1 saved it
            cut = PathTuner(new, 10, 900, auto_middle=True)
            cut.load_state_dict(tree)
            assert cut.candidates == old
        path = cut.candidate(step)
        if path is not None:
            cut.record(step, seconds=float(path[0]), moved=True, square_jump=value(path) ** 2)
    assert cut.chosen == whole.chosen and cut.chosen[2] == 16
    assert cut.state_dict()["trials"].tolist() == whole.state_dict()["trials"].tolist()
    # at L = 16, where "auto" now offers sixteen alone, an old checkpoint still goes on over its 40
    large = path_candidates(256, "auto", "auto", "auto")
    old_large = [(n, d, m) for n, d, _ in large for m in LEGACY_MIDDLE_STEPS]
    big = PathTuner(large, 10, 900, auto_middle=True)
    big.load_state_dict({k: v for k, v in PathTuner(old_large, 10, 900).state_dict().items() if k != "candidates"})
    assert big.candidates == old_large
    # the saved list, when there is one, wins over this version's
    again = PathTuner(new, 10, 900, auto_middle=True)
    again.load_state_dict(whole.state_dict())
    assert again.candidates == old and again.chosen == whole.chosen
    # negative controls: a trial count that no version offered; an old state where this tuner's
    # middle tests are not the "auto" ones (no version offered 2 ... 16 beside a fixed number);
    # indices beyond the saved paths
    legacy_state = {k: v for k, v in whole.state_dict().items() if k != "candidates"}
    with pytest.raises(ValueError, match="tried 7 paths"):
        PathTuner(new, 10, 900, auto_middle=True).load_state_dict({**legacy_state, "trials": legacy_state["trials"][:7]})
    fixed = path_candidates(16, "auto", "auto", 3)
    with pytest.raises(ValueError, match="tried 40 paths"):
        PathTuner(fixed, 10, 900).load_state_dict(legacy_state)
    # a fixed sixteen is not "auto"'s sixteen, though from L = 16 on they offer the same candidates
    with pytest.raises(ValueError, match="tried 40 paths"):
        PathTuner(path_candidates(16, "auto", "auto", 16), 10, 900).load_state_dict(legacy_state)
    with pytest.raises(ValueError, match="tried 40 paths"):
        PathTuner(large, 10, 900).load_state_dict({k: v for k, v in big.state_dict().items() if k != "candidates"})
    with pytest.raises(ValueError, match="outside its 40"):
        PathTuner(new, 10, 900, auto_middle=True).load_state_dict({**legacy_state, "active": np.array([3, 40])})


def tuned_config(measure=40, temps=(0.1, 0.2), *changes):
    return small_config(dict(temperatures={"values": list(temps), "exchange_every": 3},
                             slmc={"local_updates": "auto"},
                             training={"every": 20},
                             run={"thermalize": 200, "measure": measure, "snapshot_every": 10, "seed": 4,
                                  "step_size": "auto"}), *changes)


# the default model: bond-pair terms and the pair loss, with a buffer that wraps (120 of the 200
# steps) and rounds every 50 steps, so the checkpoint at step 137 holds design rows of old
# samples and new samples without them
DEFAULT_MODEL = {"effective_model": {"bond_shells": 2}, "slmc": {"inner_bond_shells": 2},
                 "training": {"loss": "pair", "every": 50, "buffer_size": 120}}


@pytest.fixture
def steady_clock(monkeypatch):
    """Every clock reading 1 s after the last: the tuner's timings, and so its choice, do not
    depend on the machine (what a bit-for-bit comparison of two runs needs)."""
    ticks = itertools.count()
    monkeypatch.setattr(PathTuner, "clock", staticmethod(lambda: float(next(ticks))))


# three-level SLMC with its middle tests tuned as well (a 4 x 4 lattice: N to 16 N updates)
DOWNFOLDED_MODEL = {"effective_model": {"kind": "downfolded"}, "slmc": {"middle_steps": "auto"},
                    "training": {"loss": "pair", "every": 50, "buffer_size": 120}}


@pytest.mark.parametrize("model", [{}, DOWNFOLDED_MODEL], ids=["linear", "downfolded"])
def test_measurement_runs_each_slots_chosen_path_and_the_choice_is_in_the_file(tmp_path, monkeypatch, model):
    cfg = tuned_config(60, (0.1, 0.2), model)
    seen = []
    original = Replica.step

    def step(self):
        seen.append((self.beta, self.path, self.steps_done))
        return original(self)

    monkeypatch.setattr(Replica, "step", step)
    out = driver.run(cfg, output=tmp_path / "t.h5", log=lambda *a: None)
    with h5py.File(out, "r") as f:
        chosen = {1 / T: (int(n), float(d), int(m)) for T, n, d, m in
                  zip(f["temperatures"][:], f["tuning/local_updates"][:], f["tuning/step_size"][:],
                      f["tuning/middle_steps"][:])}
        assert f.attrs["local_updates"] == "auto"
        assert np.all(f["tuning/steps"][:] > 0)
        moved = f["tempering/slot_of_replica"][:]
    measured = [(beta, path) for beta, path, done in seen if done >= cfg.run.thermalize]
    assert len(measured) == 2 * 60
    # a fixed kernel per temperature: the path of the slot (β) a replica holds, whichever replica
    assert all(path == chosen[beta] for beta, path in measured)
    assert moved[:, 0].min() != moved[:, 0].max()  # replicas did change temperature
    tuning = [path for beta, path, done in seen if 100 <= done < 200]
    assert len(set(tuning)) > 3  # while tuning, several candidates ran
    middle = {m for _, _, m in tuning}
    assert middle == ({1} if not model else {4, 8})  # middle tests tuned only where asked, all tried


HEAT_BATH_MODEL = {**DEFAULT_MODEL, "slmc": {"inner_bond_shells": 2, "move": "heatbath"}}


@pytest.mark.parametrize("model", [{}, DEFAULT_MODEL, HEAT_BATH_MODEL, DOWNFOLDED_MODEL],
                         ids=["linear", "bond-pairs-pair-loss", "heat-bath", "downfolded-middle-steps"])
def test_a_run_stopped_while_tuning_resumes_bit_for_bit(tmp_path, monkeypatch, steady_clock, model):
    cfg = tuned_config(40, (0.1, 0.2), model)
    driver.run(cfg, output=tmp_path / "whole.h5", log=lambda *a: None)
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "thermalize", 137)  # in the middle of the tuning rounds
    tree = read_checkpoint(checkpoint_path(tmp_path / "cut.h5"))
    assert tree["ranks"]["0"]["replicas"]["0"]["tuner"]["chosen"] == -1  # still tuning
    buffer = tree["ranks"]["0"]["replicas"]["0"]["buffer"]
    assert set(buffer["featurized"]) == {False, True}  # design rows kept, and new samples without
    driver.run(cfg, output=tmp_path / "cut.h5", log=lambda *a: None, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


def test_a_run_of_0_8_1_stopped_while_tuning_resumes_over_its_old_middle_tests(tmp_path, monkeypatch, steady_clock):
    """A checkpoint written while tuning over 2, 4, 8 and 16 middle tests (0.8.1 and before:
    no candidate list in the tuner's state) resumed by this version ends as the old version's
    uninterrupted run, bit for bit; a tuner state that fits no version is a ConfigError."""
    from slmc_hpc import tuning
    from slmc_hpc.checkpoint import write_checkpoint
    cfg = tuned_config(40, (0.1, 0.2), DOWNFOLDED_MODEL)
    with monkeypatch.context() as m:
        m.setattr(tuning, "MIDDLE_STEPS", tuning.LEGACY_MIDDLE_STEPS)
        driver.run(cfg, output=tmp_path / "whole.h5", log=lambda *a: None)
        run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "thermalize", 137)  # in the middle of the tuning rounds
    path = checkpoint_path(tmp_path / "cut.h5")
    tree = read_checkpoint(path)
    tuners = [rep["tuner"] for rep in tree["ranks"]["0"]["replicas"].values()]
    assert all(len(t["trials"]) == 40 and t["chosen"] == -1 for t in tuners)
    for t in tuners:
        del t["candidates"]  # as 0.8.1 saved it
    write_checkpoint(path, tree)
    broken = read_checkpoint(path)
    for rep in broken["ranks"]["0"]["replicas"].values():
        rep["tuner"]["trials"] = rep["tuner"]["trials"][:7]
    write_checkpoint(tmp_path / "broken.h5.ckpt", broken)
    (tmp_path / "broken.h5").write_bytes((tmp_path / "cut.h5").read_bytes())
    with pytest.raises(ConfigError, match="path tuning"):
        driver.run(cfg, output=tmp_path / "broken.h5", log=lambda *a: None, resume=True)
    driver.run(cfg, output=tmp_path / "cut.h5", log=lambda *a: None, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")
    with h5py.File(tmp_path / "cut.h5") as f:
        assert f["tuning/candidates"].shape == (40, 3) and f["tuning/steps"].shape == (2, 40)


def test_auto_is_validated():
    with pytest.raises(ConfigError, match=r"\[slmc\] local_updates must be an integer or \"auto\""):
        parse("[lattice]\nL = 4\n[temperatures]\nvalues = [0.1]\n[slmc]\nlocal_updates = \"fast\"\n")
    with pytest.raises(ConfigError, match=r"\[run\] step_size must be a number or \"auto\""):
        parse("[lattice]\nL = 4\n[temperatures]\nvalues = [0.1]\n[run]\nstep_size = true\n")
    with pytest.raises(ConfigError, match="only for sampler = \"slmc\""):
        parse("[lattice]\nL = 4\n[temperatures]\nvalues = [0.1]\n[run]\nsampler = \"exact\"\nstep_size = \"auto\"\n")


def test_short_thermalization_still_chooses():
    """With fewer tuning steps than 4 blocks per candidate the rounds use one block each; the
    rounds never run past the end of thermalization, and a choice is made."""
    candidates = path_candidates(64, "auto", "auto")
    for thermalize in (1, 10, 100, 200):
        tuner, ran = synthetic_tuning(candidates, thermalize // 2, thermalize, lambda p: np.sqrt(p[0]))
        assert tuner.chosen is not None and set(ran[thermalize:]) == {tuner.chosen}
        tuning = thermalize - thermalize // 2
        assert 0.8 * tuning <= sum(t.steps for t in tuner.trials) <= tuning  # the rest ran the choice
    assert all(t.steps > 0 for t in synthetic_tuning(candidates, 100, 200, lambda p: 1.0)[0].trials)


def test_the_proxy_counts_each_proposal_by_its_chance_to_be_taken():
    """tuned_step adds min(1, e^ratio) (ΔF_proposal/N)² per step: over 3000 steps of a
    4×4 SLMC chain its mean agrees with that of the squared changes the chain made (within 4
    standard errors of their difference), with a smaller spread per step (the coin flip's
    noise removed). Two identical candidates, so that the tuner keeps recording."""
    from slmc_hpc.assemble import build_physics, build_slot
    from slmc_hpc.tuning import tuned_step

    cfg = small_config(run={"step_size": 0.8})
    rep, _ = build_slot(cfg, build_physics(cfg), 10.0, np.random.default_rng(3))
    for _ in range(300):
        rep.step()
    n = 3000
    tuner = PathTuner([(16, 0.8), (16, 0.8)], 0, 10 * n)
    expected, made = np.empty(n), np.empty(n)
    for k in range(n):
        before, total = rep.sampler.free_energy(rep.state), sum(t.square_jump for t in tuner.trials)
        tuned_step(rep, tuner, k, rep.step)
        expected[k] = sum(t.square_jump for t in tuner.trials) - total
        made[k] = ((rep.sampler.free_energy(rep.state) - before) / 16) ** 2
    difference = expected - made
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(n)
    assert np.count_nonzero(made) < n and expected.std() < 0.8 * made.std()


def test_a_step_without_an_exact_test_adds_no_jump():
    """A nested step whose middle test turned the proposal away ran no exact test (NaN
    log-ratio and proposal F): it counts as a step that moved nothing, not as NaN."""
    from slmc_hpc.samplers.state import StepInfo
    from slmc_hpc.tuning import tuned_step

    class Still:  # a replica whose state never changes
        class sampler:
            free_energy = staticmethod(lambda state: -3.0)
        state = type("S", (), {"spins": np.zeros((16, 3))})()

        def set_path(self, n, d, m):
            pass

    tuner = PathTuner([(16, 0.5, 1), (16, 0.5, 1)], 0, 100)
    tuned_step(Still(), tuner, 0, lambda: StepInfo(accepted=False, n_tests=0, n_accepted=0))
    tuned_step(Still(), tuner, 1, lambda: StepInfo(accepted=False, n_tests=1, n_accepted=0,
                                                   proposal_free_energy=-2.0, log_ratio=np.log(0.25)))
    assert sum(t.steps for t in tuner.trials) == 2
    assert sum(t.square_jump for t in tuner.trials) == pytest.approx(0.25 * (1.0 / 16) ** 2)
