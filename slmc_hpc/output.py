"""The run's HDF5 file. The layout (README "Output layout") is a contract for analysis:
row r of every per-temperature dataset is temperature slot r; energies are whole-lattice.

Rows are filled as the run goes; ``/measure/n_written`` and ``/snapshots/n_written`` say how
many entries of each row are valid, so a file from an interrupted run is still readable.
"""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .config import ConfigError
from .lattice import Lattice
from .parallel.comm import SerialComm, on_rank0
from .training.data import ROUND_FIELDS

FORMAT = "slmc-hpc/1"

MEASURE_DTYPES = {
    "free_energy": ("f8", ()),
    "effective_energy": ("f8", ()),
    "magnetization": ("f8", (3,)),
    "accepted": ("i1", ()),
    "acceptance": ("f8", ()),
    "exact_log_ratio": ("f8", ()),
    "fermion_energy": ("f8", ()),
    "fermion_energy_fluctuation": ("f8", ()),
    "filling": ("f8", ()),
    "nn_correlation": ("f8", ()),
}


@dataclass(frozen=True)
class Layout:
    """What fixes the file's shape and its run-describing attributes (assemble.output_layout
    builds it from the configuration): R = len(temperatures) rows of every per-temperature
    dataset, ``measure`` measured steps, ``n_rounds`` training rounds, ``n_exchanges``
    exchange rounds, the model's parameter names (and nested SLMC's inner model's)."""

    config_text: str
    sampler: str
    seed: int
    local_updates: int | str  # per step, or "auto" (then /tuning holds each slot's choice)
    lattice: Lattice
    temperatures: list
    measure: int
    thermalize: int
    snapshot_every: int
    exchange_every: int  # as configured (the file records it even with one temperature)
    n_exchanges: int
    n_rounds: int
    model_kind: str  # "linear", "transformer", or "none" (exact sampler)
    parameter_names: list
    n_parameters: int
    beta_ref: float | None = None  # the Transformer's β-conditioning reference
    inner_parameter_names: list | None = None  # nested SLMC's inner linear model
    path_candidates: list | None = None  # (local updates, δ, middle tests) a tuned run tries (tuning.py)
    adaptation_rounds: int = 0  # rounds of the self-tuning ladder (ladder.py)


def open_for_resuming(path: Path, run_id: str, comm=None, measure: int | None = None) -> h5py.File:
    """Open the existing output file of run ``run_id`` (the checkpoint's) for writing,
    collectively under MPI; a ``measure`` beyond the file's needs a file whose step axes can
    grow (written since 0.3)."""
    comm = comm or SerialComm()

    def check():  # rank 0 alone reads the file before every rank opens it
        try:
            with h5py.File(path, "r") as f:
                stored_format, stored_id = f.attrs.get("format"), f.attrs.get("run_id")
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes h5py raise
            raise ConfigError(f"cannot open output file {str(path)!r} to resume: {exc}; nothing was changed") from None
        if stored_format != FORMAT:
            raise ConfigError(f"{str(path)!r} is not an {FORMAT} output file (format {stored_format!r}); "
                              f"nothing was changed")
        if stored_id != run_id:
            raise ConfigError(f"{str(path)!r} is not the output of the checkpoint's run (run id {stored_id!r}, "
                              f"the checkpoint's {run_id!r}); nothing was changed")
        with h5py.File(path, "r") as f:
            steps = f["measure/free_energy"]
            if measure is not None and measure > steps.shape[1] and steps.maxshape[1] is not None:
                raise ConfigError(f"{str(path)!r} holds {steps.shape[1]} measured steps and was written before "
                                  f"slmc-hpc 0.3, whose files cannot grow; [run] measure cannot be raised for "
                                  f"it (nothing was changed)")
    on_rank0(comm, check, (ConfigError,))
    if comm.size == 1:
        return h5py.File(path, "r+")
    return h5py.File(path, "r+", driver="mpio", comm=comm.comm)


def open_for_writing(path: Path, overwrite: bool, comm=None) -> h5py.File:
    """Create the file (collectively with the MPI-IO driver when several ranks run). Whether
    it exists is decided by rank 0 alone, before anyone creates it."""
    comm = comm or SerialComm()
    exists = comm.bcast(path.exists() if comm.rank == 0 else None)
    if exists and not overwrite:
        raise ConfigError(f"output file {str(path)!r} already exists; pass --overwrite to replace it "
                          f"or set [run] output to another name")
    try:
        if comm.size == 1:
            return h5py.File(path, "w")
        if not h5py.get_config().mpi:
            raise ConfigError("several MPI ranks need h5py built with MPI (rerun jobscripts/install.sh "
                              "with a parallel HDF5)")
        return h5py.File(path, "w", driver="mpio", comm=comm.comm)
    except OSError as exc:
        raise ConfigError(f"cannot create output file {str(path)!r}: {exc}") from None


