"""landscape_utils: loss-landscape geometry probes for any PyTorch model, and the MNIST study.

Heavy modules (notebook tooling) are not imported here; import them by name.
"""

from .config import TrainConfig
from .data import load_mnist, probe_subset
from .models import MODELS, build_model
from .params import flatten, named_params, probe_mode, unflatten
from .training import Run, TrainingDiverged, load_run, train_or_load

__all__ = [
    "MODELS", "Run", "TrainConfig", "TrainingDiverged", "build_model", "flatten", "load_mnist",
    "load_run", "named_params", "probe_mode", "probe_subset", "train_or_load", "unflatten",
]
__version__ = "0.1.0"
