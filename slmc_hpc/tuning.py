"""Each temperature slot chooses its inner-chain length and step size δ during thermalization
([slmc] local_updates = "auto", [run] step_size = "auto"), and with a middle level (nested
SLMC, kind = "downfolded") its middle tests per exact test ([slmc] middle_steps = "auto");
measurement then runs one fixed kernel. A path is (length, δ, middle tests), the last 1
without a middle level.

What is minimised is the cost per independent sample, τ_int(F) × seconds per step, and
τ_int is set by how far an accepted step moves F. The proxy maximised: the mean squared
change of F/N per step per second of wall time (the expected squared jump distance per
second), compared with τ_int in analysis/BENCHMARKS.md. Each step adds the jump its proposal
would make times the chance the exact test takes it, min(1, e^ratio), rather than the jump
it made (Rao-Blackwellized; Pasarica & Gelman, Statistica Sinica 20, 343 (2010)): the same
mean, and a per-step variance of about a times that of the changes made, at acceptance a.

A candidate whose steps move less often than ACCEPTANCE_FLOOR is never chosen when another
is allowed: a chain whose exact test rarely accepts sticks where F is low, and a short trial
of it reads falsely well (at L = 8, 1024 linear updates per step at acceptance 0.03 read
τ_int 3-4x too small).

Schedule (pure, in steps): the second half of thermalization (the model has had the first
half to learn), in rounds of successive halving. Every candidate runs in round 0; each later
round keeps the better half of the candidates. Within a round the candidates run in
INTERLEAVE blocks each, round robin, so that they share whatever load the machine has and
whatever the model learns meanwhile. After the last round the best is chosen and kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

ACCEPTANCE_FLOOR = 0.2  # fraction of steps that move, below which a candidate is not chosen
INTERLEAVE = 4  # blocks per candidate and round (1 when a round is shorter than 4 per candidate)
# "auto" inner-chain lengths, in units of N. In analysis/BENCHMARKS.md the tuner chose 2N-8N
# at every point and size but once (N, 4 ranks on 2 cores), never N/4 or N/2, and the longest
# then offered (8N) in 8 of 14 choices: so N ... 16N
LENGTH_FACTORS = (1, 2, 4, 8, 16)
STEP_SIZES = (0.5, 1.0)  # "auto" δ; 0.25 was never the best in analysis/BENCHMARKS.md
# "auto" middle tests per exact test: more of them spread the exact test's cost over a longer
# move, and pay where a middle step is cheap against an exact one (large N; analysis/BENCHMARKS.md,
# "Three-level SLMC"). Not 2: the proxy rated it best in most slots at L = 10-12, where at L = 12,
# side by side, four or eight cost 0.50-0.97x as much in five comparisons (a chain that moves on
# about half its steps stays longest where F is low, which the mean squared jump averages away);
# at L = 10 0.38-1.48x, below 1 in three of four. Not 16, never the best below L = 16 ("How many middle tests", 0.8.2)
MIDDLE_STEPS = (4, 8)
# From LARGE_LATTICE_SITES sites on (L = 16 square), sixteen only: at L = 16 sixteen cost 0.41x and
# 0.76x four (0.7), 0.75x and 0.66x the tuner's choice of eight and four (0.8.3), 2.25x and 0.21x
# eight (0.8.4), and its tau_int(F) never read above 4.1 where four or eight read up to 24; the
# proxy, offered 2-16 there (0.8.1, four slots), chose four or eight every time
LARGE_LATTICE_SITES = 256
LARGE_MIDDLE_STEPS = (16,)
LEGACY_MIDDLE_STEPS = (2, 4, 8, 16)  # up to 0.8.1: what a checkpoint of then tuned over


def auto_middle_steps(n_sites: int) -> tuple[int, ...]:
    """The middle tests per exact test that "auto" offers on a lattice of ``n_sites`` (since 0.8.4)."""
    return LARGE_MIDDLE_STEPS if n_sites >= LARGE_LATTICE_SITES else MIDDLE_STEPS


def path_candidates(n_sites: int, local_updates, step_size, middle_steps=1) -> list[tuple[int, float, int]]:
    """(inner-chain length, δ, middle tests) to try: the "auto" ones from LENGTH_FACTORS × N,
    STEP_SIZES and auto_middle_steps(N), the others as given (0 updates meaning N)."""
    if local_updates == "auto":
        lengths = sorted({max(1, round(f * n_sites)) for f in LENGTH_FACTORS})
    else:
        lengths = [local_updates or n_sites]
    sizes = list(STEP_SIZES) if step_size == "auto" else [float(step_size)]
    middle = list(auto_middle_steps(n_sites)) if middle_steps == "auto" else [int(middle_steps)]
    return grid(lengths, sizes, middle)


def grid(lengths, sizes, middle) -> list[tuple[int, float, int]]:
    """Every (length, δ, middle tests), in the order candidates are numbered (a checkpoint's
    trials are stored in it)."""
    return [(n, d, m) for n in lengths for d in sizes for m in middle]


@dataclass
class Trial:
    """What the steps of one candidate did: steps, wall seconds, steps that moved, and the
    sum of the expected squared changes of F/N (F at the slot's β; see tuned_step)."""

    steps: int = 0
    seconds: float = 0.0
    moved: int = 0
    square_jump: float = 0.0

    @property
    def moved_fraction(self) -> float:
        return self.moved / self.steps if self.steps else 0.0

    @property
    def proxy(self) -> float:
        """Mean squared change of F/N per step, per second of wall time."""
        return self.square_jump / self.seconds if self.seconds > 0 else 0.0


def rank(trials: list[Trial], candidates: list[int], floor: float = ACCEPTANCE_FLOOR) -> list[int]:
    """``candidates`` (indices into ``trials``), best first: those at or above the floor by
    the proxy, then the others by how often they moved."""
    def key(c):
        t = trials[c]
        return (t.moved_fraction >= floor, t.proxy if t.moved_fraction >= floor else t.moved_fraction)
    return sorted(candidates, key=key, reverse=True)


def round_sizes(n_candidates: int) -> list[int]:
    """Candidates in each round of successive halving: n, ⌈n/2⌉, ... down to 2 (1 if n is 1)."""
    sizes = [n_candidates]
    while sizes[-1] > 2:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class PathTuner:
    """One slot's tuning over thermalization steps [start, stop) (0-based). ``candidate(step)``
    says which path to run at a step, ``record`` takes what it did, and from ``stop``
    on ``chosen`` is fixed. Decisions depend only on the recorded trials, so a checkpoint of
    the tuner (state_dict) resumes it exactly; the wall clock is ``clock`` (tests replace it).
    ``auto_middle``: the middle tests are "auto"'s (what a checkpoint of 0.8.1 or before tuned
    over then differs from this version's candidates: _saved_candidates)."""

    clock = staticmethod(time.perf_counter)

    def __init__(self, candidates: list[tuple[int, float, int]], start: int, stop: int, auto_middle: bool = False):
        self.start, self.stop, self.auto_middle = start, stop, auto_middle
        self._reset(candidates)

    def _reset(self, candidates: list[tuple[int, float, int]]) -> None:
        """Tune over ``candidates`` from the start of tuning."""
        self.candidates = list(candidates)
        self.sizes = round_sizes(len(self.candidates))  # candidates in each round
        self.trials = [Trial() for _ in self.candidates]
        self.active = list(range(len(self.candidates)))  # this round's candidates
        self.round = 0
        self.round_start = self.start
        self.chosen_index: int | None = None if len(self.candidates) > 1 else 0

    @property
    def chosen(self) -> tuple[int, float, int] | None:
        return None if self.chosen_index is None else self.candidates[self.chosen_index]

    def _layout(self) -> tuple[int, int]:
        """(steps per block, blocks per candidate) of the current round: the tuning steps left
        split evenly over the rounds left, in INTERLEAVE blocks per candidate, or in one when
        the round is too short for that (short thermalization)."""
        rounds_left = len(self.sizes) - self.round
        per_round = (self.stop - self.round_start) // rounds_left
        blocks = INTERLEAVE if per_round >= len(self.active) * INTERLEAVE else 1
        return max(1, per_round // (len(self.active) * blocks)), blocks

    def _round_length(self) -> int:
        block, blocks = self._layout()
        return block * len(self.active) * blocks

    def candidate(self, step: int) -> tuple[int, float, int] | None:
        """(length, δ, middle tests) to run at ``step``: a trial's during tuning, then the chosen one; None
        before tuning starts (the run keeps its initial path)."""
        if self.chosen_index is not None:
            return self.chosen
        if step < self.start:
            return None
        return self.candidates[self._trial_at(step)]

    def _trial_at(self, step: int) -> int:
        """The candidate whose block ``step`` falls in, during tuning."""
        offset = (step - self.round_start) // self._layout()[0]
        return self.active[offset % len(self.active)]

    def record(self, step: int, seconds: float, moved: bool, square_jump: float) -> None:
        """What ``step`` did (``square_jump``: the expected squared change of F/N), and the
        round's end when it is."""
        if self.chosen_index is not None or step < self.start:
            return
        t = self.trials[self._trial_at(step)]
        t.steps += 1
        t.seconds += seconds
        t.moved += int(moved)
        t.square_jump += square_jump
        if step + 1 - self.round_start == self._round_length() or step + 1 >= self.stop:
            self._end_round(step + 1)

    def _end_round(self, next_step: int) -> None:
        ranked = rank(self.trials, self.active)
        last = self.round + 1 >= len(self.sizes)
        if last or next_step >= self.stop:
            self.chosen_index = ranked[0]
            return
        self.round += 1
        self.active = sorted(ranked[: self.sizes[self.round]])
        self.round_start = next_step

    def state_dict(self) -> dict:
        return {"trials": np.array([[t.steps, t.seconds, t.moved, t.square_jump] for t in self.trials]),
                "active": np.array(self.active, dtype=np.int64), "round": self.round, "round_start": self.round_start,
                "chosen": -1 if self.chosen_index is None else self.chosen_index,
                "candidates": np.array(self.candidates, dtype=np.float64)}

    def _saved_candidates(self, tree: dict) -> list[tuple[int, float, int]]:
        """The candidates the saved tuner tried: stored since 0.8.2; before, path_candidates' of
        that version, which differ from this one's only in the middle tests "auto" offered
        (2, 4, 8 and 16 up to 0.8.1, at every size)."""
        count = len(tree["trials"])
        if "candidates" in tree and len(tree["candidates"]) == count:
            return [(int(n), float(d), int(m)) for n, d, m in tree["candidates"]]
        if "candidates" not in tree and count == len(self.candidates):
            return self.candidates
        lengths, sizes = (list(dict.fromkeys(c[k] for c in self.candidates)) for k in (0, 1))
        legacy = grid(lengths, sizes, LEGACY_MIDDLE_STEPS)
        if "candidates" in tree or not self.auto_middle or count != len(legacy):
            raise ValueError(f"the saved tuner tried {count} paths, which no version offered for these "
                             f"{len(self.candidates)}")
        return legacy

    def load_state_dict(self, tree: dict) -> None:
        """The saved tuner's state. A tuner saved by a version that offered other candidates
        goes on with those, so that a resumed run tunes as it began (bit for bit)."""
        candidates = self._saved_candidates(tree)
        if candidates != self.candidates:
            self._reset(candidates)
        count = len(candidates)
        active, chosen = [int(c) for c in tree["active"]], int(tree["chosen"])
        if any(not 0 <= c < count for c in active) or chosen >= count:
            raise ValueError(f"the saved tuner's active or chosen paths lie outside its {count}")
        self.trials = [Trial(int(s), float(sec), int(m), float(j)) for s, sec, m, j in tree["trials"]]
        self.active = active
        self.round, self.round_start = int(tree["round"]), int(tree["round_start"])
        self.chosen_index = None if chosen < 0 else chosen


def tuned_step(replica, tuner: PathTuner, step: int, take_step):
    """Step ``step`` of a slot being tuned: set the path the tuner asks for, take the
    step (``take_step()``, which returns its StepInfo; training rounds stay outside it), and
    tell the tuner the step's wall time, whether it moved, and the expected squared change of
    F/N: the proposal's, times the chance the exact test takes it (0 where no exact test ran,
    as after a nested step's middle rejection)."""
    path = tuner.candidate(step)
    if path is not None:
        replica.set_path(*path)
    f_before, begin = replica.sampler.free_energy(replica.state), tuner.clock()
    info = take_step()
    seconds = tuner.clock() - begin
    square_jump = 0.0
    if np.isfinite(info.log_ratio) and np.isfinite(info.proposal_free_energy):
        jump = (info.proposal_free_energy - f_before) / len(replica.state.spins)
        square_jump = math.exp(min(info.log_ratio, 0.0)) * jump * jump
    tuner.record(step, seconds, info.accepted, square_jump)
    return info
