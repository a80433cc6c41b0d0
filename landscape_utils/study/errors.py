"""The study's errors, in a module that imports nothing, so the command line can name them
without loading torch."""


class MNISTFileError(RuntimeError):
    """An MNIST file is missing, truncated or not the standard file."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; nothing was saved."""


class RunCacheError(RuntimeError):
    """A run directory is incomplete or does not match its manifest."""


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; its output notebook shows where."""
