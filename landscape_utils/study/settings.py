"""Settings of the notebook study: one frozen dataclass; profiles list only what differs.

``StudyConfig()`` is the full study (3 epochs on all of MNIST, ten seeds per
architecture). A profile file ``profiles/<name>.toml`` overrides some fields (``smoke``
makes everything tiny); a notebook may override a few more through its ``overrides``
parameter. Every value is checked when the configuration is made.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, fields
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import TrainConfig, config_problems
from .paths import PROFILES_DIR, outputs_root
from .provenance import short_hash
from .registry import ARCHITECTURES, check_arch


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study, with the study's values as defaults.

    Training (one run per seed s, with init_seed = data_seed = s; connectivity's controls add runs):
        seeds, epochs, max_steps, train_size, batch_size, lr, momentum.
    Fixed probe samples (seeded subsets of the train and test splits):
        probe_train_size, probe_test_size, probe_seed.
    Curvature: lanczos_k, lanczos_tol, smallest_tol (λmin only needs its sign and size),
        power_tol, power_max_iter, trace_probes, slq_vectors, slq_steps, curvature_seed (every seed
        gets Lanczos, power iteration, λmin, Hutchinson, Hutch++ and the SLQ density).
    Flatness: isotropic_sigmas (absolute noise std), relative_sigmas (noise relative to
        filter norms / weight magnitudes), flatness_draws (loss evaluations per σ, spent as
        flatness_draws / 2 antithetic ±δ pairs), flatness_seed.
    Slices: slice_radius, slice_points (odd, so alpha = 0 is on the grid),
        slice_directions (filter-normalised random directions per run),
        surface_radius, surface_points, direction_seed; surface_seeds: the seeds whose runs
        also get the 2-D surface.
    Connectivity: path_points (both endpoints included); at most pairs_per_kind pairs of runs of
        each kind: independent (disjoint pairs of study seeds: 0–1, 2–3, ...), same-init (seed s's run
        and a run with initialisation s and data order s + control_seed_offset) and same-data
        (the reverse), for the first pairs_per_kind seeds; alignment_seed (weight matching's
        group order); curve_steps, curve_lr, curve_seed: the quadratic Bézier curve's training
        budget (SGD with the study's momentum and batch size on the training images), step size and seed
        (t and batch draws).
    Estimator noise: variance_repeats repeats of every probe on the first seed's run, once with fresh
        random vectors (Lanczos start, trace probes, noise draws, directions, curve draws) and once
        with fresh probe sets, against which the between-seed spread is judged.
    Optimisation dynamics (one unit per architecture, setting and seed; see :meth:`dynamics_cells`):
        trajectory_points: parameter snapshots saved with every training run, at log-spaced steps
            from initialisation to the end; at each, λmax (Lanczos warm-started from the previous
            snapshot's top two Ritz vectors, tolerance lanczos_tol), tr(H) (Hutch++ with that
            Lanczos basis as sketch, trajectory_trace_probes probes), the mini-batch sharpness (mean λmax of
            minibatch_batches training batches of batch_size, tolerance minibatch_tol) and, for Adam,
            the preconditioned sharpness λmax(P⁻¹H); random draws from dynamics_seed.
        optimizers: the protocol study's recipes (keys of ``recipes.RECIPES``; "study" is the study's
            own optimiser, run for every seed; the others for protocol_seeds), each measured at its
            end on one training batch, the probe set and protocol_large_size training images, by power
            iteration (power_tol, power_max_iter) and by Lanczos.
        sample_sizes, sample_draws: λmax of the first seed's run on sample_draws random training samples of
            each size (one when the size is the whole training set).
        sweep_archs, sweep_batch_sizes, sweep_lrs, sweep_seeds: the batch-size and learning-rate sweep
            (SGD with the study's momentum), each cell at its base learning rate and at the rate scaled
            by batch / batch_size, trained until the train loss reaches sweep_target_loss (at most
            sweep_max_epochs epochs), then measured: λmax, tr(H), the filter-normalised flatness (mean
            loss change under filter-relative noise sweep_sigma, sweep_draws draws), the adaptive
            sharpness (radius adaptive_rho, adaptive_steps ascent steps) and the generalisation gap.
        eos_archs, eos_size, eos_multiples, eos_steps, eos_every, eos_seed: full-batch gradient descent
            with the squared loss on eos_size training images (seeded by eos_seed) from the initialisation
            of eos_seed, for eos_steps steps at each step size η = 2 / (m · λ0), m in eos_multiples and λ0
            the sharpness at initialisation (so 2/η = m · λ0 for every architecture: m < 1 starts beyond
            the edge, m > 1 needs progressive sharpening to reach it); λmax every eos_every steps.
    Device: ``"cpu"`` or ``"cuda"`` for every job (on a cluster, a CUDA job asks for one GPU).
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
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
    flatness_draws: int = 32
    flatness_seed: int = 0
    slice_radius: float = 0.05
    slice_points: int = 25
    slice_directions: int = 4
    surface_radius: float = 0.5
    surface_points: int = 41
    surface_seeds: tuple[int, ...] = (0,)
    direction_seed: int = 0
    path_points: int = 25
    pairs_per_kind: int = 5
    control_seed_offset: int = 1000
    alignment_seed: int = 0
    curve_steps: int = 1000
    curve_lr: float = 0.01
    curve_seed: int = 0
    variance_repeats: int = 3
    trajectory_points: int = 20
    trajectory_trace_probes: int = 4
    minibatch_batches: int = 8
    minibatch_tol: float = 1e-2
    dynamics_seed: int = 0
    optimizers: tuple[str, ...] = ("study", "sgd-m0.5", "sgd", "adam", "adadelta")
    protocol_seeds: tuple[int, ...] = (0, 1, 2)
    protocol_large_size: int = 4096
    sample_sizes: tuple[int, ...] = (64, 512, 4096, 60000)
    sample_draws: int = 4
    sweep_archs: tuple[str, ...] = ("mlp",)
    sweep_batch_sizes: tuple[int, ...] = (32, 512, 4096)
    sweep_lrs: tuple[float, ...] = (0.005, 0.01, 0.02)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    sweep_target_loss: float = 0.1
    sweep_max_epochs: int = 10
    sweep_sigma: float = 0.03
    sweep_draws: int = 8
    adaptive_rho: float = 0.05
    adaptive_steps: int = 10
    eos_archs: tuple[str, ...] = ("mlp", "cnn")
    eos_size: int = 1000
    eos_multiples: tuple[float, ...] = (0.98, 1.06, 1.15)
    eos_steps: int = 800
    eos_every: int = 20
    eos_seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = study_problems(self)
        if problems:
            raise ValueError("invalid study settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def train_config(self, arch: str, seed: int) -> TrainConfig:
        """The training run of ``arch`` for one seed of the study (initialisation and data order ``seed``)."""
        return self.run_config(arch, (seed, seed))

    def run_config(self, arch: str, run: tuple[int, int]) -> TrainConfig:
        """The training run of ``arch`` with initialisation seed ``run[0]`` and data-order seed
        ``run[1]`` (a :class:`~landscape_utils.study.units.RunId`); every other setting the study's."""
        init, data = run
        return TrainConfig(arch=arch, epochs=self.epochs, max_steps=self.max_steps,
                           train_size=self.train_size, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, init_seed=init, data_seed=data,
                           checkpoints=self.trajectory_points, device=self.device)

    def recipe_config(self, arch: str, recipe: str, seed: int) -> TrainConfig:
        """The run of ``arch`` and ``seed`` trained with the optimiser ``recipe`` (a key of
        ``recipes.RECIPES``), everything else as the study's; ``"study"`` is the study's own run."""
        from .recipes import check_recipe

        r = check_recipe(recipe)
        if r.key == "study":
            return self.train_config(arch, seed)
        return dataclasses.replace(self.train_config(arch, seed), optimizer=r.optimizer,
                                   lr=r.lr if r.lr is not None else self.lr,
                                   momentum=r.momentum if r.momentum is not None else self.momentum,
                                   lr_gamma=r.lr_gamma)

    def sweep_config(self, arch: str, batch_size: int, lr: float, scaling: str, seed: int) -> TrainConfig:
        """A cell of the batch-size sweep: SGD with the study's momentum at ``batch_size``, learning
        rate ``lr`` (``scaling="none"``) or ``lr · batch_size / self.batch_size`` (``"linear"``),
        trained to the target loss (checked about every 6,400 examples) with an epoch cap."""
        rate = lr * batch_size / self.batch_size if scaling == "linear" else lr
        return TrainConfig(arch=arch, epochs=self.sweep_max_epochs, train_size=self.train_size,
                           batch_size=batch_size, lr=float(rate), momentum=self.momentum,
                           target_loss=self.sweep_target_loss, target_every=max(1, round(6400 / batch_size)),
                           init_seed=seed, data_seed=seed, device=self.device)

    def dynamics_cells(self, arch: str) -> list:
        """The optimisation-dynamics units of ``arch`` (:class:`~landscape_utils.study.units.Cell`):
        every recipe and seed, the sample-size study, the batch-size sweep (architectures in
        sweep_archs) and the edge-of-stability runs (architectures in eos_archs)."""
        from .units import Cell

        cells = [Cell("opt", r, s) for r in self.optimizers
                 for s in (self.seeds if r == "study" else self.protocol_seeds)]
        cells.append(Cell("sizes", "", self.seeds[0]))
        if arch in self.sweep_archs:
            cells += [Cell("sweep", f"b{b}-lr{lr:g}-{scaling}", s) for b in self.sweep_batch_sizes
                      for lr in self.sweep_lrs for scaling in ("none", "linear")
                      if not (scaling == "linear" and b == self.batch_size) for s in self.sweep_seeds]
        if arch in self.eos_archs:
            cells += [Cell("eos", f"m{m:g}", self.eos_seed) for m in self.eos_multiples]
        return cells

    @property
    def connectivity_pairs(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """The pairs of runs connectivity compares, ``pairs_per_kind`` of each kind, each as two
        :class:`~landscape_utils.study.units.RunId`: independent pairs of disjoint study seeds
        (0–1, 2–3, ...: no run in two pairs, so the pairs are independent samples; fewer when the
        seeds allow fewer), then
        same-initialisation pairs (seed s's run against initialisation s with data order
        s + control_seed_offset), then same-data-order pairs (the reverse)."""
        from .units import RunId

        n, off, seeds = self.pairs_per_kind, self.control_seed_offset, self.seeds
        independent = [(RunId(seeds[2 * k], seeds[2 * k]), RunId(seeds[2 * k + 1], seeds[2 * k + 1]))
                       for k in range(min(n, len(seeds) // 2))]
        same_init = [(RunId(s, s), RunId(s, s + off)) for s in seeds[:n]]
        same_data = [(RunId(s, s), RunId(s + off, s)) for s in seeds[:n]]
        return independent + same_init + same_data


_FIELDS = {f.name: f for f in fields(StudyConfig)}


def _type_problem(name: str, value: Any) -> str | None:
    default = _FIELDS[name].default
    if isinstance(default, tuple) and default and isinstance(default[0], str):
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
        return None if ok else f"{name} must be a list of names, got {value!r}"
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
    for name in ("seeds", "surface_seeds", "protocol_seeds", "sweep_seeds"):
        values = getattr(cfg, name)
        if len(set(values)) != len(values) or any(not isinstance(s, int) or s < 0 for s in values):
            p.append(f"{name} must be distinct non-negative integers, got {list(values)}")
    if p:
        return p
    try:
        p += config_problems(cfg.train_config(next(iter(ARCHITECTURES)), cfg.seeds[0]))
    except ValueError as exc:  # pragma: no cover - config_problems does not raise
        p.append(str(exc))
    for name in ("probe_train_size", "probe_test_size"):
        limit = 60000 if "train" in name else 10000
        if not 1 <= getattr(cfg, name) <= limit:
            p.append(f"{name} must be in [1, {limit}], got {getattr(cfg, name)}")
    p += dynamics_problems(cfg)
    if cfg.variance_repeats < 2:
        p.append(f"variance_repeats must be at least 2 (a spread needs two repeats), got {cfg.variance_repeats}")
    for name in ("lanczos_k", "power_max_iter", "trace_probes", "slq_vectors", "slq_steps",
                 "flatness_draws", "slice_directions", "path_points", "pairs_per_kind", "curve_steps"):
        if getattr(cfg, name) < 1:
            p.append(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.flatness_draws < 4 or cfg.flatness_draws % 2:
        p.append(f"flatness_draws must be even and at least 4 (loss evaluations spent as ±δ pairs), "
                 f"got {cfg.flatness_draws}")
    if cfg.control_seed_offset < 1 or cfg.control_seed_offset <= max(cfg.seeds) - min(cfg.seeds):
        p.append(f"control_seed_offset must exceed the spread of the seeds ({max(cfg.seeds) - min(cfg.seeds)}) "
                 f"so control runs never reuse a study seed's initialisation or data order, got {cfg.control_seed_offset}")
    if cfg.curve_lr <= 0 or not math.isfinite(cfg.curve_lr):
        p.append(f"curve_lr must be a positive finite number, got {cfg.curve_lr}")
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


def dynamics_problems(cfg: StudyConfig) -> list[str]:
    """Every problem with the optimisation-dynamics settings (part of :func:`study_problems`), so a bad
    optimiser, step or batch size is refused before anything trains."""
    from .recipes import RECIPES

    p = []
    unknown = [o for o in cfg.optimizers if o not in RECIPES]
    if unknown or not cfg.optimizers or "study" not in cfg.optimizers or len(set(cfg.optimizers)) != len(cfg.optimizers):
        p.append(f"optimizers must be distinct names from {', '.join(RECIPES)} including 'study', "
                 f"got {list(cfg.optimizers)}")
    for name in ("sweep_archs", "eos_archs"):
        bad = [a for a in getattr(cfg, name) if a not in ARCHITECTURES]
        if bad or len(set(getattr(cfg, name))) != len(getattr(cfg, name)):
            p.append(f"{name} must be distinct architectures from {', '.join(ARCHITECTURES)}, got {list(getattr(cfg, name))}")
    n_train = cfg.train_size or 60000
    for name in ("sweep_batch_sizes", "sample_sizes"):
        values = getattr(cfg, name)
        if any(not isinstance(v, int) or v < 1 for v in values) or len(set(values)) != len(values):
            p.append(f"{name} must be distinct positive integers, got {list(values)}")
        elif name == "sweep_batch_sizes" and max(values) > n_train:
            p.append(f"sweep batch size {max(values)} is larger than the training set ({n_train} examples)")
        elif name == "sample_sizes" and max(values) > 60000:
            p.append(f"sample sizes must be at most 60000 (the training set), got {max(values)}")
    for name in ("sweep_lrs", "eos_multiples"):
        if any(not (v > 0 and math.isfinite(v)) for v in getattr(cfg, name)):
            p.append(f"{name} must all be positive and finite (step sizes, or multiples of λ0 for 2/η), got {list(getattr(cfg, name))}")
    for name in ("minibatch_tol", "sweep_target_loss", "sweep_sigma", "adaptive_rho"):
        v = getattr(cfg, name)
        if not (v > 0 and math.isfinite(v)):
            p.append(f"{name} must be a positive finite number, got {v}")
    for name in ("trajectory_trace_probes", "minibatch_batches", "sweep_draws"):
        if getattr(cfg, name) < 2:
            p.append(f"{name} must be at least 2 (a standard error needs two), got {getattr(cfg, name)}")
    if cfg.sweep_draws % 2:
        p.append(f"sweep_draws must be even (spent as ±δ pairs), got {cfg.sweep_draws}")
    for name in ("trajectory_points",):
        if getattr(cfg, name) < 2:
            p.append(f"{name} must be at least 2 (initialisation and the end), got {getattr(cfg, name)}")
    for name in ("sample_draws", "sweep_max_epochs", "adaptive_steps", "eos_steps", "eos_every",
                 "protocol_large_size"):
        if getattr(cfg, name) < 1:
            p.append(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.eos_every > cfg.eos_steps:
        p.append(f"eos_every ({cfg.eos_every}) must not exceed eos_steps ({cfg.eos_steps})")
    if not 2 <= cfg.eos_size <= n_train:
        p.append(f"eos_size must be in [2, {n_train}], got {cfg.eos_size}")
    if cfg.protocol_large_size > n_train:
        p.append(f"protocol_large_size ({cfg.protocol_large_size}) is larger than the training set ({n_train})")
    if cfg.batch_size > n_train:
        p.append(f"batch_size ({cfg.batch_size}) is larger than the training set ({n_train})")
    return p


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    # TOML and JSON give lists; the dataclass holds tuples (hashable, immutable). Integers given
    # for float settings become floats, so lr=1 and lr=1.0 name the same study.
    out = {}
    for k, v in values.items():
        default = _FIELDS[k].default
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(default, tuple) and isinstance(v, tuple) and default and isinstance(default[0], float):
            v = tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v)
        out[k] = v
    return out


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


@dataclass(frozen=True)
class Study:
    """One study: a profile plus overrides, and the folder its results live in.

    ``outputs/<profile>/`` holds only the profile as written; any override gives
    ``outputs/<profile>-<hash>/`` (the hash of the overrides that differ from the profile), so no
    variant ever writes over another study.

    Attributes:
        profile: profile name (``profiles/<profile>.toml``).
        overrides: settings that differ from the profile (normalised: values equal to the
            profile's are dropped; lists, not tuples).
        config: the resolved settings.
    """

    profile: str
    overrides: dict[str, Any]
    config: StudyConfig

    @property
    def name(self) -> str:
        return self.profile if not self.overrides else f"{self.profile}-{short_hash(self.overrides, 8)}"

    @property
    def dir(self) -> Path:
        return outputs_root() / self.name

    def differences(self) -> dict[str, Any]:
        """Every setting whose value differs from the study's defaults (``StudyConfig()``)."""
        default, ours = StudyConfig().to_dict(), self.config.to_dict()
        return {k: v for k, v in ours.items() if v != default[k]}

    def record(self) -> dict[str, Any]:
        """What ``settings.json`` holds: profile, overrides, every setting, the differences."""
        return {"study": self.name, "profile": self.profile, "overrides": self.overrides,
                "settings": self.config.to_dict(), "differs_from_defaults": self.differences()}


def parse_assignments(items: Sequence[str] | str) -> dict[str, Any]:
    """``["lr=0.02", "seeds=[0,1]"]`` (or one space-separated string) as a dict; values are read as
    JSON where they parse, else kept as strings.

    Raises:
        ValueError: an item without ``=``.
    """
    if isinstance(items, str):
        items = items.split()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a setting is key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def open_study(profile: str = "full", overrides: dict[str, Any] | None = None) -> Study:
    """The study of ``profile`` with ``overrides`` (validated; see :func:`load_study`).

    Raises:
        ValueError: as :func:`load_study`.
    """
    config = load_study(profile, overrides)
    base = load_study(profile).to_dict()
    plain = config.to_dict()
    differing = {k: plain[k] for k in sorted(overrides or {}) if plain[k] != base[k]}
    return Study(profile, differing, config)


def study_from_dir(study_dir: str | os.PathLike) -> Study:
    """The study whose ``settings.json`` lies in ``study_dir``.

    Raises:
        FileNotFoundError: no ``settings.json`` there.
    """
    record = json.loads((Path(study_dir) / "settings.json").read_text())
    return open_study(record["profile"], record["overrides"])


def write_settings(study: Study) -> Path:
    """Write ``<study dir>/settings.json`` (atomically; unchanged content leaves the file alone)."""
    path = study.dir / "settings.json"
    text = json.dumps(study.record(), indent=1, sort_keys=True) + "\n"
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".settings.json.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def list_variants() -> list[Study]:
    """Every study folder under the outputs folder made by overrides (``<profile>-<hash>``)."""
    found = []
    for path in sorted(outputs_root().glob("*-*/settings.json")):
        try:
            study = study_from_dir(path.parent)
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
        if study.overrides and study.dir == path.parent.resolve():
            found.append(study)
    return found


def notebook_settings(arch: Any, profile: Any, overrides: Any, study_dir: Any = "") -> tuple[Study, Path]:
    """Validate a notebook's parameters cell; return its study and the folder it writes to.

    The workflow passes ``study_dir`` (the study's own folder). Run by hand in JupyterLab it is
    empty, and the notebook writes under ``<outputs>/lab/<study name>/`` instead, so an
    interactive run never overwrites a study's results.

    Raises:
        ValueError: unknown architecture or profile (valid ones listed), overrides that are
            not a dict, unknown setting names, bad values, or a ``study_dir`` that is not a string.
    """
    if arch is not None:
        check_arch(arch)
    if not isinstance(profile, str):
        raise ValueError(f"profile must be a string such as 'full' or 'smoke', got {profile!r}")
    if not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a dict of study settings, got {overrides!r}")
    if not isinstance(study_dir, str):
        raise ValueError(f"study_dir must be a folder name or empty, got {study_dir!r}")
    study = open_study(profile, overrides)
    out = Path(study_dir).resolve() if study_dir else outputs_root() / "lab" / study.name
    return study, out
