#!/usr/bin/env python3
"""Cost per independent sample, τ_int(F) × seconds per step, of the exact local sampler and
of SLMC variants, measured side by side: every variant thermalizes (and trains) first, then
the measured chains run in interleaved blocks (round robin), so that the timings share
whatever else the machine does. Prints a table with ratios to the exact sampler; asserts
nothing (speed is not a test). See analysis/BENCHMARKS.md for measured tables.

    OMP_NUM_THREADS=1 python analysis/benchmark_sampler.py --L 8 --point reference \\
        --variants exact default linear linear-or --measure 20000 --seed 1

One step of the exact sampler is one sweep (N single-spin updates, each with its own
diagonalization). A row whose run is shorter than 500 τ_int is marked "rough": τ_int from
shorter runs reads low (README lessons). With --exact-tau the exact sampler's cost is that
τ_int (from a long run) times the sweep timed here, the convention of BENCHMARKS.md. Also printed, as candidate proxies for tuning: the
mean squared change of F/N per step and of the spins per step (Σ_i |ΔS_i|² / N); and sigma,
the spread (standard deviation) of the exact test's log-ratio -β[ΔF - ΔE_eff] (SLMC rows);
tau_stay, τ_int read from how long the chain stays put (stay_tau), and tau_ar1, the AR(1)
value 4 var(F/N) / ⟨ΔF²/N²⟩ - 1 from the mean squared jump: two estimates of τ_int, from
short runs, that a tuner could use."""

from __future__ import annotations

import argparse
import time

import numpy as np

from slmc_hpc.assemble import build_physics, build_slot, build_tuner
from slmc_hpc.config import parse, to_toml
from slmc_hpc.stats import estimate
from slmc_hpc.training.learner import collect, solo_step, train_alone
from slmc_hpc.tuning import tuned_step

# (t, J, mu, T): the reference problem; the ferromagnetic problem of the tempering issue
# (J = 8, mu = -5) deep in the ordered phase, and at T = 0.05 where <|m|> is about 0.62 at L = 8
POINTS = {
    "reference": {"model": {"t": 1.0, "J": 4.0, "mu": -2.5}, "T": 0.02},
    "ferro": {"model": {"t": 1.0, "J": 8.0, "mu": -5.0}, "T": 0.01},
    "mid": {"model": {"t": 1.0, "J": 8.0, "mu": -5.0}, "T": 0.05},
}

