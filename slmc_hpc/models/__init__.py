"""Effective energies E_eff[S] for self-learning Monte Carlo.

Every model is an immutable object with
    energy(spins) -> float                      whole-lattice E_eff, same units as F_β
    delta_energy(spins, i, new_spin) -> float   E_eff after setting S_i = new_spin, minus before
    parameters() -> (vector, names)             for the output file
    with_beta(beta) -> model                    the model at another temperature (tempering)
    n_parameters -> int
and optionally
    bond_form                                   the energy as a bond form (samplers/local_chain.py):
                                                the SLMC inner chain then runs compiled
    local_form                                  (the Transformer) its layers as site lists, for the
                                                compiled chain with incremental ΔE
                                                (samplers/transformer_chain.py)
Training lives in slmc_hpc.training (least squares for the linear model, AdamW for the
Transformer), which returns new model objects.
The SLMC sampler only uses these, so any model keeps the chain exact; a poor one only lowers
the acceptance.
"""

from .linear import LinearModel

__all__ = ["LinearModel"]
# models.transformer (PyTorch) is imported explicitly where it is used.