class RunOutput:
    """The file's layout is created at once by every rank with identical arguments (HDF5
    metadata operations are collective); afterwards each rank writes only rows' data."""

    def __init__(self, path: str | Path, layout: Layout, overwrite: bool = False, comm=None,
                 run_id: str | None = None):
        """Create the file with a new random run id; or, given the ``run_id`` of a checkpoint,
        open that run's existing file to resume it."""
        comm = comm or SerialComm()
        self.path = Path(path)
        self.collective = comm.size > 1
        self.snapshot_every, self.thermalize = layout.snapshot_every, layout.thermalize
        if run_id is not None:
            self.file = open_for_resuming(self.path, run_id, comm, layout.measure)
            self.run_id = run_id
            self._grow(layout)
            return
        self.run_id = comm.bcast(uuid.uuid4().hex)
        lattice = layout.lattice
        R, n = len(layout.temperatures), layout.measure
        m = n // layout.snapshot_every
        N = lattice.N
        created = comm.bcast(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        f = self.file = open_for_writing(self.path, overwrite, comm)
        f.attrs.update({
            "format": FORMAT, "version": __version__, "config": layout.config_text,
            "created": created, "run_id": self.run_id,
            "sampler": layout.sampler, "seed": layout.seed, "lattice_kind": lattice.kind,
            "L": lattice.L, "N": N, "local_updates": layout.local_updates,
        })
        f.create_dataset("temperatures", data=np.asarray(layout.temperatures, dtype=np.float64))
        f.create_dataset("lattice/coords", data=lattice.coords)
        f.create_dataset("lattice/bonds", data=lattice.bonds)
        # the step axes can grow: a finished run extended to a larger [run] measure (_grow)
        chunk = 4096  # not min(n, ...): the axis may grow far beyond n
        for name, (dtype, tail) in MEASURE_DTYPES.items():
            fill = -1 if dtype == "i1" else np.nan
            f.create_dataset(f"measure/{name}", shape=(R, n) + tail, dtype=dtype, fillvalue=fill,
                             chunks=(1, chunk) + tail, maxshape=(R, None) + tail)
        f.create_dataset("measure/n_written", data=np.zeros(R, dtype=np.int64))
        f.create_dataset("snapshots/spins", shape=(R, m, N, 3), dtype="f8", fillvalue=np.nan,
                         chunks=(1, 1, N, 3), maxshape=(R, None, N, 3))
        f.create_dataset("snapshots/free_energy", shape=(R, m), dtype="f8", fillvalue=np.nan,
                         chunks=(1, 1024), maxshape=(R, None))
        f.create_dataset("snapshots/step", shape=(R, m), dtype="i8", fillvalue=-1, chunks=(1, 1024),
                         maxshape=(R, None))
        f.create_dataset("snapshots/n_written", data=np.zeros(R, dtype=np.int64))
        g = f.create_group("model")
        g.attrs["kind"] = layout.model_kind
        g.attrs["parameter_names"] = layout.parameter_names
        if layout.beta_ref is not None:
            g.attrs["beta_ref"] = layout.beta_ref
        g.create_dataset("parameters", shape=(R, layout.n_parameters), dtype="f8", fillvalue=np.nan)
        if layout.inner_parameter_names is not None:
            g.attrs["inner_parameter_names"] = layout.inner_parameter_names
            g.create_dataset("inner_parameters", shape=(R, len(layout.inner_parameter_names)), dtype="f8",
                             fillvalue=np.nan)
        for name in ROUND_FIELDS:
            integer = name in ("step", "n_train")
            f.create_dataset(f"training/{name}", shape=(R, layout.n_rounds), dtype="i8" if integer else "f8",
                             fillvalue=-1 if integer else np.nan)
        f.create_dataset("tempering/slot_of_replica", shape=(layout.n_exchanges, R), dtype="i4", fillvalue=-1,
                         chunks=(1024, R), maxshape=(None, R))
        f.create_dataset("tempering/accepted", shape=(layout.n_exchanges, max(R - 1, 0)), dtype="i1", fillvalue=-1,
                         chunks=(1024, max(R - 1, 1)), maxshape=(None, None))
        f["tempering"].attrs["exchange_every"] = layout.exchange_every
        if layout.adaptation_rounds:
            f.create_dataset("tempering/adaptation/temperatures", shape=(layout.adaptation_rounds, R), dtype="f8",
                             fillvalue=np.nan)
            for name in ("rejection", "barrier"):
                f.create_dataset(f"tempering/adaptation/{name}", shape=(layout.adaptation_rounds, R - 1), dtype="f8",
                                 fillvalue=np.nan)
            f.create_dataset("tempering/adaptation/step", shape=(layout.adaptation_rounds,), dtype="i8", fillvalue=-1)
        if layout.path_candidates is not None:
            C = len(layout.path_candidates)
            f.create_dataset("tuning/candidates", data=np.array(layout.path_candidates, dtype=np.float64))
            f.create_dataset("tuning/local_updates", shape=(R,), dtype="i8", fillvalue=-1)
            f.create_dataset("tuning/step_size", shape=(R,), dtype="f8", fillvalue=np.nan)
            f.create_dataset("tuning/middle_steps", shape=(R,), dtype="i8", fillvalue=-1)
            for name in ("steps", "moved_fraction", "proxy"):
                f.create_dataset(f"tuning/{name}", shape=(R, C), dtype="f8", fillvalue=np.nan)
        f.flush()

    def _grow(self, layout: Layout) -> None:
        """Resize the step axes to ``layout.measure`` measured steps (a run resumed with a larger
        [run] measure), and store the configuration that asked for them. Collective under
        MPI-IO, like every change of the file's metadata."""
        f = self.file
        if f["measure/free_energy"].shape[1] == layout.measure:
            return
        for name in MEASURE_DTYPES:
            f[f"measure/{name}"].resize(layout.measure, axis=1)
        for name in ("spins", "free_energy", "step"):
            f[f"snapshots/{name}"].resize(layout.measure // layout.snapshot_every, axis=1)
        for name in ("slot_of_replica", "accepted"):
            f[f"tempering/{name}"].resize(layout.n_exchanges, axis=0)
        f.attrs["config"] = layout.config_text

    def _write(self, name: str, where, values) -> None:
        dset = self.file[name]
        if self.collective:
            with dset.collective:
                dset[where] = values
        else:
            dset[where] = values

    def write_block(self, slot: int, start: int, columns: dict[str, np.ndarray]) -> None:
        """Measured steps start, start+1, ... of one slot, all of them up to the end of the
        block (``columns``: one array per MEASURE_DTYPES name, and "spins" for the snapshots
        in the block, in order), then the counts of valid entries. Under MPI-IO every rank
        calls this at the same time with blocks of the same length (collective writes)."""
        n = len(columns["free_energy"])
        stop = start + n
        if n:
            for name in MEASURE_DTYPES:
                self._write(f"measure/{name}", (slot, slice(start, stop)), columns[name])
        # snapshot k is taken after measured step (k+1)·every
        first, last = start // self.snapshot_every, stop // self.snapshot_every
        if last > first:
            assert len(columns["spins"]) == last - first, "snapshots missing from the block"
            where = (slot, slice(first, last))
            at = self.snapshot_every * np.arange(first + 1, last + 1)  # measured steps done
            self._write("snapshots/spins", where, columns["spins"])
            self._write("snapshots/free_energy", where, columns["free_energy"][at - 1 - start])
            self._write("snapshots/step", where, self.thermalize + at)
        self._write("measure/n_written", slot, stop)
        self._write("snapshots/n_written", slot, last)

    def rewind(self, measured: int, n_exchanges: int) -> None:
        """Forget everything after measured step ``measured`` and exchange round
        ``n_exchanges`` (a resumed run writes it again): the valid-entry counts go back, and
        the exchange rows after it return to their fill value. Rank 0 alone calls this."""
        f = self.file
        f["measure/n_written"][:] = measured
        f["snapshots/n_written"][:] = measured // self.snapshot_every
        if f["tempering/slot_of_replica"].shape[0] > n_exchanges:
            f["tempering/slot_of_replica"][n_exchanges:] = -1
            f["tempering/accepted"][n_exchanges:] = -1

    def drop_summary(self) -> None:
        """Remove a summary left by a run that died after writing it (collective: every rank)."""
        if "summary" in self.file:
            del self.file["summary"]

    def write_exchanges(self, first: int, slot_of_replica: np.ndarray, accepted: np.ndarray) -> None:
        """Exchange rounds first, first+1, ...: after each, the slot of every replica, and per
        neighbouring slot pair (s, s+1) 1 swapped / 0 rejected / -1 not tried that round."""
        stop = first + len(slot_of_replica)
        self.file["tempering/slot_of_replica"][first:stop] = slot_of_replica
        self.file["tempering/accepted"][first:stop] = accepted

    def write_adaptation(self, index: int, step: int, temperatures, rejections, increments) -> None:
        """Round ``index`` of the self-tuning ladder, which ended after thermalization step
        ``step``: the ladder it ran at, its estimated swap rejection and barrier per
        neighbouring pair (ladder.barrier_increments)."""
        g = self.file["tempering/adaptation"]
        g["step"][index], g["temperatures"][index] = step, temperatures
        g["rejection"][index], g["barrier"][index] = rejections, increments

    def write_temperatures(self, temperatures) -> None:
        """The ladder the run measures at (after a self-tuning ladder has moved it)."""
        self.file["temperatures"][:] = temperatures

    def write_model(self, slot: int, parameters: np.ndarray, inner: np.ndarray | None = None) -> None:
        """The frozen model of a slot, and (nested SLMC) the inner linear model that slot uses."""
        self.file["model/parameters"][slot] = parameters
        # files created before inner models were stored (resumed from an older checkpoint) lack it
        if inner is not None and "inner_parameters" in self.file["model"]:
            self.file["model/inner_parameters"][slot] = inner

    def write_tuning(self, slot: int, chosen: tuple[int, float, int], trials: list) -> None:
        """The (local updates, δ, middle tests) a slot chose, and per candidate its trial steps,
        the fraction of them that moved and the proxy (tuning.Trial)."""
        g = self.file["tuning"]
        g["local_updates"][slot], g["step_size"][slot] = chosen[:2]
        if "middle_steps" in g:  # files created before 0.7 (resumed from an older checkpoint) lack it
            g["middle_steps"][slot] = chosen[2]
        g["steps"][slot] = [t.steps for t in trials]
        g["moved_fraction"][slot] = [t.moved_fraction if t.steps else np.nan for t in trials]
        g["proxy"][slot] = [t.proxy if t.steps else np.nan for t in trials]

    def write_training(self, slot: int, rounds: list[dict]) -> None:
        if not rounds:
            return
        for name in ROUND_FIELDS:
            self.file[f"training/{name}"][slot, : len(rounds)] = [r[name] for r in rounds]

    def write_summary(self, summary: dict[str, np.ndarray]) -> None:
        for name, values in summary.items():
            self.file.create_dataset(f"summary/{name}", data=np.asarray(values))

    def flush(self) -> None:
        """Push written rows to disk (collective: every rank calls it at the same step)."""
        self.file.flush()

    def sync(self) -> None:
        """flush, and (one process) fsync: what a checkpoint counts on must survive a node
        crash. Under MPI-IO, HDF5's flush already syncs (MPI_File_sync)."""
        self.file.flush()
        if not self.collective:
            os.fsync(self.file.id.get_vfd_handle())

    def close(self) -> None:
        self.file.close()


class GatheredOutput:
    """The same writes as RunOutput when h5py has no MPI support: rank 0 alone opens the file
    (serial h5py); every rank queues its writes, and at each flush (a collective: all ranks
    call it at the same step) rank 0 gathers the queues and applies them. Slower than MPI-IO,
    same layout."""

    WRITES = ("write_block", "write_model", "write_training", "write_tuning", "write_exchanges",
              "write_adaptation", "write_temperatures", "write_summary", "rewind", "drop_summary")
    RANK0 = ("write_exchanges", "write_adaptation", "write_temperatures", "write_summary", "rewind", "drop_summary")

    def __init__(self, comm, make_output):
        self.comm = comm
        self.inner = on_rank0(comm, make_output, (ConfigError,), share=False)
        self.file = self.inner.file if self.inner is not None else None
        self.pending = []

    def __getattr__(self, name):
        if name not in self.WRITES:
            raise AttributeError(name)
        if name in self.RANK0:  # rank 0 alone has these to write
            return getattr(self.inner, name) if self.inner is not None else (lambda *a, **k: None)
        return lambda *args, **kwargs: self.pending.append((name, args, kwargs))

    @property
    def run_id(self) -> str | None:
        return self.inner.run_id if self.inner is not None else None

    def sync(self) -> None:
        self.flush()
        if self.inner is not None:
            self.inner.sync()

    def flush(self) -> None:
        parts = self.comm.gather(self.pending)
        self.pending = []
        if self.inner is not None:
            for part in parts:
                for name, args, kwargs in part:
                    getattr(self.inner, name)(*args, **kwargs)
            self.inner.flush()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def gathers_output(comm, gather: bool | None = None) -> bool:
    """Whether rank 0 gathers and writes everything (GatheredOutput): when several ranks run
    and h5py has no MPI support, or when ``gather`` asks for it."""
    if gather is None:
        gather = not h5py.get_config().mpi
    return bool(gather) and comm.size > 1


def open_output(path: Path, layout: Layout, comm, overwrite: bool = False, run_id: str | None = None,
                gather: bool | None = None):
    """The run's file on every rank: RunOutput (MPI-IO when several ranks run), or
    GatheredOutput (see gathers_output). With a checkpoint's ``run_id``, that run's existing file."""
    if gathers_output(comm, gather):
        return GatheredOutput(comm, lambda: RunOutput(path, layout, overwrite=overwrite, run_id=run_id))
    return RunOutput(path, layout, overwrite=overwrite, comm=comm, run_id=run_id)
