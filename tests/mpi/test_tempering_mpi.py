"""The tempering run distributed over MPI ranks (one replica per rank) writes exactly the file
a single process writes for the same configuration: same rows, same exchanges, same models."""

import h5py
import numpy as np
import pytest

from slmc_hpc.driver import run
from slmc_hpc.parallel.comm import MPIComm, SerialComm

from configs import small_config

pytestmark = pytest.mark.mpi

def config(temps):
    return small_config(lattice={"L": 3}, model={"mu": -1.0}, temperatures={"values": temps, "exchange_every": 3},
                        effective_model={"shells": 2}, training={"every": 20},
                        run={"thermalize": 40, "measure": 60, "snapshot_every": 20, "seed": 9})


def on_rank0(comm, check):
    """Run ``check`` on rank 0 and fail on every rank if it fails (a failure on rank 0 alone
    would leave the others waiting in the next collective)."""
    error = None
    if comm.rank == 0:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - reported on all ranks below
            error = exc
    message = comm.bcast(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if message is not None:
        pytest.fail(f"rank 0 failed: {message}")


def compare(a, b, path=""):
    for key in a:
        if isinstance(a[key], h5py.Group):
            compare(a[key], b[key], f"{path}/{key}")
        elif key != "seconds_per_step":
            x, y = a[key][()], b[key][()]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{path}/{key}"


@pytest.mark.parametrize("gather", [False, True], ids=["mpio", "rank0-gather"])
def test_mpi_run_equals_single_process_run(tmp_path_factory, gather):
    """Both writers: MPI-IO, and the rank-0 gather used when h5py has no MPI (forced here)."""
    comm = MPIComm()
    temps = [round(0.2 * 1.6**r, 4) for r in range(comm.size)]
    cfg = config(temps)
    where = comm.bcast(str(tmp_path_factory.mktemp("pt")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/mpi.h5", comm=comm, log=lambda *a: None, gather_output=gather)

    def check():
        run(cfg, output=f"{where}/serial.h5", comm=SerialComm(), log=lambda *a: None)
        with h5py.File(f"{where}/mpi.h5", "r") as a, h5py.File(f"{where}/serial.h5", "r") as b:
            assert a["tempering/slot_of_replica"].shape == (20, comm.size)
            assert list(a["measure/n_written"][:]) == [60] * comm.size
            compare(a, b)

    on_rank0(comm, check)


def test_a_downfolded_mpi_run_equals_the_single_process_run(tmp_path_factory):
    """Three-level SLMC: its slot models (which hold the physics) travel between ranks."""
    comm = MPIComm()
    temps = [round(0.2 * 1.6**r, 4) for r in range(comm.size)]
    cfg = config(temps).replace("model", mu=-2.5).replace("effective_model", kind="downfolded")
    where = comm.bcast(str(tmp_path_factory.mktemp("down")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/mpi.h5", comm=comm, log=lambda *a: None)

    def check():
        run(cfg, output=f"{where}/serial.h5", comm=SerialComm(), log=lambda *a: None)
        with h5py.File(f"{where}/mpi.h5", "r") as a, h5py.File(f"{where}/serial.h5", "r") as b:
            assert a["model"].attrs["kind"] == "downfolded"
            compare(a, b)

    on_rank0(comm, check)


def exact(temps, every):
    return small_config(temperatures={"values": temps, "exchange_every": every}, effective_model={"shells": 4},
                        run={"thermalize": 400, "measure": 5000, "snapshot_every": 500, "seed": 5, "step_size": 0.8})


def test_each_slot_of_a_tempering_run_agrees_with_independent_chains(tmp_path_factory):
    """⟨F⟩/N and ⟨|m|⟩ of every slot of the MPI tempering run agree with chains run without
    exchanges within 3 combined binned standard errors (2 observables × R slots; false alarm
    ≈ 0.3% per comparison)."""
    from slmc_hpc.stats import binned_error, tau_int

    comm = MPIComm()
    temps = [round(0.1 * 1.5**r, 4) for r in range(comm.size)]
    where = comm.bcast(str(tmp_path_factory.mktemp("exact")) if comm.rank == 0 else None)
    run(exact(temps, 4), output=f"{where}/pt.h5", comm=comm, log=lambda *a: None)

    def check():
        run(exact(temps, 0), output=f"{where}/independent.h5", comm=SerialComm(),
            log=lambda *a: None)

        def error(x):
            n_bins = min(32, int(len(x) / (20 * tau_int(x))))
            assert n_bins >= 16
            return binned_error(x, n_bins)

        with h5py.File(f"{where}/pt.h5", "r") as a, h5py.File(f"{where}/independent.h5", "r") as b:
            swaps = a["tempering/accepted"][:]
            assert np.mean(swaps[swaps >= 0]) > 0.05
            for slot in range(comm.size):
                for name in ("F/N", "|m|"):
                    x, y = ((f["measure/free_energy"][slot] / 16) if name == "F/N" else
                            np.linalg.norm(f["measure/magnetization"][slot], axis=-1) for f in (a, b))
                    err = np.hypot(error(x), error(y))
                    assert abs(x.mean() - y.mean()) < 3 * err, (slot, name, x.mean(), y.mean(), err)

    on_rank0(comm, check)


def shared(temps):
    return small_config(temperatures={"values": temps, "exchange_every": 3},
                        effective_model={"kind": "transformer", "layers": 1, "heads": 2, "block_shells": 1},
                        training={"every": 20, "epochs": 3, "batch_size": 100000},
                        run={"thermalize": 40, "measure": 30, "snapshot_every": 10, "seed": 4})


def test_shared_transformer_trained_across_ranks_equals_one_process(tmp_path_factory):
    """One Transformer for all slots, each rank training on its own slot's samples with the
    gradients and the head's normal equations summed over ranks: with one minibatch per
    epoch the result equals one process training on all slots' samples, up to the order of
    floating-point sums; every slot stores the same parameters."""
    comm = MPIComm()
    temps = [round(0.1 * 1.5**r, 4) for r in range(comm.size)]
    cfg = shared(temps)
    where = comm.bcast(str(tmp_path_factory.mktemp("shared")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/mpi.h5", comm=comm, log=lambda *a: None)

    def check():
        run(cfg, output=f"{where}/serial.h5", comm=SerialComm(), log=lambda *a: None)
        with h5py.File(f"{where}/mpi.h5", "r") as a, h5py.File(f"{where}/serial.h5", "r") as b:
            params = a["model/parameters"][:]
            assert all(np.array_equal(params[0], p) for p in params)
            assert np.allclose(params, b["model/parameters"][:], rtol=1e-8, atol=1e-12)
            assert np.allclose(a["training/validation_loss"][:], b["training/validation_loss"][:], rtol=1e-6)
            assert np.allclose(a["measure/free_energy"][:], b["measure/free_energy"][:], rtol=1e-10)
            assert np.array_equal(a["tempering/slot_of_replica"][:], b["tempering/slot_of_replica"][:])

    on_rank0(comm, check)


def test_tuned_mpi_run_equals_single_process_run(tmp_path_factory, monkeypatch):
    """local_updates and step_size "auto": every rank tunes its slot, the choices reach every
    rank and travel with the temperature labels; with a clock that reads 1 s per step (so that
    the choices do not depend on the machine) the file is the single process's."""
    import itertools

    from slmc_hpc.tuning import PathTuner

    ticks = itertools.count()
    monkeypatch.setattr(PathTuner, "clock", staticmethod(lambda: float(next(ticks))))
    comm = MPIComm()
    temps = [round(0.2 * 1.6**r, 4) for r in range(comm.size)]
    cfg = config(temps).replace("slmc", local_updates="auto").replace("run", step_size="auto", thermalize=120)
    where = comm.bcast(str(tmp_path_factory.mktemp("tuned")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/mpi.h5", comm=comm, log=lambda *a: None)

    def check():
        run(cfg, output=f"{where}/serial.h5", comm=SerialComm(), log=lambda *a: None)
        with h5py.File(f"{where}/mpi.h5", "r") as a, h5py.File(f"{where}/serial.h5", "r") as b:
            assert np.all(a["tuning/local_updates"][:] > 0)
            compare(a, b)

    on_rank0(comm, check)


def test_report_of_a_transformer_tempering_run(tmp_path_factory):
    """The report end to end on the file of a short Transformer tempering run over every rank
    (one replica per rank; 4 under `mpirun -n 4`): every PNG decodes and is not blank, the HTML
    has every section and embeds every figure, and the tables cover every temperature."""
    import matplotlib.image

    from slmc_hpc.report import write_report

    comm = MPIComm()
    temps = [round(0.2 * 1.6**r, 4) for r in range(comm.size)]
    cfg = config(temps).replace("effective_model", kind="transformer", layers=1, heads=1).replace(
        "training", epochs=2)
    where = comm.bcast(str(tmp_path_factory.mktemp("report")) if comm.rank == 0 else None)
    run(cfg, output=f"{where}/t.h5", comm=comm, log=lambda *a: None)

    def check():
        out = write_report(f"{where}/t.h5", f"{where}/rep")
        pngs = sorted(out.glob("*.png"))
        assert {p.name for p in pngs} == {"thermodynamics.png", "structure_factor.png", "tempering.png",
                                          "training.png", "couplings.png", "accuracy.png", "attention.png"}
        for png in pngs:
            assert matplotlib.image.imread(png).std() > 0.01, png.name
        html = (out / "report.html").read_text()
        assert html.count("data:image/png;base64,") == len(pngs) and "effective model transformer" in html
        for section in ("Thermodynamics", "Tempering: pairs", "Tempering: slots", "Training"):
            assert section in html, section
        assert len(np.genfromtxt(out / "thermodynamics.csv", delimiter=",", names=True)) == comm.size

    on_rank0(comm, check)
