"""The study's two registries: its architectures and its sections.

Everything that lists architectures or sections derives from here: the workflow's DAG
(``workflow/Snakefile``), the report's order, the results files and the tests. Adding a
fourth architecture or a new section means adding one entry (and the files it names); nothing
else is edited.

This module imports nothing heavy (no torch): the workflow reads it on every dry run, so model
classes and job functions are named by ``"module:attribute"`` strings and resolved on use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The fields of ``StudyConfig`` that decide a training run (and so every section's inputs).
TRAINING_SETTINGS = ("seeds", "epochs", "max_steps", "train_size", "batch_size", "lr", "momentum",
                     "trajectory_points", "device")
# What the optimisation-dynamics jobs read besides training's and the probe sets (see StudyConfig).
DYNAMICS_SETTINGS = ("lanczos_tol", "power_tol", "power_max_iter", "trajectory_trace_probes",
                     "minibatch_batches", "minibatch_tol", "dynamics_seed", "optimizers", "protocol_seeds",
                     "protocol_large_size", "sample_sizes", "sample_draws", "sweep_archs", "sweep_batch_sizes",
                     "sweep_lrs", "sweep_seeds", "sweep_target_loss", "sweep_max_epochs", "sweep_sigma",
                     "sweep_draws", "adaptive_rho", "adaptive_steps", "eos_archs", "eos_size", "eos_multiples",
                     "eos_steps", "eos_every", "eos_seed")
# The fixed probe samples shared by every probe section.
PROBE_SET_SETTINGS = ("probe_train_size", "probe_test_size", "probe_seed", "device")


def resolve(target: str) -> Any:
    """The object named by ``"package.module:attribute"``.

    Raises:
        ValueError: a malformed name, or a module or attribute that does not exist.
    """
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot resolve {target!r}: {exc}") from exc


@dataclass(frozen=True)
class Architecture:
    """One architecture of the study.

    Attributes:
        key: short name used in files, settings and the CLI (``"cnn"``).
        model: ``"module:Class"`` of the ``nn.Module``; built with no arguments.
        label: name shown in the report (``"CNN"``).
        colour: its colour in every figure.
        params: trainable parameter count (asserted by the tests).
        description: one line for the report's table of models.
        permutation: optional permutation specification for weight matching: a tuple of
            ``(group, axes)`` where each group is a set of hidden units (neurons or channels)
            that can be permuted without changing the function, and ``axes`` lists every
            parameter axis it permutes as ``(parameter, dim)`` or ``(parameter, dim, inner)``
            (``inner``: that axis is read as ``(units, inner)``, e.g. a linear head after a
            channel-major flatten). ``None`` where the architecture has none: sections show
            "not available" and alignment requested through the API raises.
    """

    key: str
    model: str
    label: str
    colour: str
    params: int
    description: str
    permutation: Any = None

    @property
    def model_class(self) -> type:
        return resolve(self.model)


@dataclass(frozen=True)
class Section:
    """One section of the study: a notebook run per architecture, fed by per-seed jobs.

    Attributes:
        key: short name (``"curvature"``), used in file names and ``section:<key>`` tags.
        notebook: notebook stem under ``notebooks/`` (``"02_curvature"``).
        title: heading in the report.
        job: ``"module:function"`` computing one unit's results: called as
            ``job(arch, unit, settings, upstream)`` where ``unit`` is a seed (``per="seed"``), a
            pair of runs (``per="pair"``) or a :class:`~landscape_utils.study.units.Cell`
            (``per="cell"``: the units differ by architecture) and ``upstream`` maps each section in ``reads`` to that
            unit's results. Returns a JSON-able dict.
        summarise: ``"module:function"`` building the section's typed summary from the per-unit
            results: ``summarise(arch, units, results, settings)``.
        per: ``"seed"``, ``"pair"`` or ``"cell"``.
        reads: sections whose per-seed results the job needs (same architecture and unit).
        settings: the ``StudyConfig`` fields the job reads (besides training's); a job that reads
            another field fails, so the cache key and rerun rules cannot miss one.
        mem_mb, runtime_min: what one job needs (for a cluster); ``gpu``: whether a CUDA run asks
            for a GPU.
        block: units per workflow job when the workflow is not told a block size (0: every unit of
            the architecture in one job); sections with many slow units split so that their jobs
            spread over the cores.
    """

    key: str
    notebook: str
    title: str
    job: str
    summarise: str
    per: str = "seed"
    reads: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    mem_mb: int = 2000
    runtime_min: int = 30
    gpu: bool = True
    block: int = 0

    def job_function(self) -> Callable[..., dict]:
        return resolve(self.job)

    def summarise_function(self) -> Callable[..., Any]:
        return resolve(self.summarise)


ARCHITECTURES: dict[str, Architecture] = {a.key: a for a in (
    Architecture("mlp", "landscape_utils.study.models:MLP", "MLP", "#4C72B0", 203_530,
                 "784 → 256 (ReLU) → 10",
                 permutation=(("fc1", (("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1))),)),
    Architecture("cnn", "landscape_utils.study.models:CNN", "CNN", "#DD8452", 10_330,
                 "conv 3x3 1→16, ReLU, max-pool 2; conv 3x3 16→16, ReLU, max-pool 2; linear 784 → 10",
                 # ReLU and max-pool act per channel, so they commute with channel permutations; the
                 # head reads the (16, 7, 7) maps flattened channel-major: 49 columns per channel.
                 permutation=(("conv1", (("conv1.weight", 0), ("conv1.bias", 0), ("conv2.weight", 1))),
                              ("conv2", (("conv2.weight", 0), ("conv2.bias", 0), ("fc.weight", 1, 49))))),
    Architecture("rescnn", "landscape_utils.study.models:ResidualCNN", "Residual CNN", "#55A868", 10_602,
                 "the CNN plus a 1x1 convolution skip around the second convolution",
                 # The skip reads conv1's (pooled) output and adds into conv2's output before the
                 # ReLU: conv1's group permutes its input channels, conv2's its output channels.
                 permutation=(("conv1", (("conv1.weight", 0), ("conv1.bias", 0), ("conv2.weight", 1),
                                         ("skip.weight", 1))),
                              ("conv2", (("conv2.weight", 0), ("conv2.bias", 0), ("skip.weight", 0),
                                         ("skip.bias", 0), ("fc.weight", 1, 49))))),
)}

_JOBS = "landscape_utils.study.jobs"
_SUMMARIES = "landscape_utils.study.summaries"
SECTIONS: dict[str, Section] = {s.key: s for s in (
    Section("training", "01_training", "Training", f"{_JOBS}:training_job", f"{_SUMMARIES}:summarise_training",
            settings=PROBE_SET_SETTINGS + ("path_points",), runtime_min=20),
    Section("dynamics", "07_dynamics", "Optimisation dynamics", "landscape_utils.study.dynamics:dynamics_job",
            "landscape_utils.study.dynamics_summary:summarise_dynamics", per="cell",
            settings=PROBE_SET_SETTINGS + DYNAMICS_SETTINGS, runtime_min=10, block=6),
    Section("curvature", "02_curvature", "Curvature", f"{_JOBS}:curvature_job", f"{_SUMMARIES}:summarise_curvature",
            settings=PROBE_SET_SETTINGS + ("lanczos_k", "lanczos_tol", "smallest_tol", "power_tol", "power_max_iter",
                                           "trace_probes", "slq_vectors", "slq_steps", "curvature_seed")),
    Section("flatness", "03_flatness", "Flatness under perturbation", f"{_JOBS}:flatness_job",
            f"{_SUMMARIES}:summarise_flatness", reads=("curvature",),
            settings=PROBE_SET_SETTINGS + ("isotropic_sigmas", "relative_sigmas", "flatness_draws", "flatness_seed")),
    Section("slices", "04_slices", "One-dimensional slices", f"{_JOBS}:slices_job", f"{_SUMMARIES}:summarise_slices",
            settings=PROBE_SET_SETTINGS + ("lanczos_tol", "curvature_seed", "slice_radius", "slice_points",
                                           "slice_directions", "surface_radius", "surface_points", "direction_seed",
                                           "surface_seeds")),
    Section("connectivity", "05_connectivity", "Mode connectivity", f"{_JOBS}:connectivity_job",
            f"{_SUMMARIES}:summarise_connectivity", per="pair",
            settings=PROBE_SET_SETTINGS + ("path_points", "pairs_per_kind", "control_seed_offset", "alignment_seed",
                                           "curve_steps", "curve_lr", "curve_seed")),
)}
# The cross-architecture notebook: introduction, per-section comparisons and the conclusion.
COMPARISON_NOTEBOOK = "06_comparison"


def check_arch(arch: Any) -> str:
    """``arch`` if it names a registered architecture, else ValueError listing them."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return arch


def check_section(section: Any) -> Section:
    """The registered section named ``section``, else ValueError listing them."""
    if not isinstance(section, str) or section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(SECTIONS)}")
    return SECTIONS[section]


def label(arch: str) -> str:
    """The architecture's display name (the key itself for an unregistered one)."""
    return ARCHITECTURES[arch].label if arch in ARCHITECTURES else arch


def colour(arch: str) -> str:
    return ARCHITECTURES[arch].colour if arch in ARCHITECTURES else "#777777"
