"""Measured records on their way to the file: each replica buffers its records in runs of
consecutive steps at one temperature slot (a new run starts when an exchange moves it), and
at each write every run goes to the rank that owns its slot (slot % ranks), which writes the
slot's rows as one contiguous block. MPI plumbing only: what a record holds is the replica's
business (Replica.record), where it goes in the file output.py's."""

from __future__ import annotations

import numpy as np

from .output import MEASURE_DTYPES


class Segments:
    """One replica's records not yet written: runs of consecutive measured steps at one slot
    each (a new run starts when an exchange moves the replica)."""

    def __init__(self, slot: int, start: int):
        self.runs = [(slot, start, [])]

    def append(self, record: dict) -> None:
        self.runs[-1][2].append(record)

    def move(self, slot: int, start: int) -> None:
        self.runs.append((slot, start, []))

    def take(self) -> list:
        """All runs so far as (slot, start, columns): one array per field (sending arrays
        between ranks is far cheaper than sending thousands of small dicts); the replica goes
        on in a new, empty run at the same slot."""
        runs = [(slot, start, columns(records)) for slot, start, records in self.runs if records]
        slot, start, records = self.runs[-1]
        self.runs = [(slot, start + len(records), [])]
        return runs


def columns(records: list[dict]) -> dict:
    """Records of consecutive steps as one array per field; "spins": the snapshots among them."""
    out = {name: np.array([r[name] for r in records]) for name in MEASURE_DTYPES}
    out["spins"] = np.array([r["spins"] for r in records if "spins" in r])
    return out


def write_block(out, segments: dict, comm, n_slots: int, start: int, stop: int) -> None:
    """Write measured steps [start, stop) of every slot. Each run of records goes to the rank
    that owns its slot (slot % ranks); every rank then writes each of its slots as one
    contiguous block, so under MPI-IO every rank makes the same collective writes."""
    outgoing = [[] for _ in range(comm.size)]
    for seg in segments.values():
        for run in seg.take():
            outgoing[run[0] % comm.size].append(run)
    runs = {slot: [] for slot in range(comm.rank, n_slots, comm.size)}
    for part in comm.alltoall(outgoing):
        for slot, first, cols in part:
            runs[slot].append((first, cols))
    for slot, parts in runs.items():
        parts.sort(key=lambda part: part[0])
        lengths = [len(cols["free_energy"]) for _, cols in parts]
        contiguous = all(first == start + sum(lengths[:k]) for k, (first, _) in enumerate(parts))
        assert contiguous and sum(lengths) == stop - start, f"slot {slot}: steps missing from the block"
        block = {name: np.concatenate([cols[name] for _, cols in parts]) if parts else np.empty(0)
                 for name in MEASURE_DTYPES}
        snaps = [cols["spins"] for _, cols in parts if len(cols["spins"])]
        block["spins"] = np.concatenate(snaps) if snaps else np.empty(0)
        out.write_block(slot, start, block)
