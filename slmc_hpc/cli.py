"""Command line: ``slmc-hpc run CONFIG.toml [--output PATH] [--overwrite] [--resume]``,
``slmc-hpc check CONFIG.toml``, ``slmc-hpc keys``.

Exit codes: 0 success; 1 an unexpected error (traceback shown); 2 bad input (configuration,
missing or damaged file, output exists, checkpoint of another run): one message naming the
problem, no traceback; 3 the run stopped on a numerical failure (training diverged): one
message, the output file closed with everything written so far; 75 stopped by SIGTERM or
SIGUSR1 after writing a checkpoint (job scripts requeue and rerun with --resume);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys

# One BLAS/OpenMP thread per process unless the user says otherwise: the matrices and
# networks are small, and two libraries each spinning threads on the same cores was measured
# 9x slower (nested SLMC, L = 6, 2 cores). Must happen before NumPy or PyTorch is imported.
# OpenBLAS and MKL read their own variables first, so they follow OMP_NUM_THREADS here.
_threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads)

from . import __version__
from .config import ConfigError, load
from .schema import DEPENDS, REQUIRED, SCHEMA
from .training.errors import TrainingError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NUMERICAL = 0, 1, 2, 3
EXIT_REQUEUE = 75  # sysexits EX_TEMPFAIL: checkpointed after a signal, run again with --resume


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slmc-hpc", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"slmc-hpc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a simulation described by a TOML configuration")
    r.add_argument("config", help="TOML configuration file")
    r.add_argument("--output", help="HDF5 output file (overrides [run] output)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("--resume", action="store_true",
                   help="continue from <output>.ckpt (start afresh if there is no output yet; "
                        "do nothing if the output is complete; with a larger [run] measure, "
                        "continue a complete run for more measured steps)")
    c = sub.add_parser("check", help="validate a configuration and print it with defaults filled in")
    c.add_argument("config")
    sub.add_parser("keys", help="print every configuration key with its type, default and help")
    rep = sub.add_parser("report", help="write a report of a run file (HTML, Markdown with PNGs, CSV, JSON)")
    rep.add_argument("file", help="the run's HDF5 output file (also one still running, or stopped)")
    rep.add_argument("-o", "--outdir", help="directory for the report (default: <file stem>_report next to it)")
    cmp = sub.add_parser("compare", help="several run files side by side per temperature (acceptance, tau_int, "
                                          "cost per independent sample, observables)")
    cmp.add_argument("files", nargs="+", help="run files")
    cmp.add_argument("--csv", help="also write the table to this CSV file")
    return p


def describe() -> str:
    """The configuration reference as text: every section, key, type, default and help."""
    lines = []
    for name, keys in SCHEMA.items():
        lines.append(f"[{name}]")
        for k in keys:
            default = ("(required)" if k.default is REQUIRED else "(unset)" if k.default is None
                       else "(see help)" if k.default is DEPENDS else repr(k.default))
            lines.append(f"  {k.name:<15} {k.kind:<13} {default:<10} {k.help}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    comm = None
    try:
        if args.command == "keys":
            print(describe())
            return EXIT_OK
        if args.command == "report":
            from .report import write_report  # pandas and matplotlib only for reports

            out = write_report(args.file, args.outdir)
            print(f"slmc-hpc: report written to {out}/report.html (and report.md, CSV, JSON)")
            return EXIT_OK
        if args.command == "compare":
            from .tables import compare

            table = compare(args.files)
            print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
            if args.csv:
                try:
                    table.to_csv(args.csv, index=False)
                except OSError as exc:
                    raise ConfigError(f"cannot write {args.csv!r}: {exc}") from None
            return EXIT_OK
        cfg = load(args.config)
        if args.command == "check":
            for name, section in cfg.sections.items():
                print(f"[{name}]", section.as_dict())
            return EXIT_OK
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: continue the run, or start again")
        from .driver import Interrupted, run  # heavy imports (h5py, emcee) only when running
        from .parallel.comm import abort_on_uncaught_exception, world

        comm = world()
        abort_on_uncaught_exception(comm)
        try:
            run(cfg, output=args.output, overwrite=args.overwrite, comm=comm, resume=args.resume)
        except Interrupted as exc:
            if comm.rank == 0:
                print(f"slmc-hpc: {exc}", file=sys.stderr, flush=True)
            return EXIT_REQUEUE
        return EXIT_OK
    except ConfigError as exc:
        return _fail(comm, f"slmc-hpc: error: {exc}", EXIT_BAD_INPUT)
    except TrainingError as exc:
        return _fail(comm, f"slmc-hpc: error: training failed: {exc}", EXIT_NUMERICAL)
    except KeyboardInterrupt:
        print("slmc-hpc: interrupted", file=sys.stderr)
        return 130


def _fail(comm, message: str, code: int) -> int:
    """Report a clear error. Under MPI the other ranks may be waiting in a collective, so the
    whole job is aborted with the code (never a hang)."""
    print(message, file=sys.stderr, flush=True)
    if comm is not None and comm.size > 1:
        comm.abort(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
