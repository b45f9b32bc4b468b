"""The one place that turns a validated configuration into objects: the lattice and the
Hamiltonian, the effective models, the samplers, each temperature slot's replica and
learner, the shared network's trainer, the random streams, the run's schedule and the
output file's layout. What runs the simulation (replica, samplers, learners, trainers, the
run loop, the output writers) receives these objects and plain numbers, never the Config;
only the lifecycle above (driver.py, resume.py's configuration check) and results.read_model,
which rebuilds models from a file's stored configuration, read one.

Which sampler and model a run uses is decided here alone:
  [run] sampler = "exact"                      exact local updates, no model, no learning
  [effective_model] kind = "linear"            SLMC with the slot's own linear model
  kind = "transformer", [slmc] scheme = "plain"   SLMC with the shared Transformer
  kind = "transformer", scheme = "nested"      nested SLMC: each slot's inner linear model,
                                               the shared Transformer in the middle test
  kind = "downfolded"                          three-level SLMC: each slot's inner linear model,
                                               its downfolded model in the middle tests
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backend import array_module, use_device_of_rank
from .config import Config, ConfigError
from .control import Schedule
from .hamiltonian import DoubleExchange
from .ladder import MIN_ROUND_STEPS, adaptation_ends
from .lattice import Lattice
from .models import LinearModel
from .models.downfolded import DownfoldedModel
from .models.transformer import EquivariantTransformer, TransformerModel
from .observables import random_spins
from .output import Layout
from .parallel.allreduce import broadcast_parameters
from .parallel.comm import SerialComm
from .replica import Replica
from .samplers import ExactLocalSampler, NestedSLMCSampler, SLMCSampler
from .tempering import geometric_temperatures
from .training.data import ReplayBuffer
from .training.learner import Learner, n_refits
from .training.least_squares import LinearTrainer
from .training.network import TorchTrainer
from .tuning import PathTuner, path_candidates


def build_physics(cfg: Config) -> DoubleExchange:
    try:
        array_module(cfg.run.backend)
    except RuntimeError as exc:
        raise ConfigError(f"[run] backend = {cfg.run.backend!r}: {exc}") from None
    m = cfg.model
    lattice = Lattice.from_kind(cfg.lattice.kind, cfg.lattice.L)
    return DoubleExchange(lattice, t=m.t, J=m.J, mu=m.mu, J_direct=m.J_direct, backend=cfg.run.backend)


def temperature_ladder(cfg: Config, n_ranks: int) -> list[float]:
    """The run's temperatures T (not β), ascending: ``values``, or ``count`` (default: one
    per rank) geometric steps from T_min to T_max."""
    t = cfg.temperatures
    if t.values is not None:
        return list(t.values)
    return geometric_temperatures(t.T_min, t.T_max, t.count or n_ranks).tolist()


def uses_shared_network(cfg: Config) -> bool:
    """Whether the run's slots share one Transformer (trained on all their samples)."""
    return cfg.run.sampler == "slmc" and cfg.effective_model.kind == "transformer"


def geometric_mean_beta(temperatures) -> float:
    """β_ref of the Transformer's β-conditioning: the geometric mean of the run's β."""
    return float(np.exp(-np.mean(np.log(temperatures))))


