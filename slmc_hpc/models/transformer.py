"""The SO(3)/O(3)-equivariant Transformer effective model (Nagai & Tomiya, JPSJ 93, 114007 (2024)).

Layers map the spins S (N, 3) to effective spins that rotate with the input; the energy is
the linear shell form on the effective spins (whole lattice, same units as F_β):

    E_eff[S] = E_0(β) - Σ_n J_n(β) Σ_<ij>_n S^eff_i · S^eff_j  [- Σ_o K_o(β) Σ_{(a,b) in o} b_a b_b]

One layer, for each head h (block spins: weights depend only on the distance shell d(i,k),
shell 0 being the site itself):

    Q_i = Σ_k wQ[h, d(i,k)] S_k,   K_i, V_i likewise          (linear in spins: equivariant)
    a_ij = softmax_j(Q_i · K_j)    over j within attention_shells of i, or all j ("global")
    S_i <- S_i + Σ_h Σ_j a^h_ij V^h_j
    with ``gate_channels`` C > 0, a gated (equivariant feed-forward) step on the result:
    U^c_i = Σ_k wU[c, d(i,k)] S_k,   g^c_i = tanh(Σ_c' A[c,c'] S_i·U^c'_i + b_c)
    S_i <- S_i + Σ_c g^c_i U^c_i,   then optionally S_i <- S_i / |S_i|

Attention alone is linear in the values, and on the reference problem it stalled after one
layer; the gates are scalar functions of invariants (dot products) multiplying vectors, so
they keep the equivariance and give depth something to build on (analysis/DEPTH_STUDY.md).

The optional bracket (``bond_shells`` > 0) adds the four-spin bond-pair terms of
models/bond_pairs.py to the head, on the effective spins.

Scores are dot products (O(3) invariant) and all site maps are functions of lattice distance
only, so translations and the point group permute the effective spins. Value weights start
at zero, so an untrained network is exactly the linear model of its head; training solves
the head by least squares at every step (see training.TorchTrainer).

β-conditioning (one network for all temperatures): J_n(β) = J_n + J'_n x and
E_0(β) = E_0 + E'_0 x with x = log(β / β_ref), and K_o(β) likewise; the attention layers
are shared.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import torch

from ..lattice import Lattice
from ..samplers.transformer_chain import TransformerForm
from .bond_pairs import (BondPairTables, bond_matrix, bond_pair_energy, bond_pair_kernel, bond_pair_sums,
                         bond_pair_tables, bond_values)


def shell_index(lattice: Lattice) -> np.ndarray:
    """(N, N) int: 0 on the diagonal, n for pairs at the n-th distance, from the lattice's shells."""
    n_dist = len(lattice.shell_distances)
    index = np.zeros((lattice.N, lattice.N), dtype=np.int64)
    for n, nbrs in enumerate(lattice.shell_neighbours(n_dist), start=1):
        rows = np.repeat(np.arange(lattice.N), nbrs.shape[1])
        index[rows, nbrs.ravel()] = n
    return index


