"""The study's errors, in a module that imports nothing, so the command line can name them
without loading torch."""


class MNISTFileError(RuntimeError):
    """An MNIST file is missing, truncated or not the standard file."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; nothing was saved. ``step``: the optimiser step
    at which it was seen (None when unknown)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class RunCacheError(RuntimeError):
    """A run directory is incomplete or does not match its manifest."""


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; its output notebook shows where."""