# what each variant changes in the configuration; "default" changes nothing but the problem
# (and --thermalize, which since 0.5 also sets the linear model's buffer: 2/3 of it, 2000 ... 8000;
# give --thermalize 12000 for the 0.5 default itself)
VARIANTS = {
    # the default of 0.4 (buffer 2000 whatever the thermalization; run it with --thermalize 4000)
    "v0.4-default": {"training": {"buffer_size": 2000}},
    "exact": {"run": {"sampler": "exact"}},
    # the exact sampler's own step size (its default is δ = 0.5): for a fair exact row
    "exact-d0.25": {"run": {"sampler": "exact", "step_size": 0.25}},
    "exact-d1": {"run": {"sampler": "exact", "step_size": 1.0}},
    "exact-d2": {"run": {"sampler": "exact", "step_size": 2.0}},
    "default": {},
    # the linear model with its defaults: the default kind below L = 10, and at every size up to 0.7
    # (since 0.8 "default" is kind = "downfolded" on a square lattice with 10 <= L <= 12 where it applies)
    "linear-default": {"effective_model": {"kind": "linear"}},
    # the defaults of 0.2 and 0.3: bond pairs of 2 shells at any separation (0.4: 4 shells within 2)
    "v0.3-default": {"effective_model": {"bond_shells": 2, "bond_range": 0.0}},
    # kind = "transformer" and nothing else: nested SLMC with its defaults
    # (since 0.4.1 its head and inner model have the linear default's bond pairs, 4 shells within 2)
    "transformer": {"effective_model": {"kind": "transformer"}},
    # (since 0.4.2 one training pass per round; 0.4.1 had 30)
    "v0.4.1-transformer": {"effective_model": {"kind": "transformer"}, "training": {"epochs": 30}},
    # kind = "transformer" alone up to 0.4.0: 2 bond shells at any range in its head and inner model
    "v0.4.0-transformer": {"effective_model": {"kind": "transformer", "bond_shells": 2, "bond_range": 0.0},
                           "training": {"epochs": 30}},
    # the defaults before version 0.2: 3 shells, energy loss, a round every 20 steps, N updates of δ = 0.5
    "v0.1-default": {"effective_model": {"shells": 3, "bond_shells": 0}, "slmc": {"local_updates": 0},
                     "run": {"step_size": 0.5}, "training": {"loss": "energy", "every": 20, "buffer_size": 5000}},
    # the Transformer in the inner chain (scheme = "plain", samplers/transformer_chain.py), windowed
    # so that an update's cost does not grow with N; its head as linear-bonds, path tuned
    "transformer-plain": {"effective_model": {"kind": "transformer", "shells": 8, "bond_shells": 2, "bond_range": 0.0,
                                              "layers": 1, "heads": 1, "block_shells": 1, "attention_shells": 1},
                          "slmc": {"scheme": "plain"},
                          "training": {"loss": "pair", "every": 1000, "buffer_size": 3000}},
    "transformer-plain-g": {"effective_model": {"kind": "transformer", "shells": 8, "bond_shells": 2, "bond_range": 0.0,
                                                "layers": 1, "heads": 2, "block_shells": 1, "attention_shells": 2,
                                                "gate_channels": 4},
                            "slmc": {"scheme": "plain"},
                            "training": {"loss": "pair", "every": 1000, "buffer_size": 3000}},
    # three-level SLMC: the downfolded model (models/downfolded.py) in the middle tests; since 0.7 their
    # number is tuned with the path; "downfolded-4": four per exact test (the default of 0.6)
    "downfolded": {"effective_model": {"kind": "downfolded"}},
    "downfolded-4": {"effective_model": {"kind": "downfolded"}, "slmc": {"middle_steps": 4}},
    "linear": {"effective_model": {"shells": 8}, "training": {"loss": "pair", "every": 500, "buffer_size": 2000}},
    "linear-or": {"effective_model": {"shells": 8}, "slmc": {"overrelax": 0.5},
                  "training": {"loss": "pair", "every": 500, "buffer_size": 2000}},
    "linear-bonds": {"effective_model": {"shells": 8, "bond_shells": 2, "bond_range": 0.0},
                     "training": {"loss": "pair", "every": 1000, "buffer_size": 3000}},
    "linear-bonds-or": {"effective_model": {"shells": 8, "bond_shells": 2, "bond_range": 0.0},
                        "slmc": {"overrelax": 0.5},
                        "training": {"loss": "pair", "every": 1000, "buffer_size": 3000}},
    "linear-bonds-auto": {"effective_model": {"shells": 8, "bond_shells": 2, "bond_range": 0.0},
                          "slmc": {"local_updates": "auto"},
                          "run": {"step_size": "auto"},
                          "training": {"loss": "pair", "every": 1000, "buffer_size": 3000}},
}


def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' (value as TOML) -> (section, key, value)."""
    import tomllib

    where, value = text.split("=", 1)
    section, key = where.split(".")
    return section, key, tomllib.loads(f"v = {value}")["v"]


