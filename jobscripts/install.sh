#!/usr/bin/env bash
# Install everything slmc-hpc needs into ./.venv (or $VENV). Safe to rerun: each step checks
# first and skips what is already there.
#
#   bash jobscripts/install.sh            # run from the repository root
#
# As root on Debian/Ubuntu it apt-installs Open MPI and parallel HDF5 when they are missing.
# As a user on a cluster, load your site's MPI and parallel-HDF5 modules first (so that
# `mpicc` is on PATH and HDF5_DIR or pkg-config finds an MPI build of HDF5); without a
# parallel HDF5 it installs h5py without MPI (fine for single-process runs).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
log() { printf '[install] %s\n' "$*"; }

# What is missing, as Debian packages (a bare image may also lack a C compiler, which h5py
# needs, or venv support).
missing=()
command -v mpicc >/dev/null 2>&1 || missing+=(openmpi-bin libopenmpi-dev)
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists hdf5-openmpi 2>/dev/null; } \
    || missing+=(libhdf5-openmpi-dev pkg-config)
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]} from apt"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "not root, and these are missing: ${missing[*]}"
        log "on a cluster: load your MPI, parallel HDF5 (set HDF5_DIR) and Python modules first;"
        log "without a parallel HDF5 the install goes on with serial h5py."
    fi
fi

if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "error: $PYTHON is not a Python >= 3.11 with venv support; set PYTHON=/path/to/python3.11 (or newer)"
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

# Build prerequisites for h5py-with-MPI; must be in the venv because the build runs
# without isolation (with isolation pip compiles mpi4py from source: >20 GB of RAM).
if ! "$PY" -c 'import numpy, mpi4py, Cython, pkgconfig, setuptools' 2>/dev/null; then
    log "installing numpy, mpi4py and build tools"
    pip install numpy mpi4py 'cython>=3' pkgconfig 'setuptools>=77' wheel
fi

if ! "$PY" -c 'import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)' 2>/dev/null; then
    if command -v mpicc >/dev/null 2>&1 && { pkg-config --exists hdf5-openmpi 2>/dev/null || [ -n "${HDF5_DIR:-}" ]; }; then
        log "building h5py with MPI (a few minutes the first time; pip caches the wheel)"
        pkgname=()
        pkg-config --exists hdf5-openmpi 2>/dev/null && pkgname=(HDF5_PKGCONFIG_NAME=hdf5-openmpi)
        env CC=mpicc HDF5_MPI=ON "${pkgname[@]}" "$PY" -m pip --disable-pip-version-check -q \
            install --no-build-isolation --no-binary=h5py h5py
    elif ! "$PY" -c 'import h5py' 2>/dev/null; then
        log "WARNING: no parallel HDF5 found; installing serial h5py (rank-0 writer will be used)"
        pip install h5py
    fi
fi

# The CPU build of this exact version lies on the development machines' disk; any other
# spec makes pip download several GB of CUDA wheels.
if ! "$PY" -c 'import torch' 2>/dev/null; then
    log "installing torch==2.13.0 (CPU)"
    pip install torch==2.13.0
fi

# Reinstall the package only when its metadata changed (the install is editable: code
# changes need nothing).
stamp="$VENV/.slmc-hpc-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$PY" -c 'import slmc_hpc, pytest_mpi, matplotlib, pandas' 2>/dev/null; then
    log "installing slmc-hpc (editable) with test and analysis extras"
    pip install -e '.[test,analysis]'
    echo "$want" > "$stamp"
fi
"$PY" - <<'PY'
import h5py, mpi4py, numpy, torch
print(f"[install] ok: numpy {numpy.__version__}, torch {torch.__version__}, "
      f"mpi4py {mpi4py.__version__}, h5py {h5py.__version__} (mpi={h5py.get_config().mpi})")
PY
