"""Training data: the replay buffer of exactly evaluated proposals (F_β whole-lattice at the
chain's β) and the Samples it hands to the trainers, with a deterministic validation split."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import TrainingError

GOLDEN = (math.sqrt(5) - 1) / 2


def is_validation(sample_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic, well-spread held-out set: sample k is for validation iff frac(k φ) < fraction."""
    return np.mod(np.asarray(sample_ids) * GOLDEN, 1.0) < fraction


@dataclass(frozen=True, eq=False)
class Samples:
    """Training data: proposals (spins, F_β) and, for the pair loss, the configuration each
    proposal was made from (ref_spins, ref_targets = F_β of the current state); with a linear
    model, their rows of its design matrix (features, ref_features; None: not computed)."""

    spins: np.ndarray
    targets: np.ndarray
    ref_spins: np.ndarray | None = None
    ref_targets: np.ndarray | None = None
    betas: np.ndarray | None = None  # β of each sample's chain when it was made (None: the caller's β)
    features: np.ndarray | None = None
    ref_features: np.ndarray | None = None

    FIELDS = ("spins", "targets", "ref_spins", "ref_targets", "betas", "features", "ref_features")

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def concat(cls, parts: list["Samples"]) -> "Samples":
        """All samples of ``parts`` (which agree on which fields they carry), in order."""
        def join(name):
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays)
        return cls(*(join(name) for name in cls.FIELDS))

    def subset(self, mask) -> "Samples":
        return Samples(*(None if a is None else a[mask] for a in (getattr(self, name) for name in self.FIELDS)))

    def is_finite(self) -> bool:
        return all(a is None or np.all(np.isfinite(a)) for a in (self.spins, self.targets, self.ref_spins,
                                                                    self.ref_targets))

    def check_finite(self) -> None:
        if not self.is_finite():
            raise TrainingError("training data contain NaN or inf; the model was not changed")


class ReplayBuffer:
    """The most recent ``capacity`` proposals (spins, F_β), F whole-lattice at the chain's β,
    with the current configuration they were proposed from when ``pairs`` is set. Each
    sample keeps its running index, which decides its train/validation side for good.

    ``featurize`` (spins (C, N, 3) -> (C, P)): a linear model's design rows, computed once
    per sample instead of in every round it is trained on (a sample stays for
    capacity / every rounds; with bond-pair terms the rows were most of a round's time).
    They are computed when samples are handed out, for all new samples in one batch in slot
    order, and kept in checkpoints, so a resumed run computes the same batches."""

    def __init__(self, capacity: int, n_sites: int, pairs: bool = False, featurize=None):
        self.featurize = featurize
        self.features = self.ref_features = None  # (capacity, P), allocated at the first batch
        self.featurized = np.zeros(capacity, dtype=bool)
        self.spins = np.empty((capacity, n_sites, 3))
        self.targets = np.empty(capacity)
        self.ref_spins = np.empty((capacity, n_sites, 3)) if pairs else None
        self.ref_targets = np.empty(capacity) if pairs else None
        self.betas = np.empty(capacity)
        self.ids = np.empty(capacity, dtype=np.int64)
        self.size = 0
        self.added = 0

    def add(self, spins: np.ndarray, target: float, beta: float, ref_spins=None, ref_target=None) -> None:
        values = [spins, target] + ([ref_spins, ref_target] if self.ref_spins is not None else [])
        if not all(np.all(np.isfinite(v)) for v in values):
            raise TrainingError(f"non-finite training sample (F = {target!r}): the exact weight overflowed "
                                f"or the spins are corrupt")
        k = self.added % len(self.targets)
        self.spins[k], self.targets[k], self.betas[k], self.ids[k] = spins, target, beta, self.added
        if self.ref_spins is not None:
            self.ref_spins[k], self.ref_targets[k] = ref_spins, ref_target
        self.featurized[k] = False
        self.added += 1
        self.size = min(self.size + 1, len(self.targets))

    def emptied(self) -> "ReplayBuffer":
        """A buffer of the same capacity and kind with no samples (the chain moved to another β:
        what it holds was made at the old one)."""
        return ReplayBuffer(len(self.targets), self.spins.shape[1], self.ref_spins is not None, self.featurize)

    def state_dict(self) -> dict:
        n = self.size
        tree = {"capacity": len(self.targets), "added": self.added, "spins": self.spins[:n].copy(),
                "targets": self.targets[:n].copy(), "betas": self.betas[:n].copy(), "ids": self.ids[:n].copy()}
        if self.ref_spins is not None:
            tree.update(ref_spins=self.ref_spins[:n].copy(), ref_targets=self.ref_targets[:n].copy())
        if self.features is not None:
            tree.update(featurized=self.featurized[:n].copy(), features=self.features[:n].copy())
            if self.ref_features is not None:
                tree["ref_features"] = self.ref_features[:n].copy()
        return tree

    @classmethod
    def from_state(cls, tree: dict, featurize=None) -> "ReplayBuffer":
        """The buffer of ``state_dict``; ``featurize`` as the buffer had (rows a checkpoint
        without them lacks are computed at the next round)."""
        n, spins = len(tree["targets"]), tree["spins"]
        buf = cls(int(tree["capacity"]), spins.shape[1], pairs="ref_spins" in tree, featurize=featurize)
        for name in ("spins", "targets", "betas", "ids") + (("ref_spins", "ref_targets") if "ref_spins" in tree else ()):
            getattr(buf, name)[:n] = tree[name]
        buf.size, buf.added = n, int(tree["added"])
        if featurize is not None and "features" in tree:
            buf._allocate(tree["features"].shape[1])
            buf.features[:n], buf.featurized[:n] = tree["features"], tree["featurized"]
            if buf.ref_features is not None:
                buf.ref_features[:n] = tree["ref_features"]
        return buf

    def _allocate(self, n_features: int) -> None:
        self.features = np.empty((len(self.targets), n_features))
        self.ref_features = np.empty_like(self.features) if self.ref_spins is not None else None

    def _featurize_new(self) -> None:
        new = np.flatnonzero(~self.featurized[:self.size])
        if self.featurize is None or not len(new):
            return
        rows = self.featurize(self.spins[new])
        if self.features is None:
            self._allocate(rows.shape[1])
        self.features[new] = rows
        if self.ref_features is not None:
            self.ref_features[new] = self.featurize(self.ref_spins[new])
        self.featurized[new] = True

    def samples(self) -> Samples:
        self._featurize_new()
        n = self.size
        pairs = self.ref_spins is not None
        cut = (lambda a: None if a is None else a[:n])
        return Samples(self.spins[:n], self.targets[:n], cut(self.ref_spins), cut(self.ref_targets), self.betas[:n],
                       cut(self.features), cut(self.ref_features))

    def split(self, fraction: float) -> tuple[Samples, Samples]:
        """(training, validation) samples."""
        val = is_validation(self.ids[: self.size], fraction)
        everything = self.samples()
        return everything.subset(~val), everything.subset(val)


def per_site_mse(energies: np.ndarray, targets: np.ndarray, n_sites: int) -> float:
    return float(np.mean(((np.asarray(energies) - targets) / n_sites) ** 2)) if len(targets) else float("nan")


@dataclass(frozen=True)
class RoundResult:
    train_loss: float
    validation_loss: float


# what a training round records, per slot (the file's /training datasets)
ROUND_FIELDS = ("step", "n_train", "train_loss", "validation_loss", "acceptance", "middle_acceptance")
