"""Flatness under random perturbation: loss changes L(θ ± δ) − L(θ) over many draws of δ.

Two quantities, which measure different things (Taylor: ΔL(δ) = gᵀδ + ½δᵀHδ + O(‖δ‖³),
g the gradient and H the Hessian at θ):

- **Mean change E[ΔL]** (``mean``, ``stderr``, ``ci_low``/``ci_high``): a *curvature* measure.
  The first-order term gᵀδ has mean zero but dominates each draw's variance away from an exact
  minimum, so by default the draws are **antithetic**: each ε is used as +δ and −δ and gives one
  sample c = [L(θ+δ) + L(θ−δ)]/2 − L(θ), in which every odd-order term (gᵀδ included) cancels
  exactly: c = ½δᵀHδ + O(‖δ‖⁴), E[c] = E[ΔL]. For isotropic noise E[ΔL] ≈ ½σ²·tr(H)
  (:func:`second_order_prediction`; for the scaled kinds ½σ²·tr(SHS), S = diag(s)). For a
  piecewise-linear net (ReLU, max-pool) H only holds the smooth part (softmax/cross-entropy)
  and the kinks δ crosses add their own σ² contribution, so the measured mean exceeds the
  second-order prediction (:func:`second_order_ratio`). ``antithetic=False`` gives plain
  draws, ΔL = L(θ+δ) − L(θ), whose samples carry the gᵀδ noise (kept for comparison).
- **Mean absolute change E|ΔL|** (``mean_abs``, ``mean_abs_stderr``): the write-up's metric
  |L(θ+δ) − L(θ)|, over the individual one-sided evaluations (in antithetic mode both the +δ and
  the −δ evaluation count). Away from an exact minimum it is dominated by |gᵀδ|:
  E|ΔL| ≈ E|gᵀδ| = σ·‖g‖·√(2/π) for isotropic noise (σ·‖Sg‖·√(2/π) for the scaled kinds). It is a
  *gradient-norm* measure, not a curvature one; a flatness claim built on it is a claim about
  the gradient's size at the noise scale.

Cost: ``n_draws`` is the number of loss evaluations per σ in both modes (the base L(θ) is one
more, shared). Antithetic mode spends them as ``n_draws // 2`` pairs.

Noise kinds, with ε ~ N(0, I) shaped like every trainable parameter and δ = σ · s ⊙ ε:

- ``"isotropic"`` (the study's): s = 1, i.e. δ ~ N(0, σ²I) on every parameter.
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
and differences between σ values have less noise. Draw k (plain) or pair k (antithetic) uses
the k-th ε from the generator, so pair k and plain draw k share ε for the same seed.
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

    S = number of σ values, K = ``n_draws`` = loss evaluations per σ (the cost), M = ``n_changes``
    = independent samples of the mean change (K // 2 antithetic pairs, or K plain draws).

    Mean change E[ΔL] (curvature; module docstring):
        changes: (S, M) per sample: antithetic, c = [L(θ+δ) + L(θ−δ)]/2 − L(θ) per pair;
            plain, L(θ+δ) − L(θ) per draw. The same ε at every σ.
        mean: (S,) E[ΔL] estimated by the mean of ``changes`` (by antithetic pairs by default; signed).
        std: (S,) sample standard deviation of ``changes`` (ddof=1).
        stderr: (S,) standard error of ``mean``, std / sqrt(M).
        ci_low, ci_high: (S,) mean ∓ t_{(1+confidence)/2, M−1} · stderr (Student t interval).
        abs_mean: (S,) |mean| (not E|ΔL|: see ``mean_abs``).
    Mean absolute change E|ΔL| (the write-up's metric; ≈ E|gᵀδ|, a gradient-norm measure):
        one_sided_changes: (S, K) every single evaluation's L(θ ± δ) − L(θ); antithetic: columns
            2k and 2k+1 are pair k's +δ and −δ; plain: equal to ``changes``.
        mean_abs: (S,) mean of |one_sided_changes| (both sides count in antithetic mode).
        mean_abs_stderr: (S,) its standard error over independent draws (antithetic: over the M
            pair averages ½(|ΔL(δ)| + |ΔL(−δ)|), since a pair's two sides are not independent).
    Errors:
        base_loss, base_error: L(θ) and its error (``None`` for non-class targets).
        error_changes: (S, M) error changes, symmetric like ``changes`` (antithetic:
            [err(θ+δ) + err(θ−δ)]/2 − err(θ)), or ``None``.
        error_mean: (S,) mean of ``error_changes``, or ``None``.
    Bookkeeping:
        noise: one of :data:`NOISE_KINDS`. antithetic: whether ±δ pairs were used.
        confidence: interval level.
        n_draws, n_evaluations: K (both names; the loss evaluations per σ, base excluded).
        n_changes: M. n_samples: data samples evaluated. seed: the seed if the caller gave an int.
    """

    noise: str
    antithetic: bool
    sigmas: np.ndarray
    changes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    stderr: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    abs_mean: np.ndarray
    one_sided_changes: np.ndarray
    mean_abs: np.ndarray
    mean_abs_stderr: np.ndarray
    confidence: float
    base_loss: float
    base_error: float | None
    error_changes: np.ndarray | None
    error_mean: np.ndarray | None
    n_draws: int
    n_evaluations: int
    n_changes: int
    n_samples: int
    seed: int | None

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


