"""The tempering run on one process: all its temperature replicas in lockstep.

Thermalization trains the effective models (each slot's linear model at its β; the one
shared Transformer on all slots' samples, a collective round). Measurement freezes them and
exchanges temperature labels between neighbouring replicas (parallel tempering), every
slot's linear models moving with its label; row r of every per-temperature dataset is slot
r. Every CONTROL_EVERY steps one collective decides whether to write, checkpoint or stop.

The pieces it uses live apart: the exchange rule in tempering.py, the write/checkpoint/stop
decisions in control.py, the checkpoint state in resume.py, record routing in records.py,
the summary in summary.py. The run's lifecycle (start, resume, close) is driver.py's."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .assemble import Assembled
from .checkpoint import checkpoint_path
from .config import ConfigError
from .control import Control, Interrupted
from .ladder import (barrier_increments, equalized_temperatures, estimated_rejections, local_barrier,
                     recorded_in_round, replica_warning, suggested_replicas)
from .progress import Progress
from .records import Segments, write_block
from .resume import save_checkpoint
from .samplers import AcceptanceCounts
from .summary import summarize
from .tempering import RoundTrips, exchange
from .training.errors import RoundInterrupted
from .training.learner import collect, is_refit_step, train_alone, train_round
from .tuning import tuned_step

# steps between the collective that agrees on writes, checkpoints and stops (a signal is
# answered within this many steps). Every step makes every step wait for the slowest rank:
# the logged control share was 5-6% (2 ranks, L = 6), 48% with 4 ranks on 2 cores, and 1.3x
# slower runs on busy cores; every 10 steps it is under 1% (2 ranks)
CONTROL_EVERY = 10
MAX_PENDING_STEPS = 5000  # measured records go to the file at least this often (and every 30 s)
MIN_TRIAL_STEPS = 200  # a tuned path chosen on fewer trial steps is reported as unreliable


class TemperingRun:
    """One run on this process: its replicas and learners, the shared network, the output,
    and the tempering state (resume.py saves and restores exactly these)."""

    def __init__(self, parts: Assembled, comm, out, control: Control, path: Path, log):
        self.comm, self.out, self.control, self.path, self.log = comm, out, control, path, log
        self.schedule, self.config_text = parts.schedule, parts.config_text
        self.n_sites = parts.physics.lattice.N
        self.temperatures = parts.temperatures
        self.betas = 1.0 / np.asarray(self.temperatures)
        self.R = len(self.temperatures)
        self.replicas, self.learners, self.network = parts.replicas, parts.learners, parts.network
        self.tuners = parts.tuners
        self.adaptation_ends = parts.adaptation_ends  # the self-tuning ladder's rounds (ladder.py)
        self.differences = {r: [] for r in self.replicas}  # this round's (up, down, U), see record_differences
        self.controller_rng = parts.controller_rng
        self.slot_of_replica = np.arange(self.R)
        self.trips = RoundTrips(self.R)
        self.n_exchange = 0  # exchange rounds done
        self.measured = [AcceptanceCounts() for _ in range(self.R)]  # measured tests, per slot
        self.resumed_chains = {}  # replica -> chain state, to restore once its slot's models are in
        self.seconds_per_step = 0.0

    def run(self, phase: str = "thermalize", step: int = 0, round_pending: bool = False) -> None:
        """Thermalize and measure, from ``phase`` ``step`` on (a resumed run; ``round_pending``:
        first redo the training round a stop interrupted), then write the summary."""
        if phase == "thermalize":
            self.thermalize(step, redo_round=round_pending)
            step = 0
        self.measure(step)
        # the final state stays as the checkpoint: a larger [run] measure continues from it. A
        # run whose measurements are done still writes its summary if that fails (disk full)
        self.out.sync()
        try:
            save_checkpoint(self, "measure", self.schedule.measure)
        except ConfigError as exc:
            self.log(f"slmc-hpc: warning: the final state was not saved ({exc}); the run is complete, but it "
                     f"cannot be extended to a larger [run] measure")
        summarize(self.out, self.n_sites, self.temperatures,
                  [AcceptanceCounts.from_array(a) for a in self.comm.allreduce_sum(self.counts_array())],
                  self.seconds_per_step, self.trips, self.log, self.comm)

    def counts_array(self) -> np.ndarray:
        """This rank's measured counts, (R, 4) int64 (AcceptanceCounts.as_array per slot)."""
        return np.array([c.as_array() for c in self.measured])

    # -- control -----------------------------------------------------------------------

    def poll(self, phase: str, step: int) -> None:
        """Every CONTROL_EVERY steps, one collective: write the pending records when due,
        checkpoint when due, and stop after a signal."""
        if step % CONTROL_EVERY:
            return
        write, save, stop = self.control.poll()
        if write and phase == "measure":
            self.write_pending(step)
            self.control.wrote()
        if not save:
            return
        self.out.sync()  # the rows the checkpoint counts on are on disk before it is
        save_checkpoint(self, phase, step)
        self.control.checkpointed()
        if stop:
            raise Interrupted(checkpoint_path(self.path), phase, step)

    # -- thermalization ----------------------------------------------------------------

    def thermalize(self, start: int, redo_round: bool = False) -> None:
        """All replicas in lockstep, each at its own temperature, training the models: each
        slot's linear model on that slot's samples, the shared Transformer on every slot's
        samples at once (a collective round on all ranks). No exchanges yet, so every slot's
        samples come from one β and a slot's linear fit never mixes temperatures.
        ``redo_round``: first the round due after step ``start``, which a stop interrupted."""
        s, log = self.schedule, self.log
        log(f"thermalizing {s.thermalize} steps" + (f" from step {start}" if start else ""))
        prog = Progress("therm", s.thermalize, s.progress_every, log, done=start)
        n_acc = n_tests = 0
        slots = [(rep, self.learners[r]) for r, rep in self.replicas.items()]
        begin, training = time.perf_counter(), 0.0
        reduce_before = self.comm.allreduce_seconds
        if redo_round:  # then what the uninterrupted run did after that round
            training += self.shared_round(start)
            self.adapt_ladder(start)
            self.poll("thermalize", start)
        for k in range(start, s.thermalize):
            for r in self.replicas:
                info = self.tuned_step(r, k) if self.tuners[r] is not None else self.learning_step(r)
                n_acc, n_tests = n_acc + info.n_accepted, n_tests + info.n_tests
            self.swap_configurations(k)
            self.record_differences(k)
            for rep, learner in slots:  # each slot's own linear model: its own rounds
                if learner is not None and self.network is None:
                    train_alone(rep, learner)
            if self.network is not None and is_refit_step(k, s.thermalize, s.train_every):
                training += self.shared_round(k + 1)
            self.adapt_ladder(k + 1)
            prog.update(k + 1, n_acc / max(n_tests, 1), force=k + 1 == s.thermalize)
            self.poll("thermalize", k + 1)
        if training:
            total = time.perf_counter() - begin
            reduce = self.comm.allreduce_seconds - reduce_before
            log(f"shared-model training on rank 0: {training / total:.1%} of thermalization wall time, "
                f"all-reduce (waiting included) {reduce / total:.1%}")
        self.warn_untrained()
        self.report_tuning()
        for slot, rep in self.replicas.items():
            learner = self.learners[slot]
            if rep.model is not None:
                inner = learner.slot_models[1]
                self.out.write_model(slot, rep.model.parameters()[0], None if inner is None else inner.parameters()[0])
                self.out.write_training(slot, learner.rounds)

    # -- the self-tuning ladder (ladder.py) ----------------------------------------------

    def swap_configurations(self, k: int) -> None:
        """During the ladder's rounds, every exchange_every steps, neighbouring slots try to
        swap their configurations (the tempering rule of measurement, even and odd pairs
        alternating): replicas keep their slot, β, models and training data, so each slot's
        samples stay at its β, while the chains at low temperature equilibrate through the
        ladder as in measurement. Without this the rounds' estimates came from chains still
        settling (in the ferromagnet at T = 0.01 a pair's estimated rejection jumped between 0
        and 1 from one round to the next)."""
        every = self.schedule.exchange_every
        if not self.adaptation_ends or k >= self.adaptation_ends[-1] or not every or (k + 1) % every:
            return
        identity = np.arange(self.R)
        new_slots, _ = self.exchange_decision(identity, (k + 1) // every - 1)
        if np.array_equal(new_slots, identity):
            return
        chains = {}
        for part in self.comm.allgather({r: rep.configuration() for r, rep in self.replicas.items()
                                         if new_slots[r] != r}):
            chains.update(part)
        for source, slot in enumerate(new_slots):
            if slot != source and slot in self.replicas:
                self.replicas[slot].take_configuration(chains[source])

    def record_differences(self, k: int) -> None:
        """In the second half of each ladder round (thermalization: replica r holds slot r, as
        only configurations are swapped), each replica's log W differences to its neighbouring
        temperatures and its energy U after step ``k`` (ladder.recorded_in_round: the first
        half lets the chains settle at their β)."""
        if not recorded_in_round(k, self.adaptation_ends):
            return
        b = self.betas
        for r, rep in self.replicas.items():
            lower, here, upper = rep.log_weights([b[max(r - 1, 0)], b[r], b[min(r + 1, self.R - 1)]])
            self.differences[r].append((upper - here, lower - here, rep.energy()))

    def adapt_ladder(self, step: int) -> None:
        """At the end of a ladder round (after thermalization step ``step``): rank 0 estimates
        the swap rejections from every slot's differences and equalizes the ladder; every slot
        moves to its new β and forgets its training data (made at the old β). After the last
        round the ladder is frozen: the file's /temperatures, Λ and the replica advice."""
        if step not in self.adaptation_ends:
            return
        index, comm = self.adaptation_ends.index(step), self.comm
        parts = comm.gather({r: np.array(d, dtype=np.float64).reshape(-1, 3) for r, d in self.differences.items()})

        def decide():
            got = {r: d for part in parts for r, d in part.items()}
            rejections = estimated_rejections([got[s][:, 0] for s in range(self.R)],
                                              [got[s][:, 1] for s in range(self.R)])
            increments = barrier_increments(self.temperatures, rejections,
                                            [local_barrier(got[s][:, 2], detrend=True) for s in range(self.R)])
            return rejections, increments, equalized_temperatures(self.temperatures, increments)
        rejections, increments, new = comm.bcast(decide() if comm.rank == 0 else None)
        if comm.rank == 0:
            self.out.write_adaptation(index, step, self.temperatures, rejections, increments)
        lam = float(np.sum(increments))
        self.log(f"ladder round {index + 1}/{len(self.adaptation_ends)} after step {step}: swap rejection "
                 + " ".join(f"{r:.2f}" for r in rejections) + f", barrier Λ ≈ {lam:.2f}; T -> "
                 + " ".join(f"{t:.4g}" for t in new))
        self.temperatures, self.betas = [float(t) for t in new], 1.0 / np.asarray(new)
        for r, rep in self.replicas.items():
            rep.set_beta(self.betas[r])
            if self.learners[r] is not None:
                self.learners[r].forget_samples(self.betas[r])
        self.differences = {r: [] for r in self.replicas}
        if index + 1 == len(self.adaptation_ends):
            if comm.rank == 0:
                self.out.write_temperatures(self.temperatures)
            self.log(f"ladder frozen for measurement; communication barrier Λ ≈ {lam:.2f}, about "
                     f"{suggested_replicas(lam)} replicas suggested (≈ 2Λ), this run has {self.R}")
            warning = replica_warning(self.R, lam)
            if warning:
                self.log(f"slmc-hpc: warning: {warning}")

    def learning_step(self, r: int):
        """One thermalization step of replica r, its proposal kept for training."""
        learner = self.learners[r]
        return self.replicas[r].step() if learner is None else collect(self.replicas[r], learner)

    def tuned_step(self, r: int, k: int):
        """Thermalization step ``k`` of replica r, with the (length, δ) its tuner asks for."""
        return tuned_step(self.replicas[r], self.tuners[r], k, lambda: self.learning_step(r))

    def report_tuning(self) -> None:
        """Each tuned slot's choice goes to its replica, the file and (gathered) the log."""
        chosen = {}
        for slot, tuner in self.tuners.items():
            if tuner is not None:
                self.replicas[slot].set_path(*tuner.chosen)
                self.out.write_tuning(slot, tuner.chosen, tuner.trials)
                chosen[slot] = (tuner.chosen, tuner.trials[tuner.chosen_index], self.replicas[slot].sampler.move)
        for slot, ((n, step_size, middle), t, move) in sorted(kv for part in self.comm.allgather(chosen)
                                                              for kv in part.items()):
            updates = f"{n} heat-bath updates" if move == "heatbath" else f"{n} local updates of size {step_size:g}"
            updates += f" and {middle} middle tests" if middle > 1 else ""
            self.log(f"T={self.temperatures[slot]:<8.4g} chose {updates} per step "
                     f"(moved {t.moved_fraction:.2f} of {t.steps} trial steps)")
            if t.steps < MIN_TRIAL_STEPS:
                self.log(f"slmc-hpc: warning: the choice at T={self.temperatures[slot]:.4g} rests on {t.steps} trial "
                         f"steps (fewer than {MIN_TRIAL_STEPS}): raise [run] thermalize for a reliable one")

    def warn_untrained(self) -> None:
        """A round needs 2 x head_size training samples (training.learner.train_round): a run
        whose buffer or thermalization never got there measures with its untrained model."""
        untrained = {slot: learner.head_size for slot, learner in self.learners.items()
                     if learner is not None and not learner.rounds}
        untrained = dict(sorted(kv for part in self.comm.allgather(untrained) for kv in part.items()))
        if untrained and self.schedule.thermalize:
            self.log(f"slmc-hpc: warning: no training round ran for temperature slot(s) {list(untrained)}: a round "
                     f"needs twice the model's {max(untrained.values())} least-squares head parameters in training "
                     "samples; the chain stays exact, but its model is untrained (raise [run] thermalize or "
                     "[training] buffer_size)")

    def shared_round(self, step: int) -> float:
        """The shared Transformer's training round after ``step``; its wall time (s). A stop
        signal during the round's minibatches (on any rank) abandons it: checkpoint the state
        before the round, marked so that a resume redoes it, and stop. (The round's full-data
        head fits, and rounds without attention layers, are not interruptible: seconds.)"""
        begin = time.perf_counter()
        slots = [(rep, self.learners[r]) for r, rep in self.replicas.items()]
        try:
            kept = train_round(slots, self.comm, interrupt=lambda: self.control.signals.received != 0)
        except RoundInterrupted:
            self.out.sync()
            save_checkpoint(self, "thermalize", step, round_pending=True)
            raise Interrupted(checkpoint_path(self.path), "thermalize", step) from None
        if kept in ("previous", "identity"):
            self.log(f"training round after step {step}: the trained layers fit its data worse than the "
                     f"{'layers it started with' if kept == 'previous' else 'head alone'}; kept those")
        return time.perf_counter() - begin

    # -- measurement -------------------------------------------------------------------

    def measure(self, start: int) -> None:
        """Measured steps with replica exchanges every [temperatures] exchange_every steps.
        Temperature labels move, spins stay; each slot's frozen linear models move with its
        label. Each replica's records go to the row of the slot it holds at that step."""
        s, comm, log = self.schedule, self.comm, self.log
        every = s.exchange_every
        for learner in self.learners.values():
            if learner is not None:
                learner.freeze()
        slot_models, slot_paths = {}, {}  # replica r trained (and tuned) slot r's; every rank needs them all
        for models, paths in comm.allgather(({r: learner.slot_models if learner is not None else (None, None)
                                              for r, learner in self.learners.items()},
                                             {r: self.tuners[r].chosen if self.tuners[r] is not None else rep.path
                                              for r, rep in self.replicas.items()})):
            slot_models.update(models)
            slot_paths.update(paths)
        for r, chain in self.resumed_chains.items():  # resumed at a slot another replica trained for
            slot = int(self.slot_of_replica[r])
            if slot != r:
                self.replicas[r].set_beta(self.betas[slot], *slot_models[slot])
                self.replicas[r].restore_chain(chain)
        for r, rep in self.replicas.items():
            rep.set_path(*slot_paths[int(self.slot_of_replica[r])])
        self.slot_paths = slot_paths
        self.segments = {r: Segments(int(self.slot_of_replica[r]), start) for r in self.replicas}
        self.pending_exchanges = []  # (slots, accepted) of exchange rounds not yet written
        self.written = start  # measured steps in the file
        log(f"measuring {s.measure} steps" + (f", exchanging every {every}" if every else "")
            + (f", from step {start}" if start else ""))
        prog = Progress("meas", s.measure, s.progress_every, log, done=start)
        t0, reduce_before = time.perf_counter(), self.comm.allreduce_seconds
        # wall seconds outside the Monte Carlo steps: waiting for the slowest rank before an
        # exchange (load imbalance), the exchange itself, and writing the file
        spent = {"waiting": 0.0, "exchange": 0.0, "output": 0.0}
        for k in range(start, s.measure):
            for r, rep in self.replicas.items():
                info = rep.step()
                self.measured[self.slot_of_replica[r]].add(info)
                record = rep.record(info)
                if (k + 1) % s.snapshot_every == 0:
                    record["spins"] = rep.state.spins.copy()
                self.segments[r].append(record)
            t_out = time.perf_counter()
            if k + 1 - self.written >= MAX_PENDING_STEPS:  # the same step on every rank
                self.write_pending(k + 1)
            t_ex = time.perf_counter()
            spent["output"] += t_ex - t_out
            if every and (k + 1) % every == 0:
                comm.barrier()
                t_wait = time.perf_counter()
                spent["waiting"] += t_wait - t_ex
                self.exchange(k + 1, slot_models)
                spent["exchange"] += time.perf_counter() - t_wait
            prog.update(k + 1, sum(c.accepted for c in self.measured) / max(sum(c.tests for c in self.measured), 1),
                        force=k + 1 == s.measure)
            if k + 1 < s.measure:
                self.poll("measure", k + 1)
        t_out = time.perf_counter()
        self.write_pending(s.measure)
        spent["output"] += time.perf_counter() - t_out
        total = time.perf_counter() - t0
        spent["control"] = self.comm.allreduce_seconds - reduce_before  # the per-step poll, waiting included
        shares = {key: value / total for key, value in spent.items()} if total > 0 else dict.fromkeys(spent, 0.0)
        log("wall-time share of measurement on rank 0: exchanges {exchange:.1%}, output {output:.1%}, "
            "waiting for other ranks {waiting:.1%}, control all-reduce {control:.1%}".format(**shares))
        self.seconds_per_step = total / (max(s.measure - start, 1) * len(self.replicas))

    def exchange_decision(self, slot_of_replica: np.ndarray, round_index: int) -> tuple[np.ndarray, np.ndarray]:
        """One round of tempering.exchange (collective): rank 0 decides from everyone's log W
        table with the controller's stream and broadcasts (new slots, accepted per pair)."""
        log_w = np.empty((self.R, self.R))
        for part in self.comm.allgather({r: rep.log_weights(self.betas) for r, rep in self.replicas.items()}):
            for r, row in part.items():
                log_w[r] = row
        decision = (exchange(log_w, slot_of_replica, round_index, self.controller_rng)
                    if self.comm.rank == 0 else None)
        return self.comm.bcast(decision)

    def exchange(self, step: int, slot_models: dict) -> None:
        """One exchange round: labels move, and each slot's frozen models move with them."""
        new_slots, accepted = self.exchange_decision(self.slot_of_replica, self.n_exchange)
        for r, rep in self.replicas.items():
            if new_slots[r] != self.slot_of_replica[r]:
                rep.set_beta(self.betas[new_slots[r]], *slot_models[new_slots[r]])
                rep.set_path(*self.slot_paths[int(new_slots[r])])
                self.segments[r].move(int(new_slots[r]), step)
        self.slot_of_replica = new_slots
        self.trips.update(self.slot_of_replica)
        self.pending_exchanges.append((self.slot_of_replica, accepted))
        self.n_exchange += 1

    def write_pending(self, step: int) -> None:
        """Everything measured up to ``step`` goes to the file, which is flushed (collective)."""
        write_block(self.out, self.segments, self.comm, self.R, self.written, step)
        self.written = step
        if self.pending_exchanges and self.comm.rank == 0:
            pending = self.pending_exchanges
            self.out.write_exchanges(self.n_exchange - len(pending), np.array([p[0] for p in pending]),
                                     np.array([p[1] for p in pending]))
        self.pending_exchanges = []
        self.out.flush()
