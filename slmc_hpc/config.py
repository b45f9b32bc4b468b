"""Run configuration: a TOML file validated against the schema (schema.py: every key with its
type, default and help text; ``slmc-hpc keys`` prints it), and the checks across keys.

Any problem (unknown section or key, wrong type, value out of range, missing file) raises
``ConfigError`` with a message that names the key; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .lattice import Lattice
from .schema import (ADDED_KEYS, DEPENDS, LEGACY_DEFAULTS, MAX_BUFFER_BYTES, MAX_DEFAULT_BOND_SITES,
                     MAX_DEFAULT_FOUR_BOND_SITES, MAX_INT, MAX_MATRIX_DIM,
                     REQUIRED, SCHEMA, Key)


class ConfigError(ValueError):
    """A bad configuration or input file; the message names the key and the problem."""


class Section:
    """Read-only attribute access to one validated section."""

    def __init__(self, name: str, values: dict):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"[{self._name}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("configuration is read-only")

    def as_dict(self) -> dict:
        return dict(self._values)


@dataclass(frozen=True)
class Config:
    text: str
    sections: MappingProxyType

    def __getattr__(self, name):
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def n_sites(self) -> int:
        return _n_sites(self.lattice.as_dict())

    @property
    def local_updates(self) -> int | str:
        """Local updates per step (0 in the file means N), or "auto"."""
        return self.slmc.local_updates or self.n_sites

    @property
    def has_middle_level(self) -> bool:
        """Whether the sampler is nested SLMC: an inner chain on a linear model, middle tests
        (the Transformer, or kind = "downfolded"), then the exact test."""
        em = self.effective_model
        return self.run.sampler == "slmc" and (em.kind == "downfolded"
                                               or em.kind == "transformer" and self.slmc.scheme == "nested")

    @property
    def complete_text(self) -> str:
        """Every key written out, defaults included: what output files and checkpoints store,
        so that a later change of a default cannot change what a stored run was."""
        return to_toml({name: sec.as_dict() for name, sec in self.sections.items()})

    def replace(self, section: str, **values) -> "Config":
        """A re-validated copy with some keys of one section set: the keys this configuration
        was given, and these, written out again (keys left out keep taking their defaults,
        which may depend on the new values: DEPENDENT_DEFAULTS)."""
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}]")
        given = tomllib.loads(self.text)
        given.setdefault(section, {}).update(values)
        return parse(to_toml(given))


def _show(value) -> str:
    """repr for messages, also for integers too long for Python to print."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, list) and any(isinstance(v, int) and abs(v) > MAX_INT for v in value):
        return "a list with an integer too large to use"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _to_float(where: str, value) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{where} is too large, got {_show(value)}") from None


def _coerce(section: str, key: Key, value):
    where = f"[{section}] {key.name}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{where} is too large, got {_show(value)}")
    kind, _, word = key.kind.partition("_or_")  # "int_or_auto": an integer, or the string "auto"
    if word and value == word:
        return value
    if word and (isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float))):
        raise ConfigError(f"{where} must be {'an integer' if kind == 'int' else 'a number'} or \"{word}\", "
                          f"got {_show(value)}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        value = _to_float(where, value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
    elif kind == "float_list":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{where} must be a list of numbers, got {_show(value)}")
        value = [_to_float(where, v) for v in value]
        if not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{where} must contain only finite numbers, got {value!r}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, key.choices))}, got {_show(value)}")
    if key.check is not None:
        problem = key.check(value)
        if problem:
            raise ConfigError(f"{where} {problem}, got {_show(value)}")
    return value


def _n_sites(lattice: dict) -> int:
    return lattice["L"] ** {"chain": 1, "square": 2, "cubic": 3}[lattice["kind"]]