class EquivariantTransformer(torch.nn.Module):
    def __init__(self, lattice: Lattice, layers: int, heads: int, block_shells: int,
                 attention_shells: int | None, shells: int, normalize: bool = False,
                 beta_ref: float = 1.0, dtype: torch.dtype = torch.float64, seed: int = 0,
                 bond_shells: int = 0, gate_channels: int = 0, bond_range: float = 0.0):
        super().__init__()
        self.lattice, self.normalize, self.beta_ref = lattice, normalize, beta_ref
        idx = torch.as_tensor(shell_index(lattice))
        n_dist = int(idx.max())
        if max(block_shells, shells, bond_shells) > n_dist or (attention_shells is not None and attention_shells > n_dist):
            raise ValueError(f"shell counts exceed the {n_dist} distinct distances of this lattice")
        # M_s for s = 0..block_shells (block spins) and 1..shells (head), as dense (., N, N)
        self.register_buffer("block", torch.stack([(idx == s).to(dtype) for s in range(block_shells + 1)]))
        self.register_buffer("pairs", torch.stack([(idx == s).to(dtype) for s in range(1, shells + 1)]))
        allowed = torch.ones_like(idx, dtype=torch.bool) if attention_shells is None else idx <= attention_shells
        self.register_buffer("mask", torch.where(allowed, 0.0, float("-inf")).to(dtype))
        # derived from the lattice, so not stored in state dicts (persistent=False)
        tables = bond_pair_tables(lattice, bond_shells, bond_range)
        self.bond_shells, self.bond_range, self.n_orbits = bond_shells, bond_range, tables.n_orbits
        for name in ("bonds", "slots", "orbit", "weight"):  # the (B, B) pair classes stay in the tables
            self.register_buffer(f"bp_{name}", torch.as_tensor(getattr(tables, name)), persistent=False)
        gen = torch.Generator().manual_seed(seed)
        shape = (layers, heads, block_shells + 1)
        self.wq = torch.nn.Parameter(0.5 * torch.randn(shape, generator=gen, dtype=dtype))
        self.wk = torch.nn.Parameter(0.5 * torch.randn(shape, generator=gen, dtype=dtype))
        self.wv = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        self.gate_channels = gate_channels
        if gate_channels:  # registered only when used, so older state dicts still load
            self.wu = torch.nn.Parameter(0.5 * torch.randn((layers, gate_channels, block_shells + 1),
                                                           generator=gen, dtype=dtype))
            # zero gates: the step starts as the identity (and A gets a gradient at once)
            self.gate_weight = torch.nn.Parameter(torch.zeros((layers, gate_channels, gate_channels), dtype=dtype))
            self.gate_bias = torch.nn.Parameter(torch.zeros((layers, gate_channels), dtype=dtype))
        # row 0: J_1..J_shells then K_1..K_n_orbits; row 1: their β-slopes
        self.couplings = torch.nn.Parameter(torch.zeros(2, shells + self.n_orbits, dtype=dtype))
        self.e0 = torch.nn.Parameter(torch.zeros(2, dtype=dtype))  # E_0, E'_0

    @property
    def n_layers(self) -> int:
        return self.wq.shape[0]

    def make_identity(self) -> None:
        """Zero the value weights and gates: every layer becomes the identity, and the
        network the model of its head on the raw spins."""
        with torch.no_grad():
            for p in (self.wv,) + ((self.gate_weight, self.gate_bias) if self.gate_channels else ()):
                p.zero_()

    def map_weights(self) -> torch.Tensor:
        """(layers, 3 H + C, block_shells + 1): the shell weights w[h, s] of Q (heads 0..H-1),
        K, V, then the gate channels' U."""
        return torch.cat([self.wq, self.wk, self.wv] + ([self.wu] if self.gate_channels else []), dim=1)

    def block_maps(self) -> torch.Tensor:
        """(layers, 3 H + C, N, N): rows Σ_s w[h, s] M_s of map_weights()."""
        w = self.map_weights()
        n_sites = self.block.shape[-1]
        return (w @ self.block.reshape(self.block.shape[0], -1)).reshape(w.shape[:2] + (n_sites, n_sites))

    def effective_spins(self, spins: torch.Tensor, maps: torch.Tensor | None = None,
                        attention: list | None = None) -> torch.Tensor:
        """(B, N, 3) -> (B, N, 3) effective spins. ``maps`` = block_maps(), if already known;
        ``attention``: a list that receives each layer's weights a^h_ij, (B, H, N, N)."""
        maps = self.block_maps() if maps is None else maps
        heads = self.wq.shape[1]
        s = spins
        for layer in range(self.n_layers):
            q, k, v = _apply_maps(maps[layer, :3 * heads], s).split(heads, dim=1)  # each (B, H, N, 3)
            scores = q @ k.transpose(-1, -2) + self.mask  # (B, H, N, N), invariant
            weights = torch.softmax(scores, dim=-1)
            if attention is not None:
                attention.append(weights.detach())
            s = s + (weights @ v).sum(dim=1)
            if self.gate_channels:
                u = _apply_maps(maps[layer, 3 * heads:], s)  # (B, C, N, 3), from the attended spins
                gates = torch.tanh(torch.einsum("cd,bdn->bcn", self.gate_weight[layer], (u * s.unsqueeze(1)).sum(-1))
                                   + self.gate_bias[layer][:, None])
                s = s + (gates.unsqueeze(-1) * u).sum(dim=1)
            if self.normalize:
                s = s / s.norm(dim=-1, keepdim=True)
        return s

    def head_features(self, spins: torch.Tensor, beta: torch.Tensor | float,
                      maps: torch.Tensor | None = None) -> torch.Tensor:
        """D (B, 2 + 2 n_terms) with E_eff = D @ head_vector(): columns 1, x, -φ, -x φ, where
        φ = (φ_n, ψ_o): φ_n = Σ_<ij>_n Se_i·Se_j on the effective spins, ψ_o = Σ_{(a,b) in o}
        b_a b_b over bond pairs of class o, x = log(β/β_ref). The energy is linear in the
        head, which training exploits (see training.TorchTrainer)."""
        x = torch.log(torch.as_tensor(beta, dtype=spins.dtype) / self.beta_ref).expand(spins.shape[0])
        se = self.effective_spins(spins, maps)
        n_sites = se.shape[1]
        gram = (se @ se.transpose(-1, -2)).reshape(-1, n_sites * n_sites)  # Se_i·Se_j
        phi = 0.5 * gram @ self.pairs.reshape(-1, n_sites * n_sites).T
        if self.n_orbits:  # in chunks: the bond-field correlations are (chunk, T, T, N)
            phi = torch.cat([phi, torch.cat([self._bond_pair_sums(c) for c in se.split(256)])], dim=1)
        return torch.cat([torch.ones_like(x)[:, None], x[:, None], -phi, -x[:, None] * phi], dim=1)

    def _bond_pair_sums(self, se: torch.Tensor) -> torch.Tensor:
        """(B, n_orbits): ψ_o = Σ_{(a,b) in o} b_a b_b with b_a = Se_i·Se_j on bond a = {i, j}."""
        return bond_pair_sums(bond_values(se, self.bp_bonds), self.bp_slots, self.bp_orbit, self.bp_weight,
                              self.n_orbits, self.lattice.shape)

    def head_vector(self) -> torch.Tensor:
        """(E_0, E'_0, J_1.., K_1.., J'_1.., K'_1..) in the column order of head_features."""
        return torch.cat([self.e0, self.couplings[0], self.couplings[1]])

    def set_head(self, vector: torch.Tensor) -> None:
        n = self.couplings.shape[1]
        with torch.no_grad():
            self.e0.copy_(vector[:2])
            self.couplings.copy_(vector[2:].reshape(2, n))

    def forward(self, spins: torch.Tensor, beta: torch.Tensor | float,
                maps: torch.Tensor | None = None) -> torch.Tensor:
        """Whole-lattice E_eff for a batch of spins (B, N, 3) at β (scalar or (B,))."""
        return self.head_features(spins, beta, maps) @ self.head_vector()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def attention_weights(net: EquivariantTransformer, spins: np.ndarray) -> np.ndarray:
    """(layers, heads, N, N) attention weights a^h_ij of the network's forward pass on one
    configuration (N, 3): row i is where site i looks (sums to 1 within its window)."""
    captured = []
    with torch.no_grad():
        net.effective_spins(torch.as_tensor(np.asarray(spins)[None], dtype=net.wq.dtype), attention=captured)
    return np.stack([a[0].double().numpy() for a in captured]) if captured else np.zeros((0, 0) + 2 * (len(spins),))


