"""1-D slices L(θ + αv) and 2-D surfaces L(θ + αu + βv), with two curvatures per slice.

Grids are centred and symmetric and contain α = 0 exactly (:func:`centred_grid` builds
one; :func:`check_centred_grid` validates a caller's), and the centre is evaluated at
exactly θ, so a slice's centre value *is* the loss. Train and test curves come from two
calls with different ``data``.

Each slice along a direction v reports two curvatures, named for what they are:

- **Local curvature** ``local_curvatures`` = vᵀHv, the second derivative of L(θ + αv) *at α = 0*,
  exact, from one Hessian-vector product per direction (H the Hessian of the mean loss over
  ``data``, eval mode, as :class:`~landscape_utils.probes.hessian.HessianOperator` computes it).
- **Fitted curvature** ``fitted_curvatures`` = 2·c₂ of a least-squares parabola c₀ + c₁α + c₂α²
  through the ``fit_points`` central grid values, i.e. a *finite-scale* curvature over
  [−r, r] with r = ``fit_radius`` (the largest |α| the fit uses). It equals vᵀHv for a
  quadratic loss and tends to it as r → 0 for a smooth one; for a piecewise-linear net (ReLU,
  max-pool) it includes the kinks crossed within [−r, r], depends on r and can differ 2–3× from
  (even change sign against) vᵀHv. It is not d²L/dα² at 0. Shrinking r does not rescue it
  in float32: the fit's rounding error grows like eps·L/r² (at r = 5e-4 a briefly trained MNIST CNN's
  fit came out negative where vᵀHv is 0.39).

``normalised_*`` divide by ‖v‖² (the Rayleigh quotient), which along a unit eigenvector is
its eigenvalue.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from .directions import Direction, as_direction
from .evaluation import LossFn, affine_points, functional_losses
from .hessian import HessianOperator
from .params import flatten, named_params

DEFAULT_FIT_POINTS = 5


def centred_grid(radius: float, n_points: int) -> np.ndarray:
    """``n_points`` evenly spaced values from −radius to radius, symmetric, with 0 exactly.

    Raises:
        ValueError: radius not positive and finite, or n_points not an odd int ≥ 3.
    """
    if not (isinstance(radius, (int, float)) and np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3 or n_points % 2 == 0:
        raise ValueError(f"n_points must be an odd int >= 3 (so the grid holds 0), got {n_points!r}")
    half = n_points // 2
    # Integer offsets scaled once: exactly 0 in the middle and exactly symmetric.
    return float(radius) * (np.arange(n_points) - half) / half


def check_centred_grid(alphas: Sequence[float] | np.ndarray, what: str = "alphas") -> np.ndarray:
    """Validate a grid: 1-D, finite, strictly increasing, symmetric about 0 and holding 0 exactly.

    Returns:
        The grid as a float64 array.

    Raises:
        ValueError: otherwise.
    """
    arr = np.asarray(alphas, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 3 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be a 1-D array of at least 3 finite values")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{what} must be strictly increasing")
    if not np.any(arr == 0.0):
        raise ValueError(f"{what} must contain 0 exactly (use centred_grid)")
    if not np.allclose(arr, -arr[::-1], rtol=0, atol=1e-12 * np.max(np.abs(arr))):
        raise ValueError(f"{what} must be symmetric about 0 (use centred_grid)")
    return arr


@dataclass(frozen=True, eq=False)
class Curvature:
    """Quadratic fit L(α) ≈ a + bα + ½cα² on the central grid points of one slice.

    ``curvature`` c is the fitted parabola's second derivative: a finite-scale curvature over
    [−radius, radius], not the second derivative of L at 0 (module docstring).
    """

    curvature: float  # c, the fitted (finite-scale) curvature over [-radius, radius]
    slope: float  # b
    intercept: float  # a
    residual_rms: float  # RMS of the fit's residuals (0 for 3 points or an exact quadratic)
    n_points: int
    radius: float  # the largest |α| among the fitted points

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def quadratic_fit_curvature(alphas: np.ndarray, losses: np.ndarray, fit_points: int = DEFAULT_FIT_POINTS) -> Curvature:
    """Least-squares quadratic through the ``fit_points`` values nearest α = 0 (a finite-scale curvature).

    Raises:
        ValueError: fit_points not an odd int ≥ 3 or more than the grid holds; grid without 0.
    """
    alphas, losses = np.asarray(alphas, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if isinstance(fit_points, bool) or not isinstance(fit_points, int) or fit_points < 3 or fit_points % 2 == 0:
        raise ValueError(f"fit_points must be an odd int >= 3, got {fit_points!r}")
    if fit_points > alphas.size:
        raise ValueError(f"fit_points={fit_points} exceeds the grid's {alphas.size} points")
    zero = np.flatnonzero(alphas == 0.0)
    if zero.size != 1:
        raise ValueError("the grid must contain 0 exactly once")
    half = fit_points // 2
    lo = min(max(int(zero[0]) - half, 0), alphas.size - fit_points)
    a, y = alphas[lo : lo + fit_points], losses[lo : lo + fit_points]
    h = np.max(np.abs(a))  # fit in units of h for conditioning: y = p0 + p1 (a/h) + p2 (a/h)²
    design = np.stack([np.ones_like(a), a / h, (a / h) ** 2], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return Curvature(curvature=float(2 * coef[2] / h**2), slope=float(coef[1] / h), intercept=float(coef[0]),
                     residual_rms=float(np.sqrt(np.mean(resid**2))), n_points=fit_points, radius=float(h))


@dataclass(frozen=True, eq=False)
class SliceResult:
    """Losses along several directions on one grid (D directions, A grid points).

    Attributes:
        alphas: (A,) grid, centred, containing 0.
        losses: (D, A) L(θ + α v_d).
        errors: (D, A) misclassification rate, or ``None``.
        loss: L(θ) (the centre value, identical in every row).
        error: error at θ, or ``None``.
        local_curvatures: (D,) vᵀHv, the exact curvature at α = 0 (one HVP each), or ``None``
            when not asked for.
        normalised_local_curvatures: (D,) vᵀHv / ‖v‖², or ``None``.
        hvp_path: how the HVPs were computed (``HessianOperator.hvp_path``: ``"autograd"``, exact;
            ``"finite differences"`` only where double backward is unavailable, then approximate),
            or ``None``.
        fitted_curvatures: (D,) second derivative of the least-squares parabola over the
            ``fit_points`` central values: a finite-scale curvature over [−fit_radius, fit_radius]
            (≈ vᵀHv only for a quadratic loss or as fit_radius → 0 on a smooth one).
        normalised_fitted_curvatures: (D,) fitted_curvatures / ‖v‖².
        fit_residuals: (D,) RMS residual of each quadratic fit.
        fit_points: points used per fit.
        fit_radius: the largest |α| used by the fit (the scale of ``fitted_curvatures``).
        directions: per direction, its ``Direction.to_dict()`` (normalisation, seed, norm).
        n_samples: samples evaluated.

    Deprecated aliases (properties, and keys of :meth:`to_dict`, kept for existing readers):
    ``curvatures`` = ``fitted_curvatures`` and ``normalised_curvatures`` =
    ``normalised_fitted_curvatures``.
    """

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray | None
    loss: float
    error: float | None
    local_curvatures: np.ndarray | None
    normalised_local_curvatures: np.ndarray | None
    hvp_path: str | None
    fitted_curvatures: np.ndarray
    normalised_fitted_curvatures: np.ndarray
    fit_residuals: np.ndarray
    fit_points: int
    fit_radius: float
    directions: list[dict]
    n_samples: int

    @property
    def curvatures(self) -> np.ndarray:
        """Deprecated: ``fitted_curvatures`` (a finite-scale fit, not the curvature at 0)."""
        warnings.warn("SliceResult.curvatures is fitted_curvatures (a finite-scale fit over "
                      "[-fit_radius, fit_radius]); use fitted_curvatures or local_curvatures",
                      DeprecationWarning, stacklevel=2)
        return self.fitted_curvatures

    @property
    def normalised_curvatures(self) -> np.ndarray:
        """Deprecated: ``normalised_fitted_curvatures``."""
        warnings.warn("SliceResult.normalised_curvatures is normalised_fitted_curvatures; use it or "
                      "normalised_local_curvatures", DeprecationWarning, stacklevel=2)
        return self.normalised_fitted_curvatures

    def to_dict(self) -> dict:
        out = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.__dict__.items()}
        # deprecated keys, same values as the fitted ones, for readers of earlier results
        out["curvatures"] = out["fitted_curvatures"]
        out["normalised_curvatures"] = out["normalised_fitted_curvatures"]
        return out


@dataclass(frozen=True, eq=False)
class SurfaceResult:
    """L(θ + αu + βv) on a grid: ``losses[i, j]`` at (alphas[i], betas[j]); centre = L(θ).

    ``cosine`` is the cosine between u and v (random directions in high dimension are
    nearly, not exactly, orthogonal).
    """

    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray | None
    loss: float
    error: float | None
    directions: list[dict]
    cosine: float
    n_samples: int

    def to_dict(self) -> dict:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.__dict__.items()}


def _as_directions(model: nn.Module, directions) -> list[Direction]:
    if isinstance(directions, (Direction, Mapping)):
        directions = [directions]
    directions = [as_direction(model, d) for d in directions]
    if not directions:
        raise ValueError("give at least one direction")
    return directions


def linear_slice_losses(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    directions: Direction | Mapping[str, Tensor] | Sequence[Direction | Mapping[str, Tensor]],
    alphas: Sequence[float] | np.ndarray,
    *,
    fit_points: int | None = None,
    local_curvature: bool = True,
    batch_size: int | None = None,
) -> SliceResult:
    """L(θ + αv) and error for each direction v and each α of a centred grid, with the local
    curvature vᵀHv at α = 0 and the fitted finite-scale curvature over the central points.

    Args:
        model: any module at θ; parameters and modes are left as found (evaluated in eval mode).
        loss_fn: mean loss over a batch.
        data: ``(inputs, targets)``; call again with test samples for the test curve.
        directions: one or several :class:`~landscape_utils.directions.Direction` or name->tensor dicts.
        alphas: centred symmetric grid holding 0 (e.g. ``centred_grid(0.05, 21)``).
        fit_points: odd number ≥ 3 of central points for the quadratic fit (default: 5, or
            the whole grid if it has fewer points); its radius is recorded as ``fit_radius``.
        local_curvature: also compute vᵀHv with one Hessian-vector product per direction
            (:class:`~landscape_utils.probes.hessian.HessianOperator`, eval mode, same ``batch_size``).
        batch_size: samples per forward pass (and per HVP slice).

    Raises:
        ValueError: bad grid, directions, fit_points or evaluation arguments.
    """
    grid = check_centred_grid(alphas)
    dirs = _as_directions(model, directions)
    if fit_points is None:
        fit_points = min(DEFAULT_FIT_POINTS, grid.size)
    quadratic_fit_curvature(grid, np.zeros_like(grid), fit_points)  # validate fit_points early
    if not isinstance(local_curvature, bool):
        raise ValueError(f"local_curvature must be True or False, got {local_curvature!r}")
    theta = named_params(model)
    n_a, n_d = grid.size, len(dirs)
    coeffs = np.zeros((n_d * n_a, n_d))  # row (d, i) -> α_i on direction d
    for d in range(n_d):
        coeffs[d * n_a : (d + 1) * n_a, d] = grid
    res = functional_losses(model, loss_fn, data, affine_points(theta, [d.tensors for d in dirs], coeffs),
                            batch_size=batch_size)
    losses = res.losses.reshape(n_d, n_a)
    errors = None if res.errors is None else res.errors.reshape(n_d, n_a)
    centre = int(np.flatnonzero(grid == 0.0)[0])
    fits = [quadratic_fit_curvature(grid, row, fit_points) for row in losses]
    fitted = np.array([f.curvature for f in fits])
    sq_norms = np.array([d.norm() ** 2 for d in dirs])
    local = normalised_local = hvp_path = None
    if local_curvature:
        op = HessianOperator(model, loss_fn, data, batch_size=batch_size)
        vhv = []
        for d in dirs:
            # flat in named_params order (the operator's), whatever order the direction's dict has
            v = flatten({name: d.tensors[name] for name in theta}).detach().to(dtype=op.dtype, device=op.device)
            vhv.append(float(v.double() @ op.matvec(v).double()))
        local, hvp_path = np.array(vhv), op.hvp_path
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(sq_norms > 0, fitted / sq_norms, np.nan)
        if local is not None:
            normalised_local = np.where(sq_norms > 0, local / sq_norms, np.nan)
    return SliceResult(
        alphas=grid, losses=losses, errors=errors, loss=float(losses[0, centre]),
        error=None if errors is None else float(errors[0, centre]), local_curvatures=local,
        normalised_local_curvatures=normalised_local, hvp_path=hvp_path, fitted_curvatures=fitted,
        normalised_fitted_curvatures=normalised, fit_residuals=np.array([f.residual_rms for f in fits]),
        fit_points=fit_points, fit_radius=fits[0].radius, directions=[d.to_dict() for d in dirs],
        n_samples=res.n_samples)


def linear_surface_losses(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    u: Direction | Mapping[str, Tensor],
    v: Direction | Mapping[str, Tensor],
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray | None = None,
    *,
    batch_size: int | None = None,
) -> SurfaceResult:
    """L(θ + αu + βv) and error on the grid alphas × betas (betas default to alphas).

    Arguments as :func:`linear_slice_losses`; both grids must be centred and hold 0.

    Raises:
        ValueError: bad grids, directions or evaluation arguments.
    """
    ga = check_centred_grid(alphas, "alphas")
    gb = ga if betas is None else check_centred_grid(betas, "betas")
    du, dv = as_direction(model, u), as_direction(model, v)
    theta = named_params(model)
    aa, bb = np.meshgrid(ga, gb, indexing="ij")  # (A, B) each
    coeffs = np.stack([aa.ravel(), bb.ravel()], axis=1)  # (A·B, 2), row-major over (α, β)
    res = functional_losses(model, loss_fn, data, affine_points(theta, [du.tensors, dv.tensors], coeffs),
                            batch_size=batch_size)
    losses = res.losses.reshape(ga.size, gb.size)
    errors = None if res.errors is None else res.errors.reshape(ga.size, gb.size)
    i0, j0 = int(np.flatnonzero(ga == 0.0)[0]), int(np.flatnonzero(gb == 0.0)[0])
    fu, fv = du.flat(), dv.flat()
    denom = float(fu.norm() * fv.norm())
    cosine = float(fu @ fv) / denom if denom > 0 else float("nan")
    return SurfaceResult(alphas=ga, betas=gb, losses=losses, errors=errors, loss=float(losses[i0, j0]),
                         error=None if errors is None else float(errors[i0, j0]),
                         directions=[du.to_dict(), dv.to_dict()], cosine=cosine, n_samples=res.n_samples)
