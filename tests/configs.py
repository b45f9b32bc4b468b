"""The tests' small run configuration, written once: each test gives only what differs.

Imported as ``from configs import small_toml, small_config``: pytest puts tests/ on sys.path
(tests/ is not a package), for tests/*.py and for the package tests/mpi alike."""

from slmc_hpc.config import Config, parse, to_toml

# The sampler is pinned to a fixed path (N updates of δ = 0.5) and the plain 3-shell linear
# model: the defaults tune the path by the wall clock (tests/test_tuning.py tests that, and
# tests/test_config.py the defaults themselves), and most tests compare runs bit for bit.
BASE = {
    "lattice": {"L": 4},
    "model": {"mu": -2.5},
    "temperatures": {"values": [0.1]},
    "effective_model": {"shells": 3, "bond_shells": 0},
    "slmc": {"local_updates": 0, "inner_bond_shells": 0},
    "training": {"loss": "energy", "every": 20, "buffer_size": 5000},
    "run": {"progress_every": 600, "thermalize": 200, "step_size": 0.5},
}


def small_toml(*changes: dict, **sections: dict) -> str:
    """TOML text of the tests' small run: BASE, then each ``{section: {key: value}}`` of
    ``changes`` in turn, then the keyword ``sections``, each adding or replacing keys of its
    sections. A value None leaves the key out (it takes its default), e.g.
    ``small_toml(temperatures={"values": [0.1, 0.2]}, run={"seed": 11, "progress_every": None})``."""
    merged = {name: dict(values) for name, values in BASE.items()}
    for change in (*changes, sections):
        for name, values in change.items():
            merged.setdefault(name, {}).update(values)
    return to_toml(merged)


def small_config(*changes: dict, **sections: dict) -> Config:
    """``small_toml(*changes, **sections)``, parsed."""
    return parse(small_toml(*changes, **sections))
