"""Training configuration: one frozen dataclass whose defaults are the only defaults.

A configuration is checked when it is made, so bad values fail before any data is read
or any step is taken, and it hashes to the key of its run directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .provenance import short_hash, source_digest
from .registry import ARCHITECTURES

# The layout of a run directory. The *contents* are keyed by the configuration and by the digest
# of the code that trains (see ``training_source_digest``), so code changes need no bump here.
CACHE_VERSION = 3
_HERE = Path(__file__).resolve().parent

# "sgd": torch.optim.SGD (heavy-ball momentum ``momentum``; 0 is plain SGD); "adam": torch.optim.Adam with
# PyTorch's defaults (β₁ = 0.9, β₂ = 0.999, ε = 1e-8); "adadelta": torch.optim.Adadelta (ρ = 0.9, ε = 1e-6).
OPTIMIZERS = ("sgd", "adam", "adadelta")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults reproduce the study: 3 epochs of SGD with momentum.

    Attributes:
        arch: architecture name, a key of ``landscape_utils.study.registry.ARCHITECTURES``.
        epochs: passes over the training set.
        max_steps: stop after this many optimiser steps in total (``None``: no cap);
            lets a smoke run train for a fraction of an epoch.
        train_size: train on a seeded subset of this many examples (``None``: all 60,000).
        subset_seed: seed choosing that subset.
        batch_size: examples per optimiser step.
        optimizer: ``"sgd"`` (heavy-ball momentum ``momentum``), ``"adam"`` or ``"adadelta"``
            (see ``OPTIMIZERS``; Adam and Adadelta use PyTorch's default betas/rho and eps).
        lr: learning rate (the step size the dynamics analysis needs).
        momentum: SGD momentum (ignored by Adam and Adadelta).
        lr_gamma: multiply the learning rate by this after every epoch (``StepLR(step_size=1)``,
            as PyTorch's MNIST example does with 0.7); 1.0 keeps it constant.
        weight_decay: L2 penalty coefficient.
        target_loss: stop as soon as the mean cross-entropy on the target-check subset of the
            training set (``training.TARGET_EVAL_SIZE`` examples of the fixed evaluation subset) is at
            most this (checked every ``target_every`` steps); ``None``: train for the epochs / step cap.
            Runs compared at a matched training loss use it (with ``max_steps`` as the cap).
        target_every: steps between target checks.
        checkpoints: save this many parameter snapshots (and the optimiser's preconditioner state)
            at log-spaced steps from initialisation to the last step, with the run (0: none). They
            never change the trajectory.
        init_seed: seed of the parameter initialisation.
        data_seed: seed of the data order (shuffling each epoch).
        device: ``"cpu"`` or ``"cuda"``.
    """

    arch: str = "cnn"
    epochs: int = 3
    max_steps: int | None = None
    train_size: int | None = None
    subset_seed: int = 0
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    lr_gamma: float = 1.0
    weight_decay: float = 0.0
    target_loss: float | None = None
    target_every: int = 50
    checkpoints: int = 0
    init_seed: int = 0
    data_seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys by name.

        Raises:
            ValueError: unknown keys (the message lists the valid ones) or bad values.
        """
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: "
                             f"{', '.join(f.name for f in fields(cls))}")
        return cls(**values)

    def key(self) -> str:
        """The run's directory key: a hash of the full configuration, the cache layout version and
        the digest of the code that determines the run (:func:`training_source_digest`)."""
        return short_hash({"cache_version": CACHE_VERSION, "source": training_source_digest(self.arch),
                           **self.to_dict()})

    def run_name(self) -> str:
        return f"{self.arch}-i{self.init_seed}-d{self.data_seed}-{self.key()}"


def training_source_digest(arch: str) -> str:
    """Digest of the code that determines a run of ``arch``: the training loop, the data reader,
    the configuration and the module defining the architecture's class (comments and docstrings
    left out, see :func:`~landscape_utils.study.provenance.source_digest`)."""
    model_module = importlib.util.find_spec(ARCHITECTURES[arch].model.partition(":")[0]).origin
    return source_digest([_HERE / "training.py", _HERE / "data.py", _HERE / "config.py", _HERE / "models.py",
                          model_module])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every problem with ``cfg``, as readable sentences (empty when valid)."""
    p: list[str] = []
    if cfg.arch not in ARCHITECTURES:
        p.append(f"unknown architecture {cfg.arch!r} (valid: {', '.join(ARCHITECTURES)})")
    for name in ("epochs", "batch_size", "target_every"):
        v = getattr(cfg, name)
        if not _is_int(v) or v < 1:
            p.append(f"{name} must be a positive integer, got {v!r}")
    for name in ("max_steps", "train_size"):
        v = getattr(cfg, name)
        if v is not None and (not _is_int(v) or v < 1):
            p.append(f"{name} must be a positive integer or None, got {v!r}")
    if _is_int(cfg.train_size) and cfg.train_size > 60000:
        p.append(f"train_size must be at most 60000, got {cfg.train_size}")
    for name in ("subset_seed", "init_seed", "data_seed"):
        v = getattr(cfg, name)
        if not _is_int(v) or v < 0:
            p.append(f"{name} must be a non-negative integer, got {v!r}")
    if cfg.optimizer not in OPTIMIZERS:
        p.append(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if not _is_number(cfg.lr) or not cfg.lr > 0 or cfg.lr != cfg.lr or cfg.lr == float("inf"):
        p.append(f"lr must be a positive finite number, got {cfg.lr!r}")
    if not _is_number(cfg.momentum) or not 0 <= cfg.momentum < 1:
        p.append(f"momentum must be in [0, 1), got {cfg.momentum!r}")
    if not _is_number(cfg.weight_decay) or not 0 <= cfg.weight_decay < float("inf"):
        p.append(f"weight_decay must be a non-negative finite number, got {cfg.weight_decay!r}")
    if not _is_number(cfg.lr_gamma) or not 0 < cfg.lr_gamma <= 1:
        p.append(f"lr_gamma must be in (0, 1], got {cfg.lr_gamma!r}")
    if cfg.target_loss is not None and (not _is_number(cfg.target_loss) or not 0 < cfg.target_loss < float("inf")):
        p.append(f"target_loss must be a positive finite number or None, got {cfg.target_loss!r}")
    if not _is_int(cfg.checkpoints) or cfg.checkpoints < 0 or cfg.checkpoints == 1:
        p.append(f"checkpoints must be 0 or at least 2 (initialisation and the last step), got {cfg.checkpoints!r}")
    if _is_int(cfg.train_size) and _is_int(cfg.batch_size) and cfg.batch_size > cfg.train_size:
        p.append(f"batch_size ({cfg.batch_size}) is larger than the training subset (train_size={cfg.train_size})")
    elif _is_int(cfg.batch_size) and cfg.batch_size > 60000:
        p.append(f"batch_size ({cfg.batch_size}) is larger than the training set (60000)")
    if cfg.device not in DEVICES:
        p.append(f"device must be one of {DEVICES}, got {cfg.device!r}")
    return p
