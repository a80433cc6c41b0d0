"""Flatness under random perturbation: ΔL = L(θ + δ) − L(θ) over many draws of δ.

Noise kinds, with ε ~ N(0, I) shaped like every trainable parameter and δ = σ · s ⊙ ε:

- ``"isotropic"`` (the study's): s = 1, i.e. δ ~ N(0, σ²I) on every parameter. At a minimum
  E[ΔL] ≈ ½σ²·tr(H) (exact for a quadratic loss), see :func:`isotropic_trace_prediction`.
- ``"filter"``: for each tensor θ and each filter j (index along the first axis; for a bias
  each entry is its own filter; a 0-dim tensor is one filter), s_j = ‖θ_j‖ / sqrt(n_j) with
  n_j the filter's number of entries. Then E‖δ_j‖² = σ²‖θ_j‖²: every filter's RMS relative
  perturbation is σ.
- ``"magnitude"``: s = |θ|, i.e. δ_i = σ·|θ_i|·ε_i, every weight's relative perturbation has
  standard deviation σ.

The scale-aware kinds give the same ΔL for any rescaling of a ReLU network that leaves its
function unchanged layer by layer, which makes them comparable across architectures; the
isotropic kind does not.

The same ε draws are used at every σ (common random numbers): curves over σ are smooth
and differences between σ values have less noise. Draw k uses the k-th ε from the generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .directions import as_generator, gaussian_like
from .evaluation import LossFn, functional_loss, functional_losses
from .params import ParamDict, named_params

NOISE_KINDS = ("isotropic", "filter", "magnitude")


@dataclass(frozen=True, eq=False)
class FlatnessResult:
    """Loss changes under perturbation at each noise scale.

    Attributes (S = number of σ values, K = draws):
        noise: one of :data:`NOISE_KINDS`.
        sigmas: (S,) noise scales.
        changes: (S, K) signed L(θ+δ) − L(θ) per draw (the same ε at every σ).
        mean: (S,) mean change (signed).
        abs_mean: (S,) |mean|.
        mean_abs: (S,) mean of |change| (the study's |L(θ+δ) − L(θ)| averaged over draws).
        std: (S,) sample standard deviation of the signed changes (ddof=1).
        stderr: (S,) std / sqrt(K).
        ci_low, ci_high: (S,) mean ∓ t_{(1+confidence)/2, K−1} · stderr (Student t interval).
        confidence: interval level.
        base_loss, base_error: L(θ) and its error (``None`` for non-class targets).
        error_changes: (S, K) error(θ+δ) − error(θ), or ``None``.
        error_mean: (S,) mean error change, or ``None``.
        n_draws, n_samples, seed: K, samples evaluated, the seed if the caller gave an int.
    """

    noise: str
    sigmas: np.ndarray
    changes: np.ndarray
    mean: np.ndarray
    abs_mean: np.ndarray
    mean_abs: np.ndarray
    std: np.ndarray
    stderr: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    confidence: float
    base_loss: float
    base_error: float | None
    error_changes: np.ndarray | None
    error_mean: np.ndarray | None
    n_draws: int
    n_samples: int
    seed: int | None

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


@dataclass(frozen=True, eq=False)
class TracePrediction:
    """½σ²·tr(H) at each σ, with its standard error when the trace's is known."""

    sigmas: np.ndarray
    trace: float
    prediction: np.ndarray
    prediction_stderr: np.ndarray | None

    def to_dict(self) -> dict:
        return {"sigmas": self.sigmas.tolist(), "trace": self.trace, "prediction": self.prediction.tolist(),
                "prediction_stderr": None if self.prediction_stderr is None else self.prediction_stderr.tolist()}


def check_sigmas(sigmas: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """σ values as a 1-D float64 array; raises ValueError unless all finite and positive."""
    arr = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"sigmas must be a non-empty 1-D sequence of positive finite numbers, got {sigmas!r}")
    return arr


def noise_scales(theta: ParamDict, noise: str) -> ParamDict:
    """Per-entry scale s (δ = σ·s⊙ε) for a noise kind, shaped like each tensor (see module doc).

    Raises:
        ValueError: unknown noise kind.
    """
    if noise == "isotropic":
        return {name: torch.ones_like(t) for name, t in theta.items()}
    if noise == "magnitude":
        return {name: t.abs() for name, t in theta.items()}
    if noise == "filter":
        out = {}
        for name, t in theta.items():
            rows = t.reshape(t.shape[0] if t.dim() > 0 else 1, -1)  # (filters, n_j)
            rms = torch.linalg.vector_norm(rows, dim=1, keepdim=True) / rows.shape[1] ** 0.5
            out[name] = rms.expand_as(rows).reshape(t.shape).clone()
        return out
    raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")


def perturbation_loss_changes(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    sigmas: Sequence[float] | np.ndarray | float,
    generator: torch.Generator | int,
    *,
    noise: str = "isotropic",
    n_draws: int = 32,
    confidence: float = 0.95,
    batch_size: int | None = None,
) -> FlatnessResult:
    """L(θ + δ) − L(θ) over ``n_draws`` draws of δ at each noise scale σ.

    Args:
        model: any module; parameters and modes are left as found (evaluated in eval mode).
        loss_fn: mean loss over a batch, ``loss_fn(outputs, targets)``.
        data: ``(inputs, targets)``, the fixed samples.
        sigmas: noise scale(s), positive.
        generator: ``torch.Generator`` or int seed (recorded) for the ε draws.
        noise: ``"isotropic"``, ``"filter"`` or ``"magnitude"`` (module docstring).
        n_draws: draws of ε (≥ 2, for an interval).
        confidence: level of the Student-t interval on the mean, in (0, 1).
        batch_size: samples per forward pass.

    Returns:
        :class:`FlatnessResult`.

    Raises:
        ValueError: bad σ, noise kind, draw count, confidence, or any evaluation argument.
    """
    sig = check_sigmas(sigmas)
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(f"n_draws must be an int >= 2, got {n_draws!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    g, seed = as_generator(generator)
    theta = named_params(model)
    scales = noise_scales(theta, noise)
    base = functional_loss(model, loss_fn, data, theta, batch_size=batch_size)

    def points() -> Iterator[ParamDict]:
        # Draw-major order: ε_k drawn once, then θ + σ·s⊙ε_k for each σ.
        for _ in range(n_draws):
            eps = gaussian_like(theta, g)
            scaled = {name: scales[name] * eps[name] for name in theta}
            for s in sig:
                yield {name: torch.add(theta[name], scaled[name], alpha=float(s)) for name in theta}

    res = functional_losses(model, loss_fn, data, points(), batch_size=batch_size)
    changes = (res.losses.reshape(n_draws, sig.size) - base.loss).T  # (S, K)
    mean = changes.mean(axis=1)
    std = changes.std(axis=1, ddof=1)
    stderr = std / np.sqrt(n_draws)
    from scipy import stats  # here, not at import: scipy.stats costs half a second per job

    half = stats.t.ppf(0.5 + confidence / 2, df=n_draws - 1) * stderr
    err_changes = None if res.errors is None else (res.errors.reshape(n_draws, sig.size) - base.error).T
    return FlatnessResult(
        noise=noise, sigmas=sig, changes=changes, mean=mean, abs_mean=np.abs(mean),
        mean_abs=np.abs(changes).mean(axis=1), std=std, stderr=stderr, ci_low=mean - half,
        ci_high=mean + half, confidence=float(confidence), base_loss=base.loss, base_error=base.error,
        error_changes=err_changes, error_mean=None if err_changes is None else err_changes.mean(axis=1),
        n_draws=n_draws, n_samples=res.n_samples, seed=seed)


def isotropic_trace_prediction(sigmas: Sequence[float] | np.ndarray | float, trace: float,
                               trace_stderr: float | None = None) -> TracePrediction:
    """The quadratic prediction ½σ²·tr(H) of the mean isotropic loss change at a minimum.

    Args:
        sigmas: noise scales.
        trace: tr(H), e.g. a Hutchinson estimate on the same samples.
        trace_stderr: its standard error, propagated as ½σ²·stderr (optional).
    """
    sig = check_sigmas(sigmas)
    if not np.isfinite(trace):
        raise ValueError(f"trace must be finite, got {trace!r}")
    half_sq = 0.5 * sig**2
    return TracePrediction(sigmas=sig, trace=float(trace), prediction=half_sq * trace,
                           prediction_stderr=None if trace_stderr is None else half_sq * float(trace_stderr))
