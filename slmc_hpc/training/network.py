"""The Transformer's trainer: AdamW on the attention layers, the energy head solved by least
squares, collective over MPI ranks (gradients summed, normal equations all-reduced)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from ..parallel.allreduce import sum_gradients
from ..parallel.comm import SerialComm
from .data import RoundResult, Samples, per_site_mse
from .errors import RoundInterrupted, TrainingError


def solve_normal_equations(gram: np.ndarray, rhs: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Least-squares θ from the normal equations (gram = Dᵀ D, rhs = Dᵀ y), summed over all
    data (and ranks). Only columns in ``use`` with non-zero norm are fitted (others get 0);
    they are scaled to unit norm, with a 1e-12 relative ridge against exact collinearity."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    active = use & (norms > 0)
    g = gram[np.ix_(active, active)] / np.outer(norms[active], norms[active])
    g = g + 1e-12 * np.trace(g) * np.eye(len(g))
    theta = np.zeros(len(rhs))
    theta[active] = np.linalg.solve(g, rhs[active] / norms[active]) / norms[active]
    return theta


class TorchTrainer:
    """AdamW on the per-site MSE of the attention layers, with the energy head solved in
    closed form (variable projection), ready for data spread over MPI ranks.

    E_eff is linear in the head (E_0, J_n, K_o and their β-slopes) given the effective spins.
    For every minibatch the head is the least-squares fit on that minibatch (the normal
    equations are summed over ranks; for heads too wide for the minibatch, the fit on all
    training data at the start of each epoch), and the layers get the gradient at that fixed head: at the
    least-squares optimum ∂loss/∂head = 0, so this is the full gradient. Gradients are summed
    over ranks (the loss is the global mean), so all ranks take the same step and keep
    bit-identical parameters. At the end of a round the head is refitted on all training data,
    for the trained layers, the layers the round started with and identity layers; the best
    fit of the three is kept (_keep_best_layers).

    Why not AdamW on the head too: the raw scales differ by orders of magnitude (E_0 ~ N,
    J_n ~ 0.01), and AdamW's first steps wrecked the head. This way a network with zero value
    weights is exactly the least-squares linear model, and with _keep_best_layers depth can
    only add to it (on the training data).
    """

    def __init__(self, net: torch.nn.Module, epochs: int, learning_rate: float, weight_decay: float,
                 batch_size: int, seed: int, loss: str = "energy", comm=None):
        self.net, self.epochs, self.batch_size, self.loss = net, epochs, batch_size, loss
        self.comm = comm or SerialComm()
        # everything but the head (E_0 and the couplings), which least squares solves
        self.layer_params = [p for name, p in net.named_parameters() if name not in ("couplings", "e0")]
        self.optimizer = torch.optim.AdamW(self.layer_params, lr=learning_rate, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.rounds = 0
        self.kept_layers = ""  # after a round: "trained", "previous" or "identity" (_keep_best_layers)

    def state_dict(self) -> dict:
        """Parameters, AdamW moments and this rank's minibatch stream: with them a resumed
        run takes bit-identical optimizer steps."""
        optimizer = {str(i): {k: v.detach().numpy().copy() if torch.is_tensor(v) else np.asarray(v)
                              for k, v in state.items()}
                     for i, state in self.optimizer.state_dict()["state"].items()}
        return {"net": {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()},
                "optimizer": optimizer, "generator": self.generator.get_state().numpy().copy(),
                "rounds": self.rounds}

    def load_state_dict(self, tree: dict) -> None:
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in tree["net"].items()})
        state = {int(i): {k: torch.as_tensor(v) for k, v in moments.items()}
                 for i, moments in tree.get("optimizer", {}).items()}
        # hyperparameters come from the configuration, moments from the checkpoint
        self.optimizer.load_state_dict({"state": state,
                                        "param_groups": self.optimizer.state_dict()["param_groups"]})
        self.generator.set_state(torch.as_tensor(tree["generator"], dtype=torch.uint8))
        self.rounds = int(tree["rounds"])

    def _fitted_columns(self, betas: np.ndarray) -> np.ndarray:
        """Head columns to fit: the β-slopes only when the data (on all ranks) span several β;
        from one β they are multiples of the other columns and cannot be told apart."""
        lo, hi = zip(*self.comm.allgather((float(np.min(betas, initial=np.inf)), float(np.max(betas, initial=-np.inf)))))
        n = self.net.couplings.shape[1]
        use = np.ones(2 + 2 * n, dtype=bool)
        if not max(hi) > min(lo):
            use[1] = False
            use[2 + n:] = False
        return use

    def _design(self, x, y, xr, yr, beta, features=None):
        """(design, target) of the least-squares problem: energies, or pair differences;
        ``beta`` is a scalar or one β per sample; ``features``: head_features(x, beta) if
        the caller has them."""
        design = self.net.head_features(x, beta) if features is None else features
        if self.loss == "pair":
            return design - self.net.head_features(xr, beta), y - yr
        return design, y

    def _global_head(self, design, target, use) -> torch.Tensor:
        d = design.detach().to(torch.float64).numpy()
        t = target.detach().to(torch.float64).numpy()
        packed = self.comm.allreduce_sum(np.concatenate([(d.T @ d).ravel(), d.T @ t]))
        k = d.shape[1]
        return torch.as_tensor(solve_normal_equations(packed[: k * k].reshape(k, k), packed[k * k:], use),
                               dtype=design.dtype)

    def _global_mean_sq(self, design, target, head, n_sites) -> float:
        sq = float((((design @ head - target) / n_sites) ** 2).sum()) if len(target) else 0.0
        total, count = self.comm.allreduce_sum(np.array([sq, float(len(target))]))
        return total / count if count else float("nan")

    def _tensors(self, data: Samples, beta: float):
        """(spins, targets, ref spins, ref targets, β per sample) as tensors (refs None
        unless the pair loss is used)."""
        dtype = self.net.wq.dtype
        pairs = self.loss == "pair"
        if data.betas is None and beta is None:
            raise ValueError("samples without their own β need the caller's β")
        betas = data.betas if data.betas is not None else np.full(len(data), beta)
        return tuple(torch.as_tensor(a, dtype=dtype) if a is not None else None for a in
                     (data.spins, data.targets, data.ref_spins if pairs else None, data.ref_targets if pairs else None,
                      betas))

    def _fit_head(self, data, use) -> float:
        """Install the least-squares head of all training data for the current layers; return
        its training loss (per-site MSE, all ranks)."""
        features = self.net.head_features(data[0], data[4])
        design, target = self._design(*data, features=features)
        head = self._global_head(design, target, use)
        loss = self._global_mean_sq(design, target, head, self.net.lattice.N)
        if self.loss == "pair":  # differences do not see E_0: match the mean energy instead
            y = data[1]
            head[0] = 0.0
            resid, count = self.comm.allreduce_sum(np.array([float((y - features @ head).sum()), float(len(y))]))
            head[0] = resid / count
        self.net.set_head(head)
        return loss

    def _keep_best_layers(self, good, data, use) -> float:
        """End of a round: of the trained layers, the layers at the start of the round and
        identity layers (the head alone), keep those whose refitted head fits this round's
        training data best, so a round never makes the fit worse and layers never make the
        model worse than its head. Why: a bad first round (on the far-from-equilibrium data of
        an untrained chain) sent gated 3-layer networks to a region they never left, at 30x
        the head's loss. Each candidate keeps its AdamW moments; identity layers get none (the
        moments of weights now zero would push them back). Every rank makes the same calls:
        the losses are global, so all choose alike. Returns the kept layers' training loss."""
        def fitted():
            loss = self._fit_head(data, use)
            return loss, (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

        candidates = {"trained": fitted()}
        if not np.isfinite(candidates["trained"][0]):
            self._restore(good, f"training loss became {candidates['trained'][0]} at the end of round "
                                f"{self.rounds + 1}")
        self._rewind(good)
        candidates["previous"] = fitted()
        self.net.make_identity()
        self.optimizer.state.clear()
        candidates["identity"] = fitted()
        self.kept_layers = min(candidates, key=lambda name: candidates[name][0])
        loss, state = candidates[self.kept_layers]
        self._rewind(state)
        return loss

    def _rewind(self, good) -> None:
        """Parameters and AdamW moments back to ``good`` (taken at the start of the round)."""
        self.net.load_state_dict(good[0])
        self.optimizer.load_state_dict(good[1])

    def _restore(self, good, message):
        self._rewind(good)
        raise TrainingError(message + "; the last good parameters are kept (lower [training] learning_rate?)")

    def local_losses(self, train: Samples, validation: Samples) -> RoundResult:
        """Per-site MSE of the current network on these samples (each at its own β), on this
        rank alone: how well the shared model fits one slot's data."""
        n_sites = self.net.lattice.N

        def mse(data):
            if not len(data):
                return float("nan")
            with torch.no_grad():
                design, target = self._design(*self._tensors(data, None))
                return per_site_mse((design @ self.net.head_vector()).numpy(), target.numpy(), n_sites)
        return RoundResult(mse(train), mse(validation))

    def train(self, train: Samples, validation: Samples, beta: float | None = None,
              interrupt: Callable[[], bool] | None = None) -> RoundResult:
        """One round on this rank's samples (collective: every rank must call it). Samples
        without their own β are taken at ``beta``.

        ``interrupt()`` (optional) says whether a stop was requested on this rank. It is
        asked at every minibatch (after its forward pass, in the all-reduce the loss needs
        anyway, so all ranks agree); then the parameters, AdamW moments and minibatch stream
        go back to their state before the round and RoundInterrupted is raised. A round can
        take minutes (L = 10 with bond-pair terms), longer than a batch system's grace period
        after its signal. Not asked during the full-data head fits or without layers."""
        bad = int(not (train.is_finite() and validation.is_finite()))
        if self.comm.allreduce_sum(np.array([bad]))[0]:
            raise TrainingError("training data contain NaN or inf; the model was not changed")
        good = (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.kept_layers = ""
        stream = self.generator.get_state()
        data = self._tensors(train, beta)
        use = self._fitted_columns(data[4].numpy())
        n = len(train)
        n_sites = self.net.lattice.N
        # minibatches of about batch_size samples in all (over all ranks), the same number on
        # every rank (collectives in lockstep)
        n_total = sum(self.comm.allgather(n))
        n_batches = max(1, -(-n_total // self.batch_size))
        trainable = self.net.wq.numel() > 0
        # A minibatch must over-determine the head: with about as many samples as head columns
        # (bond-pair terms add ~100) its least-squares head interpolates the minibatch, the
        # loss is ~0 and the layers get no gradient. Then use the head of all training data,
        # refitted at the start of every epoch, and step the layers at that fixed head
        # (alternating minimisation: exact variable projection only at each epoch's start).
        per_batch = n_total / n_batches >= 4 * int(use.sum())
        for epoch in range(self.epochs if trainable else 0):
            if not per_batch:
                with torch.no_grad():
                    head = self._global_head(*self._design(*data), use)
            order = torch.randperm(n, generator=self.generator)
            for idx in torch.tensor_split(order, n_batches):
                design, target = self._design(*(None if a is None else a[idx] for a in data))
                if per_batch:
                    head = self._global_head(design, target, use)
                count = self.comm.allreduce_sum(np.array([float(len(idx))]))[0]
                loss = (((design @ head - target) / n_sites) ** 2).sum() / count
                asked = float(interrupt is not None and interrupt())
                total, stops = self.comm.allreduce_sum(np.array([loss.item(), asked]))
                if stops:
                    self._rewind(good)
                    self.generator.set_state(stream)
                    raise RoundInterrupted(f"training round {self.rounds + 1} interrupted in epoch {epoch + 1}")
                if not np.isfinite(total):
                    self._restore(good, f"training loss became {total} in round {self.rounds + 1}, "
                                        f"epoch {epoch + 1}")
                self.optimizer.zero_grad()
                loss.backward()
                sum_gradients(self.layer_params, self.comm)
                self.optimizer.step()
        with torch.no_grad():
            # the head fits return the training loss: no second pass over the training data
            train_loss = self._keep_best_layers(good, data, use) if trainable else self._fit_head(data, use)
            losses = [train_loss, self._global_mean_sq(*self._design(*self._tensors(validation, beta)),
                                                       self.net.head_vector(), n_sites)]
            finite = all(torch.all(torch.isfinite(p)) for p in self.net.parameters())
            bad = self.comm.allreduce_sum(np.array([float(not finite)]))[0]
            if bad or not np.isfinite(losses[0]) or (len(validation) and not np.isfinite(losses[1])):
                self._restore(good, f"parameters or losses became non-finite at the end of round {self.rounds + 1}")
        self.rounds += 1
        return RoundResult(*losses)
