"""The self-tuning ladder in a run ([temperatures] adapt = "barrier"): what it writes, that
measurement never runs on a moving ladder, that a stop during adaptation resumes bit for bit,
and that its rejection estimate (made without swapping) is the swap rate a tempering run
measures on the same ladder."""

import math

import h5py
import numpy as np
import pytest

from slmc_hpc import driver, run_loop
from slmc_hpc.assemble import build_physics
from slmc_hpc.checkpoint import checkpoint_path, read_checkpoint
from slmc_hpc.ladder import adaptation_ends, estimated_rejections
from slmc_hpc.replica import Replica
from slmc_hpc.testing import assert_same_files

from configs import small_config
from test_checkpoint import quiet, run_stopped_at

TEMPS = [0.05, 0.08, 0.12, 0.2]


def config(kind="linear", thermalize=80, measure=30, **run):
    return small_config(temperatures={"values": TEMPS, "adapt": "barrier", "exchange_every": 2},
                        effective_model={"kind": kind, "layers": 1, "heads": 1, "block_shells": 1},
                        training={"every": 10, "epochs": 2, "batch_size": 16, "loss": "pair"},
                        run={"thermalize": thermalize, "measure": measure, "snapshot_every": 7, "seed": 5,
                             "checkpoint_every": 0} | run)


def test_the_ladder_moves_in_thermalization_and_is_frozen_for_measurement(tmp_path, monkeypatch):
    """The rounds end where adaptation_ends says, all in the first half of thermalization; the
    file's /temperatures is the ladder after the last round, its ends are the configured ones,
    and every measured step runs at one of those temperatures: nothing moves the ladder after
    thermalization (a negative control: the first round's ladder differs from the last)."""
    cfg = config(thermalize=120, measure=40)
    ends = adaptation_ends(120, len(TEMPS))
    assert ends and ends[-1] <= 60
    moves, measured_betas, taken = [], set(), []
    original_adapt, original_record = run_loop.TemperingRun.adapt_ladder, Replica.record
    original_take = Replica.take_configuration

    def take(self, chain):  # a configuration swap between slots during the rounds
        taken.append((self.steps_done, self.beta, chain["spins"].copy()))
        return original_take(self, chain)

    def adapt(self, step):
        if step in self.adaptation_ends:
            moves.append((step, min(rep.steps_done for rep in self.replicas.values())))
        return original_adapt(self, step)

    def record(self, info):
        measured_betas.add(self.beta)
        return original_record(self, info)

    monkeypatch.setattr(run_loop.TemperingRun, "adapt_ladder", adapt)
    monkeypatch.setattr(Replica, "record", record)
    monkeypatch.setattr(Replica, "take_configuration", take)
    driver.run(cfg, output=tmp_path / "run.h5", log=quiet)
    assert [step for step, _ in moves] == ends and all(done == step for step, done in moves)
    # configurations were swapped during the rounds (every exchange_every = 2 steps), never after them
    assert len(taken) >= 4 and all(done <= ends[-1] and done % 2 == 0 for done, _, _ in taken)
    with h5py.File(tmp_path / "run.h5", "r") as f:
        final = f["temperatures"][()]
        history = f["tempering/adaptation/temperatures"][()]
        rejection = f["tempering/adaptation/rejection"][()]
        np.testing.assert_array_equal(f["tempering/adaptation/step"][()], ends)
        assert f["summary/barrier"][()] > 0 and f["summary/suggested_replicas"][()] >= 2
    assert final[0] == TEMPS[0] and final[-1] == TEMPS[-1] and np.all(np.diff(final) > 0)
    np.testing.assert_array_equal(history[0], TEMPS)
    assert not np.array_equal(final, history[0])
    assert np.all((rejection >= 0) & (rejection <= 1))
    assert measured_betas <= set(1 / final) and len(measured_betas) == len(TEMPS)


@pytest.mark.parametrize("kind,step", [
    ("linear", 7),         # first round, before its recorded half
    ("linear", 13),        # right after the first move
    ("linear", 30),        # in the second round's recorded half
    ("transformer", 20),   # after a shared training round, mid adaptation
    ("downfolded", 20),    # a β-dependent model, retrained after the first move
    ("downfolded", 30),
])
def test_a_stop_during_adaptation_resumes_bit_for_bit(tmp_path, monkeypatch, kind, step):
    cfg = config(kind)
    assert adaptation_ends(80, len(TEMPS)) == [13, 40]
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "thermalize", step)
    tree = read_checkpoint(checkpoint_path(tmp_path / "cut.h5"))
    assert (tree["phase"], tree["step"]) == ("thermalize", step)
    moved = step >= 13
    assert (not np.array_equal(tree["temperatures"], TEMPS)) == moved
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


def test_the_estimate_without_swapping_is_the_measured_swap_rate(tmp_path):
    """An ordinary tempering run (fixed ladder, a swap tried every step) on a 4 x 4 lattice:
    the all-pairs estimate from each slot's own configurations (the snapshot of every step,
    log W at the neighbouring β from its eigenvalues) against the pair's measured swap
    acceptance, in 20 consecutive batches. The difference must be within 4 standard errors
    of the batch means (false alarm about 1e-3 per pair, t with 19 degrees of freedom), and
    that error small enough to see a wrong estimate: the estimate with the sign of the log
    ratio flipped (swapping toward the wrong temperatures) is caught."""
    temps = [0.06, 0.08, 0.11]
    cfg = small_config(temperatures={"values": temps, "exchange_every": 1},
                       run={"thermalize": 200, "measure": 2000, "snapshot_every": 1, "seed": 9})
    driver.run(cfg, output=tmp_path / "run.h5", log=quiet)
    physics, betas = build_physics(cfg), 1 / np.array(temps)
    with h5py.File(tmp_path / "run.h5", "r") as f:
        spins, accepted = f["snapshots/spins"][()], f["tempering/accepted"][()]
    n_steps = spins.shape[1]
    log_w = np.empty((len(temps), n_steps, len(temps)))  # slot, step, β
    for s in range(len(temps)):
        for k in range(n_steps):
            ev, ec = physics.eigenvalues(spins[s, k]), physics.classical_energy(spins[s, k])
            log_w[s, k] = [physics.log_weight(ev, ec, b) for b in betas]
    batches = 20
    for s in range(len(temps) - 1):
        diffs, flipped = [], []
        for part in np.array_split(np.arange(n_steps), batches):
            up = log_w[s, part, s + 1] - log_w[s, part, s]
            down = log_w[s + 1, part, s] - log_w[s + 1, part, s + 1]
            tried = accepted[part, s]
            measured = 1 - tried[tried >= 0].mean()
            diffs.append(estimated_rejections([up, None], [None, down])[0] - measured)
            flipped.append(estimated_rejections([-up, None], [None, -down])[0] - measured)
        se = np.std(diffs, ddof=1) / math.sqrt(batches)
        assert 0 < se < 0.03, se
        assert abs(np.mean(diffs)) < 4 * se, (s, np.mean(diffs), se)
        assert abs(np.mean(flipped)) > 4 * se, (s, np.mean(flipped), se)  # the control is caught
