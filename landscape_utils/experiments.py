"""The study's probes with the study's settings: what each notebook computes, per run.

The notebooks call these functions and plot what they return; the numbers they return
are plain dicts ready for ``results.save_results``. Every random draw comes from a
generator seeded by a named setting of :class:`~landscape_utils.study.StudyConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .connectivity import linear_path_losses
from .data import ProbeSubset, load_mnist, probe_subset
from .directions import eigenvector_direction, filter_normalised_direction, random_direction
from .flatness import isotropic_trace_prediction, perturbation_loss_changes
from .hessian import lanczos_top_eigs, power_iteration_top_eig
from .slices import centred_grid, linear_slice_losses, linear_surface_losses
from .spectrum import hutchinson_trace, hutchpp_trace, slq_spectral_density
from .stats import mean_interval
from .study import StudyConfig
from .training import Run, train_or_load

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


def probe_data(cfg: StudyConfig, data_dir=None) -> ProbeData:
    """The seeded probe subsets of the train and test splits named by ``cfg``."""
    mnist = load_mnist(data_dir)
    return ProbeData(probe_subset(mnist.train, cfg.probe_train_size, cfg.probe_seed, "train"),
                     probe_subset(mnist.test, cfg.probe_test_size, cfg.probe_seed, "test"))


def interval_dict(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% t-interval over runs, as plain values."""
    iv = mean_interval(np.asarray(values, dtype=float))
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "values": list(map(float, values))}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- training


def train_runs(arch: str, cfg: StudyConfig, progress: bool = True) -> list[Run]:
    """One run per seed (cached on disk; trained only when missing)."""
    return [train_or_load(cfg.train_config(arch, s), progress=progress) for s in cfg.seeds]


def training_summary(runs: Sequence[Run], probe: ProbeData, cfg: StudyConfig) -> dict[str, Any]:
    """Final metrics per run with intervals, and the loss along init -> final per run."""
    paths = [{split: linear_path_losses(run.model("init"), LOSS, getattr(probe, split).data,
                                        run.init_state, run.final_state, n_points=cfg.path_points).to_dict()
              for split in ("train", "test")} for run in runs]
    finals = [run.final_metrics for run in runs]
    return {
        "seeds": list(cfg.seeds),
        "runs": [{"seed": s, "path": str(r.path), "config": r.config.to_dict(), **r.final_metrics}
                 for s, r in zip(cfg.seeds, runs)],
        **{m: interval_dict([f[m] for f in finals]) for m in ("test_acc", "test_loss", "train_loss", "train_acc")},
        "init_to_final": paths,
        "probe_data": probe.to_dict(),
    }


# ---------------------------------------------------------------------------- curvature


def curvature_of(model: nn.Module, probe: ProbeData, cfg: StudyConfig, density: bool = False) -> dict[str, Any]:
    """Top-k and smallest eigenvalues (Lanczos), power iteration (the study's method) and the
    Hutchinson trace on the fixed training probe set; with ``density``, also the Hutch++
    trace and the SLQ spectral density."""
    data = probe.train.data
    top = lanczos_top_eigs(model, LOSS, data, _generator(cfg.curvature_seed), k=cfg.lanczos_k, tol=cfg.lanczos_tol)
    bottom = lanczos_top_eigs(model, LOSS, data, _generator(cfg.curvature_seed), k=1, tol=cfg.smallest_tol,
                              which="smallest")
    power = power_iteration_top_eig(model, LOSS, data, _generator(cfg.curvature_seed), tol=cfg.power_tol,
                                    max_iter=cfg.power_max_iter)
    trace = hutchinson_trace(model, LOSS, data, _generator(cfg.curvature_seed), n_probes=cfg.trace_probes)
    out = {
        "lambda_max": top.eigenvalues[0], "top": top.to_dict(), "smallest": bottom.to_dict(),
        "lambda_min": bottom.eigenvalues[0], "power": power.to_dict(),
        "power_relative_error": abs(power.eigenvalue - top.eigenvalues[0]) / abs(top.eigenvalues[0]),
        "trace": trace.to_dict(),
    }
    if density:  # the extra views of the spectrum, for one run
        out["trace_hutchpp"] = hutchpp_trace(model, LOSS, data, _generator(cfg.curvature_seed),
                                             n_hvp=cfg.trace_probes).to_dict()
        out["density"] = slq_spectral_density(model, LOSS, data, _generator(cfg.curvature_seed),
                                              n_vectors=cfg.slq_vectors, n_steps=cfg.slq_steps).to_dict()
    return out


# ----------------------------------------------------------------------------- flatness


def flatness_of(model: nn.Module, probe: ProbeData, cfg: StudyConfig, trace: float | None = None,
                trace_stderr: float | None = None) -> dict[str, Any]:
    """Loss changes under isotropic, filter-scaled and magnitude-scaled noise (train probe set).

    With ``trace`` given, the isotropic result carries the prediction ½σ²·tr(H).
    """
    out: dict[str, Any] = {}
    for i, kind in enumerate(NOISE_KINDS):
        sigmas = cfg.isotropic_sigmas if kind == "isotropic" else cfg.relative_sigmas
        res = perturbation_loss_changes(model, LOSS, probe.train.data, sigmas,
                                        _generator(cfg.flatness_seed + 1000 * i), noise=kind,
                                        n_draws=cfg.flatness_draws)
        out[kind] = res.to_dict()
    if trace is not None:
        out["isotropic"]["prediction"] = isotropic_trace_prediction(cfg.isotropic_sigmas, trace,
                                                                    trace_stderr).to_dict()
    return out


# ------------------------------------------------------------------------------- slices


def slices_of(model: nn.Module, probe: ProbeData, cfg: StudyConfig, surface: bool = False) -> dict[str, Any]:
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
        out["kinds"][kind] = {split: linear_slice_losses(model, LOSS, getattr(probe, split).data, directions,
                                                         alphas).to_dict() for split in ("train", "test")}
    if surface:
        u, v = (filter_normalised_direction(model, _generator(cfg.direction_seed + 1 + i)) for i in range(2))
        grid = centred_grid(cfg.surface_radius, cfg.surface_points)
        out["surface"] = linear_surface_losses(model, LOSS, probe.train.data, u, v, grid).to_dict()
    return out


# ------------------------------------------------------------------------- connectivity


def connectivity_of(run_a: Run, run_b: Run, probe: ProbeData, cfg: StudyConfig) -> dict[str, Any]:
    """Loss and error along the straight line between two runs' final parameters."""
    model = run_a.model()
    return {"seeds": [run_a.config.init_seed, run_b.config.init_seed],
            **{split: linear_path_losses(model, LOSS, getattr(probe, split).data, run_a.final_state,
                                         run_b.final_state, n_points=cfg.path_points).to_dict()
               for split in ("train", "test")}}


def slice_asymmetry(slice_result: dict[str, Any]) -> np.ndarray:
    """Per slice, (L(+r) − L(−r)) / (|L(+r) − L(0)| + |L(−r) − L(0)|) at the grid's ends ±r.

    0 for a symmetric (parabola-like) slice, ±1 for a monotone (linear-looking) one; bounded
    in [−1, 1], so a flat slice cannot blow it up. (0 when the slice is exactly flat.)
    """
    losses = np.asarray(slice_result["losses"], dtype=float)  # (D, A)
    centre = float(slice_result["loss"])
    left, right = losses[:, 0], losses[:, -1]
    scale = np.abs(right - centre) + np.abs(left - centre)
    return np.divide(right - left, scale, out=np.zeros_like(scale), where=scale > 0)
