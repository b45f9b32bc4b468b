"""Least-squares training of the linear effective model (energy or pair loss)."""

from __future__ import annotations

from ..models import LinearModel
from .data import RoundResult, Samples, per_site_mse


class LinearTrainer:
    """Least-squares fit of the linear model on the training samples: on F (energy loss) or
    on F differences over (proposal, current) pairs (pair loss)."""

    def __init__(self, model: LinearModel, loss: str = "energy"):
        self.model, self.loss = model, loss

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
        if self.loss == "pair":
            self.model = self.model.fit_pairs(train.spins, train.targets, train.ref_spins, train.ref_targets,
                                              train.features, train.ref_features)
        else:
            self.model = self.model.fit(train.spins, train.targets, train.features)
        return RoundResult(self._mse(train), self._mse(validation))
