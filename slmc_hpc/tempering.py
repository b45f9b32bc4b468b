"""Parallel tempering decisions, as pure functions (no MPI, no physics): which slots pair up,
whether a pair swaps, and the bookkeeping of where each replica has been.

Temperature labels move, configurations stay: replica i holds slot ``slot_of_replica[i]``
(slot 0 = lowest T). The swap test for the replicas a, b at neighbouring slots uses their
log weights at both temperatures (README "Physics conventions"; the fermion free energy depends on β, so the
naive Δβ·ΔE formula is wrong here):

    log r = [log W_βa(S_b) + log W_βb(S_a)] - [log W_βa(S_a) + log W_βb(S_b)]
"""

from __future__ import annotations

import numpy as np


def geometric_temperatures(t_min: float, t_max: float, n: int) -> np.ndarray:
    """n temperatures from t_min to t_max, equal ratios (ascending)."""
    if n == 1:
        return np.array([t_min])
    return t_min * (t_max / t_min) ** (np.arange(n) / (n - 1))


def pairs_for_round(n_slots: int, round_index: int) -> list[tuple[int, int]]:
    """Neighbouring slot pairs tried in a round: (0,1), (2,3), ... on even rounds and
    (1,2), (3,4), ... on odd rounds."""
    return [(s, s + 1) for s in range(round_index % 2, n_slots - 1, 2)]


def swap_log_ratio(log_w: np.ndarray, a: int, b: int, s_a: int, s_b: int) -> float:
    """log r for replicas a (at slot s_a) and b (at slot s_b) exchanging their slots;
    ``log_w[i, s]`` = log W_{β_s}(S_i)."""
    return float((log_w[a, s_b] + log_w[b, s_a]) - (log_w[a, s_a] + log_w[b, s_b]))


def exchange(log_w: np.ndarray, slot_of_replica: np.ndarray, round_index: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One exchange round. ``log_w[i, s]`` = log W_{β_s}(S_i) for every replica i and slot s
    (whole-lattice, from each replica's cached eigenvalues). Returns the new slot of every
    replica and, per neighbouring slot pair (s, s+1), 1 accepted / 0 rejected / -1 not tried."""
    slot_of_replica = np.asarray(slot_of_replica).copy()
    n = len(slot_of_replica)
    replica_at = np.empty(n, dtype=np.int64)
    replica_at[slot_of_replica] = np.arange(n)
    accepted = np.full(max(n - 1, 0), -1, dtype=np.int8)
    for s, t in pairs_for_round(n, round_index):
        a, b = replica_at[s], replica_at[t]
        ok = bool(np.log(rng.random()) < swap_log_ratio(log_w, a, b, s, t))
        accepted[s] = ok
        if ok:
            slot_of_replica[a], slot_of_replica[b] = t, s
            replica_at[s], replica_at[t] = b, a
    return slot_of_replica, accepted


class RoundTrips:
    """Where replicas have been: a round trip is bottom slot -> top slot -> bottom slot.
    Also counts, per slot, visits by replicas last seen at the bottom ("up" movers), whose
    fraction f(s) is the standard diagnostic of the temperature ladder."""

    def __init__(self, n_replicas: int):
        self.n = n_replicas
        self.direction = np.zeros(n_replicas, dtype=np.int8)  # +1 from bottom, -1 from top, 0 unknown
        self.completed = np.zeros(n_replicas, dtype=np.int64)
        self._reached_top = np.zeros(n_replicas, dtype=bool)
        self.up_visits = np.zeros(n_replicas, dtype=np.int64)
        self.labelled_visits = np.zeros(n_replicas, dtype=np.int64)

    def update(self, slot_of_replica: np.ndarray) -> None:
        top = self.n - 1
        for i, s in enumerate(slot_of_replica):
            if s == 0:
                if self._reached_top[i]:
                    self.completed[i] += 1
                self._reached_top[i] = False
                self.direction[i] = 1
            elif s == top:
                if self.direction[i] == 1:
                    self._reached_top[i] = True
                self.direction[i] = -1
            if self.direction[i] != 0:
                self.labelled_visits[s] += 1
                self.up_visits[s] += self.direction[i] == 1

    FIELDS = ("direction", "completed", "_reached_top", "up_visits", "labelled_visits")

    def state_dict(self) -> dict:
        return {name: getattr(self, name).copy() for name in self.FIELDS}

    def load_state_dict(self, tree: dict) -> None:
        for name in self.FIELDS:
            getattr(self, name)[:] = tree[name]

    def up_fraction(self) -> np.ndarray:
        """f(s): share of labelled visits to slot s made by replicas coming from the bottom."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.up_visits / self.labelled_visits
