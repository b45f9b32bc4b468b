"""Checkpoint and restart: a run stopped at any step and resumed writes exactly the file an
uninterrupted run writes (bit for bit), whatever stopped it: a signal at a step boundary,
SIGTERM from outside, or kill -9 after a scheduled checkpoint."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from slmc_hpc import driver, run_loop
from slmc_hpc.checkpoint import checkpoint_path, read_checkpoint, write_checkpoint
from slmc_hpc.config import ConfigError, parse
from slmc_hpc.control import Control, StopSignals, decide, is_due
from slmc_hpc.testing import assert_same_files

from configs import small_config, small_toml

def config_text(kind="transformer", temps=(0.1, 0.15), measure=40, every=0, thermalize=30):
    """``kind``: linear, linear-bonds (bond pairs of 1 shell within 1 spacing: the compiled
    chain's coupling table), transformer (nested SLMC), transformer-plain (the Transformer
    in the inner chain, windowed: samplers/transformer_chain.py), or downfolded (three-level SLMC)."""
    bonds = {"bond_shells": 1, "bond_range": 1.0} if kind == "linear-bonds" else {}
    kind, _, scheme = kind.replace("linear-bonds", "linear").partition("-")
    slmc = {"scheme": scheme, "local_updates": 8} if scheme else {}
    return small_toml(temperatures={"values": list(temps), "exchange_every": 3}, slmc=slmc,
                      effective_model={"kind": kind, "layers": 1, "heads": 1, "block_shells": 1}
                      | ({"attention_shells": 1, "gate_channels": 2} if scheme else {}) | bonds,
                      training={"every": 10, "epochs": 2, "batch_size": 16, "loss": "pair"},
                      run={"thermalize": thermalize, "measure": measure, "snapshot_every": 7, "seed": 11,
                           "checkpoint_every": every})


def config(kind="transformer", temps=(0.1, 0.15), measure=40, every=0):
    return parse(config_text(kind, temps, measure, every))


def quiet(*args, **kwargs):
    pass


def stop_at(monkeypatch, phase, step, rank=None):
    """Deliver SIGUSR1's effect (the flag) just before the poll after (phase, step), on every
    rank or on ``rank`` alone."""
    monkeypatch.setattr(run_loop, "CONTROL_EVERY", 1)  # any step can be a stop
    original = run_loop.TemperingRun.poll

    def poll(self, ph, st):
        if (ph, st) == (phase, step) and rank in (None, self.comm.rank):
            self.control.signals.received = signal.SIGUSR1
        return original(self, ph, st)

    monkeypatch.setattr(run_loop.TemperingRun, "poll", poll)


def run_stopped_at(monkeypatch, cfg, output, phase, step, **kwargs):
    """driver.run of ``cfg`` into ``output``, stopped (Interrupted, after a checkpoint) at (phase, step)."""
    with monkeypatch.context() as m:
        stop_at(m, phase, step)
        with pytest.raises(driver.Interrupted):
            driver.run(cfg, output=output, log=quiet, **kwargs)


@pytest.mark.parametrize("kind,temps,phase,step", [
    ("transformer", (0.1,), "thermalize", 15),   # mid training schedule, one replica
    ("transformer", (0.1, 0.15), "thermalize", 20),  # right after a training round
    ("transformer", (0.1, 0.15), "measure", 17),  # after exchanges, mid write block
    ("transformer-plain", (0.1, 0.15), "thermalize", 20),  # the Transformer's own inner chain
    ("transformer-plain", (0.1, 0.15), "measure", 17),
    ("linear", (0.1, 0.15, 0.2), "measure", 9),
    ("linear-bonds", (0.1, 0.15), "measure", 17),  # a model of finite bond-pair range, trained
    ("downfolded", (0.1, 0.15), "thermalize", 20),  # three-level SLMC, right after a training round
    ("downfolded", (0.1, 0.15), "measure", 17),
])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, kind, temps, phase, step):
    cfg = config(kind, temps)
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", phase, step)
    tree = read_checkpoint(checkpoint_path(tmp_path / "cut.h5"))
    assert (tree["phase"], tree["step"]) == (phase, step)
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    final = read_checkpoint(checkpoint_path(tmp_path / "cut.h5"))  # the final state is kept
    assert (final["phase"], final["step"]) == ("measure", cfg.run.measure)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


@pytest.mark.parametrize("kind,temps,short,long", [
    ("linear", (0.1, 0.15, 0.2), 40, 70),   # the last exchange of the short run at step 39, snapshots cut mid-way
    ("transformer", (0.1, 0.15), 42, 43),  # an exchange at the short run's last step; one more step
    ("linear", (0.1,), 40, 55),            # one replica, no exchanges
])
def test_an_extended_run_equals_the_longer_run_bit_for_bit(tmp_path, kind, temps, short, long):
    """A finished run resumed with a larger [run] measure continues its chains in the same
    file; the file is then that of a run with the larger measure from the start."""
    driver.run(config(kind, temps, measure=long), output=tmp_path / "whole.h5", log=quiet)
    driver.run(config(kind, temps, measure=short), output=tmp_path / "grown.h5", log=quiet)
    lines = []
    driver.run(config(kind, temps, measure=long), output=tmp_path / "grown.h5", log=lines.append, resume=True)
    assert any(f"extending the run from {short} to {long} measured steps" in line for line in lines)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "grown.h5")
    with h5py.File(tmp_path / "grown.h5", "r") as f:
        assert parse(f.attrs["config"]).run.measure == long
    # and once more: it is complete at the larger measure
    before = (tmp_path / "grown.h5").read_bytes()
    lines = []
    driver.run(config(kind, temps, measure=long), output=tmp_path / "grown.h5", log=lines.append, resume=True)
    assert "already complete" in lines[0] and (tmp_path / "grown.h5").read_bytes() == before


@pytest.mark.parametrize("change,match", [
    ({"run": {"seed": 12}}, r"\[run\] seed differ: seed = 11 there, 12 here"),
    ({"temperatures": {"exchange_every": 4}}, r"\[temperatures\] exchange_every differ: exchange_every = 3 there, 4 here"),
    ({"run": {"measure": 30}}, "would shorten it"),
])
def test_extending_with_another_key_changed_is_refused_and_changes_nothing(tmp_path, change, match):
    out = tmp_path / "run.h5"
    driver.run(config("linear", measure=40), output=out, log=quiet)
    files = {p: p.read_bytes() for p in (out, checkpoint_path(out))}
    text = config_text("linear", measure=40).replace("measure = 40", "measure = 60")
    cfg = parse(text)
    for section, keys in change.items():
        cfg = cfg.replace(section, **keys)
    with pytest.raises(ConfigError, match=match):
        driver.run(cfg, output=out, log=quiet, resume=True)
    assert all(p.read_bytes() == data for p, data in files.items())


def test_a_complete_run_without_its_final_state_cannot_be_extended(tmp_path):
    out = tmp_path / "run.h5"
    driver.run(config("linear", measure=40), output=out, log=quiet)
    checkpoint_path(out).unlink()
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="needs its final state"):
        driver.run(config("linear", measure=60), output=out, log=quiet, resume=True)
    lines = []
    driver.run(config("linear", measure=40), output=out, log=lines.append, resume=True)
    assert "already complete" in lines[0] and out.read_bytes() == before


def test_a_signal_during_a_training_round_stops_at_once_and_the_resume_redoes_the_round(tmp_path, monkeypatch):
    """SIGUSR1 arrives while the shared Transformer trains its second round (after step 20):
    the run stops inside the round, checkpoints the state before it, and the resume redoes
    the round, so the file is the uninterrupted run's."""
    from slmc_hpc.training.network import TorchTrainer
    cfg = config("transformer", (0.1, 0.15))
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    original, batches = TorchTrainer.train, []

    def train(self, *args, interrupt=None, **kwargs):
        def asked():  # the signal comes during the round's second minibatch
            batches.append(self.rounds)
            if self.rounds == 1 and batches.count(1) == 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            return interrupt()
        return original(self, *args, interrupt=asked, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(TorchTrainer, "train", train)
        with pytest.raises(driver.Interrupted, match="after thermalize step 20"):
            driver.run(cfg, output=tmp_path / "cut.h5", log=quiet)
    assert batches.count(1) == 2 and 2 not in batches  # stopped in round 2, never got to round 3
    tree = read_checkpoint(checkpoint_path(tmp_path / "cut.h5"))
    assert (tree["phase"], tree["step"], tree["round_pending"]) == ("thermalize", 20, 1)
    assert all(part["trainer"]["rounds"] == 1 for part in tree["ranks"].values())
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


def test_a_checkpoint_of_format_1_without_round_pending_still_resumes(tmp_path, monkeypatch):
    cfg = config("transformer", (0.1,))
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "thermalize", 20)
    ckpt = checkpoint_path(tmp_path / "cut.h5")
    tree = read_checkpoint(ckpt)
    assert tree.pop("round_pending") == 0
    write_checkpoint(ckpt, tree)
    with h5py.File(ckpt, "r+") as f:
        f.attrs["format"] = "slmc-hpc-checkpoint/1"
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


