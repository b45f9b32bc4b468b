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

``--tries K ...`` also runs the multiple-proposal chain (Tjelmeland 2004; Calderhead, PNAS
111, 17408 (2014)): each step draws K - 1 fresh proposals and moves to one of them, j, with
probability w_j / (W - w_x), accepted with min(1, (W - w_x) / (W - w_j)) (W the sum over the K
states, x the current one; exact for inner chains reversible for exp(-β E_eff) when the K - 1
paths start from one intermediate state drawn from the current). It prints τ_int for each ρ
and the weight evaluations per independent sample, (K - 1) τ_int; K = 2 is plain SLMC.

    python analysis/independence_floor.py --sigma 0.4 0.6 0.8 1.0 1.2 1.6 --rho 0 0.3 0.6
    python analysis/independence_floor.py --sigma 1.2 1.85 --rho 0 0.6 --tries 2 3 5 9 --steps 400000
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


def multiple_proposal_chain(log_w: np.ndarray, obs: np.ndarray, u: np.ndarray, tries: int) -> np.ndarray:
    """The observable along the multiple-proposal chain (module docstring) over the proposals
    (log_w, obs) taken tries - 1 per step; u: two uniforms per step."""
    steps = len(obs) // (tries - 1)
    chain = np.empty(steps)
    cur_w, cur_obs = log_w[0], obs[0]
    for k in range(steps):
        lw = np.concatenate([[cur_w], log_w[k * (tries - 1):(k + 1) * (tries - 1)]])
        w = np.exp(lw - lw.max())
        others = w.sum() - w[0]
        j = 1 + min(np.searchsorted(np.cumsum(w[1:]), u[k, 0] * others), tries - 2)
        if u[k, 1] * (w.sum() - w[j]) < others:
            cur_w, cur_obs = lw[j], obs[k * (tries - 1) + j - 1]
        chain[k] = cur_obs
    return chain


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0, 1.2, 1.6],
                   help="spread of the log-ratio of two proposals (the chain's sigma)")
    p.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.3, 0.6],
                   help="correlation of the observable with log w")
    p.add_argument("--steps", type=int, default=200000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tries", type=int, nargs="*", default=[],
                   help="also the multiple-proposal chain with K states per step (K - 1 proposals), each K >= 2")
    args = p.parse_args(argv)
    if any(k < 2 for k in args.tries):
        p.error("--tries needs K >= 2")
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
        for tries in args.tries:
            u = rng.random((args.steps, 2))
            for rho in args.rho:
                chain = multiple_proposal_chain(log_w, rho * log_w / s + np.sqrt(1 - rho**2) * noise, u, tries)
                t = tau_int(chain[1000:])
                print(f"       multiple proposals, K = {tries}, rho = {rho:g}: tau_int {t:.2f} over {len(chain)} steps, "
                      f"{(tries - 1) * t:.2f} weight evaluations per independent sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