def variant_config(L: int, point: str, changes: dict, thermalize: int, extra: list) -> str:
    """The configuration of one variant. Every variant but "default" (which names nothing) is
    a linear model unless it names its kind: they were written when that was the default at
    every size (since 0.8 it is not at 10 <= L <= 12)."""
    p = POINTS[point]
    sections = {"lattice": {"kind": "square", "L": L}, "model": dict(p["model"]),
                "temperatures": {"values": [p["T"]]}, "run": {"thermalize": thermalize, "measure": 1}}
    if changes:
        sections["effective_model"] = {"kind": "linear"}
    for name, values in changes.items():
        sections.setdefault(name, {}).update(values)
    for section, key, value in extra:
        sections.setdefault(section, {})[key] = value
    return to_toml(sections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--point", choices=POINTS, default="reference")
    ap.add_argument("--variants", nargs="+", default=["exact", "default", "linear", "linear-or"],
                    help=f"of {', '.join(VARIANTS)}; NAME/TAG is NAME again, told apart by --set")
    ap.add_argument("--set", nargs="*", default=[], metavar="VARIANT:SECTION.KEY=VALUE",
                    help="extra settings of one variant, e.g. linear-or:slmc.local_updates=256")
    ap.add_argument("--thermalize", type=int, default=5000, help="SLMC thermalization (training) steps")
    ap.add_argument("--exact-thermalize", type=int, default=100, help="exact sampler's thermalization sweeps")
    ap.add_argument("--measure", type=int, default=20000, help="measured SLMC steps per variant")
    ap.add_argument("--exact-measure", type=int, default=1000, help="measured sweeps of the exact sampler")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds the measurement is cut into")
    ap.add_argument("--exact-tau", type=float, metavar="SWEEPS",
                    help="τ_int(F) of the exact sampler from a long run, in sweeps (BENCHMARKS.md uses 9.5 at L = 8 "
                         "and 12.6 at L = 12 on the reference problem): its cost is then this τ_int × the sweep "
                         "timed here, instead of this run's own, often rough, τ_int, which its row still prints")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--series", metavar="DIR", help="append each variant's F/N and seconds per step, block by "
                    "block, to DIR/NAME.txt (kept if the run is stopped early)")
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        name, setting = item.split(":", 1)
        extra.setdefault(name, []).append(parse_override(setting))

    chains = {}
    for name in args.variants:
        exact = VARIANTS[name.split("/")[0]].get("run", {}).get("sampler") == "exact"  # its steps are sweeps
        cfg = parse(variant_config(args.L, args.point, VARIANTS[name.split("/")[0]],
                                   args.exact_thermalize if exact else args.thermalize, extra.get(name, [])))
        beta = 1.0 / cfg.temperatures.values[0]
        rep, learner = build_slot(cfg, build_physics(cfg), beta, np.random.default_rng(args.seed))
        t0 = time.perf_counter()
        tuner = build_tuner(cfg, rep.physics.lattice.N)
        for k in range(cfg.run.thermalize):
            if tuner is None:
                solo_step(rep, learner) if learner is not None else rep.step()
                continue
            tuned_step(rep, tuner, k, lambda: collect(rep, learner))  # as run_loop.thermalize does
            train_alone(rep, learner)
        if tuner is not None:
            rep.set_path(*tuner.chosen)
        print(f"# {name}: thermalized {cfg.run.thermalize} steps in {time.perf_counter() - t0:.0f} s; "
              f"{rep.path[0]} local updates of size {rep.path[1]}"
              + (f" and {rep.path[2]} middle tests" if rep.path[2] > 1 else "") + " per step"
              + (" (tuned)" if tuner is not None else "") + f", overrelax {cfg.slmc.overrelax}", flush=True)
        steps = args.exact_measure if exact else args.measure
        chains[name] = {"rep": rep, "exact": exact, "block": max(1, steps // args.rounds), "F": [], "F_recycled": [], "m": [],
                        "spins_msd": [],
                        "seconds": [], "tests": 0, "accepted": 0, "log_ratio": [], "N": rep.physics.lattice.N}
    for _ in range(args.rounds):
        for name, c in chains.items():
            rep = c["rep"]
            start = time.perf_counter()
            for _ in range(c["block"]):
                before, f_before = rep.state.spins, rep.sampler.free_energy(rep.state)
                info = rep.step()
                c["F"].append(rep.sampler.free_energy(rep.state))
                # waste recycling: E[F after the step | x, y] = a F(y) + (1 - a) F(x), a the exact
                # test's acceptance probability (F(x) where no exact test ran)
                a = np.exp(min(info.log_ratio, 0.0)) if np.isfinite(info.log_ratio) else 0.0
                c["F_recycled"].append(a * info.proposal_free_energy + (1 - a) * f_before if a > 0 else f_before)
                c["m"].append(np.linalg.norm(rep.state.spins.mean(axis=0)))
                c["spins_msd"].append(np.sum((rep.state.spins - before) ** 2) / c["N"])
                c["tests"] += info.n_tests
                c["accepted"] += info.n_accepted
                if np.isfinite(info.log_ratio):
                    c["log_ratio"].append(info.log_ratio)
            c["seconds"].append((time.perf_counter() - start) / c["block"])
            if args.series:
                with open(f"{args.series}/{name.replace('/', '_')}.txt", "a") as out:
                    out.write(f"# block of {c['block']} steps, {c['seconds'][-1]:.6f} s per step\n")
                    out.writelines(f"{f / c['N']:.12f}\n" for f in c["F"][-c["block"]:])

    print(f"L = {args.L}, point {args.point} {POINTS[args.point]}, seed {args.seed}"
          + (f"; exact/this from the exact sampler's τ_int(F) = {args.exact_tau} sweeps" if args.exact_tau else ""))
    print(f"{'variant':<18} {'acc':>6} {'F/N':>22} {'tau_int':>8} {'ms/step':>9} {'cost ms':>9} {'exact/this':>10} "
          f"{'dF²/N²':>9} {'dS²':>8} {'|m|':>6} {'steps/tau':>9} {'sigma':>6} {'recycled':>8} {'tau_stay':>8} "
          f"{'tau_ar1':>8}")
    cost_exact = None
    rows = []
    for name, c in chains.items():
        F = np.array(c["F"]) / c["N"]
        e = estimate(F)
        sec = float(np.median(c["seconds"]))
        cost = e.tau * sec
        if name.split("/")[0] == "exact":
            cost = cost_exact = (args.exact_tau or e.tau) * sec  # the cost column then uses exact_tau too
        rows.append((name, c, F, e, sec, cost))
    for name, c, F, e, sec, cost in rows:
        ratio = f"{cost_exact / cost:10.1f}" if cost_exact else f"{'':>10}"
        rough = "" if len(F) >= 500 * e.tau else " rough"
        sigma = f"{np.std(c['log_ratio']):6.3f}" if c["log_ratio"] else f"{'':>6}"
        print(f"{name:<18} {c['accepted'] / max(c['tests'], 1):6.3f} {e.mean:12.6f} ± {e.error:.6f} {e.tau:8.1f} "
              f"{sec * 1e3:9.3f} {cost * 1e3:9.2f} {ratio} {np.mean(np.diff(F) ** 2):9.2e} "
              f"{np.mean(c['spins_msd']):8.4f} {np.mean(c['m']):6.3f} {len(F) / e.tau:9.0f} {sigma} "
              f"{recycled_cost(c, e):8.3f} {tau_estimates(c, F)}{rough}")


def tau_estimates(chain: dict, F: np.ndarray) -> str:
    """The columns tau_stay and tau_ar1 of an SLMC row; blank for the exact sampler, whose
    step (a sweep) nearly always moves."""
    if chain["exact"]:
        return f"{'':>8} {'':>8}"
    return f"{stay_tau(np.array(chain['spins_msd']) > 0):8.2f} {4 * np.var(F) / np.mean(np.diff(F) ** 2) - 1:8.2f}"


def stay_tau(moved: np.ndarray) -> float:
    """τ_int of an independence sampler from how long its chain stays put: Σ ℓ² / Σ ℓ over
    the stays' lengths ℓ (steps from one move to the next), the mean length of the stay a
    random step falls in. For stays geometric with a state's chance α to leave, that is
    2 E_π[1/α] - 1, the closed form of slmc_hpc.stats.independence_sampler; it sees the rare
    long stays that the mean squared jump averages away, and misses slow drifts of F through
    moves that do not make it forget (short paths)."""
    if not len(moved):
        return float("nan")
    edges = np.flatnonzero(np.r_[True, moved[1:], True])  # a stay begins at the first step and at each move
    lengths = np.diff(edges).astype(float)
    return float(np.sum(lengths ** 2) / np.sum(lengths))


def recycled_cost(chain: dict, plain) -> float:
    """(error of F/N's mean with waste recycling / plain error)²: the cost per independent
    sample of the recycled estimator against the plain one (Frenkel, PNAS 101, 17571 (2004)).
    About 1 for the exact sampler, whose steps record no single exact test (its recycled
    series is F one step late)."""
    if plain.error == 0:
        return float("nan")
    return (estimate(np.array(chain["F_recycled"]) / chain["N"]).error / plain.error) ** 2


if __name__ == "__main__":
    main()
