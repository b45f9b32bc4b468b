"""Reading a run's results back from its HDF5 file (the layout of output.py): the effective
models a run trained, rebuilt from the stored configuration and parameter vectors."""

from __future__ import annotations

from pathlib import Path

import h5py
import torch

from .assemble import build_linear, build_network, build_physics
from .config import ConfigError, parse
from .models import LinearModel
from .models.downfolded import DownfoldedModel
from .models.transformer import TransformerModel
from .output import FORMAT


def read_model(path: str | Path, slot: int = 0, inner: bool = False):
    """The frozen effective model of a slot from a run file, rebuilt from the stored
    configuration and parameter vector: a LinearModel, a DownfoldedModel or a TransformerModel at
    that slot's β.
    ``inner``: nested SLMC's inner linear model of that slot instead."""
    with h5py.File(path, "r", locking=False) as f:  # also while the run still writes it
        if f.attrs.get("format") != FORMAT:
            raise ConfigError(f"{str(path)!r} is not an {FORMAT} file")
        kind = f["model"].attrs["kind"]
        cfg = parse(f.attrs["config"], legacy=True)
        if inner and "inner_parameters" not in f["model"]:
            raise ConfigError(f"{str(path)!r} holds no inner model (only nested SLMC runs store one; "
                              f"older files never do)")
        params = f["model/inner_parameters" if inner else "model/parameters"][slot]
        T = float(f["temperatures"][slot])
        beta_ref = f["model"].attrs.get("beta_ref")
    lattice = build_physics(cfg).lattice
    if kind == "linear" or inner:
        shape = build_linear(cfg, lattice, inner)
        # files written before linear models had bond-pair terms ignored bond_shells: E_0 and J_n only
        if len(params) != shape.n_parameters:
            shape = LinearModel.zeros(lattice, shape.n_shells)
        return shape.with_parameters(params)
    if kind == "downfolded":
        return DownfoldedModel(build_physics(cfg), 1.0 / T, build_linear(cfg, lattice).with_parameters(params))
    if kind == "transformer":
        net = build_network(cfg, lattice, float(beta_ref))
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.as_tensor(params, dtype=net.wq.dtype), net.parameters())
        return TransformerModel.frozen(net, 1.0 / T)
    raise ConfigError(f"{str(path)!r} holds no effective model (model kind {kind!r})")
