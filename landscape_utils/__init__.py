"""landscape_utils: loss-landscape geometry probes for any PyTorch model, and the MNIST study.

Three layers, each a subpackage:

* :mod:`landscape_utils.probes` — model-agnostic probes (Hessian, spectrum, directions,
  flatness, slices, connectivity, evaluation). They import nothing from the study.
* :mod:`landscape_utils.study` — the MNIST study: settings, registries, data, models, training
  runs, per-seed jobs, section summaries and statistics.
* :mod:`landscape_utils.report` — figures, tables, the comparison's text and the HTML report.

The names below are imported on first use, so ``import landscape_utils`` stays cheap (the
workflow imports the registries on every dry run without loading torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "TrainConfig": "landscape_utils.study.config",
    "load_mnist": "landscape_utils.study.data", "probe_subset": "landscape_utils.study.data",
    "ARCHITECTURES": "landscape_utils.study.registry", "SECTIONS": "landscape_utils.study.registry",
    "build_model": "landscape_utils.study.models",
    "Run": "landscape_utils.study.training", "TrainingDiverged": "landscape_utils.study.training",
    "load_run": "landscape_utils.study.training", "train_or_load": "landscape_utils.study.training",
    "flatten": "landscape_utils.probes.params", "named_params": "landscape_utils.probes.params",
    "probe_mode": "landscape_utils.probes.params", "unflatten": "landscape_utils.probes.params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'landscape_utils' has no attribute {name!r}")
