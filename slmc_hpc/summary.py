"""The end-of-run summary: per temperature slot, acceptance, F/N and |m| with binned errors
(bins as the report's, stats.n_bins) and τ_int(F) beside the floor its model accuracy sets
(stats.independence_sampler, from the exact test's log-ratios), read back from the rows just written, with
a mark where the run is too short to trust them (stats.is_rough); per slot pair, the exchange acceptance;
the round trips and the up-moving fraction of the tempering ladder. Goes to /summary and to
the log."""

from __future__ import annotations

import numpy as np

from .ladder import barrier, replica_warning, suggested_replicas
from .samplers import AcceptanceCounts
from .stats import ROUGH_TAUS, estimate, independence_sampler, is_rough, n_bins, slowest, tau_int


def summarize(out, n_sites: int, temperatures, counts: list[AcceptanceCounts], seconds_per_step: float,
              trips, log, comm) -> None:
    """Per-slot means and errors from the rows just written (``counts``: the measured exact
    and middle tests of each slot, summed over ranks); computed identically on every rank,
    because creating the /summary datasets is collective."""
    comm.barrier()
    seconds_per_step = float(np.mean(comm.allgather(seconds_per_step)))
    if out.file is None:  # gathered output: rank 0 alone reads and writes the summary
        return
    summary = {k: [] for k in ("acceptance", "middle_acceptance", "moved", "free_energy_per_site",
                               "free_energy_per_site_error", "abs_magnetization", "abs_magnetization_error",
                               "tau_free_energy", "tau_floor", "seconds_per_step")}
    for slot, T in enumerate(temperatures):
        F = out.file["measure/free_energy"][slot] / n_sites
        m = np.linalg.norm(out.file["measure/magnetization"][slot], axis=-1)
        # bins as the report's (tables.py): each 20 τ_int of the slower series where the run allows
        tau_F, tau_m = tau_int(F), tau_int(m)
        tau_max = slowest([tau_F, tau_m])
        bins = n_bins(len(F), tau_max)
        eF, em = estimate(F, bins), estimate(m, bins)
        rough = ""
        if is_rough(len(F), tau_F, tau_max, bins):
            measured = f"{len(F) / tau_F:.0f} τ_int(F)" if np.isfinite(tau_F) else "τ_int(F) undetermined"
            rough = f"  (rough: {measured}, want {ROUGH_TAUS})"  # τ_int and the errors read low
        c = counts[slot]
        moved = float(np.mean(out.file["measure/accepted"][slot]))
        # the τ_int that independent proposals at this model accuracy would have (NaN without SLMC tests)
        ratio = out.file["measure/exact_log_ratio"][slot]
        ratio = ratio[np.isfinite(ratio)]
        floor = independence_sampler(float(np.std(ratio)))[1] if len(ratio) > 1 else float("nan")
        for key, v in zip(summary, (c.acceptance, c.middle_acceptance, moved, eF.mean, eF.error, em.mean, em.error,
                                    eF.tau, floor, seconds_per_step)):
            summary[key].append(v)
        log(f"T={T:<8.4g} acceptance {c.acceptance:.3f}  F/N = {eF.mean:.6f} ± {eF.error:.6f}  "
            f"|m| = {em.mean:.4f} ± {em.error:.4f}  tau_int(F) = {eF.tau:.1f} steps"
            + (f" (floor {floor:.1f})" if np.isfinite(floor) else "") + rough)
    if out.file["tempering/accepted"].shape[0]:
        acc = out.file["tempering/accepted"][:]
        pair = [float(np.mean(acc[acc[:, p] >= 0, p])) if np.any(acc[:, p] >= 0) else float("nan")
                for p in range(acc.shape[1])]
        summary["pair_acceptance"] = pair
        summary["round_trips"] = trips.completed
        summary["up_fraction"] = trips.up_fraction()
        lam = barrier(1 - np.asarray(pair))
        summary["barrier"] = lam
        summary["suggested_replicas"] = suggested_replicas(lam) or 0
        log("exchange acceptance per pair: " + " ".join(f"{a:.2f}" for a in pair)
            + f"; round trips {int(trips.completed.sum())}; communication barrier Λ ≈ {lam:.2f}, about "
            f"{suggested_replicas(lam)} replicas suggested (≈ 2Λ)")
        warning = replica_warning(len(temperatures), lam)
        if warning:
            log(f"slmc-hpc: warning: {warning}")
    out.write_summary(summary)