def initial_spins(kind: str, n_sites: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ferro":
        spins = np.zeros((n_sites, 3))
        spins[:, 2] = 1.0
        return spins
    return random_spins(n_sites, rng)


def build_network(cfg: Config, lattice: Lattice, beta_ref: float) -> EquivariantTransformer:
    """The Transformer of ``[effective_model]``; its initial weights depend only on [run] seed,
    so every replica (and every MPI rank) builds the same network."""
    em = cfg.effective_model
    return EquivariantTransformer(
        lattice, layers=em.layers, heads=em.heads, block_shells=em.block_shells,
        attention_shells=None if em.attention_shells == "global" else em.attention_shells,
        shells=em.shells, normalize=em.normalize, beta_ref=beta_ref,
        dtype=getattr(torch, em.dtype), seed=cfg.run.seed, bond_shells=em.bond_shells, bond_range=em.bond_range,
        gate_channels=em.gate_channels)


def build_linear(cfg: Config, lattice: Lattice, inner: bool = False) -> LinearModel:
    """The untrained (zero) linear model of a slot: ``[effective_model]`` shells and
    bond_shells, or with ``inner`` nested SLMC's inner model (shells, ``[slmc] inner_bond_shells``);
    both with ``[effective_model] bond_range``."""
    em = cfg.effective_model
    return LinearModel.zeros(lattice, em.shells, cfg.slmc.inner_bond_shells if inner else em.bond_shells,
                             em.bond_range)


def build_network_trainer(cfg: Config, lattice: Lattice, beta_ref: float, seed: int, comm=None) -> TorchTrainer:
    """The trainer of the Transformer, collective over ``comm``: the same initial parameters
    on every rank (broadcast from rank 0); ``seed`` only orders this rank's minibatches."""
    comm = comm or SerialComm()
    net = build_network(cfg, lattice, beta_ref)
    broadcast_parameters(net, comm)
    tr = cfg.training
    return TorchTrainer(net, tr.epochs, tr.learning_rate, tr.weight_decay, tr.batch_size, seed=seed,
                        loss=tr.loss, comm=comm)


def build_tuner(cfg: Config, n_sites: int) -> PathTuner | None:
    """The tuner of a slot's inner-chain length, δ and middle tests, over the second half of
    thermalization, where [slmc] local_updates, [run] step_size or [slmc] middle_steps is
    "auto" (SLMC only)."""
    heat_bath = cfg.slmc.move == "heatbath"  # no δ: only the length is tuned (δ recorded as the placeholder 0.5)
    tuned = "auto" in (cfg.slmc.local_updates, cfg.slmc.middle_steps) or (cfg.run.step_size == "auto" and not heat_bath)
    if cfg.run.sampler != "slmc" or not tuned:
        return None
    step_size = 0.5 if heat_bath and cfg.run.step_size == "auto" else cfg.run.step_size
    middle_steps = cfg.slmc.middle_steps if cfg.has_middle_level else 1
    candidates = path_candidates(n_sites, cfg.slmc.local_updates, step_size, middle_steps)
    return PathTuner(candidates, cfg.run.thermalize // 2, cfg.run.thermalize, auto_middle=middle_steps == "auto")


def initial_path(cfg: Config, n_sites: int) -> tuple[int, float, int]:
    """(inner-chain length, δ, middle tests) a slot starts with: the config's, and where "auto"
    N updates (also for 0), δ = 0.5 and four middle tests until the slot's tuner chooses
    (run_loop, tuning.py)."""
    slmc, step_size = cfg.slmc, cfg.run.step_size
    return (n_sites if slmc.local_updates in ("auto", 0) else slmc.local_updates,
            0.5 if step_size == "auto" else step_size,
            4 if slmc.middle_steps == "auto" else slmc.middle_steps)


def build_slot(cfg: Config, physics: DoubleExchange, beta: float, rng: np.random.Generator,
               beta_ref: float | None = None, network: TorchTrainer | None = None) -> tuple[Replica, Learner | None]:
    """One temperature slot: its replica (chain) and learner (None for the exact sampler).
    ``network``: the shared Transformer's trainer; without it a Transformer slot gets a
    private network (β_ref = ``beta_ref`` or its own β; minibatch seed drawn from ``rng``)."""
    lattice, run, tr = physics.lattice, cfg.run, cfg.training
    n_local, step_size, middle_steps = initial_path(cfg, lattice.N)
    linear = inner = None
    if run.sampler == "exact":
        sampler = ExactLocalSampler(physics, beta, n_local, step_size)
    elif cfg.effective_model.kind == "linear":
        linear = LinearTrainer(build_linear(cfg, lattice), tr.loss)
        sampler = SLMCSampler(physics, linear.model, beta, n_local, step_size, cfg.slmc.overrelax, cfg.slmc.move)
    elif cfg.effective_model.kind == "downfolded":
        linear = LinearTrainer(DownfoldedModel(physics, beta, build_linear(cfg, lattice)), tr.loss)
        # the buffer keeps the downfolded model's rows, (F_low, the correction's); the inner
        # model is of the correction's class (config.py checks): its rows are the rest
        inner = LinearTrainer(build_linear(cfg, lattice, inner=True), tr.loss, columns=slice(1, None))
        sampler = NestedSLMCSampler(physics, inner.model, linear.model, beta, n_local, step_size,
                                    middle_steps, cfg.slmc.overrelax, cfg.slmc.move)
    else:
        if network is None:
            network = build_network_trainer(cfg, lattice, beta if beta_ref is None else beta_ref,
                                            seed=int(rng.integers(2**63)))
        model = TransformerModel.frozen(network.net, beta)
        if cfg.slmc.scheme == "plain":
            sampler = SLMCSampler(physics, model, beta, n_local, step_size)
        else:
            inner = LinearTrainer(build_linear(cfg, lattice, inner=True), tr.loss)
            sampler = NestedSLMCSampler(physics, inner.model, model, beta, n_local, step_size,
                                        middle_steps, cfg.slmc.overrelax, cfg.slmc.move)
    replica = Replica(physics, sampler, rng, initial_spins(run.initial, lattice.N, rng))
    if run.sampler == "exact":
        return replica, None
    # training data exist only while an SLMC slot thermalizes; a slot's linear model (or inner
    # one) keeps its design rows with them. The rows come from the trainer's current model (the
    # downfolded model's depend on its β, which moves with a self-tuning ladder: Learner.move_to)
    fitted = linear or inner
    buffer = (ReplayBuffer(tr.buffer_size, lattice.N, pairs=tr.loss == "pair",
                           featurize=(lambda spins: fitted.model.design(spins)) if fitted is not None else None)
              if run.thermalize > 0 else None)
    return replica, Learner(buffer, linear, network, inner, every=tr.every, thermalize=run.thermalize,
                            validation_fraction=tr.validation_fraction)


@dataclass
class Assembled:
    """Everything a run on this process is made of. ``replicas`` and ``learners``: this
    rank's slots (slot r on rank r % ranks), keyed by the slot each replica starts at."""

    physics: DoubleExchange
    temperatures: list[float]
    replicas: dict[int, Replica]
    learners: dict[int, Learner | None]
    tuners: dict[int, PathTuner | None]  # choose each slot's inner-chain length and δ
    adaptation_ends: list[int]  # thermalization steps after which the ladder moves (ladder.py); [] if fixed
    network: TorchTrainer | None  # the shared Transformer's trainer
    controller_rng: np.random.Generator | None  # the exchange decisions (rank 0)
    schedule: Schedule
    layout: Layout
    config_text: str
    header: str  # for the log: sampler and lattice
    model_line: str | None  # for the log: the effective model


def assemble(cfg: Config, comm, log=lambda *a: None) -> Assembled:
    """The run of ``cfg`` on this rank of ``comm``. Random streams: SeedSequence(seed).spawn
    gives one per replica and one for the exchange decisions; each rank's minibatch order
    of the shared network has its own stream (spawn key (R + 1, rank))."""
    physics = build_physics(cfg)
    device = None
    if cfg.run.backend == "cupy":  # before the first diagonalization (each replica's initial state)
        device = use_device_of_rank(comm.node_rank)
        log(f"rank 0 diagonalizes on GPU {device} (each rank: node-local rank modulo visible GPUs)")
    temperatures = temperature_ladder(cfg, comm.size)
    R = len(temperatures)
    if comm.size > 1 and R != comm.size:
        raise ConfigError(f"[temperatures] gives {R} temperatures but {comm.size} MPI ranks run: "
                          f"one temperature per rank")
    betas = 1.0 / np.asarray(temperatures)
    seeds = np.random.SeedSequence(cfg.run.seed).spawn(R + 1)
    beta_ref = geometric_mean_beta(temperatures)
    network = None
    if uses_shared_network(cfg):
        order_seed = np.random.SeedSequence(cfg.run.seed, spawn_key=(R + 1, comm.rank)).generate_state(1, np.uint64)
        network = build_network_trainer(cfg, physics.lattice, beta_ref, int(order_seed[0]), comm)
    replicas, learners = {}, {}
    for r in range(comm.rank, R, comm.size):
        replicas[r], learners[r] = build_slot(cfg, physics, betas[r], np.random.default_rng(seeds[r]), beta_ref,
                                              network)
    tuners = {r: build_tuner(cfg, physics.lattice.N) for r in replicas}
    run = cfg.run
    schedule = Schedule(thermalize=run.thermalize, measure=run.measure, train_every=cfg.training.every,
                        exchange_every=cfg.temperatures.exchange_every if R > 1 else 0,
                        snapshot_every=run.snapshot_every, progress_every=run.progress_every,
                        checkpoint_every=run.checkpoint_every)
    model = next(iter(replicas.values())).model
    lattice = physics.lattice
    header = f"{run.sampler} on {lattice.kind} L={lattice.L} (N={lattice.N})"
    model_line = None if model is None else (f"effective model: {cfg.effective_model.kind}, "
                                             f"{model.n_parameters} parameters")
    ends = adaptation_ends(run.thermalize, R) if cfg.temperatures.adapt == "barrier" else []
    if cfg.temperatures.adapt == "barrier" and not ends:
        log(f"slmc-hpc: warning: [temperatures] adapt = \"barrier\" has nothing to do: it needs at least 2 "
            f"temperatures (this run has {R}) and [run] thermalize of at least {2 * MIN_ROUND_STEPS} steps "
            f"(has {run.thermalize}); the ladder stays as given")
    return Assembled(physics, temperatures, replicas, learners, tuners, ends, network,
                     np.random.default_rng(seeds[R]) if comm.rank == 0 else None, schedule,
                     output_layout(cfg, lattice, temperatures, model, schedule, next(iter(tuners.values())), len(ends)),
                     cfg.complete_text, header, model_line)


def output_layout(cfg: Config, lattice: Lattice, temperatures, model, schedule: Schedule,
                  tuner: PathTuner | None, adaptation_rounds: int = 0) -> Layout:
    """The shape of the run's file: what it records and how many rows of each (``tuner``: any
    slot's, for the candidates every slot tries; ``adaptation_rounds``: of the self-tuning ladder)."""
    values, names = model.parameters() if model is not None else (np.zeros(0), [])
    beta_ref = getattr(getattr(model, "net", None), "beta_ref", None)
    inner_names = build_linear(cfg, lattice, inner=True).parameters()[1] if cfg.has_middle_level else None
    s = schedule
    return Layout(
        config_text=cfg.complete_text, sampler=cfg.run.sampler, seed=cfg.run.seed, local_updates=cfg.local_updates,
        lattice=lattice, temperatures=list(temperatures), measure=s.measure, thermalize=s.thermalize,
        snapshot_every=s.snapshot_every, exchange_every=cfg.temperatures.exchange_every,
        n_exchanges=s.measure // s.exchange_every if s.exchange_every else 0,
        n_rounds=n_refits(s.thermalize, s.train_every) if model is not None else 0,
        model_kind=cfg.effective_model.kind if cfg.run.sampler == "slmc" else "none",
        parameter_names=list(names), n_parameters=len(values),
        beta_ref=None if beta_ref is None else float(beta_ref), inner_parameter_names=inner_names,
        path_candidates=None if tuner is None else tuner.candidates, adaptation_rounds=adaptation_rounds)
