"""The study's per-unit jobs: what one workflow job computes for one section, architecture and
seed (or seed pair), with a disk cache shared by the workflow and interactive notebooks.

Each section's job function has the signature ``job(arch, unit, settings, upstream)`` (see
:class:`~landscape_utils.study.registry.Section`) and returns plain data for JSON. ``settings``
is a :class:`~landscape_utils.study.units.SectionSettings`: a job can read only the settings its
registry entry declares. Every random draw comes from a generator seeded by a named setting.

:func:`unit_result` loads a unit from the cache (``<outputs>/cache/...``, keyed by everything
that made it) or computes and stores it atomically; :func:`section_results` does so for every
unit of a section, which is what a notebook opened in JupyterLab calls.
"""

from __future__ import annotations

import copy
import fcntl
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..probes.connectivity import linear_path_losses
from ..probes.curves import bezier_path_losses, train_bezier_control
from ..probes.evaluation import as_param_dict
from ..probes.permutation import aligned_params
from ..probes.directions import eigenvector_direction, filter_normalised_direction, random_direction
from ..probes.flatness import perturbation_loss_changes, second_order_prediction, second_order_ratio
from ..probes.lanczos import lanczos_extremes, lanczos_top_eigs
from ..probes.power import power_iteration_top_eig
from ..probes.slices import centred_grid, linear_slice_losses, linear_surface_losses
from ..probes.spectrum import hutchpp_lanczos_trace, slq_spectral_density
from .data import ProbeSubset, load_mnist, probe_subset
from .provenance import provenance
from .registry import ARCHITECTURES, check_arch, check_section
from .results import to_plain, write_json
from .training import Run, train_or_load
from .units import (RunId, SectionSettings, Unit, cache_path, pair_kind, run_name, section_units, unit_key, unit_name,
                    unit_seeds)

# Mean cross-entropy over a batch: the loss every probe measures.
LOSS = nn.CrossEntropyLoss()
NOISE_KINDS = ("isotropic", "filter", "magnitude")


@dataclass(frozen=True)
class ProbeData:
    """The fixed samples every probe of the study evaluates."""

    train: ProbeSubset
    test: ProbeSubset

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train.to_dict(), "test": self.test.to_dict(),
                "description": f"{self.train.describe()}; {self.test.describe()}"}


