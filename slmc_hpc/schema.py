"""The configuration's schema: every section and key with its type, default, help text and
check, in one place (``slmc-hpc keys`` prints it), and the size limits the checks use.
config.py validates a TOML file against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

REQUIRED = object()
DEPENDS = object()  # the default depends on other keys: config.py's _dependent_default, told in the help
MAX_MATRIX_DIM = 16384  # 2N beyond this: a 4 GiB complex matrix per diagonalization
MAX_LOCAL_UPDATES = 10**6
MAX_BUFFER_BYTES = 4 * 2**30
MIN_TEMPERATURE = 1e-6
MAX_TEMPERATURES = 4096
MAX_DEFAULT_BOND_SITES = 600  # default bond_shells = 0 above this many sites (and where the buffer is too small)
MAX_DEFAULT_FOUR_BOND_SITES = 256  # default bond_shells = 4 (square lattice) up to this many sites
MAX_INT = 2**63 - 1  # what HDF5 attributes (int64) can hold; beyond this no key makes sense


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # "int", "float", "str", "bool", "float_list", or "int_or_global", "int_or_auto", "float_or_auto"
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    choices: tuple | None = None


def _positive(v):
    return None if v > 0 else "must be positive"


def _non_negative(v):
    return None if v >= 0 else "must not be negative"


def _file_name(v):
    return None if v and v.isprintable() else "must be a non-empty file name of printable characters"


def _at_least(n):
    return lambda v: None if v >= n else f"must be at least {n}"


def _temperatures(values):
    if not values:
        return "must list at least one temperature"
    if any(T <= 0 for T in values):
        return "temperatures must be positive"
    if any(T < MIN_TEMPERATURE for T in values):
        return f"temperatures below {MIN_TEMPERATURE:g} are not supported (β = 1/T would overflow the weights)"
    if any(b <= a for a, b in zip(values, values[1:])):
        return "temperatures must be strictly ascending"
    return None


SCHEMA: dict[str, list[Key]] = {
    "lattice": [
        Key("kind", "str", "square", "lattice: chain, square or cubic, periodic", choices=("chain", "square", "cubic")),
        Key("L", "int", REQUIRED, "linear size; N = L**dim sites", _at_least(2)),
    ],
    "model": [
        Key("t", "float", 1.0, "nearest-neighbour hopping; H contains -t Σ_<ij>σ (c†c + h.c.)"),
        Key("J", "float", 4.0, "spin-fermion coupling; H contains + (J/2) Σ_i S_i·σ_i"),
        Key("mu", "float", 0.0, "chemical potential; H contains - μ Σ n_iσ"),
        Key("J_direct", "float", 0.0, "classical superexchange + J_direct Σ_<ij> S_i·S_j (nearest neighbours)"),
    ],
    "temperatures": [
        Key("values", "float_list", None, "temperatures T (not β), strictly ascending, one per replica "
            "(or give T_min and T_max)", _temperatures),
        Key("T_min", "float", None, "lowest temperature of a geometric ladder (with T_max, instead of values)",
            lambda v: _temperatures([v])),
        Key("T_max", "float", None, "highest temperature of a geometric ladder", lambda v: _temperatures([v])),
        Key("count", "int", 0, "temperatures in the geometric ladder; 0: one per MPI rank",
            lambda v: _non_negative(v) or (None if v <= MAX_TEMPERATURES else f"must be at most {MAX_TEMPERATURES}")),
        Key("exchange_every", "int", 10, "measured steps between replica-exchange rounds (0: never)",
            _non_negative),
        Key("adapt", "str", "none", "barrier: during the first half of thermalization, move the inner "
            "temperatures so that the estimated swap rejection is equal between all neighbours (the ends stay; "
            "see ladder.py); none: keep the ladder as given", choices=("none", "barrier")),
    ],
    "effective_model": [
        Key("kind", "str", DEPENDS, "effective model for SLMC proposals: linear, transformer, or downfolded "
            "(three-level SLMC: the inner chain on a linear model, middle tests on the free energy of the lower "
            "band's N x N Hamiltonian plus a fitted linear correction, the exact test last; needs |J|/2 - mu > 2d|t|; "
            "models/downfolded.py); default downfolded for SLMC on a square lattice with 10 <= L <= 16 where it applies "
            "(numpy backend, no inner_bond_shells given), else linear",
            choices=("linear", "transformer", "downfolded")),
        Key("shells", "int", DEPENDS, "distance shells n_max of the couplings J_n (the energy head); default 8, "
            "or every distance of a smaller lattice", _at_least(1)),
        Key("layers", "int", 1, "transformer: attention layers", _non_negative),
        Key("heads", "int", 1, "transformer: attention heads per layer", _at_least(1)),
        Key("block_shells", "int", 1, "transformer: Q, K, V are block spins over shells 0..block_shells",
            _non_negative),
        Key("attention_shells", "int_or_global", "global", "transformer: attend to sites within this many "
            "shells, or \"global\" for all sites", lambda v: None if v == "global" or v >= 1 else
            "must be \"global\" or at least 1"),
        Key("bond_shells", "int", DEPENDS, "add four-spin terms to the model, one coupling per symmetry class of "
            "pairs of bonds within shells 1..bond_shells (and within bond_range); 0: none; default 4 on a "
            f"square lattice of up to {MAX_DEFAULT_FOUR_BOND_SITES} sites, else 2, up to "
            f"{MAX_DEFAULT_BOND_SITES} sites where [training] buffer_size can fit their couplings, else 0", _non_negative),
        Key("bond_range", "float", DEPENDS, "keep only the bond pairs whose midpoints lie at most this far apart "
            "(lattice spacings, minimum image); 0: any separation; default 2 on a square lattice, else 0",
            _non_negative),
        Key("gate_channels", "int", 0, "transformer: gated channels per layer after the attention (an "
            "equivariant feed-forward step: block spins U^c scaled by tanh of invariants); 0: attention only",
            _non_negative),
        Key("normalize", "bool", False, "transformer: rescale each effective spin to unit length after a layer"),
        Key("dtype", "str", "float64", "Transformer training arithmetic (sampling evaluates the frozen model in float64)", choices=("float64", "float32")),
    ],
    "slmc": [
        Key("local_updates", "int_or_auto", DEPENDS, "single-spin updates per step (SLMC inner chain, or exact "
            "moves for sampler='exact'); 0 means N; \"auto\": each temperature slot chooses its own during "
            "thermalization (SLMC; see tuning.py); default \"auto\" for SLMC, 0 for the exact sampler", lambda v: _non_negative(v) or (
                None if v <= MAX_LOCAL_UPDATES else f"must be at most {MAX_LOCAL_UPDATES}")),
        Key("scheme", "str", "nested", "transformer only: nested (inner chain on a linear model, middle "
            "test on the transformer, outer exact test) or plain (transformer in the inner chain)",
            choices=("nested", "plain")),
        Key("middle_steps", "int_or_auto", DEPENDS, "nested and downfolded: inner chains + middle tests per exact "
            "test; \"auto\": each temperature slot chooses 4 or 8 (16 alone from 256 sites on) with its path "
            "during thermalization (see tuning.py); default for downfolded \"auto\" where local_updates is \"auto\", else 4; otherwise 1", _at_least(1)),
        Key("inner_bond_shells", "int", DEPENDS, "nested: the inner linear model's four-spin bond-pair terms "
            "(as [effective_model] bond_shells, within bond_range, on the raw spins); 0: none; default: bond_shells",
            _non_negative),
        Key("move", "str", "metropolis", "the inner chain's single-spin update: metropolis (S_i + δ g, "
            "δ = [run] step_size) or heatbath (S_i drawn from exp(β S_i·H) about its local field H, a "
            "Metropolis-Hastings test for the four-spin terms; δ unused; linear inner models only)",
            choices=("metropolis", "heatbath")),
        Key("overrelax", "float", 0.0, "fraction of the inner chain's updates that reflect the spin about its "
            "local field (over-relaxation; linear inner models: kind = linear, or scheme = nested)",
            lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),
    ],
    "training": [
        Key("every", "int", DEPENDS, "a training round every this many thermalization steps; default "
            "thermalize / 8, at most 500", _at_least(1)),
        Key("buffer_size", "int", DEPENDS, "most recent proposals kept as training data; default for the "
            "linear model two thirds of thermalize, within 2000 ... 8000 (8000 at the default thermalize) "
            "and at most 0.5 GiB of spins above 2000; 2000 for the transformer", _at_least(2)),
        Key("loss", "str", "pair", "energy: MSE of E_eff - F on proposals; pair: MSE of the difference "
            "(E_eff - F)[proposal] - (E_eff - F)[current], which is what the acceptance depends on",
            choices=("energy", "pair")),
        Key("validation_fraction", "float", 0.2, "share of proposals held out for the validation loss",
            lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),
        Key("epochs", "int", 1, "transformer: passes over the training data per round (30 before 0.4.2)",
            _at_least(1)),
        Key("learning_rate", "float", 1e-3, "transformer: AdamW learning rate", _positive),
        Key("weight_decay", "float", 0.0, "transformer: AdamW weight decay", _non_negative),
        Key("batch_size", "int", 128, "transformer: minibatch size, over all ranks", _at_least(1)),
    ],
    "run": [
        Key("sampler", "str", "slmc", "slmc, or exact for plain local-update Metropolis on W_β",
            choices=("slmc", "exact")),
        Key("thermalize", "int", DEPENDS, "steps before measuring; the model is trained only during these "
            "(and a tuned path chosen in their second half); default 12000 for SLMC with the linear model, "
            "4000 with the transformer, 500 for the exact sampler, three times that with [temperatures] "
            "adapt = \"barrier\"",
            _non_negative),
        Key("measure", "int", 1000, "measured steps (model frozen)", _at_least(1)),
        Key("snapshot_every", "int", 50, "store the spins every this many measured steps", _at_least(1)),
        Key("seed", "int", 1, "master seed; replica streams come from numpy SeedSequence(seed).spawn(R)",
            lambda v: _non_negative(v) or (None if v < 2**63 else "must be below 2**63")),
        Key("output", "str", "run.h5", "HDF5 output file (relative to the working directory)", _file_name),
        Key("step_size", "float_or_auto", DEPENDS, "single-spin move S -> normalize(S + step_size·gaussian); "
            "\"auto\": chosen per temperature slot with local_updates (SLMC); default \"auto\" for SLMC, 0.5 "
            "for the exact sampler", _positive),
        Key("initial", "str", "random", "initial spins: random or ferro (all along z)", choices=("random", "ferro")),
        Key("backend", "str", "numpy", "diagonalization backend: numpy (CPU) or cupy (GPU)",
            choices=("numpy", "cupy")),
        Key("progress_every", "float", 10.0, "seconds between progress lines", _positive),
        Key("checkpoint_every", "float", 1800.0, "seconds (wall clock) between checkpoints to <output>.ckpt; "
            "0: only on SIGTERM/SIGUSR1", _non_negative),
    ],
}

# Keys added after 0.2, when files and checkpoints began to store every key: a stored text of
# an earlier version lacks them, and they take their defaults (config.stores_every_key)
ADDED_KEYS = {("temperatures", "adapt"): "0.3", ("effective_model", "bond_range"): "0.4"}

# The defaults before version 0.2, for configuration texts stored in files and checkpoints
# written then (they held the user's text, omitted keys included; since 0.2 every key is
# written out, so a later change of a default cannot change what a stored run was).
LEGACY_DEFAULTS = {
    ("effective_model", "shells"): 3, ("effective_model", "bond_shells"): 0, ("slmc", "local_updates"): 0,
    ("slmc", "inner_bond_shells"): 0, ("training", "every"): 20, ("training", "buffer_size"): 5000,
    ("training", "loss"): "energy", ("run", "thermalize"): 200, ("run", "step_size"): 0.5,
    ("training", "epochs"): 30,
    ("effective_model", "kind"): "linear",  # the default until 0.8
    # added in 0.4: every stored text before lacks it and meant any separation
    ("effective_model", "bond_range"): 0.0,
}
