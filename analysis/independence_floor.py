#!/usr/bin/env python3
"""The least τ_int an SLMC chain can have for a given spread σ of its exact test's log-ratio.

Where the inner path is long enough that a proposal forgets where it started, SLMC is an
independence sampler: proposals drawn from exp(-β E_eff), accepted with
min(1, w(S') / w(S)), w = exp(-β (F - E_eff)). If log w is Gaussian with standard deviation
s over the proposals, the log-ratio of two independent proposals, which the chain's σ
measures (benchmark_sampler.py), has σ = √2 s. This script prints the closed form for an
observable uncorrelated with w (slmc_hpc.stats.independence_sampler, which the report uses),
and runs that chain on synthetic Gaussian log-weights for observables whose correlation with
log w is ρ (F's residual after a least-squares fit is correlated with F: ρ > 0). It says how
far τ_int can fall by a longer path alone, and what σ a target τ_int needs.

    python analysis/independence_floor.py --sigma 0.4 0.6 0.8 1.0 1.2 1.6 --rho 0 0.3 0.6
"""

from __future__ import annotations

import argparse

import numpy as np

from slmc_hpc.stats import independence_sampler, tau_int


def independence_chain(log_w: np.ndarray, obs: np.ndarray, log_u: np.ndarray) -> tuple[np.ndarray, float]:
    """The observable along the independence sampler over the proposals (log_w, obs), and
    the fraction of steps that moved."""
    chain = np.empty_like(obs)
    current, moved = 0, 0
    chain[0] = obs[0]
    for k in range(1, len(obs)):
        if log_u[k] < log_w[k] - log_w[current]:
            current, moved = k, moved + 1
        chain[k] = obs[current]
    return chain, moved / (len(obs) - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0, 1.2, 1.6],
                   help="spread of the log-ratio of two proposals (the chain's sigma)")
    p.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.3, 0.6],
                   help="correlation of the observable with log w")
    p.add_argument("--steps", type=int, default=200000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("sigma  acceptance  tau (closed form, rho=0)  simulated: acceptance  " + "  ".join(f"tau(rho={r:g})" for r in args.rho))
    for sigma in args.sigma:
        s = sigma / np.sqrt(2)
        log_w, noise, log_u = s * rng.standard_normal(args.steps), rng.standard_normal(args.steps), np.log(rng.random(args.steps))
        taus = []
        for rho in args.rho:
            chain, moved = independence_chain(log_w, rho * log_w / s + np.sqrt(1 - rho**2) * noise, log_u)
            taus.append(tau_int(chain[1000:]))
        acceptance, tau = independence_sampler(sigma)
        print(f"{sigma:5.2f}  {acceptance:10.3f}  {tau:24.2f}  {moved:21.3f}  " + "  ".join(f"{t:11.2f}" for t in taus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
