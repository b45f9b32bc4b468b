"""Training errors, kept apart from the trainers so that the CLI can name them without
importing torch."""


class RoundInterrupted(Exception):
    """A stop was requested during a training round (see TorchTrainer.train's ``interrupt``);
    the trainer is exactly as it was before the round, so the round can be redone."""


class TrainingError(RuntimeError):
    """Non-finite training data or loss; the model keeps its last good parameters."""
