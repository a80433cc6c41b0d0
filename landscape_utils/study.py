"""Settings of the notebook study: one frozen dataclass; profiles list only what differs.

``StudyConfig()`` is the study as written (3 epochs on all of MNIST, three seeds per
architecture). A profile file ``profiles/<name>.toml`` overrides some fields (``smoke``
makes everything tiny); a notebook may override a few more through its ``overrides``
parameter. Every value is checked when the configuration is made.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import TrainConfig, config_problems
from .data import REPO_ROOT
from .models import MODELS

PROFILES_DIR = REPO_ROOT / "profiles"
ENV_OUTPUTS_DIR = "LANDSCAPE_OUTPUTS"


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study, with the study's values as defaults.

    Training (one run per seed s, with init_seed = data_seed = s):
        seeds, epochs, max_steps, train_size, batch_size, lr, momentum.
    Fixed probe samples (seeded subsets of the train and test splits):
        probe_train_size, probe_test_size, probe_seed.
    Curvature: lanczos_k, lanczos_tol, smallest_tol (λmin only needs its sign and size),
        power_tol, power_max_iter, trace_probes, slq_vectors, slq_steps, curvature_seed.
    Flatness: isotropic_sigmas (absolute noise std), relative_sigmas (noise relative to
        filter norms / weight magnitudes), flatness_draws, flatness_seed.
    Slices: slice_radius, slice_points (odd, so alpha = 0 is on the grid),
        slice_directions (filter-normalised random directions per run),
        surface_radius, surface_points, direction_seed.
    Connectivity: path_points (both endpoints included).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    max_steps: int | None = None
    train_size: int | None = None
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    probe_train_size: int = 512
    probe_test_size: int = 1024
    probe_seed: int = 0
    lanczos_k: int = 3
    lanczos_tol: float = 1e-4
    smallest_tol: float = 1e-2
    power_tol: float = 1e-3
    power_max_iter: int = 100
    trace_probes: int = 24
    slq_vectors: int = 2
    slq_steps: int = 24
    curvature_seed: int = 0
    isotropic_sigmas: tuple[float, ...] = (0.003, 0.01, 0.03)
    relative_sigmas: tuple[float, ...] = (0.01, 0.03, 0.1)
    flatness_draws: int = 16
    flatness_seed: int = 0
    slice_radius: float = 0.05
    slice_points: int = 17
    slice_directions: int = 2
    surface_radius: float = 0.5
    surface_points: int = 9
    direction_seed: int = 0
    path_points: int = 25

    def __post_init__(self) -> None:
        problems = study_problems(self)
        if problems:
            raise ValueError("invalid study settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def train_config(self, arch: str, seed: int) -> TrainConfig:
        """The training run of ``arch`` for one seed of the study."""
        return TrainConfig(arch=arch, epochs=self.epochs, max_steps=self.max_steps,
                           train_size=self.train_size, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, init_seed=seed, data_seed=seed)

    @property
    def seed_pairs(self) -> list[tuple[int, int]]:
        """Every pair of independently trained seeds, for mode connectivity."""
        return [(a, b) for i, a in enumerate(self.seeds) for b in self.seeds[i + 1:]]


_FIELDS = {f.name: f for f in fields(StudyConfig)}


def _type_problem(name: str, value: Any) -> str | None:
    default = _FIELDS[name].default
    if isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return None if ok else f"{name} must be a non-empty list of numbers, got {value!r}"
    if name in ("max_steps", "train_size"):
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        return None if ok else f"{name} must be an integer or None, got {value!r}"
    if isinstance(default, bool) or not isinstance(value, type(default)) or isinstance(value, bool):
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return None
        return f"{name} must be {type(default).__name__}, got {value!r}"
    return None


def study_problems(cfg: StudyConfig) -> list[str]:
    """Every problem with ``cfg`` as readable sentences (empty when valid)."""
    p = [msg for name in _FIELDS if (msg := _type_problem(name, getattr(cfg, name)))]
    if p:
        return p
    if len(set(cfg.seeds)) != len(cfg.seeds) or any(s < 0 or s != int(s) for s in cfg.seeds):
        p.append(f"seeds must be distinct non-negative integers, got {list(cfg.seeds)}")
    try:
        p += config_problems(cfg.train_config("cnn", int(cfg.seeds[0])))
    except ValueError as exc:  # pragma: no cover - config_problems does not raise
        p.append(str(exc))
    for name in ("probe_train_size", "probe_test_size"):
        limit = 60000 if "train" in name else 10000
        if not 1 <= getattr(cfg, name) <= limit:
            p.append(f"{name} must be in [1, {limit}], got {getattr(cfg, name)}")
    for name in ("lanczos_k", "power_max_iter", "trace_probes", "slq_vectors", "slq_steps",
                 "flatness_draws", "slice_directions", "path_points"):
        if getattr(cfg, name) < 1:
            p.append(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.flatness_draws < 2:
        p.append("flatness_draws must be at least 2 (an interval needs two draws)")
    if cfg.path_points < 3:
        p.append(f"path_points must be at least 3, got {cfg.path_points}")
    for name in ("lanczos_tol", "smallest_tol", "power_tol", "slice_radius", "surface_radius"):
        v = getattr(cfg, name)
        if not (v > 0 and math.isfinite(v)):
            p.append(f"{name} must be a positive finite number, got {v}")
    for name in ("isotropic_sigmas", "relative_sigmas"):
        if any(not (s > 0 and math.isfinite(s)) for s in getattr(cfg, name)):
            p.append(f"{name} must all be positive, got {list(getattr(cfg, name))}")
    for name in ("slice_points", "surface_points"):
        v = getattr(cfg, name)
        if v < 3 or v % 2 == 0:
            p.append(f"{name} must be odd and at least 3 (so 0 is on the grid), got {v}")
    return p


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    # TOML and JSON give lists; the dataclass holds tuples (hashable, immutable).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def load_study(profile: str = "full", overrides: dict[str, Any] | None = None,
               profiles_dir: Path | None = None) -> StudyConfig:
    """The study settings of ``profile`` with ``overrides`` applied on top.

    Raises:
        ValueError: unknown profile (lists the valid ones), unknown setting names
            (lists the valid ones), or bad values (every problem at once).
    """
    profiles_dir = profiles_dir or PROFILES_DIR
    path = profiles_dir / f"{profile}.toml"
    if not isinstance(profile, str) or not path.is_file():
        valid = sorted(p.stem for p in profiles_dir.glob("*.toml"))
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(valid)}")
    values = tomllib.loads(path.read_text())
    overrides = dict(overrides or {})
    for source, mapping in ((str(path), values), ("overrides", overrides)):
        unknown = sorted(set(mapping) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; valid: {', '.join(_FIELDS)}")
    return StudyConfig(**_coerce({**values, **overrides}))


def check_arch(arch: Any) -> str:
    """``arch`` if it names a registered architecture; else ValueError listing them."""
    if not isinstance(arch, str) or arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(sorted(MODELS))}")
    return arch


def output_dir(profile: str) -> Path:
    """``<outputs>/<profile>/``: results, figures, executed notebooks and the report.

    ``<outputs>`` is ``$LANDSCAPE_OUTPUTS`` when set, else the repository's ``outputs/``.
    """
    return Path(os.environ.get(ENV_OUTPUTS_DIR) or REPO_ROOT / "outputs").resolve() / profile


def notebook_settings(arch: Any, profile: Any, overrides: Any) -> StudyConfig:
    """Validate a notebook's parameters cell; return the study settings it selects.

    Raises:
        ValueError: unknown architecture or profile (valid ones listed), overrides that are
            not a dict, unknown setting names, or bad values.
    """
    if arch is not None:
        check_arch(arch)
    if not isinstance(profile, str):
        raise ValueError(f"profile must be a string such as 'full' or 'smoke', got {profile!r}")
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a dict of study settings, got {overrides!r}")
    return load_study(profile, overrides)