def _apply_maps(maps: torch.Tensor, spins: torch.Tensor) -> torch.Tensor:
    """(R, N, N) site maps applied to (B, N, 3) spins -> (B, R, N, 3), as one matrix product
    (R N, N) @ (N, 3 B): broadcasting maps @ spins[:, None] copies the maps B times (at
    N = 100 that copy and the batched products took half of a training step)."""
    n_maps, n_sites, _ = maps.shape
    out = maps.reshape(n_maps * n_sites, n_sites) @ spins.transpose(0, 1).reshape(n_sites, -1)
    return out.reshape(n_maps, n_sites, spins.shape[0], 3).permute(2, 0, 1, 3)


def _attend(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """softmax(scores) @ values over the last axis of ``scores`` (overwritten). Normalises
    the (N, 3) result rather than the (N, N) weights, and exponentiates in place: the
    softmax was 40% of a frozen layer's time at N = 100."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)  # exp(-inf) = 0 outside the window
    return (scores @ values) / scores.sum(axis=-1, keepdims=True)


@dataclass(frozen=True, eq=False)
class TransformerModel:
    """The effective-model interface (see models/__init__.py) around a frozen copy of the
    network at one β. NumPy in, NumPy out.

    Inference runs in NumPy float64 on arrays taken from the network once: at N = 36 a
    PyTorch call is mostly per-call overhead (measured 0.17 ms against 0.06 ms here for 2
    layers × 2 heads), and the nested sampler evaluates the model once per step. The head is
    folded into one pair matrix C(β) = (1/2) Σ_n J_n(β) M_n, so E_eff = E_0(β) - Σ_ij C_ij
    Se_i·Se_j, and the bond-pair terms into one kernel in momentum space (bond_pair_kernel).
    tests/test_transformer.py holds this equal to the network's forward pass.
    """

    net: EquivariantTransformer  # for the parameters and the lattice; not called here
    beta: float
    maps: np.ndarray  # (layers, 3 H + C, N, N): the block maps of Q, K, V and the gates' U
    gates: tuple[np.ndarray, np.ndarray]  # A (layers, C, C) and b (layers, C); C = 0 without gates
    mask: np.ndarray  # (N, N): 0 inside the attention window, -inf outside
    bond_tables: BondPairTables  # of the net's lattice and bond_shells
    pair_matrix: np.ndarray  # (N, N): C(β)
    bond_kernel: np.ndarray  # (H, 2T, 2T) real, see bond_pair_kernel; T = 0 without bond-pair terms
    e0: float  # E_0(β)

    @classmethod
    def frozen(cls, net: EquivariantTransformer, beta: float) -> "TransformerModel":
        # a float64 copy also of a float32 network (its weights, exactly): inference is float64
        net = copy.deepcopy(net).requires_grad_(False).double()
        with torch.no_grad():
            maps = net.block_maps().numpy()
            c = net.gate_channels
            gates = ((net.gate_weight.numpy(), net.gate_bias.numpy()) if c else
                     (np.zeros((net.n_layers, 0, 0)), np.zeros((net.n_layers, 0))))
        # the tables once per freeze, not per evaluation (they take seconds to rebuild at L = 10)
        tables = bond_pair_tables(net.lattice, net.bond_shells, net.bond_range)
        return cls(net, beta, maps, gates, net.mask.numpy(), tables, *cls._head(net, beta, tables))

    @staticmethod
    def _couplings(net: EquivariantTransformer, beta: float) -> tuple[np.ndarray, np.ndarray, float]:
        """J_n(β), K_o(β) and E_0(β) of the head."""
        x = math.log(beta / net.beta_ref)
        c, e = net.couplings.detach().numpy(), net.e0.detach().numpy()
        j, k = np.split(c[0] + x * c[1], [net.pairs.shape[0]])
        return j, k, float(e[0] + x * e[1])

    @staticmethod
    def _head(net: EquivariantTransformer, beta: float, tables: BondPairTables) -> tuple[np.ndarray, np.ndarray, float]:
        j, k, e0 = TransformerModel._couplings(net, beta)
        return 0.5 * np.einsum("n,nij->ij", j, net.pairs.numpy()), bond_pair_kernel(k, tables), e0

    @property
    def lattice(self) -> Lattice:
        return self.net.lattice

    def with_beta(self, beta: float) -> "TransformerModel":
        """The same frozen network evaluated at another β (its head depends on log β)."""
        head = self._head(self.net, beta, self.bond_tables)
        return replace(self, beta=beta, **dict(zip(("pair_matrix", "bond_kernel", "e0"), head)))

    @property
    def n_parameters(self) -> int:
        return self.net.n_parameters()

    def effective_spins(self, spins: np.ndarray) -> np.ndarray:
        """(..., N, 3) -> (..., N, 3), the network's layers (see EquivariantTransformer)."""
        s = np.asarray(spins, dtype=np.float64)
        n_gates = self.gates[1].shape[1]
        heads = (self.maps.shape[1] - n_gates) // 3
        for maps, a, b in zip(self.maps, *self.gates):
            qkv = maps[:3 * heads] @ s[..., None, :, :]  # (..., 3 H, N, 3)
            q, k, v = qkv[..., :heads, :, :], qkv[..., heads:2 * heads, :, :], qkv[..., 2 * heads:, :, :]
            s = s + _attend(q @ np.swapaxes(k, -1, -2) + self.mask, v).sum(axis=-3)
            if n_gates:
                u = maps[3 * heads:] @ s[..., None, :, :]  # (..., C, N, 3)
                gates = np.tanh(a @ (u * s[..., None, :, :]).sum(-1) + b[:, None])  # matmul: einsum's overhead
                s = s + (gates[..., None] * u).sum(axis=-3)
            if self.net.normalize:
                s = s / np.linalg.norm(s, axis=-1, keepdims=True)
        return s

    def energy(self, spins: np.ndarray) -> np.ndarray | float:
        se = self.effective_spins(spins)
        e = self.e0 - np.einsum("...ik,...ik->...", se, self.pair_matrix @ se)
        if self.net.n_orbits:
            e = e - bond_pair_energy(bond_values(se, self.bond_tables.bonds), self.bond_tables, self.bond_kernel)
        return float(e) if np.ndim(e) == 0 else e

    def __getstate__(self):
        # the cached local form is rebuilt on demand, not pickled
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def local_form(self) -> TransformerForm:
        """This model as site lists and dense heads, for the compiled inner chain with
        incremental ΔE (samplers/transformer_chain.py); SLMC's inner chain uses it."""
        net = self.net
        with torch.no_grad():
            weights = net.map_weights().numpy()
        _, k, _ = self._couplings(net, self.beta)
        return TransformerForm.build(shell_index(self.lattice), net.block.shape[0] - 1, self.mask == 0, weights,
                                     net.wq.shape[1], *self.gates, net.normalize, self.pair_matrix,
                                     self.bond_tables.bonds, bond_matrix(k, self.bond_tables.pair_class))

    def delta_energy(self, spins: np.ndarray, i: int, new_spin: np.ndarray) -> float:
        # two full evaluations in one batch, O(N^2): the reference for the incremental ΔE
        # of local_form, which the inner chain uses
        moved = np.stack([spins, spins])
        moved[1, i] = new_spin
        e = self.energy(moved)
        return float(e[1] - e[0])

    def parameters(self) -> tuple[np.ndarray, list[str]]:
        names, values = [], []
        for name, p in self.net.named_parameters():
            flat = p.detach().to(torch.float64).numpy().ravel()
            values.append(flat)
            names += [f"{name}[{k}]" for k in range(flat.size)]
        return np.concatenate(values), names
