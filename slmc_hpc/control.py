"""When to checkpoint and when to stop: pure decisions, and the signal flag they read.

A SLURM time limit (``--signal=B:USR1@N`` forwarded to the ranks), ``scancel``, or a plain
``kill`` may reach any subset of the ranks, and the wall-clock checkpoint schedule is rank 0's
clock. So at fixed step boundaries (run_loop.CONTROL_EVERY) the ranks combine what they
know in one collective (``Control.poll``), and all take the same decision at the same step.
The same collective decides when the measured records go to the file (every 30 s of rank
0's clock), so writing costs the same share of the run whether a step takes 0.5 ms or 1 s.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass(frozen=True)
class Schedule:
    """A run's schedule in steps and seconds: ``thermalize`` steps with a training round every
    ``train_every``, then ``measure`` steps with an exchange round every ``exchange_every``
    (0: none), snapshots every ``snapshot_every`` measured steps; a progress line every
    ``progress_every`` s and a checkpoint every ``checkpoint_every`` s of wall clock (0: on
    signals only)."""

    thermalize: int
    measure: int
    train_every: int
    exchange_every: int
    snapshot_every: int
    progress_every: float
    checkpoint_every: float


class Interrupted(Exception):
    """A stop signal arrived; the run checkpointed and closed its output (CLI exit 75)."""

    def __init__(self, checkpoint: Path, phase: str, step: int):
        super().__init__(f"stopped by a signal after {phase} step {step}; checkpoint {str(checkpoint)!r} "
                         f"written; continue with --resume")
        self.checkpoint = checkpoint


def decide(n_signalled: int, checkpoint_due: bool, write_due: bool = False) -> tuple[bool, bool, bool]:
    """(write the pending records, checkpoint, then stop) from the number of ranks that got
    a stop signal and rank 0's two clocks. A signal always means: write, checkpoint, stop;
    a checkpoint always comes with a write (it records how far the output is written)."""
    stop = n_signalled > 0
    checkpoint = stop or bool(checkpoint_due)
    return checkpoint or bool(write_due), checkpoint, stop


def is_due(now: float, last: float, every_s: float) -> bool:
    """Whether ``every_s`` seconds (wall clock) have passed since ``last`` (the checkpoint
    and the output clocks); never when ``every_s`` is 0 (for checkpoints: signals only)."""
    return every_s > 0 and now - last >= every_s


class StopSignals:
    """While active, SIGTERM and SIGUSR1 set ``received`` (the signal number) instead of
    killing the process; the run loop checkpoints and exits at the next step boundary (or,
    in a training round of the shared Transformer, at the next minibatch:
    run_loop.TemperingRun.shared_round). The
    previous handlers come back on exit (so tests and notebooks are left as they were)."""

    def __init__(self):
        self.received = 0
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signum

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            # None: a handler installed from C, which Python cannot reinstall; use the default
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


class Control:
    """The control collective: one Allreduce of three integers (signals seen anywhere, rank
    0's checkpoint clock, rank 0's output clock)."""

    def __init__(self, comm, every_s: float, signals: StopSignals, write_every_s: float = 30.0,
                 clock=time.monotonic):
        self.comm, self.every_s, self.signals, self.clock = comm, every_s, signals, clock
        self.write_every_s = write_every_s
        self.last = self.last_write = clock()

    def poll(self) -> tuple[bool, bool, bool]:
        """(write, checkpoint, stop); the same answer on every rank."""
        now = self.clock()
        due = self.comm.rank == 0 and is_due(now, self.last, self.every_s)
        write = self.comm.rank == 0 and is_due(now, self.last_write, self.write_every_s)
        flags = self.comm.allreduce_sum(np.array([int(self.signals.received != 0), int(due), int(write)],
                                                 dtype=np.int64))
        return decide(int(flags[0]), bool(flags[1]), bool(flags[2]))

    def wrote(self) -> None:
        self.last_write = self.clock()

    def checkpointed(self) -> None:
        self.last = self.last_write = self.clock()
