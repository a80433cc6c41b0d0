"""Linear mode connectivity: loss and error along θ(α) = (1−α)θA + αθB, and the barrier.

The barrier of a curve f over α ∈ [0, 1] is max_α f(α) − ((1−α)f(0) + αf(1)): the height
above the straight line between the endpoint values (equal to "max minus endpoint mean"
when the endpoints match). It is computed for loss and for error. The same function gives
the path from a run's initialisation to its final parameters (θA = init, θB = final).

Interpolation uses ``torch.lerp``, which returns θA and θB exactly at α = 0 and 1 and θA
exactly everywhere when θA = θB, so endpoint values equal the endpoint losses and the
barrier between identical points is exactly 0. Buffers (e.g. BatchNorm running statistics)
are the model's own at every point: they are not interpolated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .evaluation import LossFn, PointLosses, as_param_dict, functional_losses
from .params import ParamDict

DEFAULT_PATH_POINTS = 25


@dataclass(frozen=True)
class Barrier:
    """Height of a curve above the chord between its endpoint values, and where it peaks."""

    barrier: float
    alpha: float  # α at the maximum (first one if tied)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class PathResult:
    """Loss and error along a straight path (A points, α from 0 to 1 inclusive).

    Attributes:
        alphas: (A,) path positions, 0 and 1 included.
        losses, errors: (A,) along the path (errors ``None`` for non-class targets).
        start_loss, end_loss, start_error, end_error: the endpoint values.
        loss_barrier, error_barrier: :class:`Barrier` for loss and error (error ``None`` if undefined).
        n_samples: samples evaluated.
    """

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray | None
    start_loss: float
    end_loss: float
    start_error: float | None
    end_error: float | None
    loss_barrier: Barrier
    error_barrier: Barrier | None
    n_samples: int

    def to_dict(self) -> dict:
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v.to_dict() if isinstance(v, Barrier) else v
        return out


def path_alphas(n_points: int = DEFAULT_PATH_POINTS) -> np.ndarray:
    """``n_points`` evenly spaced α from 0 to 1, both endpoints exact.

    Raises:
        ValueError: n_points not an int ≥ 3.
    """
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3:
        raise ValueError(f"n_points must be an int >= 3, got {n_points!r}")
    return np.arange(n_points) / (n_points - 1)


def check_path_alphas(alphas: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate α values: 1-D, ≥ 3, strictly increasing, in [0, 1], with 0 and 1 exactly."""
    arr = np.asarray(alphas, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 3 or not np.all(np.isfinite(arr)):
        raise ValueError("alphas must be a 1-D array of at least 3 finite values")
    if np.any(np.diff(arr) <= 0):
        raise ValueError("alphas must be strictly increasing")
    if arr[0] != 0.0 or arr[-1] != 1.0:
        raise ValueError("alphas must start at 0 and end at 1 exactly (both endpoints included)")
    return arr


def path_barrier(alphas: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> Barrier:
    """max over α of values(α) − ((1−α)·values(0) + α·values(1)).

    ``alphas`` must run from 0 to 1 inclusive (see :func:`check_path_alphas`). The chord is
    evaluated as a lerp, exact at both ends and constant when the endpoint values are equal,
    so a flat curve has barrier exactly 0; including the endpoints makes the barrier ≥ 0.

    A diverged path is reported, not refused: an infinite value inside the path gives an
    infinite barrier, a NaN anywhere (or an infinite endpoint) gives NaN.

    Raises:
        ValueError: bad alphas, or not one value per alpha.
    """
    a = check_path_alphas(alphas)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != a.shape:
        raise ValueError(f"values must be {a.size} numbers, one per alpha; got shape {v.shape}")
    v0, v1 = v[0], v[-1]
    with np.errstate(invalid="ignore"):
        chord = np.where(a < 0.5, v0 + a * (v1 - v0), v1 - (1 - a) * (v1 - v0))
        excess = v - chord
    if np.any(np.isnan(excess)):
        return Barrier(barrier=float("nan"), alpha=float("nan"))
    i = int(np.argmax(excess))
    return Barrier(barrier=float(excess[i]), alpha=float(a[i]))


def path_result(alphas: np.ndarray, res: PointLosses) -> PathResult:
    """A :class:`PathResult` from the losses and errors evaluated at ``alphas`` (0 and 1 included)."""
    losses, errors = res.losses, res.errors
    no_error = errors is None
    return PathResult(
        alphas=alphas, losses=losses, errors=errors, start_loss=float(losses[0]), end_loss=float(losses[-1]),
        start_error=None if no_error else float(errors[0]), end_error=None if no_error else float(errors[-1]),
        loss_barrier=path_barrier(alphas, losses), error_barrier=None if no_error else path_barrier(alphas, errors),
        n_samples=res.n_samples)


def linear_path_losses(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    start: Mapping[str, Tensor] | nn.Module,
    end: Mapping[str, Tensor] | nn.Module,
    *,
    n_points: int = DEFAULT_PATH_POINTS,
    alphas: Sequence[float] | np.ndarray | None = None,
    batch_size: int | None = None,
) -> PathResult:
    """Loss and error along θ(α) = (1−α)θA + αθB, and the loss and error barriers.

    Args:
        model: a module of the endpoints' architecture; its own parameters are not used
            (nor changed); its buffers are. Evaluated in eval mode, modes restored.
        loss_fn: mean loss over a batch.
        data: ``(inputs, targets)``; call again with test samples for the test curve.
        start, end: θA and θB as param dicts keyed like ``named_params(model)``, state_dicts
            of the same architecture (buffers ignored), or modules.
        n_points: evenly spaced α in [0, 1] including both ends (default 25; 25–31 is usual).
        alphas: explicit α values instead (strictly increasing, 0 and 1 included).
        batch_size: samples per forward pass.

    Raises:
        ValueError: mismatched endpoints, bad α values or evaluation arguments.
    """
    a = path_alphas(n_points) if alphas is None else check_path_alphas(alphas)
    theta_a = as_param_dict(model, start, "start")
    theta_b = as_param_dict(model, end, "end")

    def points() -> Iterator[ParamDict]:
        for alpha in a:
            yield {name: torch.lerp(theta_a[name], theta_b[name], float(alpha)) for name in theta_a}

    return path_result(a, functional_losses(model, loss_fn, data, points(), batch_size=batch_size))
