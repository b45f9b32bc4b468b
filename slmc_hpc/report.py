"""``slmc-hpc report RUN.h5 [-o DIR]``: what a run found, written to a directory:

    report.html                 self-contained (figures embedded), opens in any browser
    report.md + *.png           the same content as Markdown with PNG files
    thermodynamics.csv, tempering_pairs.csv, tempering_slots.csv, training.csv, couplings.csv, accuracy.csv, report.json

The tables come from tables.load (their conventions are stated there); this module only
draws and writes them.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import ConfigError  # noqa: E402
from .tables import RunTables, exchange_rounds, load  # noqa: E402

# an electron-number spread above this marks levels at the Fermi level (a closed shell reads
# about 0: 1e-7 at L = 6, T = 0.02 on the reference problem; open ones 0.4-0.7)
OPEN_SHELL_SD = 0.1
# τ_int(F) above this many times the independent-proposal reference: the path is short (the
# tuned chains at L = 8-12 read 0.7-2.0x, analysis/BENCHMARKS.md)
FLOOR_RATIO = 2.0

# (column, axis label) of the thermodynamics figure, in panel order
PANELS = [("F_per_site", "F/N"), ("E_per_site", "E/N"), ("C_per_site", "C/N (fixed μ)"),
          ("abs_m", "⟨|m|⟩"), ("chi", "χ = βN(⟨m²⟩ − ⟨|m|⟩²)"), ("binder_m", "Binder ⟨m⁴⟩/⟨m²⟩² of m"),
          ("Sq_peak", "S(q) peak"), ("binder_q", "Binder of the S(q)-peak order parameter"),
          ("nn_SS", "nearest-neighbour S·S"), ("filling", "filling")]


class Progress:
    """Prints a line per stage to stderr once the report has taken more than ``after`` seconds."""

    def __init__(self, after: float = 2.0):
        self.start, self.after = time.monotonic(), after

    def __call__(self, what: str) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed > self.after:
            print(f"report: {what} ({elapsed:.0f} s)", file=sys.stderr, flush=True)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _thermodynamics_figure(run: RunTables, path: Path) -> None:
    t = run.thermodynamics
    panels = [(c, label) for c, label in PANELS if c in t]
    cols = 3
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(12, 3.2 * ((len(panels) + 2) // 3)),
                             squeeze=False)
    for ax, (column, label) in zip(axes.flat, panels):
        err = t[f"{column}_err"] if f"{column}_err" in t else None
        ax.errorbar(t["T"], t[column], yerr=err, marker="o", capsize=3)
        ax.set_xlabel("T")
        ax.set_ylabel(label)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{run.path.name}: per temperature" + (" (partial run)" if run.partial else ""))
    _save(fig, path)


def _structure_factor_figure(run: RunTables, path: Path) -> bool:
    if not run.structure_factors:
        return False
    maps = sorted(run.structure_factors.items())
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.2), squeeze=False)
    L = run.lattice.L
    for ax, (T, sq) in zip(axes.flat, maps):
        if sq.ndim == 1:
            ax.plot(2 * np.arange(L) / L, sq, marker="o")
            ax.set_xlabel("q / π")
        else:
            plane = sq if sq.ndim == 2 else sq[..., 0]  # cubic: the q_z = 0 plane
            centres = 2 * np.fft.fftshift(np.fft.fftfreq(L))  # q/π of the pixels after fftshift (odd L too)
            edge = (centres[0] - 1 / L, centres[-1] + 1 / L)
            image = ax.imshow(np.fft.fftshift(plane).T, origin="lower", extent=edge + edge, cmap="viridis")
            fig.colorbar(image, ax=ax, shrink=0.8)
            ax.set_xlabel("q_x / π")
            ax.set_ylabel("q_y / π")
        ax.set_title(f"S(q), T = {T:.4g}")
    _save(fig, path)
    return True


def _tempering_figure(run: RunTables, path: Path, history: np.ndarray) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    p, s = run.pairs, run.slots
    if len(p):
        axes[0].plot(np.sqrt(p["T_low"] * p["T_high"]), p["acceptance"], marker="o")
    axes[0].set_xlabel("T (pair, geometric mean)")
    axes[0].set_ylabel("exchange acceptance")
    axes[1].plot(s["T"], s["up_fraction"], marker="o")
    axes[1].set_xlabel("T")
    axes[1].set_ylabel("up-moving fraction f(T)")
    for replica in range(history.shape[1] if history.ndim == 2 else 0):
        axes[2].plot(history[:, replica], lw=0.8)
    axes[2].set_xlabel("exchange round")
    axes[2].set_ylabel("slot (0 = lowest T)")
    axes[2].set_title("replica flow")
    _save(fig, path)


def _training_figure(run: RunTables, path: Path) -> bool:
    t = run.training
    if not len(t):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for T, rows in t.groupby("T"):
        axes[0].semilogy(rows["step"], rows["train_loss"], marker=".", label=f"T={T:.4g} train")
        axes[0].semilogy(rows["step"], rows["validation_loss"], ls="--", label=f"T={T:.4g} validation")
        axes[1].plot(rows["step"], rows["acceptance"], marker=".", label=f"T={T:.4g} exact test")
        if np.isfinite(rows["middle_acceptance"]).any():
            axes[1].plot(rows["step"], rows["middle_acceptance"], ls="--", label=f"T={T:.4g} middle test")
    axes[0].set_xlabel("thermalization step")
    axes[0].set_ylabel("per-site MSE")
    axes[1].set_xlabel("thermalization step")
    axes[1].set_ylabel("acceptance since the previous round")
    for ax in axes:
        ax.legend(fontsize=6)
    _save(fig, path)
    return True


def _couplings_figure(run: RunTables, path: Path) -> bool:
    c = run.couplings
    if not len(c):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    colors = dict(zip(sorted(c["T"].unique()), plt.cm.viridis(np.linspace(0, 0.9, c["T"].nunique()))))
    styles = {"linear": "-", "inner linear": "-", "transformer head": ":"}
    for (T, model), rows in c.groupby(["T", "model"]):
        axes[0].plot(rows["distance"], rows["J_learned"], marker="o", ls=styles[model], color=colors[T],
                     label=f"T={T:.4g} {model}")
    for T, rows in c.drop_duplicates(["T", "shell"]).groupby("T"):
        axes[1].plot(rows["distance"], rows["J_rkky"], marker="s", ls="--", color=colors[T], label=f"T={T:.4g}")
    axes[0].set_title("learned J_n")
    axes[1].set_title(f"second order in J (RKKY-like) at J = {run.config.model.J:g}")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("distance")
        ax.set_ylabel("J_n (E_eff = E_0 - Σ J_n Σ S_i·S_j)")
        ax.legend(fontsize=6)
    _save(fig, path)
    return True


def _accuracy_figure(run: RunTables, path: Path) -> bool:
    import h5py

    from .tables import model_errors

    if not len(run.accuracy):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    N = run.lattice.N
    with h5py.File(run.path, "r", locking=False) as f:
        for r, T in enumerate(f["temperatures"][:]):
            n = int(run.measured[r])
            F = f["measure/free_energy"][r, :n] / N
            E = f["measure/effective_energy"][r, :n] / N
            axes[0].plot(F - F.mean(), E - E.mean(), ".", ms=2, alpha=0.4, label=f"T={T:.4g}")
            _, log_ratio, over = model_errors(f, r, n, 1.0 / T)
            if len(log_ratio) > 1:
                axes[1].hist(log_ratio, bins=50, histtype="step", density=True, label=f"T={T:.4g}")
                axes[1].set_xlabel(f"exact-test log-ratio -β(ΔF - ΔE_eff) over {over}")
    lim = axes[0].get_xlim()
    axes[0].plot(lim, lim, color="grey", lw=0.8)
    axes[0].set_xlabel("F/N - mean (measured configurations)")
    axes[0].set_ylabel("E_eff/N - mean")
    axes[0].set_title("parity (held out: measurement is never trained on)")
    axes[1].set_ylabel("density")
    for ax in axes:
        ax.legend(fontsize=7, markerscale=4)
    _save(fig, path)
    return True


def pair_distances(lattice) -> np.ndarray:
    """(N, N) minimum-image distance between every two sites."""
    d = lattice.coords[None, :, :] - lattice.coords[:, None, :]
    d = (d + lattice.L // 2) % lattice.L - lattice.L // 2
    return np.sqrt((d**2).sum(axis=-1))


def _attention_figure(run: RunTables, path: Path, site: int = 0) -> str | None:
    """Each layer's and head's attention from ``site`` on the lowest temperature's last
    snapshot, drawn on the lattice, and the mean attention against distance. Needs torch
    (the network). Returns "" when drawn, None when the model has no attention, and why not
    when it cannot draw."""
    if run.config.effective_model.kind != "transformer" or not run.config.effective_model.layers:
        return None
    try:
        from .models.transformer import attention_weights
        from .results import read_model
    except ImportError as exc:
        return f"attention maps need torch ({exc})"
    import h5py

    with h5py.File(run.path, "r", locking=False) as f:
        k = int(f["snapshots/n_written"][0])
        if k == 0:
            return "attention maps need a stored snapshot"
        spins = f["snapshots/spins"][0, k - 1]
        T = float(f["temperatures"][0])
    weights = attention_weights(read_model(run.path, 0).net, spins)  # (layers, heads, N, N)
    layers, heads = weights.shape[:2]
    lattice = run.lattice
    fig, axes = plt.subplots(layers, heads + 1, figsize=(3.3 * (heads + 1), 3.0 * layers), squeeze=False)
    distance = pair_distances(lattice)
    shells = np.unique(np.round(distance, 9))
    for layer in range(layers):
        for h in range(heads):
            ax = axes[layer, h]
            row = weights[layer, h, site]
            if lattice.dim == 1:
                ax.plot(np.arange(lattice.N), row, marker="o")
            else:
                grid = row.reshape(lattice.shape)
                plane = grid if lattice.dim == 2 else grid[..., 0]
                image = ax.imshow(np.roll(plane, (lattice.L // 2,) * 2, axis=(0, 1)).T, origin="lower", cmap="magma")
                fig.colorbar(image, ax=ax, shrink=0.8)
            ax.set_title(f"layer {layer + 1}, head {h + 1}: a from site {site}", fontsize=9)
        ax = axes[layer, heads]
        for h in range(heads):
            mean = [weights[layer, h][np.isclose(distance, d)].mean() for d in shells]
            ax.plot(shells, mean, marker="o", label=f"head {h + 1}")
        ax.set_xlabel("distance |i - j|")
        ax.set_ylabel("mean a_ij")
        ax.legend(fontsize=7)
    fig.suptitle(f"attention on the last snapshot at T = {T:.4g} (site {site} at the centre)")
    _save(fig, path)
    return ""


def _floor_line(run: RunTables) -> str:
    """τ_int(F) beside the reference that the model's accuracy sets (accuracy's tau_floor), and
    what that says: well above it the inner path does not decorrelate the proposal (more local
    updates may pay); near it a longer path buys little, a more accurate model would."""
    if "tau_floor" not in run.accuracy or "F_per_site_tau" not in run.thermodynamics:
        return ""
    both = run.thermodynamics.merge(run.accuracy, on="T")
    both = both[np.isfinite(both["tau_floor"]) & np.isfinite(both["F_per_site_tau"])]
    if not len(both):
        return ""
    ratio = both["F_per_site_tau"] / both["tau_floor"]
    pairs = ", ".join(f"T = {T:.4g}: {tau:.1f} against {fl:.1f}" + (" (rough)" if rough else "")
                      for T, tau, fl, rough in zip(both["T"], both["F_per_site_tau"], both["tau_floor"],
                                                   both.get("rough", [False] * len(both))))
    line = (f"τ_int(F) against the τ_int of independent proposals at the model's accuracy (tau_floor, from the "
            f"measured log-ratio spread; a reference, not a strict bound): {pairs}.")
    long_ = both["T"][ratio > FLOOR_RATIO]
    if len(long_):
        return line + (" Where τ_int(F) is more than " + f"{FLOOR_RATIO:g}x the floor (T = "
                       + ", ".join(f"{T:.4g}" for T in long_) + ") the inner path does not decorrelate the "
                       "proposal: more [slmc] local_updates (nested SLMC and kind = \"downfolded\": middle_steps) "
                       "may pay. Near it, a longer path buys little.")
    return line + (f" All within {FLOOR_RATIO:g}x: a longer inner path would probably buy little; a more accurate "
                   "model would.")


def _summary_lines(run: RunTables) -> list[str]:
    lines = [f"Run file: `{run.path}`; lattice {run.config.lattice.kind} L = {run.config.lattice.L}; "
             f"sampler {run.config.run.sampler}; effective model {run.config.effective_model.kind} "
             f"({run.n_parameters} parameters)."]
    if run.partial:
        lines.append(f"**Partial run**: measured steps written per temperature {run.measured.tolist()} of "
                     f"{run.config.run.measure}; every table covers only those.")
    rough = run.thermodynamics.get("rough")
    if rough is not None and rough.any():
        lines.append("Rows marked rough are shorter than 500 τ_int(F): their τ_int and error bars read low.")
    # the lowest temperature only: at higher T levels lie within a few T of μ in any case, while
    # at the lowest it depends on L and μ (a closed or open shell) and sets how well SLMC can do
    t = run.thermodynamics
    coldest = t.loc[t["T"].idxmin()] if "electrons_sd" in t and len(t) else None
    if coldest is not None and coldest["electrons_sd"] > OPEN_SHELL_SD:
        lines.append(f"At the lowest temperature (T = {coldest['T']:.4g}) the electron number fluctuates (standard "
                     f"deviation {coldest['electrons_sd']:.2f}): one-electron levels lie within a few T of μ. Their "
                     "occupation is a non-local part of the weight that no effective model follows (on the reference "
                     "problem at T = 0.02 it made the model's error per site 1.5-1.9x that where μ lies in a gap "
                     "between levels, at other L; analysis/BENCHMARKS.md).")
    floor = _floor_line(run)
    if floor:
        lines.append(floor)
    if np.isfinite(run.barrier):
        lines.append(f"Communication barrier Λ ≈ {run.barrier:.2f} (sum of the pair rejection rates); about "
                     f"{run.suggested_replicas} replicas suggested (≈ 2Λ, Syed et al. 2022); this run has "
                     f"{len(run.slots)}. Round trips: {int(run.slots['round_trips'].sum())} in "
                     f"{run.slots.attrs.get('exchange_rounds', 0)} exchange rounds ({run.round_trip_rate:.4f} per round).")
    if len(run.adaptation):
        last = run.adaptation.iloc[-1]
        lines.append(f"The ladder adapted itself in {len(run.adaptation)} rounds during thermalization (adapt = "
                     f"\"barrier\"); its last round estimated Λ ≈ {last['barrier']:.2f} with swap rejections "
                     f"{last['rejection_min']:.2f}-{last['rejection_max']:.2f} on T = {last['temperatures']}; measured at "
                     "T = " + " ".join(f"{t:.4g}" for t in run.thermodynamics["T"]) + ".")
    return lines


def write_report(path: str | Path, outdir: str | Path | None = None, progress=None) -> Path:
    """Write the report of run file ``path`` into ``outdir`` (default: next to the file,
    ``<stem>_report``); returns the directory. ConfigError for an unreadable file or an
    unwritable directory."""
    progress = progress or Progress()
    run = load(path)
    out = Path(outdir) if outdir is not None else Path(path).with_name(Path(path).stem + "_report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(run, out, progress)
    except OSError as exc:  # an unwritable or existing non-directory output path
        raise ConfigError(f"cannot write the report to {str(out)!r}: {exc}") from None
    return out


def _write(run: RunTables, out: Path, progress) -> None:
    import h5py

    progress("tables read")
    run.thermodynamics.to_csv(out / "thermodynamics.csv", index=False)
    run.pairs.to_csv(out / "tempering_pairs.csv", index=False)
    run.slots.to_csv(out / "tempering_slots.csv", index=False)
    run.training.to_csv(out / "training.csv", index=False)
    run.couplings.to_csv(out / "couplings.csv", index=False)
    run.accuracy.to_csv(out / "accuracy.csv", index=False)
    meta = {"file": str(run.path), "partial": run.partial, "measured": run.measured.tolist(),
            "barrier": run.barrier if np.isfinite(run.barrier) else None,  # strict JSON has no NaN
            "round_trip_rate": run.round_trip_rate if np.isfinite(run.round_trip_rate) else None,
            "suggested_replicas": run.suggested_replicas}
    (out / "report.json").write_text(json.dumps(
        {"run": meta, **{name: json.loads(getattr(run, name).to_json(orient="records"))
                         for name in ("thermodynamics", "pairs", "slots", "training", "couplings", "accuracy")}},
        indent=1))
    with h5py.File(run.path, "r", locking=False) as f:
        history = exchange_rounds(f, int(run.measured.min()))
    figures = [("thermodynamics.png", "Thermodynamics per temperature")]
    _thermodynamics_figure(run, out / "thermodynamics.png")
    progress("thermodynamics drawn")
    if _structure_factor_figure(run, out / "structure_factor.png"):
        figures.append(("structure_factor.png", "Structure factor S(q) on the Brillouin zone"))
    _tempering_figure(run, out / "tempering.png", history)
    figures.append(("tempering.png", "Tempering: exchange acceptance, up-moving fraction, replica flow"))
    if _training_figure(run, out / "training.png"):
        figures.append(("training.png", "Training: loss and acceptance per round"))
    if _couplings_figure(run, out / "couplings.png"):
        figures.append(("couplings.png", "Inside the model: couplings against distance"))
    if _accuracy_figure(run, out / "accuracy.png"):
        figures.append(("accuracy.png", "Inside the model: accuracy of E_eff against F"))
    notes = []
    attention = _attention_figure(run, out / "attention.png")
    if attention == "":
        figures.append(("attention.png", "Inside the model: attention maps"))
    elif attention:
        notes.append(f"No attention maps: {attention}.")
    progress("figures drawn")
    _write_documents(run, out, figures, notes)


def _write_documents(run: RunTables, out: Path, figures: list[tuple[str, str]], notes: list[str]) -> None:
    intro = _summary_lines(run) + notes
    tables = [("Thermodynamics", run.thermodynamics), ("Tempering: pairs", run.pairs),
              ("Tempering: slots", run.slots), ("Model accuracy", run.accuracy)]
    md = ["# slmc-hpc report", ""] + [line + "  " for line in intro] + [""]
    for file, title in figures:
        md += [f"## {title}", "", f"![{title}]({file})", ""]
    for title, table in tables:
        md += [f"## {title}", "", table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False), ""]
    md += ["Tables as CSV: thermodynamics.csv, tempering_pairs.csv, tempering_slots.csv, training.csv, couplings.csv, accuracy.csv; "
           "all of them in report.json.", ""]
    (out / "report.md").write_text("\n".join(md))
    html = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>slmc-hpc report</title>",
            "<style>body{font-family:sans-serif;max-width:1300px;margin:auto} table{border-collapse:collapse;"
            "font-size:12px} td,th{border:1px solid #ccc;padding:2px 5px}</style></head><body>",
            "<h1>slmc-hpc report</h1>"] + [f"<p>{_html_text(line)}</p>" for line in intro]
    for file, title in figures:
        data = base64.b64encode((out / file).read_bytes()).decode()
        html += [f"<h2>{title}</h2>", f"<img alt='{title}' src='data:image/png;base64,{data}'>"]
    for title, table in tables:
        html += [f"<h2>{title}</h2>", table.to_html(index=False, float_format=lambda v: f"{v:.6g}")]
    html.append("</body></html>")
    (out / "report.html").write_text("\n".join(html))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401  (pandas' to_markdown needs it)
        return True
    except ImportError:
        return False


def _html_text(line: str) -> str:
    import html
    import re
    text = html.escape(line)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
