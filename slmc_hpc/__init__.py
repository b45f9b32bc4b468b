"""slmc-hpc: self-learning Monte Carlo for the double-exchange model."""

__version__ = "0.8.7"
