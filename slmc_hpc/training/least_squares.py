"""Least-squares training of the linear effective model (energy or pair loss), and of the
downfolded model's linear correction."""

from __future__ import annotations

from dataclasses import replace

from .data import RoundResult, Samples, per_site_mse


class LinearTrainer:
    """Least-squares fit of a linear (or downfolded) model on the training samples: on F
    (energy loss) or on F differences over (proposal, current) pairs (pair loss).
    ``columns``: this model's part of the buffer's design rows, where the buffer keeps
    another model's (three-level SLMC's inner model: the downfolded model's rows without F_low)."""

    def __init__(self, model, loss: str = "energy", columns: slice | None = None):
        self.model, self.loss, self.columns = model, loss, columns

    def _own_rows(self, data: Samples) -> Samples:
        if self.columns is None or data.features is None:
            return data
        ref = data.ref_features
        return replace(data, features=data.features[:, self.columns],
                       ref_features=None if ref is None else ref[:, self.columns])

    def _energy(self, spins, rows):
        return self.model.energy(spins) if rows is None else self.model.energy_of_design(rows)

    def _mse(self, data: Samples) -> float:
        if not len(data):
            return float("nan")
        n = self.model.lattice.N
        energy = self._energy(data.spins, data.features)
        if self.loss == "pair":
            return per_site_mse(energy - self._energy(data.ref_spins, data.ref_features),
                                data.targets - data.ref_targets, n)
        return per_site_mse(energy, data.targets, n)

    def train(self, train: Samples, validation: Samples, beta: float) -> RoundResult:
        """Fit on ``train`` (with its design rows where the buffer kept them) and return the
        losses on both sets."""
        train.check_finite()
        validation.check_finite()
        train, validation = self._own_rows(train), self._own_rows(validation)
        if self.loss == "pair":
            self.model = self.model.fit_pairs(train.spins, train.targets, train.ref_spins, train.ref_targets,
                                              train.features, train.ref_features)
        else:
            self.model = self.model.fit(train.spins, train.targets, train.features)
        return RoundResult(self._mse(train), self._mse(validation))
