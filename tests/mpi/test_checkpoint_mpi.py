"""Checkpoint and restart across ranks: a tempering run with the shared Transformer being
trained, stopped by a signal that reaches only one rank, resumed, equals the uninterrupted
run bit for bit (both MPI writers); so do an extended run, a stop while the ladder adapts, and
a checkpoint of 0.8.1 written while every rank tuned its path and middle tests."""

import os
import signal

import h5py
import pytest

from slmc_hpc import driver
from slmc_hpc.checkpoint import checkpoint_path, read_checkpoint
from slmc_hpc.parallel.comm import MPIComm
from slmc_hpc.testing import assert_same_files

from configs import small_config
from test_checkpoint import stop_at

from .test_tempering_mpi import on_rank0

pytestmark = pytest.mark.mpi

def config(n_ranks):
    return small_config(temperatures={"values": [round(0.1 * 1.4**r, 4) for r in range(n_ranks)], "exchange_every": 3},
                        effective_model={"kind": "transformer", "layers": 1, "heads": 2, "block_shells": 1},
                        training={"every": 10, "epochs": 2, "batch_size": 16},
                        run={"thermalize": 30, "measure": 40, "snapshot_every": 7, "seed": 12, "checkpoint_every": 0})


@pytest.mark.parametrize("gather", [False, True], ids=["mpio", "rank0-gather"])
@pytest.mark.parametrize("phase,step", [("thermalize", 15), ("measure", 20)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path_factory, monkeypatch, phase, step, gather):
    comm = MPIComm()
    cfg = config(comm.size)
    where = comm.bcast(str(tmp_path_factory.mktemp("ckpt")) if comm.rank == 0 else None)
    quiet = lambda *a, **k: None  # noqa: E731
    driver.run(cfg, output=f"{where}/whole.h5", comm=comm, log=quiet, gather_output=gather)
    with monkeypatch.context() as m:
        stop_at(m, phase, step, rank=comm.size - 1)  # the signal reaches the last rank only
        with pytest.raises(driver.Interrupted):  # on every rank
            driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather)
    comm.barrier()

    def check_checkpoint():
        tree = read_checkpoint(checkpoint_path(f"{where}/cut.h5"))
        assert (tree["phase"], tree["step"], tree["n_ranks"]) == (phase, step, comm.size)
        assert sorted(tree["ranks"]) == [str(r) for r in range(comm.size)]

    on_rank0(comm, check_checkpoint)
    driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather, resume=True)
    on_rank0(comm, lambda: assert_same_files(f"{where}/whole.h5", f"{where}/cut.h5"))


@pytest.mark.parametrize("gather", [False, True], ids=["mpio", "rank0-gather"])
def test_a_signal_on_one_rank_during_a_training_round_stops_every_rank_there(tmp_path_factory, monkeypatch,
                                                                              gather):
    """The last rank alone is signalled during the second minibatch of the second training
    round: every rank abandons the round at the same minibatch (no collective left hanging),
    the checkpoint is from before the round, and the resume redoes it bit for bit."""
    from slmc_hpc.training.network import TorchTrainer
    comm = MPIComm()
    cfg = config(comm.size)
    where = comm.bcast(str(tmp_path_factory.mktemp("ckpt-round")) if comm.rank == 0 else None)
    quiet = lambda *a, **k: None  # noqa: E731
    driver.run(cfg, output=f"{where}/whole.h5", comm=comm, log=quiet, gather_output=gather)
    original, asks = TorchTrainer.train, []

    def train(self, *args, interrupt=None, **kwargs):
        def asked():
            asks.append(self.rounds)
            if self.rounds == 1 and asks.count(1) == 2 and comm.rank == comm.size - 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the run's handler only sets its flag
            return interrupt()
        return original(self, *args, interrupt=asked, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(TorchTrainer, "train", train)
        with pytest.raises(driver.Interrupted, match="after thermalize step 20"):  # on every rank
            driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather)
    assert asks.count(1) == 2 and 2 not in asks
    comm.barrier()

    def check_checkpoint():
        tree = read_checkpoint(checkpoint_path(f"{where}/cut.h5"))
        assert (tree["phase"], tree["step"], tree["round_pending"]) == ("thermalize", 20, 1)

    on_rank0(comm, check_checkpoint)
    driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather, resume=True)
    on_rank0(comm, lambda: assert_same_files(f"{where}/whole.h5", f"{where}/cut.h5"))


