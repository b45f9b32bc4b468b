"""Markov chains over spin configurations. A sampler is immutable configuration; the chain's
state (spins, eigenvalues, effective energy) is a separate small object each step returns anew;
the random generator is passed in explicitly."""

from .exact_local import ExactLocalSampler
from .nested import NestedSLMCSampler
from .slmc import SLMCSampler
from .state import AcceptanceCounts, ChainState, StepInfo

__all__ = ["AcceptanceCounts", "ChainState", "StepInfo", "ExactLocalSampler", "SLMCSampler", "NestedSLMCSampler"]
