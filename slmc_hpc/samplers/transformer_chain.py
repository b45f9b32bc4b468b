"""The inner local chain of SLMC on the equivariant Transformer itself, with ΔE computed
incrementally (models/transformer.py holds the network; this is its compiled local form).

Why: with the Transformer only in a middle test (nested SLMC) a step can never move more
often than the inner linear chain alone; in the inner chain its accuracy sets how far an
accepted step goes. A full evaluation per single-spin update costs O(N²) in NumPy (about
0.2 ms at N = 64); here an update recomputes only what the changed spin can reach:

  layer l, input changed on the sites D:
    Q, K, V change on B = D dilated by the block radius (block_shells),
    the attention output changes on A = B dilated by the attention window
      (site i attends to j iff j attends to i: the window is a distance cut, so it is symmetric),
    the gates' U change on A dilated by the block radius, and so do the layer's outputs;
  head: E = E_0 - Σ_ik C_ik Se_i·Se_k - (1/2) bᵀ G b  (b_a = Se_i·Se_j on the bond-pair bonds),
    with f = C Se and h = G b kept current, for the changed set D and δ = Se' - Se:
    ΔE = -(2 Σ_{i∈D} δ_i·f_i + Σ_{i,k∈D} C_ik δ_i·δ_k) - (Σ_a δb_a h_a + (1/2) Σ_aa' δb_a G_aa' δb_a').

So the cost of an update depends on the windows and the depth, not on N, once the lattice is
larger than the reach of a changed spin: (block + attention + block radius) per layer, and with
"global" attention every site. Proposals write into scratch copies of the cached layer
arrays; an accepted one is copied into the cache, a rejected one back out of it, both only
on the changed sites.

The random numbers are those of samplers/moves.draw_moves, so this chain makes the decisions
of the generic loop over TransformerModel.delta_energy (tests/test_transformer_chain.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .local_chain import bonds_at_sites


@dataclass(frozen=True, eq=False)
class TransformerForm:
    """A frozen Transformer at one β as site lists and dense heads (float64 throughout):
    block_sites, block_shell (N, nb): the sites within block_shells of each site and their
    shell; window (N, na): the sites each site attends to; weights (layers, 3 H + C, S): the
    block-map weights of Q (heads 0..H-1), K, V and the gates' U per shell; gate_a (layers,
    C, C), gate_b (layers, C); pair (N, N) C(β); bond_sites (P, 2), site_bonds (N, zb) and
    G (P, P) the bond-pair head (P = 0: none). E_0(β) is left out: the chain needs only ΔE."""

    block_sites: np.ndarray
    block_shell: np.ndarray
    window: np.ndarray
    weights: np.ndarray
    heads: int
    gate_a: np.ndarray
    gate_b: np.ndarray
    normalize: bool
    pair: np.ndarray
    bond_sites: np.ndarray
    site_bonds: np.ndarray
    G: np.ndarray

    @classmethod
    def build(cls, shell_index: np.ndarray, block_shells: int, window: np.ndarray,
              weights: np.ndarray, heads: int, gate_a: np.ndarray, gate_b: np.ndarray, normalize: bool,
              pair: np.ndarray, bond_sites: np.ndarray, G: np.ndarray) -> "TransformerForm":
        """From the (N, N) shell index (0 on the diagonal), the (N, N) attention window (True
        where site i attends to j; symmetric), the network's arrays and its head."""
        n = len(shell_index)
        block = [np.flatnonzero(row <= block_shells) for row in shell_index]
        if not np.array_equal(window, window.T):
            raise ValueError("the attention window must be symmetric")
        window = [np.flatnonzero(row) for row in window]
        if len({len(b) for b in block}) != 1 or len({len(w) for w in window}) != 1:
            raise ValueError("every site must have the same number of block and window sites")
        block = np.array(block, dtype=np.int64)
        bond_sites = np.asarray(bond_sites, dtype=np.int64).reshape(-1, 2)
        c = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
        return cls(block, np.take_along_axis(shell_index, block, 1).astype(np.int64),
                   np.array(window, dtype=np.int64), c(weights), int(heads), c(gate_a), c(gate_b),
                   bool(normalize), c(pair), bond_sites, bonds_at_sites(n, bond_sites)[0], c(G))

    def _caches(self, spins: np.ndarray):
        n_layers, n_maps, _ = self.weights.shape
        n = len(spins)
        s = np.zeros((n_layers + 1, n, 3))
        s[0] = spins
        qkv = np.zeros((n_layers, 3 * self.heads, n, 3))
        t = np.zeros((n_layers, n, 3))
        u = np.zeros((n_layers, n_maps - 3 * self.heads, n, 3))
        _forward(s, qkv, t, u, self.block_sites, self.block_shell, self.window, self.weights, self.heads,
                 self.gate_a, self.gate_b, self.normalize)
        return s, qkv, t, u

    def effective_spins(self, spins: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3), the network's layers evaluated site by site (as in the chain)."""
        return self._caches(np.ascontiguousarray(spins, dtype=np.float64))[0][-1]

    def chain(self, spins: np.ndarray, beta: float, sites, noise, log_u, step_size: float,
              reflect=None, record: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """The end of the Metropolis chain on exp(-β E_Transformer) from ``spins`` (not
        modified), with proposals S_i -> normalize(S_i + step_size g) at sites[m], g = noise[m],
        accepted when log_u[m] < -β ΔE; and the sum of the accepted ΔE. ``record``, if given
        (len(sites),), receives every proposal's ΔE. Over-relaxation needs a local field, which
        the Transformer does not have: ``reflect`` must be None."""
        if reflect is not None:
            raise ValueError("over-relaxation needs a model with a local field (a bond form), not the Transformer")
        spins = np.array(spins, dtype=np.float64)
        s, qkv, t, u = self._caches(spins)
        se = s[-1]
        f = self.pair @ se
        b = np.einsum("ak,ak->a", se[self.bond_sites[:, 0]], se[self.bond_sites[:, 1]])
        h = self.G @ b
        record = np.zeros(0) if record is None else record
        total = _chain(s, qkv, t, u, f, b, h, self.block_sites, self.block_shell, self.window, self.weights,
                       self.heads, self.gate_a, self.gate_b, self.normalize, self.pair, self.bond_sites,
                       self.site_bonds, self.G, np.asarray(sites, dtype=np.int64),
                       np.asarray(noise, dtype=np.float64), np.asarray(log_u, dtype=np.float64), float(beta),
                       float(step_size), record)
        return s[0].copy(), total


@numba.njit(cache=True)
def _maps_at(i, src, rows0, rows1, w, block_sites, block_shell, dst):  # pragma: no cover
    """dst[r - rows0, i] = Σ_c w[r, shell(i, c)] src[block_sites[i, c]] for r in rows0..rows1-1."""
    for r in range(rows0, rows1):
        x = 0.0
        y = 0.0
        z = 0.0
        for c in range(block_sites.shape[1]):
            k = block_sites[i, c]
            wc = w[r, block_shell[i, c]]
            x += wc * src[k, 0]
            y += wc * src[k, 1]
            z += wc * src[k, 2]
        dst[r - rows0, i, 0] = x
        dst[r - rows0, i, 1] = y
        dst[r - rows0, i, 2] = z


@numba.njit(cache=True)
def _attend_at(i, s_in, qkv, heads, window, scores, t):  # pragma: no cover
    """t[i] = s_in[i] + Σ_h Σ_{j in window(i)} softmax_j(Q_i·K_j) V_j."""
    ax = 0.0
    ay = 0.0
    az = 0.0
    na = window.shape[1]
    for hd in range(heads):
        top = -np.inf
        for c in range(na):
            j = window[i, c]
            sc = (qkv[hd, i, 0] * qkv[heads + hd, j, 0] + qkv[hd, i, 1] * qkv[heads + hd, j, 1]
                  + qkv[hd, i, 2] * qkv[heads + hd, j, 2])
            scores[c] = sc
            if sc > top:
                top = sc
        norm = 0.0
        vx = 0.0
        vy = 0.0
        vz = 0.0
        for c in range(na):
            j = window[i, c]
            e = math.exp(scores[c] - top)
            norm += e
            vx += e * qkv[2 * heads + hd, j, 0]
            vy += e * qkv[2 * heads + hd, j, 1]
            vz += e * qkv[2 * heads + hd, j, 2]
        ax += vx / norm
        ay += vy / norm
        az += vz / norm
    t[i, 0] = s_in[i, 0] + ax
    t[i, 1] = s_in[i, 1] + ay
    t[i, 2] = s_in[i, 2] + az


@numba.njit(cache=True)
def _output_at(i, t, u, a, bias, normalize, x, out):  # pragma: no cover
    """out[i] = t_i + Σ_c tanh(Σ_c' A[c, c'] U^c'_i·t_i + b_c) U^c_i, then normalised if asked."""
    n_gates = u.shape[0]
    for c in range(n_gates):
        x[c] = u[c, i, 0] * t[i, 0] + u[c, i, 1] * t[i, 1] + u[c, i, 2] * t[i, 2]
    ox = t[i, 0]
    oy = t[i, 1]
    oz = t[i, 2]
    for c in range(n_gates):
        g = bias[c]
        for c2 in range(n_gates):
            g += a[c, c2] * x[c2]
        g = math.tanh(g)
        ox += g * u[c, i, 0]
        oy += g * u[c, i, 1]
        oz += g * u[c, i, 2]
    if normalize:
        r = math.sqrt(ox * ox + oy * oy + oz * oz)
        ox /= r
        oy /= r
        oz /= r
    out[i, 0] = ox
    out[i, 1] = oy
    out[i, 2] = oz


@numba.njit(cache=True)
def _forward(s, qkv, t, u, block_sites, block_shell, window, weights, heads, gate_a, gate_b,
             normalize):  # pragma: no cover
    """Fill the caches from s[0], every site."""
    n = s.shape[1]
    n_qkv = 3 * heads
    n_maps = weights.shape[1]
    scores = np.empty(window.shape[1])
    x = np.empty(max(n_maps - n_qkv, 1))
    for layer in range(weights.shape[0]):
        for i in range(n):
            _maps_at(i, s[layer], 0, n_qkv, weights[layer], block_sites, block_shell, qkv[layer])
        for i in range(n):
            _attend_at(i, s[layer], qkv[layer], heads, window, scores, t[layer])
        for i in range(n):
            _maps_at(i, t[layer], n_qkv, n_maps, weights[layer], block_sites, block_shell, u[layer])
        for i in range(n):
            _output_at(i, t[layer], u[layer], gate_a[layer], gate_b[layer], normalize, x, s[layer + 1])


@numba.njit(cache=True)
def _dilate(src, n_src, nbrs, mark, stamp, out):  # pragma: no cover
    """The sites within ``nbrs`` of src[:n_src] (each once) into out; returns their number."""
    n = 0
    for m in range(n_src):
        for c in range(nbrs.shape[1]):
            j = nbrs[src[m], c]
            if mark[j] != stamp:
                mark[j] = stamp
                out[n] = j
                n += 1
    return n


@numba.njit(cache=True)
def _copy_sites(src, dst, sites, n_sites):  # pragma: no cover
    """dst[..., i, :] = src[..., i, :] for the listed sites; src, dst (R, N, 3)."""
    for r in range(src.shape[0]):
        for m in range(n_sites):
            i = sites[m]
            for k in range(3):
                dst[r, i, k] = src[r, i, k]


@numba.njit(cache=True)
def _chain(s, qkv, t, u, f, b, h, block_sites, block_shell, window, weights, heads, gate_a, gate_b,
           normalize, pair, bond_sites, site_bonds, G, sites, noise, log_u, beta, step_size,
           record):  # pragma: no cover
    """The chain of TransformerForm.chain on the caches (modified in place: s[0] ends as the
    chain's end); returns the sum of the accepted ΔE."""
    n_layers = weights.shape[0]
    n = s.shape[1]
    n_qkv = 3 * heads
    n_maps = weights.shape[1]
    p = G.shape[0]
    # scratch copies: a proposal writes here; only changed sites ever differ from the cache
    s2, qkv2, t2, u2 = s.copy(), qkv.copy(), t.copy(), u.copy()
    changed = np.empty((n_layers + 1, n), dtype=np.int64)  # sites where s[l] changed
    n_changed = np.zeros(n_layers + 1, dtype=np.int64)
    q_sites = np.empty((n_layers, n), dtype=np.int64)  # where qkv[l] changed
    n_q = np.zeros(n_layers, dtype=np.int64)
    a_sites = np.empty((n_layers, n), dtype=np.int64)  # where t[l] changed
    n_a = np.zeros(n_layers, dtype=np.int64)
    mark = np.zeros(n, dtype=np.int64)
    bond_mark = np.zeros(max(p, 1), dtype=np.int64)
    bond_list = np.empty(max(p, 1), dtype=np.int64)
    bond_delta = np.empty(max(p, 1))
    delta = np.empty((n, 3))
    scores = np.empty(window.shape[1])
    x = np.empty(max(n_maps - n_qkv, 1))
    stamp = 0
    total = 0.0
    for m in range(len(sites)):
        i0 = sites[m]
        nx = s[0, i0, 0] + step_size * noise[m, 0]
        ny = s[0, i0, 1] + step_size * noise[m, 1]
        nz = s[0, i0, 2] + step_size * noise[m, 2]
        r = math.sqrt(nx * nx + ny * ny + nz * nz)
        s2[0, i0, 0] = nx / r
        s2[0, i0, 1] = ny / r
        s2[0, i0, 2] = nz / r
        changed[0, 0] = i0
        n_changed[0] = 1
        for layer in range(n_layers):
            stamp += 1
            n_q[layer] = _dilate(changed[layer], n_changed[layer], block_sites, mark, stamp, q_sites[layer])
            for c in range(n_q[layer]):
                _maps_at(q_sites[layer, c], s2[layer], 0, n_qkv, weights[layer], block_sites, block_shell,
                         qkv2[layer])
            stamp += 1
            n_a[layer] = _dilate(q_sites[layer], n_q[layer], window, mark, stamp, a_sites[layer])
            for c in range(n_a[layer]):
                _attend_at(a_sites[layer, c], s2[layer], qkv2[layer], heads, window, scores, t2[layer])
            if n_maps > n_qkv:
                stamp += 1
                n_changed[layer + 1] = _dilate(a_sites[layer], n_a[layer], block_sites, mark, stamp,
                                               changed[layer + 1])
                for c in range(n_changed[layer + 1]):
                    _maps_at(changed[layer + 1, c], t2[layer], n_qkv, n_maps, weights[layer], block_sites,
                             block_shell, u2[layer])
            else:
                n_changed[layer + 1] = n_a[layer]
                for c in range(n_a[layer]):
                    changed[layer + 1, c] = a_sites[layer, c]
            for c in range(n_changed[layer + 1]):
                _output_at(changed[layer + 1, c], t2[layer], u2[layer], gate_a[layer], gate_b[layer], normalize,
                           x, s2[layer + 1])
        # the head: pair part with f = C Se, bond-pair part with h = G b
        top = s2[n_layers]
        old = s[n_layers]
        nd = n_changed[n_layers]
        dlist = changed[n_layers]
        linear = 0.0
        quad = 0.0
        for c in range(nd):
            i = dlist[c]
            for k in range(3):
                delta[c, k] = top[i, k] - old[i, k]
            linear += delta[c, 0] * f[i, 0] + delta[c, 1] * f[i, 1] + delta[c, 2] * f[i, 2]
        for c in range(nd):
            i = dlist[c]
            for c2 in range(nd):
                cik = pair[i, dlist[c2]]
                if cik != 0.0:
                    quad += cik * (delta[c, 0] * delta[c2, 0] + delta[c, 1] * delta[c2, 1] + delta[c, 2] * delta[c2, 2])
        de = -(2.0 * linear + quad)
        nb = 0
        if p:
            stamp += 1
            for c in range(nd):
                i = dlist[c]
                for c2 in range(site_bonds.shape[1]):
                    a = site_bonds[i, c2]
                    if bond_mark[a] != stamp:
                        bond_mark[a] = stamp
                        bond_list[nb] = a
                        j, k2 = bond_sites[a, 0], bond_sites[a, 1]
                        bond_delta[nb] = (top[j, 0] * top[k2, 0] + top[j, 1] * top[k2, 1] + top[j, 2] * top[k2, 2]
                                          - b[a])
                        nb += 1
            lin_b = 0.0
            quad_b = 0.0
            for c in range(nb):
                lin_b += bond_delta[c] * h[bond_list[c]]
                row = bond_list[c]
                for c2 in range(nb):
                    quad_b += bond_delta[c] * G[row, bond_list[c2]] * bond_delta[c2]
            de -= lin_b + 0.5 * quad_b
        if len(record):
            record[m] = de
        if log_u[m] < -beta * de:
            total += de
            for c in range(nd):  # f += C δ (C symmetric)
                i = dlist[c]
                for j in range(n):
                    cji = pair[j, i]
                    if cji != 0.0:
                        for k in range(3):
                            f[j, k] += cji * delta[c, k]
            for c in range(nb):
                a = bond_list[c]
                b[a] += bond_delta[c]
                for r2 in range(p):
                    h[r2] += G[a, r2] * bond_delta[c]
            src0, dst0 = s2, s
            src1, dst1 = qkv2, qkv
            src2, dst2 = t2, t
            src3, dst3 = u2, u
        else:
            src0, dst0 = s, s2
            src1, dst1 = qkv, qkv2
            src2, dst2 = t, t2
            src3, dst3 = u, u2
        for k in range(3):
            dst0[0, i0, k] = src0[0, i0, k]
        for layer in range(n_layers):
            _copy_sites(src0[layer + 1:layer + 2], dst0[layer + 1:layer + 2], changed[layer + 1],
                        n_changed[layer + 1])
            _copy_sites(src1[layer], dst1[layer], q_sites[layer], n_q[layer])
            _copy_sites(src2[layer:layer + 1], dst2[layer:layer + 1], a_sites[layer], n_a[layer])
            if n_maps > n_qkv:
                _copy_sites(src3[layer], dst3[layer], changed[layer + 1], n_changed[layer + 1])
    return total