@pytest.mark.parametrize("gather", [False, True], ids=["mpio", "rank0-gather"])
def test_an_extended_run_equals_the_longer_run(tmp_path_factory, gather):
    """A finished run resumed with a larger [run] measure equals, bit for bit, the run that
    had the larger measure from the start (both MPI writers)."""
    comm = MPIComm()
    where = comm.bcast(str(tmp_path_factory.mktemp("extend")) if comm.rank == 0 else None)
    quiet = lambda *a, **k: None  # noqa: E731
    longer = config(comm.size).replace("run", measure=61)
    driver.run(longer, output=f"{where}/whole.h5", comm=comm, log=quiet, gather_output=gather)
    driver.run(config(comm.size), output=f"{where}/grown.h5", comm=comm, log=quiet, gather_output=gather)
    driver.run(longer, output=f"{where}/grown.h5", comm=comm, log=quiet, gather_output=gather, resume=True)
    on_rank0(comm, lambda: assert_same_files(f"{where}/whole.h5", f"{where}/grown.h5"))


@pytest.mark.parametrize("gather", [False, True], ids=["mpio", "rank0-gather"])
def test_a_stop_during_ladder_adaptation_resumes_bit_for_bit(tmp_path_factory, monkeypatch, gather):
    """[temperatures] adapt = "barrier" (rounds ending after thermalization steps 10 and 30):
    a stop in the second round's recorded half, on the last rank only, resumes to the
    uninterrupted run's file; the ladder was gathered to rank 0 and moved on every rank."""
    comm = MPIComm()
    cfg = config(comm.size).replace("temperatures", adapt="barrier").replace("run", thermalize=60)
    where = comm.bcast(str(tmp_path_factory.mktemp("adapt")) if comm.rank == 0 else None)
    quiet = lambda *a, **k: None  # noqa: E731
    driver.run(cfg, output=f"{where}/whole.h5", comm=comm, log=quiet, gather_output=gather)
    with monkeypatch.context() as m:
        stop_at(m, "thermalize", 25, rank=comm.size - 1)
        with pytest.raises(driver.Interrupted):
            driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather)
    comm.barrier()
    driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, gather_output=gather, resume=True)

    def check():
        assert_same_files(f"{where}/whole.h5", f"{where}/cut.h5")
        with h5py.File(f"{where}/whole.h5", "r") as f:
            assert list(f["tempering/adaptation/step"][()]) == [10, 30]
    on_rank0(comm, check)


def test_a_0_8_1_checkpoint_written_while_tuning_resumes_over_its_old_middle_tests(tmp_path_factory, monkeypatch):
    """Every rank tunes its slot's path and middle tests over 0.8.1's candidates (2, 4, 8 and 16
    middle tests, no candidate list in the saved tuner); stopped mid-tuning on the last rank,
    its checkpoint stripped to 0.8.1's form, and resumed by this version, it ends as the old
    version's uninterrupted run, bit for bit (tests/test_tuning.py has the serial case)."""
    import itertools

    from slmc_hpc import tuning
    from slmc_hpc.checkpoint import write_checkpoint

    ticks = itertools.count()  # 1 s per clock reading: the choices do not depend on the machine
    monkeypatch.setattr(tuning.PathTuner, "clock", staticmethod(lambda: float(next(ticks))))
    comm = MPIComm()
    cfg = small_config(temperatures={"values": [round(0.1 * 1.4**r, 4) for r in range(comm.size)], "exchange_every": 3},
                       effective_model={"kind": "downfolded"},
                       slmc={"local_updates": "auto", "middle_steps": "auto"},
                       training={"loss": "pair", "every": 50, "buffer_size": 120},
                       run={"thermalize": 200, "measure": 30, "snapshot_every": 10, "seed": 4, "step_size": "auto"})
    where = comm.bcast(str(tmp_path_factory.mktemp("legacy")) if comm.rank == 0 else None)
    quiet = lambda *a, **k: None  # noqa: E731
    with monkeypatch.context() as m:
        m.setattr(tuning, "MIDDLE_STEPS", tuning.LEGACY_MIDDLE_STEPS)
        driver.run(cfg, output=f"{where}/whole.h5", comm=comm, log=quiet)
        stop_at(m, "thermalize", 137, rank=comm.size - 1)
        with pytest.raises(driver.Interrupted):
            driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet)
    comm.barrier()

    def strip():
        path = checkpoint_path(f"{where}/cut.h5")
        tree = read_checkpoint(path)
        tuners = [rep["tuner"] for rank in tree["ranks"].values() for rep in rank["replicas"].values()]
        assert len(tuners) == comm.size
        assert all(len(t["trials"]) == 40 and t["chosen"] == -1 for t in tuners)
        for t in tuners:
            del t["candidates"]  # as 0.8.1 saved it
        write_checkpoint(path, tree)

    on_rank0(comm, strip)
    driver.run(cfg, output=f"{where}/cut.h5", comm=comm, log=quiet, resume=True)

    def check():
        assert_same_files(f"{where}/whole.h5", f"{where}/cut.h5")
        with h5py.File(f"{where}/cut.h5", "r") as f:
            assert f["tuning/candidates"].shape == (40, 3)
    on_rank0(comm, check)