def probe_data(cfg, data_dir=None) -> ProbeData:
    """The seeded probe subsets of the train and test splits named by ``cfg`` (on its device)."""
    mnist = load_mnist(data_dir)
    subsets = [probe_subset(mnist.train, cfg.probe_train_size, cfg.probe_seed, "train"),
               probe_subset(mnist.test, cfg.probe_test_size, cfg.probe_seed, "test")]
    if cfg.device != "cpu":
        subsets = [ProbeSubset(s.split, s.size, s.seed, s.indices, s.x.to(cfg.device), s.y.to(cfg.device))
                   for s in subsets]
    return ProbeData(*subsets)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _on_device(model: nn.Module, cfg) -> nn.Module:
    """The model on the study's device; convolutional models in channels_last layout, whose kernels
    run every probe's forward passes 1.9x faster on CPU (the evaluation engine gives each parameter
    point the model's layout)."""
    model = model.to(cfg.device)
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def for_hvps(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a convolutional model a copy in the default (contiguous) layout,
    for work made of Hessian-vector products: channels_last speeds forward passes but slows
    double backward. One HVP over 512 images is 1.43x (CNN) and 1.35x (residual CNN) faster on
    the copy (``benchmarks/bench_dynamics.py``, under the jobs' allocator settings). The caller's model is left as it is."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


def _run(arch: str, seed: int, cfg, progress: bool = False) -> Run:
    return train_or_load(cfg.train_config(arch, seed), progress=progress)


# ------------------------------------------------------------------------ the section jobs


def training_job(arch: str, seed: int, cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """Final metrics, the history, and the loss along the straight line init → final."""
    run = _run(arch, seed, cfg, progress=True)
    probe = probe_data(cfg)
    model = _on_device(run.model("init"), cfg)
    paths = {split: linear_path_losses(model, LOSS, getattr(probe, split).data, run.init_state, run.final_state,
                                       n_points=cfg.path_points).to_dict() for split in ("train", "test")}
    return {"seed": seed, "run": {"path": str(run.path), "key": run.config.key(), "config": run.config.to_dict()},
            "final": run.final_metrics, "history": run.history, "init_to_final": paths,
            "probe_data": probe.to_dict()}


def curvature_job(arch: str, seed: int, cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """Eigenvalues, power iteration and traces at the trained parameters (see :func:`curvature_of`);
    the Hutch++ trace and the SLQ spectral density for every seed."""
    model, probe = _on_device(_run(arch, seed, cfg).model(), cfg), probe_data(cfg)
    out = curvature_of(model, probe, cfg, density=True)
    return {"seed": seed, "probe_data": probe.to_dict(), **out}


def flatness_job(arch: str, seed: int, cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """Loss changes under noise; the isotropic prediction uses this seed's Hutchinson trace."""
    trace = upstream["curvature"]["trace"]
    model, probe = _on_device(_run(arch, seed, cfg).model(), cfg), probe_data(cfg)
    return {"seed": seed, "probe_data": probe.to_dict(),
            **flatness_of(model, probe, cfg, trace=trace["estimate"], trace_stderr=trace["stderr"])}


def slices_job(arch: str, seed: int, cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """1-D slices per direction kind; the 2-D surface for the seeds in ``surface_seeds``."""
    model, probe = _on_device(_run(arch, seed, cfg).model(), cfg), probe_data(cfg)
    return {"seed": seed, "probe_data": probe.to_dict(),
            **slices_of(model, probe, cfg, surface=seed in cfg.surface_seeds)}


def connectivity_job(arch: str, pair: tuple[RunId, RunId], cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """Paths between two runs' trained parameters: the straight line, the straight line after
    weight matching, and (for independent pairs) a trained Bézier curve before and after it."""
    a, b = pair
    probe = probe_data(cfg)
    runs = [train_or_load(cfg.run_config(arch, r)) for r in (a, b)]
    train = training_images(cfg, runs[0].config) if pair_kind(pair) == "independent" else None
    return {"probe_data": probe.to_dict(),
            **connectivity_of(arch, runs[0], runs[1], probe, cfg, train_data=train, names=(run_name(a), run_name(b)))}


def training_images(cfg, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a run of :class:`~landscape_utils.study.config.TrainConfig` ``config`` trains on
    (all 60,000, or its seeded subset), on the study's device."""
    split = load_mnist().train
    if config.train_size is not None:
        split = probe_subset(split, config.train_size, config.subset_seed)
    return split.x.to(cfg.device), split.y.to(cfg.device)


# ------------------------------------------------------------------------ cache


def unit_result(section: str, arch: str, unit: Unit, cfg, progress: bool = False) -> dict[str, Any]:
    """One unit's results: from the cache when present, else computed now and cached.

    Upstream units (``Section.reads``) are loaded or computed first. The returned dict holds
    ``key``, ``section``, ``arch``, ``unit``, ``provenance``, ``seconds`` and ``result``.

    Raises:
        ValueError: unknown section or architecture, or a unit the settings do not have.
        landscape_utils.study.training.TrainingDiverged: a training run diverged.
    """
    sec = check_section(section)
    check_arch(arch)
    if unit not in section_units(sec, cfg, arch):
        raise ValueError(f"{section} has no unit {unit_name(unit)} in these settings "
                         f"(units: {', '.join(unit_name(u) for u in section_units(sec, cfg, arch))})")
    key = unit_key(sec, arch, unit, cfg)
    path = cache_path(sec.key, arch, unit, key)
    if path.is_file():
        return json.loads(path.read_text())
    upstream = {u: unit_result(u, arch, unit, cfg, progress)["result"] for u in sec.reads}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process asking for this unit waits, then reads it
        if path.is_file():
            return json.loads(path.read_text())
        started = time.time()
        result = sec.job_function()(arch, unit, SectionSettings(cfg, sec), upstream)
        record = {"key": key, "section": sec.key, "arch": arch, "unit": unit_name(unit),
                  "seeds": list(unit_seeds(unit)), "seconds": round(time.time() - started, 3),
                  "provenance": provenance(cfg.device), "result": to_plain(result)}
        write_json(path, record)
    return record


def section_results(section: str, arch: str, cfg, progress: bool = True) -> dict[Unit, dict[str, Any]]:
    """Every unit's results for one section and architecture (cached; computed when missing),
    with a progress bar over the units that must be computed."""
    from tqdm.std import tqdm  # a text bar: readable in a notebook, never a frozen widget

    sec = check_section(section)
    units = section_units(sec, cfg, arch)
    missing = [u for u in units if not cache_path(sec.key, arch, u, unit_key(sec, arch, u, cfg)).is_file()]
    bar = tqdm(total=len(missing), disable=not (progress and missing), unit="unit",
               desc=f"{section} [{arch}]")
    out = {}
    for u in units:
        out[u] = unit_result(sec.key, arch, u, cfg)
        if u in missing:
            bar.update(1)
    bar.close()
    return out


# ------------------------------------------------------------------------ probes per unit

# ---------------------------------------------------------------------------- curvature


def curvature_of(model: nn.Module, probe: ProbeData, cfg, density: bool = False) -> dict[str, Any]:
    """Eigenvalues, power iteration (the write-up's method) and the trace on the fixed training
    probe set; with ``density``, also the random-sketch Hutch++ trace and the SLQ spectral density.

    * ``top`` / ``lambda_max``: the ``lanczos_k`` largest eigenvalues by Lanczos, stopped when the
      gap-refined error estimate of each (and of the next Ritz pair) is ≤ ``lanczos_tol``·|θ|
      (``criterion="gap"``; its ``error_bounds`` hold the estimates);
    * ``smallest`` / ``lambda_min``: the SAME Krylov run continued until the smallest Ritz value's
      residual is ≤ ``smallest_tol``·|θ| (floor 1e-2·smallest_tol·max|θ|): exactly what a separate
      run from the same start would give. Its ``n_hvp`` counts only the steps beyond the top's
      (``n_hvp_shared`` the steps it reused);
    * ``power``: power iteration from a random vector, as the write-up did;
    * ``trace``: the study's trace estimate and its standard error: Hutch++ with that Lanczos run's
      Krylov basis as the sketch (``trace_probes`` Rademacher probes; with ``density`` the SLQ start
      vectors serve as the first ones). ``trace_hutchinson``: plain Hutchinson from the same probes
      and HVPs (no extra HVP);
    * with ``density``: ``density`` (SLQ), whose start vectors are the first trace probes.

    Summing ``n_hvp`` over the entries counts every HVP once. Random streams: Lanczos and power
    iteration from ``curvature_seed``; the probes (SLQ start vectors,
    trace probes) from ``curvature_seed + 1``, so that they are independent of the Krylov basis
    (which unbiased deflation needs)."""
    data = probe.train.data
    model = for_hvps(model)
    ends = lanczos_extremes(model, LOSS, data, _generator(cfg.curvature_seed), k=cfg.lanczos_k, tol=cfg.lanczos_tol,
                            criterion="gap", smallest_tol=cfg.smallest_tol)
    top, bottom = ends.top, ends.smallest
    power = power_iteration_top_eig(model, LOSS, data, _generator(cfg.curvature_seed), tol=cfg.power_tol,
                                    max_iter=cfg.power_max_iter)
    probes = _generator(cfg.curvature_seed + 1)  # independent of the Lanczos start vector
    slq = (slq_spectral_density(model, LOSS, data, probes, n_vectors=cfg.slq_vectors, n_steps=cfg.slq_steps,
                                keep_products=True) if density else None)
    reused = None if slq is None else tuple(t[: cfg.trace_probes] for t in slq.probe_products)
    trace, plain = hutchpp_lanczos_trace(model, LOSS, data, probes, ends.basis, n_probes=cfg.trace_probes,
                                         products=reused)
    out = {
        "lambda_max": top.eigenvalues[0], "top": top.to_dict(), "smallest": bottom.to_dict(),
        "lambda_min": bottom.eigenvalues[0], "power": power.to_dict(),
        "power_relative_error": abs(power.eigenvalue - top.eigenvalues[0]) / abs(top.eigenvalues[0]),
        "trace": trace.to_dict(), "trace_hutchinson": plain.to_dict(),
    }
    if density:
        out["density"] = slq.to_dict()
    return out


# ----------------------------------------------------------------------------- flatness


def flatness_of(model: nn.Module, probe: ProbeData, cfg, trace: float | None = None,
                trace_stderr: float | None = None) -> dict[str, Any]:
    """Loss changes under isotropic, filter-scaled and magnitude-scaled noise (train probe set).

    Draws are antithetic ±δ pairs (``flatness_draws`` evaluations per σ). With ``trace`` given, the
    isotropic result carries the second-order prediction ½σ²·tr(H) and the ratio measured/predicted.
    """
    out: dict[str, Any] = {}
    for i, kind in enumerate(NOISE_KINDS):
        sigmas = cfg.isotropic_sigmas if kind == "isotropic" else cfg.relative_sigmas
        res = perturbation_loss_changes(model, LOSS, probe.train.data, sigmas,
                                        _generator(cfg.flatness_seed + 1000 * i), noise=kind,
                                        n_draws=cfg.flatness_draws)
        out[kind] = res.to_dict()
    if trace is not None:
        iso = out["isotropic"]
        iso["prediction"] = second_order_prediction(cfg.isotropic_sigmas, trace, trace_stderr).to_dict()
        iso["second_order"] = second_order_ratio(np.asarray(iso["mean"]), np.asarray(iso["stderr"]), trace,
                                                 trace_stderr, np.asarray(cfg.isotropic_sigmas)).to_dict()
    return out


# ------------------------------------------------------------------------------- slices


def slices_of(model: nn.Module, probe: ProbeData, cfg, surface: bool = False) -> dict[str, Any]:
    """1-D slices on train and test probe sets along a raw direction (the study's),
    ``slice_directions`` filter-normalised directions and the top Hessian eigenvector;
    optionally a 2-D surface over two filter-normalised directions."""
    g = _generator(cfg.direction_seed)
    top = lanczos_top_eigs(model, LOSS, probe.train.data, _generator(cfg.curvature_seed), k=1, tol=cfg.lanczos_tol)
    kinds = {
        "raw": [random_direction(model, g)],
        "filter-normalised": [filter_normalised_direction(model, g) for _ in range(cfg.slice_directions)],
        "top eigenvector": [eigenvector_direction(model, top.eigenvectors[0], eigenvalue=top.eigenvalues[0])],
    }
    alphas = centred_grid(cfg.slice_radius, cfg.slice_points)
    out: dict[str, Any] = {"lambda_max": top.eigenvalues[0], "kinds": {}}
    for kind, directions in kinds.items():
        # dᵀHd (one HVP per direction) on the training probe set, where the curvature is reported.
        out["kinds"][kind] = {split: linear_slice_losses(model, LOSS, getattr(probe, split).data, directions, alphas,
                                                         local_curvature=split == "train").to_dict()
                              for split in ("train", "test")}
    if surface:
        u, v = (filter_normalised_direction(model, _generator(cfg.direction_seed + 1 + i)) for i in range(2))
        grid = centred_grid(cfg.surface_radius, cfg.surface_points)
        out["surface"] = linear_surface_losses(model, LOSS, probe.train.data, u, v, grid).to_dict()
    return out


# ------------------------------------------------------------------------- connectivity


def connectivity_of(arch: str, run_a: Run, run_b: Run, probe: ProbeData, cfg,
                    train_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                    names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """Loss and error on the train and test probe sets along the paths between two runs' final
    parameters θA and θB:

    * ``straight``: (1−α)θA + αθB;
    * ``aligned``: the same to π(θB), B's hidden units permuted into alignment with A's by weight
      matching (where the architecture registers a permutation specification); with the matching
      objective before and after, and ``max_logit_change``: the largest change of B's logits on the
      test probe images caused by permuting it (float32 round-off if the groups are right);
    * with ``train_data``: ``curve`` and ``aligned curve``: quadratic Bézier curves whose control
      point is trained on those images (``curve_steps`` steps of SGD at ``curve_lr``, the study's
      momentum and batch size; t and batches drawn from ``curve_seed``).
    """
    model = _on_device(run_a.model(), cfg)
    theta_a, theta_b = as_param_dict(model, run_a.final_state, "A"), as_param_dict(model, run_b.final_state, "B")
    kind = pair_kind((RunId(run_a.config.init_seed, run_a.config.data_seed),
                      RunId(run_b.config.init_seed, run_b.config.data_seed)))
    ends: dict[str, dict[str, torch.Tensor]] = {"straight": theta_b}
    out: dict[str, Any] = {"runs": list(names), "kind": kind, "paths": {}, "alignment": None}
    spec = ARCHITECTURES[arch].permutation if arch in ARCHITECTURES else None
    if spec is not None:
        aligned, matching = aligned_params(spec, theta_a, theta_b, _generator(cfg.alignment_seed))
        x = probe.test.x
        with torch.inference_mode():
            change = (functional_call(model, theta_b, (x,)) - functional_call(model, aligned, (x,))).abs().max()
        moved = {g: float((p != torch.arange(p.numel())).float().mean()) for g, p in matching.perms.items()}
        out["alignment"] = {**{k: v for k, v in matching.to_dict().items() if k != "perms"},
                            "units_moved": moved, "max_logit_change": float(change)}
        ends["aligned"] = aligned
    for path, end in ends.items():
        out["paths"][path] = {split: linear_path_losses(model, LOSS, getattr(probe, split).data, theta_a, end,
                                                        n_points=cfg.path_points).to_dict()
                              for split in ("train", "test")}
    if train_data is not None:
        for path, end in list(ends.items()):
            name = "curve" if path == "straight" else "aligned curve"
            fit = train_bezier_control(model, LOSS, train_data, theta_a, end, _generator(cfg.curve_seed),
                                       steps=cfg.curve_steps, batch_size=cfg.batch_size, lr=cfg.curve_lr,
                                       momentum=cfg.momentum)
            out["paths"][name] = {"fit": fit.to_dict(),
                                  **{split: bezier_path_losses(model, LOSS, getattr(probe, split).data, theta_a,
                                                               fit.control, end, n_points=cfg.path_points).to_dict()
                                     for split in ("train", "test")}}
    return out
