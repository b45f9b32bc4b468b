"""Online self-learning during thermalization (the measured chain is one fixed Markov kernel):

- data.py: the replay buffer of exactly evaluated proposals and the Samples it hands out;
- least_squares.py: the linear model's least-squares trainer;
- network.py: the Transformer's trainer (AdamW on the layers, least-squares head), collective
  over MPI ranks (imports torch);
- learner.py: one temperature slot's learning (buffer, trainers, round schedule) and the
  training round, collective for the shared network;
- errors.py: TrainingError and RoundInterrupted (no torch: the CLI imports them).

Loss convention (both trainers): mean squared error per site, mean(((E_eff - F_β) / N)^2),
F_β whole-lattice at the sample's β; or, with loss = "pair", the same for the differences
(E_eff - F_β)[proposal] - (E_eff - F_β)[current] over the chain's own pairs.

Nothing is imported here, so that importing the errors does not import torch.
"""
