"""Online self-learning during thermalization: a replay buffer of exactly evaluated
proposals, the round schedule, and the trainers that turn the buffer into a new model.
The model is frozen during measurement, so the measured chain is one fixed Markov kernel.

Loss convention (both trainers): mean squared error per site, mean(((E_eff - F_β) / N)^2),
F_β whole-lattice at the replica's β.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .models import LinearModel

GOLDEN = (math.sqrt(5) - 1) / 2


class TrainingError(RuntimeError):
    """Training produced a non-finite loss; the last good parameters were kept."""


def is_refit_step(step: int, thermalize: int, every: int) -> bool:
    """True after thermalization step ``step`` (0-based) if a training round follows it.
    Never during measurement (step >= thermalize)."""
    return step < thermalize and (step + 1) % every == 0


def n_refits(thermalize: int, every: int) -> int:
    return thermalize // every


def is_validation(sample_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic, well-spread held-out set: sample k is for validation iff frac(k φ) < fraction."""
    return np.mod(np.asarray(sample_ids) * GOLDEN, 1.0) < fraction


class ReplayBuffer:
    """The most recent ``capacity`` (spins, F_β) pairs, F whole-lattice at the chain's β.
    Each sample keeps its running index, which decides its train/validation side for good."""

    def __init__(self, capacity: int, n_sites: int):
        self.spins = np.empty((capacity, n_sites, 3))
        self.targets = np.empty(capacity)
        self.ids = np.empty(capacity, dtype=np.int64)
        self.size = 0
        self.added = 0

    def add(self, spins: np.ndarray, target: float) -> None:
        if not np.isfinite(target) or not np.all(np.isfinite(spins)):
            raise ValueError(f"non-finite training sample (F = {target!r})")
        k = self.added % len(self.targets)
        self.spins[k], self.targets[k], self.ids[k] = spins, target, self.added
        self.added += 1
        self.size = min(self.size + 1, len(self.targets))

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.spins[: self.size], self.targets[: self.size]

    def split(self, fraction: float):
        """((train spins, targets), (validation spins, targets))."""
        spins, targets = self.data()
        val = is_validation(self.ids[: self.size], fraction)
        return (spins[~val], targets[~val]), (spins[val], targets[val])


def per_site_mse(energies: np.ndarray, targets: np.ndarray, n_sites: int) -> float:
    return float(np.mean(((np.asarray(energies) - targets) / n_sites) ** 2)) if len(targets) else float("nan")


@dataclass(frozen=True)
class RoundResult:
    train_loss: float
    validation_loss: float


def _check_finite(spins, targets):
    if not (np.all(np.isfinite(spins)) and np.all(np.isfinite(targets))):
        raise TrainingError("training data contain NaN or inf; the model was not changed")


class LinearTrainer:
    """Least-squares fit of the linear model on the training side of the buffer."""

    def __init__(self, model: LinearModel):
        self.model = model

    def train(self, train, validation, beta: float) -> RoundResult:
        _check_finite(*train)
        _check_finite(*validation)
        self.model = self.model.fit(*train)
        n = self.model.lattice.N
        return RoundResult(per_site_mse(self.model.energy(train[0]), train[1], n),
                           per_site_mse(self.model.energy(validation[0]), validation[1], n) if len(validation[1])
                           else float("nan"))


def solve_head(design: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares head θ minimizing |design @ θ - targets|², differentiable in ``design``.
    Columns that are identically zero (e.g. the β-slope columns when all data share one β)
    get θ = 0; the others are scaled to unit norm before solving the normal equations."""
    norms = design.norm(dim=0)
    active = norms > 0
    d = design[:, active] / norms[active]
    gram = d.T @ d
    ridge = 1e-12 * torch.trace(gram) * torch.eye(gram.shape[0], dtype=gram.dtype)
    theta = torch.zeros(design.shape[1], dtype=design.dtype)
    theta[active] = torch.linalg.solve(gram + ridge, d.T @ targets) / norms[active]
    return theta


class TorchTrainer:
    """AdamW on the per-site MSE, with the energy head solved in closed form.

    E_eff is linear in the head (E_0, J_n and their β-slopes) given the effective spins, so for
    every minibatch the head is the least-squares fit on that batch (differentiable), and the
    gradient trains only the attention layers (variable projection). At the end of a round
    the head is refitted on the whole training set. The raw parameter scales differ by orders
    of magnitude (E_0 ~ N, J_n ~ 0.01), which made plain AdamW on all of them wreck the head in
    its first steps; this way a network with zero value weights is exactly the least-squares
    linear model, and depth can only add to it.
    """

    def __init__(self, net: torch.nn.Module, epochs: int, learning_rate: float, weight_decay: float,
                 batch_size: int, seed: int):
        self.net, self.epochs, self.batch_size = net, epochs, batch_size
        self.layer_params = [net.wq, net.wk, net.wv]
        self.optimizer = torch.optim.AdamW(self.layer_params, lr=learning_rate, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.rounds = 0

    def _loss(self, spins, targets, beta, head=None):
        design = self.net.head_features(spins, beta)
        head = solve_head(design, targets) if head is None else head
        return torch.mean(((design @ head - targets) / spins.shape[-2]) ** 2)

    def _restore(self, good, message):
        self.net.load_state_dict(good[0])
        self.optimizer.load_state_dict(good[1])
        raise TrainingError(message + "; the last good parameters are kept (lower [training] learning_rate?)")

    def train(self, train, validation, beta: float) -> RoundResult:
        _check_finite(*train)
        _check_finite(*validation)
        good = (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        dtype = self.net.wq.dtype
        x, y = (torch.as_tensor(a, dtype=dtype) for a in train)
        n = len(y)
        trainable = self.net.wq.numel() > 0
        for epoch in range(self.epochs if trainable else 0):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, self.batch_size):
                idx = order[start: start + self.batch_size]
                loss = self._loss(x[idx], y[idx], beta)
                if not torch.isfinite(loss):
                    self._restore(good, f"training loss became {loss.item()} in round {self.rounds + 1}, "
                                        f"epoch {epoch + 1}")
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        with torch.no_grad():
            head = solve_head(self.net.head_features(x, beta), y)
            if not torch.all(torch.isfinite(head)):
                self._restore(good, f"the head fit became non-finite in round {self.rounds + 1}")
            self.net.set_head(head)
            losses = [self._loss(*(torch.as_tensor(a, dtype=dtype) for a in part), beta, head=head).item()
                      if len(part[1]) else float("nan") for part in (train, validation)]
        self.rounds += 1
        return RoundResult(*losses)
