"""The optimiser recipes of the protocol study: what the write-up might have trained with.

A plain registry (no torch): ``"study"`` is the study's own optimiser (SGD with its momentum and
learning rate); the others change only the optimiser, as :meth:`StudyConfig.recipe_config` applies
them to a run of the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """One optimiser recipe.

    Attributes:
        key: short name used in unit names and settings (``"adam"``).
        label: name shown in the report.
        optimizer: ``TrainConfig.optimizer``.
        lr, momentum: learning rate and SGD momentum; ``None``: the study's.
        lr_gamma: learning-rate decay per epoch (StepLR); 1.0 keeps it constant.
        source: where the recipe comes from.
    """

    key: str
    label: str
    optimizer: str
    lr: float | None = None
    momentum: float | None = None
    lr_gamma: float = 1.0
    source: str = ""


RECIPES: dict[str, Recipe] = {r.key: r for r in (
    Recipe("study", "SGD, momentum 0.9 (the study's)", "sgd", source="the study's own training"),
    Recipe("sgd-m0.5", "SGD, momentum 0.5", "sgd", momentum=0.5, source="a common lighter momentum"),
    Recipe("sgd", "plain SGD", "sgd", momentum=0.0, source="no momentum"),
    Recipe("adam", "Adam, lr 1e-3", "adam", lr=1e-3, momentum=0.0, source="the commonest MNIST recipe"),
    Recipe("adadelta", "Adadelta, lr 1.0, StepLR 0.7", "adadelta", lr=1.0, momentum=0.0, lr_gamma=0.7,
           source="PyTorch's MNIST example"),
)}


def check_recipe(key: Any) -> Recipe:
    """The recipe named ``key``, else ValueError listing them."""
    if not isinstance(key, str) or key not in RECIPES:
        raise ValueError(f"unknown optimiser recipe {key!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[key]