# Keys whose default depends on others (DEPENDS in the schema, whose help text says the same),
# in the order they are resolved: each rule may read keys resolved above it. Why these values:
# analysis/BENCHMARKS.md (the cheapest sampler measured on the reference problem).
DEPENDENT_DEFAULTS = {
    ("effective_model", "kind"): lambda v: "downfolded" if _downfolded_by_default(v) else "linear",
    ("effective_model", "shells"): lambda v: min(8, _n_distances(v["lattice"])),
    ("effective_model", "bond_range"): lambda v: 2.0 if _four_shell_default(v) else 0.0,
    # 3x with a self-tuning ladder, whose rounds take the first half: at 4000 SLMC steps the
    # rounds saw a ferromagnet's cold chains still ordering and the ladder failed; at 12000 it
    # gave 3.6x the round trips (analysis/BENCHMARKS.md#self-tuning-ladder)
    ("run", "thermalize"): lambda v: _default_thermalize(v) * (3 if v["temperatures"]["adapt"] == "barrier" else 1),
    ("training", "buffer_size"): lambda v: _default_buffer_size(v),
    ("effective_model", "bond_shells"): lambda v: _default_bond_shells(v),
    ("slmc", "inner_bond_shells"): lambda v: v["effective_model"]["bond_shells"],
    ("slmc", "local_updates"): lambda v: "auto" if v["run"]["sampler"] == "slmc" else 0,
    # (after local_updates) the downfolded model's middle tests chosen with a tuned path: 0.83x and
    # 0.86x the cost of four at L = 12 (it chose 4 and 2; since 0.8.2 it chooses 4 or 8), and 16 cost
    # 0.41x and 0.76x four at L = 16; with a fixed path four (analysis/BENCHMARKS.md, "Three-level SLMC")
    ("slmc", "middle_steps"): lambda v: (("auto" if v["slmc"]["local_updates"] == "auto" else 4)
                                         if v["effective_model"]["kind"] == "downfolded" else 1),
    ("run", "step_size"): lambda v: "auto" if v["run"]["sampler"] == "slmc" else 0.5,
    ("training", "every"): lambda v: max(1, min(500, v["run"]["thermalize"] // 8)),
}

# Since 0.5 the linear model learns from 8000 proposals over 12000 thermalization steps: at
# L = 8 and 12 its exact-test spread σ fell 3-19% against 2000 over 4000 (every seed), and a
# longer thermalization with the old buffer did not lower it (analysis/BENCHMARKS.md#more-
# training-data-online-l--8-reference-problem). The Transformer keeps 2000 over 4000: a round's
# pass over 4x the data would break its training budget.
LINEAR_THERMALIZE, LINEAR_BUFFER = 12000, 8000
LEAST_SQUARES_KINDS = ("linear", "downfolded")  # models fitted by least squares: the linear model's schedule
DEFAULT_BUFFER_BYTES = 2**29  # 0.5 GiB: 8000 proposals up to 1398 sites (L = 37 square)


# The smallest L at which kind = "downfolded" is the default (square lattice): with its middle
# tests tuned it cost 0.025-1.04x the linear default per independent sample at L = 10-12 (ten
# runs, median 0.75; the linear chain stuck in one), and 1.26-1.64x at L = 8, where the exact
# diagonalization is too cheap for a middle level to save (analysis/BENCHMARKS.md, "The default
# kind at L >= 10").
DOWNFOLDED_MIN_L = 10
# ... and the largest measured: at L = 16 with 0.8.1-0.8.2, where the tuner chose four or eight
# middle tests, it cost 0.21-1.56x the linear default (seven runs, median 0.71, six below 1),
# with 1.9-2.1x its thermalization; at L = 14 0.70x and 0.79x ("The default kind up to L = 16")
DOWNFOLDED_MAX_L = 16


def downfolding_gap(model, dim: int) -> tuple[float, float]:
    """(|J|/2 - μ, 2d|t|): the upper band's lowest on-site energy above μ, and its hopping
    width. The downfolded model needs the first above the second (models/downfolded.py)."""
    return 0.5 * abs(model["J"]) - model["mu"], 2 * dim * abs(model["t"])


def _downfolded_by_default(values: dict) -> bool:
    """Whether a configuration that names no model kind gets kind = "downfolded": SLMC on the
    CPU backend, a square lattice with DOWNFOLDED_MIN_L <= L <= DOWNFOLDED_MAX_L (where it
    was measured cheaper), the upper band above μ, and no inner_bond_shells given (the
    downfolded model's inner model must be of its correction's class). Elsewhere "linear"."""
    lattice = values["lattice"]
    gap, width = downfolding_gap(values["model"], 2)
    return (values["run"]["sampler"] == "slmc" and values["run"]["backend"] == "numpy"
            and lattice["kind"] == "square" and DOWNFOLDED_MIN_L <= lattice["L"] <= DOWNFOLDED_MAX_L
            and gap > width
            and values["slmc"]["inner_bond_shells"] is DEPENDS)


def _default_thermalize(values: dict) -> int:
    if values["run"]["sampler"] != "slmc":
        return 500
    return LINEAR_THERMALIZE if values["effective_model"]["kind"] in LEAST_SQUARES_KINDS else 4000


def _default_buffer_size(values: dict) -> int:
    """The linear model's buffer holds the last two thirds of thermalization (the first third
    is the chain settling, whose proposals would only blur the fit), at most LINEAR_BUFFER and
    at most DEFAULT_BUFFER_BYTES of spins per slot (a serial run holds every slot's buffer,
    and checkpoints carry them), but never below 2000, the default before 0.5; 2000 for the
    Transformer."""
    if values["effective_model"]["kind"] not in LEAST_SQUARES_KINDS:
        return 2000
    per_sample = _n_sites(values["lattice"]) * 3 * 8 * 2  # spins of a proposal and its current configuration
    return max(2000, min(LINEAR_BUFFER, DEFAULT_BUFFER_BYTES // per_sample, 2 * values["run"]["thermalize"] // 3))


def _four_shell_default(values: dict) -> bool:
    """A square lattice: there bond pairs of 4 shells within 2 spacings were the cheapest
    measured, for the linear model (analysis/BENCHMARKS.md#bond-pairs-of-finite-range) and as
    the Transformer's head and nested inner model (1.1-1.5x the linear default's cost at L = 8,
    against 2.3-3.3x with 2 shells at any range; analysis/DEPTH_STUDY.md)."""
    return values["lattice"]["kind"] == "square"


def _default_bond_shells(values: dict) -> int:
    """4 (square lattice, up to MAX_DEFAULT_FOUR_BOND_SITES sites), else 2 (or
    fewer on a lattice with fewer distances) where the model's least-squares head can be
    fitted from the default buffer: 2 x its parameters within the training share of
    buffer_size (else no round would ever run), and up to MAX_DEFAULT_BOND_SITES sites. Why
    the size limits: the bond-pair class table and G are B² (B ≈ 10 N bonds of 4 shells in 2D)."""
    lattice, tr, em = values["lattice"], values["training"], values["effective_model"]
    wide = _four_shell_default(values) and _n_sites(lattice) <= MAX_DEFAULT_FOUR_BOND_SITES
    k = min(4 if wide else 2, _n_distances(lattice))
    if _n_sites(lattice) > MAX_DEFAULT_BOND_SITES:
        return 0
    head = 1 + em["shells"] + n_bond_orbits(lattice["kind"], lattice["L"], k, em["bond_range"])
    return k if 2 * head <= _training_samples(tr["buffer_size"], tr["validation_fraction"]) else 0


def _training_samples(buffer_size: int, validation_fraction: float) -> int:
    """Training samples in a full buffer (the rest held out; see training/data.py), less one for rounding."""
    return int((1 - validation_fraction) * buffer_size) - 1


@functools.lru_cache(maxsize=16)
def n_bond_orbits(kind: str, L: int, bond_shells: int, bond_range: float = 0.0) -> int:
    """Symmetry classes of bond pairs within bond_shells shells and bond_range (the four-spin
    couplings K_o)."""
    if bond_shells == 0:
        return 0
    return int(Lattice.from_kind(kind, L).bond_pair_orbits(bond_shells, bond_range)[1].max()) + 1


def _n_distances(lattice: dict) -> int:
    """Distinct site distances of the lattice (its distance shells)."""
    if 2 * _n_sites(lattice) > MAX_MATRIX_DIM:
        return 8  # too large to run: _check_consistency says so
    return len(Lattice.from_kind(lattice["kind"], lattice["L"]).shell_distances)


def parse(text: str, legacy: bool = False) -> Config:
    """Validate TOML text against SCHEMA; missing optional keys take their defaults.
    ``legacy``: the text was stored by a version before 0.2 (only a stored text may omit a
    key and come from then), so an omitted key takes that version's default (LEGACY_DEFAULTS)."""
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: e.g. an integer of 5000 digits
        raise ConfigError(f"configuration is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        name = unknown[0] if unknown[0].isprintable() else repr(unknown[0])
        raise ConfigError(f"unknown section [{name}]; known sections: {', '.join(SCHEMA)}")
    sections = {}
    for name, keys in SCHEMA.items():
        given = raw.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{name}] must be a table (section), got {_show(given)}")
        known = {k.name for k in keys}
        for k in given:
            if k not in known:
                raise ConfigError(f"[{name}] unknown key {k!r}; known keys: {', '.join(sorted(known))}")
        values = {}
        for key in keys:
            if key.name not in given:
                if key.default is REQUIRED:
                    raise ConfigError(f"[{name}] {key.name} is required ({key.help})")
                values[key.name] = LEGACY_DEFAULTS.get((name, key.name), key.default) if legacy else key.default
            else:
                values[key.name] = _coerce(name, key, given[key.name])
        sections[name] = values
    for (name, key), rule in DEPENDENT_DEFAULTS.items():
        if sections[name][key] is DEPENDS:
            sections[name][key] = rule(sections)
    sections = {name: Section(name, values) for name, values in sections.items()}
    cfg = Config(text=text, sections=MappingProxyType(sections))
    _check_consistency(cfg)
    return cfg


def _check_temperatures(t) -> None:
    ladder = (t.T_min is not None, t.T_max is not None)
    if t.values is not None and any(ladder):
        raise ConfigError("[temperatures] give either values or T_min and T_max, not both")
    if t.values is None and not all(ladder):
        raise ConfigError("[temperatures] values is required (or T_min and T_max for a geometric ladder)")
    if t.values is None and not t.T_max > t.T_min:
        raise ConfigError(f"[temperatures] T_max = {t.T_max} must be above T_min = {t.T_min}")


def _check_consistency(cfg: Config) -> None:
    _check_temperatures(cfg.temperatures)
    dim = 2 * cfg.n_sites
    if dim > MAX_MATRIX_DIM:
        raise ConfigError(f"[lattice] L = {cfg.lattice.L} gives a {dim}x{dim} Hamiltonian; "
                          f"at most {MAX_MATRIX_DIM} is supported")
    lattice = Lattice.from_kind(cfg.lattice.kind, cfg.lattice.L)
    n_distances = len(lattice.shell_distances)
    em = cfg.effective_model
    nested = em.kind == "transformer" and cfg.slmc.scheme == "nested"
    shell_keys = [("effective_model", k) for k in ["shells", "bond_shells"] + (
        ["block_shells", "attention_shells"] if em.kind == "transformer" else [])] + (
        [("slmc", "inner_bond_shells")] if nested else [])
    for section, key in shell_keys if cfg.run.sampler == "slmc" else []:
        value = getattr(getattr(cfg, section), key)
        if value != "global" and value > n_distances:
            raise ConfigError(f"[{section}] {key} = {value} exceeds the {n_distances} "
                              f"distinct distances of a {cfg.lattice.kind} lattice with L = {cfg.lattice.L}")
    if cfg.run.sampler != "slmc" and "auto" in (cfg.slmc.local_updates, cfg.run.step_size):
        raise ConfigError("[slmc] local_updates and [run] step_size can be \"auto\" only for sampler = \"slmc\" "
                          "(the exact sampler's moves are not tuned)")
    if cfg.slmc.middle_steps == "auto" and not cfg.has_middle_level:
        raise ConfigError("[slmc] middle_steps = \"auto\" needs a middle level (SLMC with [effective_model] kind = "
                          "\"downfolded\", or kind = \"transformer\" with [slmc] scheme = \"nested\")")
    if cfg.slmc.overrelax and (cfg.run.sampler != "slmc" or em.kind == "transformer" and not nested):
        raise ConfigError(f"[slmc] overrelax = {cfg.slmc.overrelax} needs an SLMC inner chain on a linear model "
                          f"([effective_model] kind = \"linear\", or [slmc] scheme = \"nested\")")
    if cfg.slmc.move == "heatbath" and (cfg.run.sampler != "slmc" or em.kind == "transformer" and not nested):
        raise ConfigError("[slmc] move = \"heatbath\" needs an SLMC inner chain on a linear model "
                          "([effective_model] kind = \"linear\", or [slmc] scheme = \"nested\")")
    if cfg.run.sampler == "slmc" and em.kind == "downfolded":
        _check_downfolding(cfg, lattice)
    if cfg.temperatures.adapt != "none" and cfg.temperatures.exchange_every == 0:
        raise ConfigError(f"[temperatures] adapt = \"{cfg.temperatures.adapt}\" tunes the ladder for replica "
                          f"exchanges, but exchange_every = 0 turns them off")
    if cfg.run.sampler == "slmc" and cfg.run.thermalize < cfg.training.every:
        raise ConfigError(f"[run] thermalize = {cfg.run.thermalize} is shorter than [training] every = "
                          f"{cfg.training.every}: the effective model would never be trained")
    # bond-pair terms, per 256-sample chunk: each sample's (N, N) Gram matrix and its bond fields'
    # (T, T, N) correlations, spectra and weighted copy (about 5 T² N floats); T = (z + s) / 2 bond
    # classes (z neighbour vectors, s of them self-inverse: 2 v = 0 mod L). A Transformer minibatch
    # keeps the (T, N) complex spectra for autograd, for each of the pair loss's configurations.
    transformer = em.kind == "transformer"
    bond_terms = [("effective_model", "bond_shells", em.bond_shells,
                   max(cfg.training.batch_size, 256) if transformer else 256,
                   2 if transformer and cfg.training.loss == "pair" else 1)]
    if nested:
        bond_terms.append(("slmc", "inner_bond_shells", cfg.slmc.inner_bond_shells, 256, 1))
    for section, key, k, chunk, copies in bond_terms if cfg.run.sampler == "slmc" else []:
        if 0 < k <= n_distances:
            vectors = lattice.coords[np.concatenate([nbrs[0] for nbrs in lattice.shell_neighbours(k)])]
            z = len(vectors)
            n_classes = (z + int(np.all(2 * vectors % cfg.lattice.L == 0, axis=1).sum())) // 2
            n = cfg.n_sites
            pair_bytes = 8 * 256 * (n * n + 5 * n_classes**2 * n) + 16 * chunk * n_classes * n * copies
            if pair_bytes > MAX_BUFFER_BYTES:
                batch = chunk > 256  # only a Transformer minibatch can exceed the fixed 256-sample chunks
                raise ConfigError(f"[{section}] {key} = {k}"
                                  + (f" with [training] batch_size = {cfg.training.batch_size}" if batch else "")
                                  + f": training would hold {pair_bytes / 2**30:.1f} GiB of bond-pair products "
                                  f"({z * cfg.n_sites // 2} bonds); at most {MAX_BUFFER_BYTES / 2**30:.0f} GiB is "
                                  f"allowed (fewer {key}" + (" or a smaller batch_size)" if batch else ")"))
    pairs = 2 if cfg.training.loss == "pair" else 1
    buffer_bytes = cfg.training.buffer_size * cfg.n_sites * 3 * 8 * pairs
    shells_fit = max(em.shells, em.bond_shells, cfg.slmc.inner_bond_shells) <= n_distances
    if cfg.run.sampler == "slmc" and cfg.run.thermalize > 0 and shells_fit:  # after the memory check: it needs the classes
        head = _head_size(cfg)
        _check_trainable(cfg, head)
        rows = head if em.kind == "downfolded" else head - 1  # the downfolded model's rows add F_low
        buffer_bytes += cfg.training.buffer_size * rows * 8 * pairs  # the kept design rows (training/data.py)
    if buffer_bytes > MAX_BUFFER_BYTES:
        raise ConfigError(f"[training] buffer_size = {cfg.training.buffer_size} would hold "
                          f"{buffer_bytes / 2**30:.1f} GiB of spins (and design rows) per replica; at most "
                          f"{MAX_BUFFER_BYTES / 2**30:.0f} GiB is allowed")
    t = cfg.temperatures
    n_temperatures = len(t.values) if t.values is not None else t.count or 1  # count 0: one per rank
    snap_bytes = n_temperatures * (cfg.run.measure // cfg.run.snapshot_every) * cfg.n_sites * 3 * 8
    if snap_bytes > 8 * 2**30:
        raise ConfigError(f"[run] snapshot_every = {cfg.run.snapshot_every} would store "
                          f"{snap_bytes / 2**30:.1f} GiB of snapshots; raise it")


def _check_downfolding(cfg: Config, lattice: Lattice) -> None:
    """kind = "downfolded": its inner model shares the correction's training rows, so it must
    be of the same class; and the model inverts the upper band's block C = (|J|/2 - μ) + V, V its hopping
    (models/downfolded.py); |V| ≤ 2 d |t| (Gershgorin: 2d neighbours), so |J|/2 - μ above that
    keeps C positive definite for every configuration. Below it, C is singular on surfaces of
    configurations where F_low has poles: the chain would stay exact, the model be useless."""
    em = cfg.effective_model
    if cfg.slmc.inner_bond_shells != em.bond_shells:
        raise ConfigError(f"[slmc] inner_bond_shells = {cfg.slmc.inner_bond_shells} differs from [effective_model] "
                          f"bond_shells = {em.bond_shells}: with kind = \"downfolded\" the inner model and the "
                          f"middle model's correction are one model class (they share their training rows)")
    m = cfg.model
    gap, width = downfolding_gap(m.as_dict(), lattice.dim)
    if gap <= width:
        raise ConfigError(f"[effective_model] kind = \"downfolded\" needs the upper band above μ for every "
                          f"configuration: |J|/2 - mu = {gap:g} must exceed its hopping width 2 d |t| = {width:g} "
                          f"([model] J = {m.J:g}, mu = {m.mu:g}, t = {m.t:g}); use kind = \"linear\" here")


def _head_size(cfg: Config) -> int:
    """Parameters of the widest least-squares fit of a slot's round (Learner.head_size): E_0,
    the J_n and the bond-pair couplings of the model or of nested SLMC's inner one."""
    em = cfg.effective_model
    nested = em.kind == "transformer" and cfg.slmc.scheme == "nested"
    orbits = max(n_bond_orbits(cfg.lattice.kind, cfg.lattice.L, em.bond_shells, em.bond_range),
                 n_bond_orbits(cfg.lattice.kind, cfg.lattice.L, cfg.slmc.inner_bond_shells, em.bond_range)
                 if nested else 0)
    return 1 + em.shells + orbits


def _check_trainable(cfg: Config, head: int) -> None:
    """A round is skipped while a slot has fewer training samples than twice the widest
    least-squares head it fits (training/learner.py); refuse a configuration whose full
    buffer could never reach that."""
    tr = cfg.training
    available = _training_samples(tr.buffer_size, tr.validation_fraction)
    if 2 * head > available:
        raise ConfigError(f"[training] buffer_size = {tr.buffer_size} holds about {available} training samples, "
                          f"but the model's least-squares head has {head} parameters ([effective_model] shells and "
                          f"bond-pair terms) and a round needs twice as many: the model would never be trained; "
                          f"raise buffer_size to at least {int((2 * head + 1) / (1 - tr.validation_fraction)) + 1} "
                          f"or use fewer bond_shells")


def _toml_value(v) -> str:
    if v is None:
        raise ValueError("unset keys are left out of the TOML text")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def stores_every_key(text: str) -> bool:
    """Whether a stored configuration ``text`` has every key written out, as files and
    checkpoints do since 0.2 (keys added since, ADDED_KEYS, may be missing): a text as the
    user gave it, omitted keys omitted, was stored before 0.2."""
    cfg, given = parse(text, legacy=True), tomllib.loads(text)
    return all(key in given.get(name, {}) or (name, key) in ADDED_KEYS
               for name, section in cfg.sections.items() for key, value in section.as_dict().items()
               if value is not None)


def to_toml(sections: dict[str, dict]) -> str:
    """TOML text for plain values (numbers, strings, lists of numbers)."""
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        out.append("")
    return "\n".join(out)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")  # TOML is UTF-8 whatever the locale
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    return parse(text)