def test_resuming_twice_and_resuming_a_complete_run(tmp_path, monkeypatch):
    cfg = config("linear", (0.1, 0.2), measure=60)
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    for phase, step in (("thermalize", 12), ("measure", 25)):
        run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", phase, step, resume=True)
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")
    before = (tmp_path / "cut.h5").read_bytes()
    lines = []
    driver.run(cfg, output=tmp_path / "cut.h5", log=lines.append, resume=True)
    assert "already complete" in lines[0] and (tmp_path / "cut.h5").read_bytes() == before


def test_a_foreign_or_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path, monkeypatch):
    cfg = config("linear")
    out = tmp_path / "cut.h5"
    run_stopped_at(monkeypatch, cfg, out, "measure", 10)
    ckpt = checkpoint_path(out)
    saved = out.read_bytes(), ckpt.read_bytes()
    other = cfg.replace("model", mu=-2.0)
    with pytest.raises(ConfigError, match=r"another configuration \(\[model\] mu differ"):
        driver.run(other, output=out, log=quiet, resume=True)
    ckpt.write_bytes(saved[1][: len(saved[1]) // 2])  # truncated
    with pytest.raises(ConfigError, match="damaged or unreadable"):
        driver.run(cfg, output=out, log=quiet, resume=True)
    write_checkpoint(ckpt, {"config": "x"})
    with h5py.File(ckpt, "r+") as f:
        f.attrs["format"] = "something-else/1"
    with pytest.raises(ConfigError, match="not a slmc-hpc checkpoint"):
        driver.run(cfg, output=out, log=quiet, resume=True)
    assert out.read_bytes() == saved[0]
    ckpt.unlink()
    with pytest.raises(ConfigError, match="no checkpoint"):
        driver.run(cfg, output=out, log=quiet, resume=True)
    assert out.read_bytes() == saved[0]


def test_checkpoint_is_replaced_atomically(tmp_path):
    path = tmp_path / "c.ckpt"
    write_checkpoint(path, {"config": "a", "x": np.arange(3)})
    write_checkpoint(path, {"config": "b", "x": np.arange(4)})
    tree = read_checkpoint(path)
    assert tree["config"] == "b" and np.array_equal(tree["x"], np.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]  # no temporary left


def test_decisions():
    assert decide(0, False, False) == (False, False, False)
    assert decide(0, False, True) == (True, False, False)
    assert decide(0, True, False) == (True, True, False)
    assert decide(1, False, False) == (True, True, True) and decide(2, True, True) == (True, True, True)
    assert not is_due(100.0, 0.0, 0.0)  # 0: signals only
    assert is_due(10.0, 0.0, 10.0) and not is_due(9.9, 0.0, 10.0)


def test_signals_set_the_flag_and_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.received == signal.SIGUSR1
        clock = iter([0.0, 5.0])
        from slmc_hpc.parallel.comm import SerialComm
        assert Control(SerialComm(), 100.0, signals, clock=lambda: next(clock)).poll() == (True, True, True)
    assert signal.getsignal(signal.SIGUSR1) is before


def cli(*args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "slmc_hpc", "run", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, timeout, proc):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_checkpoints_and_exits_75_then_resume_is_bit_identical(tmp_path):
    cfg_path = tmp_path / "run.toml"
    # long enough that the signal, 1 s after the file appears, finds the run going: 3000 measured
    # steps ended 1.3 s after it with 0.8.5, and a signal after the run's end kills it (exit -15)
    cfg_path.write_text(config_text("linear", measure=12000, every=0, thermalize=100))
    whole, cut = tmp_path / "whole.h5", tmp_path / "cut.h5"
    proc = cli(cfg_path, "--output", cut)
    wait_for(lambda: cut.exists(), 60, proc)
    time.sleep(1.0)  # somewhere in the run
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    grace = time.monotonic() - sent
    assert proc.returncode == 75, err
    assert "checkpoint" in err and "--resume" in err and "Traceback" not in err
    assert grace < 10, grace
    assert checkpoint_path(cut).exists()
    resumed = cli(cfg_path, "--output", cut, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming from" in out
    assert subprocess.run([sys.executable, "-m", "slmc_hpc", "run", str(cfg_path), "--output", str(whole)],
                          capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1")).returncode == 0
    assert_same_files(whole, cut)


def test_kill_9_then_resume_loses_nothing_before_the_last_checkpoint(tmp_path):
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config_text("linear", measure=3000, every=0.3, thermalize=100))
    whole, cut = tmp_path / "whole.h5", tmp_path / "cut.h5"
    proc = cli(cfg_path, "--output", cut)
    ckpt = checkpoint_path(cut)

    def measuring():
        try:
            return read_checkpoint(ckpt)["phase"] == "measure"
        except ConfigError:
            return False
    wait_for(measuring, 120, proc)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    tree = read_checkpoint(ckpt)
    with h5py.File(cut, "r") as f:  # readable after kill -9, rows valid up to what they say
        written = f["measure/n_written"][:]
        assert np.all(written >= tree["step"]) and np.all(written <= 3000)
        assert np.all(np.isfinite(f["measure/free_energy"][:, : written.min()]))
    resumed = cli(cfg_path, "--output", cut, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert subprocess.run([sys.executable, "-m", "slmc_hpc", "run", str(cfg_path), "--output", str(whole)],
                          capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1")).returncode == 0
    assert_same_files(whole, cut)


# -- damaged and foreign files (property-based) ---------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from slmc_hpc.cli import main  # noqa: E402

_SMALL = config_text("linear")
_made = {}


def interrupted_run(tmp_factory):
    """(config path, output bytes, checkpoint bytes, uninterrupted output path), made once."""
    if not _made:
        where = tmp_factory.mktemp("damage")
        (where / "run.toml").write_text(_SMALL)
        cfg = parse(_SMALL)
        driver.run(cfg, output=where / "whole.h5", log=quiet)
        mp = pytest.MonkeyPatch()
        stop_at(mp, "measure", 20)
        with pytest.raises(driver.Interrupted):
            driver.run(cfg, output=where / "cut.h5", log=quiet)
        mp.undo()
        _made.update(cfg=where / "run.toml", out=(where / "cut.h5").read_bytes(),
                     ckpt=checkpoint_path(where / "cut.h5").read_bytes(), whole=where / "whole.h5")
    return _made


def resume_in(where, capsys):
    code = main(["run", str(_made["cfg"]), "--output", str(where / "cut.h5"), "--resume"])
    err = capsys.readouterr().err
    return code, err


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("overwrite"), st.floats(0.0, 0.999), st.binary(min_size=1, max_size=64))))
def test_a_damaged_checkpoint_is_refused_or_resumes_correctly(tmp_path_factory, capsys, damage):
    """Truncated or overwritten anywhere: either exit 2 with one line naming the checkpoint
    and the output untouched, or (damage in bytes the file does not use) the resumed run is
    exactly the uninterrupted one. Never a traceback, never a wrong resume."""
    made = interrupted_run(tmp_path_factory)
    where = tmp_path_factory.mktemp("case")
    (where / "cut.h5").write_bytes(made["out"])
    data = bytearray(made["ckpt"])
    at = int(damage[1] * len(data))
    if damage[0] == "truncate":
        data = data[:at]
    else:
        data[at: at + len(damage[2])] = damage[2]
    checkpoint_path(where / "cut.h5").write_bytes(bytes(data))
    code, err = resume_in(where, capsys)
    if code == 0:
        assert_same_files(made["whole"], where / "cut.h5")
    else:
        assert code == 2, err
        assert err.startswith("slmc-hpc: error: checkpoint") and err.count("\n") == 1, err
        assert (where / "cut.h5").read_bytes() == made["out"]


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=2000), st.just("hdf5")), with_checkpoint=st.booleans())
def test_an_output_of_another_format_is_never_overwritten(tmp_path_factory, capsys, content, with_checkpoint):
    made = interrupted_run(tmp_path_factory)
    where = tmp_path_factory.mktemp("foreign")
    out = where / "cut.h5"
    if content == "hdf5":
        with h5py.File(out, "w") as f:
            f.attrs["format"] = "someone-else/2"
            f["x"] = np.arange(3)
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    if with_checkpoint:
        checkpoint_path(out).write_bytes(made["ckpt"])
    for args in (["--resume"], []):
        code = main(["run", str(made["cfg"]), "--output", str(out), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("slmc-hpc: error:") and err.count("\n") == 1, err
        assert out.read_bytes() == before


def test_a_flipped_bit_in_the_stored_spins_is_detected(tmp_path_factory, capsys):
    """The targeted case the random damage above rarely hits: one bit of one replica's spins
    (HDF5 itself would read it back without complaint) is caught by the SHA-256."""
    made = interrupted_run(tmp_path_factory)
    where = tmp_path_factory.mktemp("bitflip")
    (where / "cut.h5").write_bytes(made["out"])
    ckpt = checkpoint_path(where / "cut.h5")
    ckpt.write_bytes(made["ckpt"])
    with h5py.File(ckpt, "r") as f:
        offset = f["ranks/0/replicas/1/chain/spins"].id.get_offset()
    data = bytearray(made["ckpt"])
    data[offset + 8 * 7 + 3] ^= 0x10
    ckpt.write_bytes(bytes(data))
    with h5py.File(ckpt, "r") as f:  # still a readable HDF5 file
        assert f["ranks/0/replicas/1/chain/spins"].shape == (16, 3)
    code, err = resume_in(where, capsys)
    assert code == 2 and "do not match their SHA-256" in err
    assert (where / "cut.h5").read_bytes() == made["out"]


def test_a_new_run_never_resumes_an_earlier_runs_checkpoint(tmp_path, monkeypatch):
    """Starting again (--overwrite) removes the old checkpoint; and a checkpoint next to an
    output of another run (same configuration) is refused: outputs carry a run id."""
    cfg = config("linear")
    out, other = tmp_path / "cut.h5", tmp_path / "other.h5"
    run_stopped_at(monkeypatch, cfg, out, "measure", 20)
    old = checkpoint_path(out).read_bytes()
    driver.run(cfg, output=other, log=quiet)
    checkpoint_path(other).write_bytes(old)
    before = other.read_bytes()
    with pytest.raises(ConfigError, match="not the output of the checkpoint's run"):
        driver.run(cfg, output=other, log=quiet, resume=True)
    assert other.read_bytes() == before

    with monkeypatch.context() as m:  # start again, and die before the first checkpoint
        def crash(self, phase, step):
            raise RuntimeError("node died")
        m.setattr(run_loop.TemperingRun, "poll", crash)
        with pytest.raises(RuntimeError):
            driver.run(cfg, output=out, log=quiet, overwrite=True)
    assert not checkpoint_path(out).exists()
    with pytest.raises(ConfigError, match="no checkpoint"):
        driver.run(cfg, output=out, log=quiet, resume=True)


def test_resume_after_the_summary_was_written_and_with_resumable_changes(tmp_path, monkeypatch):
    """A run that died after its summary but before removing its checkpoint resumes from a
    thermalization checkpoint cleanly; checkpoint_every and progress_every may change."""
    cfg = config("linear", measure=40)
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    out = tmp_path / "cut.h5"
    run_stopped_at(monkeypatch, cfg, out, "thermalize", 20)
    saved = checkpoint_path(out).read_bytes()
    driver.run(cfg, output=out, log=quiet, resume=True)  # completes: summary written
    checkpoint_path(out).write_bytes(saved)  # as if the removal never happened
    changed = cfg.replace("run", checkpoint_every=5.0, progress_every=1.0)
    driver.run(changed, output=out, log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", out)


def test_a_checkpoint_from_before_0_2_is_refused_and_changes_nothing(tmp_path, monkeypatch):
    """Before 0.2 a checkpoint stored the user's text, omitted keys omitted: its run had other
    defaults, another tuner and no fluctuation dataset, so it is refused with a clear message
    and neither the checkpoint nor the output is touched."""
    cfg = config("linear")
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "measure", 10)
    ckpt = checkpoint_path(tmp_path / "cut.h5")
    tree = read_checkpoint(ckpt)
    tree["config"] = cfg.text  # the text as given, as 0.1 stored it
    assert parse(tree["config"]).complete_text != tree["config"]
    write_checkpoint(ckpt, tree)
    files = {p: p.read_bytes() for p in (ckpt, tmp_path / "cut.h5")}
    with pytest.raises(ConfigError, match="written by slmc-hpc before 0.2"):
        driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert all(p.read_bytes() == data for p, data in files.items())


def test_a_file_whose_steps_cannot_grow_is_not_extended(tmp_path):
    """Files written before 0.3 have fixed-size step axes: extending one is refused, and
    neither the file nor the checkpoint changes."""
    out = tmp_path / "run.h5"
    driver.run(config("linear", measure=40), output=out, log=quiet)
    with h5py.File(out, "r+") as f:  # as 0.2 wrote it: not resizable
        data = f["measure/free_energy"][()]
        del f["measure/free_energy"]
        f.create_dataset("measure/free_energy", data=data)
    files = {p: p.read_bytes() for p in (out, checkpoint_path(out))}
    with pytest.raises(ConfigError, match="cannot grow"):
        driver.run(config("linear", measure=60), output=out, log=quiet, resume=True)
    assert all(p.read_bytes() == data for p, data in files.items())


def test_a_checkpoint_of_0_2_without_the_keys_and_state_added_since_resumes(tmp_path, monkeypatch):
    """0.2 stored every key of its time: a text without [temperatures] adapt, and no ladder or
    ladder-round state in the tree. It resumes, to the uninterrupted run's file."""
    cfg = config("linear", (0.1, 0.15))
    driver.run(cfg, output=tmp_path / "whole.h5", log=quiet)
    run_stopped_at(monkeypatch, cfg, tmp_path / "cut.h5", "measure", 12)
    ckpt = checkpoint_path(tmp_path / "cut.h5")
    tree = read_checkpoint(ckpt)
    assert 'adapt = "none"\n' in tree["config"]
    tree["config"] = tree["config"].replace('adapt = "none"\n', "")
    del tree["temperatures"]
    for part in tree["ranks"].values():
        for replica in part["replicas"].values():
            del replica["differences"]
    write_checkpoint(ckpt, tree)
    driver.run(cfg, output=tmp_path / "cut.h5", log=quiet, resume=True)
    assert_same_files(tmp_path / "whole.h5", tmp_path / "cut.h5")


@pytest.mark.parametrize("change,match", [({"run": {"seed": 12}}, r"\[run\] seed differ"),
                                          ({"run": {"measure": 30}}, "would shorten it")])
def test_resuming_a_complete_run_with_another_configuration_is_refused(tmp_path, change, match):
    out = tmp_path / "run.h5"
    driver.run(config("linear", measure=40), output=out, log=quiet)
    for keep_final_state in (True, False):
        if not keep_final_state:
            checkpoint_path(out).unlink()
        files = {p: p.read_bytes() for p in (out, checkpoint_path(out)) if p.exists()}
        cfg = config("linear", measure=40)
        for section, keys in change.items():
            cfg = cfg.replace(section, **keys)
        with pytest.raises(ConfigError, match=match):
            driver.run(cfg, output=out, log=quiet, resume=True)
        assert all(p.read_bytes() == data for p, data in files.items())


def test_keys_only_a_transformer_reads_may_differ_where_neither_run_has_one():
    """Every run stored before 0.4.2 holds epochs = 30 (the default then): a linear run resumes
    from its unchanged file, a Transformer run (whose training it changes) is refused."""
    from slmc_hpc.resume import check_same_run

    old = {"training": {"epochs": 30, "learning_rate": 0.01}}
    check_same_run(small_config(), small_config(old), "run")
    with pytest.raises(ConfigError, match=r"\[run\] seed differ"):  # other keys still count
        check_same_run(small_config(run={"seed": 12}), small_config(old), "run")
    net = {"effective_model": {"kind": "transformer"}}
    with pytest.raises(ConfigError, match=r"\[training\] epochs, \[training\] learning_rate differ: epochs = 30 there"):
        check_same_run(small_config(net), small_config(net, old), "run")
    with pytest.raises(ConfigError, match=r"\[effective_model\] kind"):
        check_same_run(small_config(net), small_config(old), "run")


def test_a_linear_run_of_0_4_names_the_defaults_that_changed_in_0_5():
    """A linear run stored before 0.5 holds thermalize = 4000 and buffer_size = 2000 (the
    defaults then); resumed with its configuration file that omits them, the refusal names
    both with the run's values, and writing them in resumes it."""
    from slmc_hpc.config import parse, to_toml
    from slmc_hpc.resume import check_same_run

    text = {"lattice": {"L": 4}, "temperatures": {"values": [0.1]}}
    saved = parse(to_toml({**text, "run": {"thermalize": 4000}, "training": {"buffer_size": 2000}}))
    with pytest.raises(ConfigError, match=r"\[training\] buffer_size, \[run\] thermalize differ: "
                                          r"buffer_size = 2000 there, 8000 here; thermalize = 4000 there, 12000 here"):
        check_same_run(parse(to_toml(text)), saved, "run")
    check_same_run(parse(to_toml({**text, "run": {"thermalize": 4000}, "training": {"buffer_size": 2000}})), saved, "run")