@dataclass(frozen=True, eq=False)
class TracePrediction:
    """The second-order prediction ½σ²·tr(H) at each σ, with its standard error when the trace's is known."""

    sigmas: np.ndarray
    trace: float
    prediction: np.ndarray
    prediction_stderr: np.ndarray | None

    def to_dict(self) -> dict:
        return {"sigmas": self.sigmas.tolist(), "trace": self.trace, "prediction": self.prediction.tolist(),
                "prediction_stderr": None if self.prediction_stderr is None else self.prediction_stderr.tolist()}


@dataclass(frozen=True, eq=False)
class SecondOrderRatio:
    """Measured mean change over the second-order prediction ½σ²·tr(H), per σ.

    Attributes (S = number of σ values):
        sigmas: (S,).
        ratio: (S,) measured_mean / (½σ²·trace).
        ratio_stderr: (S,) delta-method standard error (measurement and trace errors independent).
        prediction, prediction_stderr: (S,) ½σ²·trace and ½σ²·trace_stderr.
        trace, trace_stderr: as given (trace_stderr 0.0 when not given).
    """

    sigmas: np.ndarray
    ratio: np.ndarray
    ratio_stderr: np.ndarray
    prediction: np.ndarray
    prediction_stderr: np.ndarray
    trace: float
    trace_stderr: float

    def to_dict(self) -> dict:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.__dict__.items()}


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
    antithetic: bool = True,
    confidence: float = 0.95,
    batch_size: int | None = None,
) -> FlatnessResult:
    """Loss changes under ``n_draws`` perturbations δ at each noise scale σ (module docstring).

    Args:
        model: any module; parameters and modes are left as found (evaluated in eval mode).
        loss_fn: mean loss over a batch, ``loss_fn(outputs, targets)``.
        data: ``(inputs, targets)``, the fixed samples.
        sigmas: noise scale(s), positive.
        generator: ``torch.Generator`` or int seed (recorded) for the ε draws.
        noise: ``"isotropic"``, ``"filter"`` or ``"magnitude"`` (module docstring).
        n_draws: loss evaluations per σ, the cost (the base L(θ) is one more). Antithetic: an even
            number ≥ 4, spent as ``n_draws // 2`` ±δ pairs; plain: ≥ 2 draws.
        antithetic: ±δ pairs (default), which cancel the first-order term of the mean change;
            ``False`` for plain one-sided draws.
        confidence: level of the Student-t interval on the mean, in (0, 1).
        batch_size: samples per forward pass.

    Returns:
        :class:`FlatnessResult`.

    Raises:
        ValueError: bad σ, noise kind, draw count (odd or < 4 when antithetic), confidence, or
            any evaluation argument.
    """
    sig = check_sigmas(sigmas)
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")
    if not isinstance(antithetic, bool):
        raise ValueError(f"antithetic must be True or False, got {antithetic!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(f"n_draws must be an int >= 2, got {n_draws!r}")
    if antithetic and (n_draws < 4 or n_draws % 2):
        raise ValueError(f"n_draws counts loss evaluations; with antithetic=True it must be an even int >= 4 "
                         f"(n_draws // 2 ±δ pairs, at least 2 for an interval), got {n_draws!r}; "
                         f"use an even count or antithetic=False")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    g, seed = as_generator(generator)
    theta = named_params(model)
    scales = noise_scales(theta, noise)
    base = functional_loss(model, loss_fn, data, theta, batch_size=batch_size)
    n_eps = n_draws // 2 if antithetic else n_draws
    signs = (1.0, -1.0) if antithetic else (1.0,)

    def points() -> Iterator[ParamDict]:
        # ε-major order: ε_k drawn once, then θ ± σ·s⊙ε_k for each σ (+ before −).
        for _ in range(n_eps):
            eps = gaussian_like(theta, g)
            scaled = {name: scales[name] * eps[name] for name in theta}
            for s in sig:
                for sign in signs:
                    yield {name: torch.add(theta[name], scaled[name], alpha=sign * float(s)) for name in theta}

    res = functional_losses(model, loss_fn, data, points(), batch_size=batch_size)
    n_sides = len(signs)
    # (S, n_eps, sides): one-sided changes L(θ ± δ) − L(θ)
    sided = (res.losses.reshape(n_eps, sig.size, n_sides) - base.loss).transpose(1, 0, 2)
    changes = sided.mean(axis=2)  # antithetic: ½[ΔL(δ) + ΔL(−δ)]; plain: ΔL(δ)
    mean = changes.mean(axis=1)
    std = changes.std(axis=1, ddof=1)
    stderr = std / np.sqrt(n_eps)
    abs_per_eps = np.abs(sided).mean(axis=2)  # independent across ε: the samples for E|ΔL|'s error
    from scipy import stats  # here, not at import: scipy.stats costs half a second per job

    half = stats.t.ppf(0.5 + confidence / 2, df=n_eps - 1) * stderr
    err_changes = None
    if res.errors is not None:
        err_changes = (res.errors.reshape(n_eps, sig.size, n_sides) - base.error).transpose(1, 0, 2).mean(axis=2)
    return FlatnessResult(
        noise=noise, antithetic=antithetic, sigmas=sig, changes=changes, mean=mean, std=std, stderr=stderr,
        ci_low=mean - half, ci_high=mean + half, abs_mean=np.abs(mean),
        one_sided_changes=sided.reshape(sig.size, n_draws), mean_abs=abs_per_eps.mean(axis=1),
        mean_abs_stderr=abs_per_eps.std(axis=1, ddof=1) / np.sqrt(n_eps), confidence=float(confidence),
        base_loss=base.loss, base_error=base.error, error_changes=err_changes,
        error_mean=None if err_changes is None else err_changes.mean(axis=1),
        n_draws=n_draws, n_evaluations=n_draws, n_changes=n_eps, n_samples=res.n_samples, seed=seed)


def second_order_prediction(sigmas: Sequence[float] | np.ndarray | float, trace: float,
                            trace_stderr: float | None = None) -> TracePrediction:
    """The second-order (quadratic-model) prediction ½σ²·tr(H) of the mean loss change E[ΔL].

    Exact for a quadratic loss at any θ (the first-order term has mean zero), and the leading
    term of E[ΔL] for a smooth loss. It is a *reference*, not a check that must match: for a
    piecewise-linear net the kinks add their own σ² term (see :func:`second_order_ratio`).
    For the scaled noise kinds pass tr(SHS) (the Hessian's trace in the scaled coordinates).

    Args:
        sigmas: noise scales.
        trace: tr(H), e.g. a Hutchinson estimate on the same samples.
        trace_stderr: its standard error, propagated as ½σ²·stderr (optional).

    Raises:
        ValueError: bad σ, a non-finite trace or a negative trace_stderr.
    """
    sig = check_sigmas(sigmas)
    if not np.isfinite(trace):
        raise ValueError(f"trace must be finite, got {trace!r}")
    if trace_stderr is not None and trace_stderr < 0:
        raise ValueError(f"trace_stderr must be >= 0, got {trace_stderr!r}")
    half_sq = 0.5 * sig**2
    return TracePrediction(sigmas=sig, trace=float(trace), prediction=half_sq * trace,
                           prediction_stderr=None if trace_stderr is None else half_sq * float(trace_stderr))


def isotropic_trace_prediction(sigmas: Sequence[float] | np.ndarray | float, trace: float,
                               trace_stderr: float | None = None) -> TracePrediction:
    """Same as :func:`second_order_prediction` (the name the study's jobs use)."""
    return second_order_prediction(sigmas, trace, trace_stderr)


def second_order_ratio(measured_mean: float | Sequence[float] | np.ndarray,
                       measured_stderr: float | Sequence[float] | np.ndarray,
                       trace: float, trace_stderr: float | None,
                       sigma: float | Sequence[float] | np.ndarray) -> SecondOrderRatio:
    """Measured E[ΔL] over the second-order prediction ½σ²·tr(H), with a delta-method standard error.

    r = m / p with p = ½σ²·trace; treating m and the trace as independent estimates,
    se(r) = sqrt(se(m)² + r²·se(p)²) / |p|, se(p) = ½σ²·trace_stderr (the first-order delta method;
    written without dividing by m, so it stays finite when m is near 0).

    Reading it: ≈ 1 for a smooth loss at small σ (the quadratic model holds); for a
    piecewise-linear net (ReLU, max-pool) H holds only the smooth part of the curvature and each
    kink that δ crosses adds its own positive O(σ²) term, so a ratio *above* 1 that stays above 1
    as σ shrinks is the kinks' own σ² contribution, not a failed check (ratios 1.05–1.9 are
    typical of trained ReLU nets). Use the antithetic mean and stderr of
    :func:`perturbation_loss_changes` for m (isotropic noise with tr(H); tr(SHS) for scaled noise).

    Args:
        measured_mean, measured_stderr: E[ΔL] and its standard error, scalars or (S,) per σ.
        trace, trace_stderr: tr(H) and its standard error (``None``: treated as exact).
        sigma: noise scale(s), broadcast against the measurements.

    Raises:
        ValueError: bad σ, non-finite inputs, negative standard errors, or a zero trace.
    """
    sig = check_sigmas(sigma)
    m = np.asarray(measured_mean, dtype=np.float64)
    se_m = np.asarray(measured_stderr, dtype=np.float64)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(se_m)) and np.all(se_m >= 0)):
        raise ValueError("measured_mean must be finite and measured_stderr finite and >= 0")
    if not np.isfinite(trace) or trace == 0:
        raise ValueError(f"trace must be finite and non-zero, got {trace!r}")
    se_t = 0.0 if trace_stderr is None else float(trace_stderr)
    if not (np.isfinite(se_t) and se_t >= 0):
        raise ValueError(f"trace_stderr must be finite and >= 0, got {trace_stderr!r}")
    m, se_m, sig = np.broadcast_arrays(np.atleast_1d(m), np.atleast_1d(se_m), sig)
    pred = 0.5 * sig**2 * float(trace)
    pred_se = 0.5 * sig**2 * se_t
    ratio = m / pred
    ratio_se = np.sqrt(se_m**2 + ratio**2 * pred_se**2) / np.abs(pred)
    return SecondOrderRatio(sigmas=sig.astype(np.float64), ratio=ratio, ratio_stderr=ratio_se,
                            prediction=pred, prediction_stderr=pred_se, trace=float(trace),
                            trace_stderr=se_t)
