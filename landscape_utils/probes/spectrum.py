"""Hessian trace and spectral density of a mean loss: Hutchinson, Hutch++ and stochastic Lanczos quadrature.

Same Hessian and contract as :mod:`landscape_utils.probes.hessian`: the mean loss over a fixed sample set
``data = (inputs, targets)``, w.r.t. the model's trainable parameters; an explicit
``torch.Generator`` for every random draw; the model's parameters, modes, buffers and ``.grad``
are left as found. Estimates use a fixed HVP budget (no "the running mean stopped changing"
rule, which can stop far from the answer) and report their Monte-Carlo standard error.

Every estimator takes ``hvp="auto"|"autograd"|"finite-difference"`` (and ``fd_step``) like
:class:`~landscape_utils.probes.hessian.HessianOperator`, and its result records the HVP path used
(``hvp_path``, ``hvp_note``, ``hvp_rel_error``). On finite-difference HVPs each sample vᵀHv carries
a relative error of about ``hvp_rel_error`` (a bias far below the Monte-Carlo error in float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .hessian import (
    HessianOperator,
    LanczosProcess,
    LossFn,
    check_generator,
    check_positive,
)


def _rademacher(shape: tuple[int, ...], generator: torch.Generator, dtype, device) -> Tensor:
    """Independent ±1 entries drawn from ``generator``."""
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (2 * bits - 1).to(dtype=dtype, device=device)


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate with its standard error.

    ``samples`` are the per-probe values whose mean (plus ``exact_part``) is ``estimate``;
    ``stderr`` is their sample standard deviation / sqrt(len(samples)). For Hutchinson
    ``exact_part`` is 0; for Hutch++ it is tr(QᵀHQ) and the standard error is conditional on
    the sketch Q (see :func:`hutchpp_trace`). ``hvp_path``/``hvp_note``/``hvp_rel_error``: how
    the HVPs were computed (see ``HessianOperator``).
    """

    method: str
    estimate: float
    stderr: float
    n_hvp: int
    samples: tuple[float, ...]
    exact_part: float = 0.0
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``estimate ± z·stderr`` (z = 1.96: a normal-approximation 95% interval)."""
        return self.estimate - z * self.stderr, self.estimate + z * self.stderr

    def to_dict(self) -> dict:
        """Plain JSON-serialisable values."""
        return {
            "method": self.method,
            "estimate": self.estimate,
            "stderr": self.stderr,
            "n_hvp": self.n_hvp,
            "samples": list(self.samples),
            "exact_part": self.exact_part,
            "hvp_path": self.hvp_path,
            "hvp_note": self.hvp_note,
            "hvp_rel_error": self.hvp_rel_error,
        }


def _mean_stderr(samples: np.ndarray) -> tuple[float, float]:
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(samples.size))


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    n_probes: int = 100,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
) -> TraceResult:
    """tr(H) by Hutchinson's estimator with a fixed budget of Rademacher probes.

    Each probe z (entries ±1 from ``generator``) gives the unbiased sample zᵀHz (one HVP); the
    estimate is their mean and the standard error their sample standard deviation / sqrt(n).

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see ``HessianOperator``).
        hvp, fd_step: HVP path and finite-difference step (see ``HessianOperator``).
        generator: source of the probes.
        n_probes: number of probes = HVPs (int ≥ 2, so a standard error exists).

    Returns:
        :class:`TraceResult` (method ``"hutchinson"``).

    Raises:
        ValueError: on bad arguments.
    """
    check_positive("n_probes", n_probes, integer=True)
    if n_probes < 2:
        raise ValueError("n_probes must be >= 2 for a standard error")
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    samples = np.empty(n_probes)
    for i in range(n_probes):
        z = _rademacher((op.dim,), generator, op.dtype, op.device)
        samples[i] = float(torch.dot(z, op.matvec(z)))
    est, se = _mean_stderr(samples)
    return TraceResult("hutchinson", est, se, op.n_hvp, tuple(samples.tolist()), **op.provenance())


def hutchpp_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    n_hvp: int = 99,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
) -> TraceResult:
    """tr(H) by Hutch++ (Meyer, Musco, Musco & Woodruff 2021) with a fixed HVP budget.

    The budget is split in thirds: s = n_hvp // 3 Rademacher vectors S give Q = orth(H S)
    (s HVPs); tr(QᵀHQ) is computed exactly (s HVPs); the remaining g = n_hvp − 2s Rademacher
    probes G estimate the trace of the deflated matrix (I − QQᵀ)H(I − QQᵀ) à la Hutchinson
    (g HVPs). When a few eigenvalues dominate, Q captures them and the residual variance is
    much smaller than Hutchinson's at the same budget.

    Standard error: conditional on Q the first term is exact, so the error is that of the
    Hutchinson mean over the g deflated samples; ``stderr`` is their sample standard deviation
    / sqrt(g). The estimator is unbiased overall, and the interval is valid given Q.

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see ``HessianOperator``).
        hvp, fd_step: HVP path and finite-difference step (see ``HessianOperator``).
        generator: source of S and G.
        n_hvp: total HVP budget (int ≥ 5, so that g ≥ 2 and s ≥ 1).

    Returns:
        :class:`TraceResult` (method ``"hutch++"``, ``exact_part = tr(QᵀHQ)``).

    Raises:
        ValueError: on bad arguments.
    """
    check_positive("n_hvp", n_hvp, integer=True)
    if n_hvp < 5:
        raise ValueError("n_hvp must be >= 5 (one sketch vector and two deflated probes at least)")
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    s = min(n_hvp // 3, op.dim)
    g = n_hvp - 2 * s
    S = _rademacher((s, op.dim), generator, op.dtype, op.device)  # rows are sketch vectors
    HS = torch.stack([op.matvec(row) for row in S])  # (s, P)
    Q, _ = torch.linalg.qr(HS.T)  # (P, s), orthonormal columns spanning range(H S)
    del HS, S  # the sketch Q is all that is kept (memory: s vectors of length P)
    exact = float(sum(torch.dot(Q[:, i], op.matvec(Q[:, i])) for i in range(s)))
    samples = np.empty(g)
    for i in range(g):
        z = _rademacher((op.dim,), generator, op.dtype, op.device)
        z = z - Q @ (Q.T @ z)  # (I − QQᵀ) z
        samples[i] = float(torch.dot(z, op.matvec(z)))
    mean, se = _mean_stderr(samples)
    return TraceResult("hutch++", exact + mean, se, op.n_hvp, tuple(samples.tolist()), exact, **op.provenance())


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian spectrum, ready to plot.

    ``nodes``/``weights`` (same length) are the Ritz values of all runs and their quadrature
    weights (squared first components of T's eigenvectors, divided by the number of runs; they
    sum to 1). ``density`` is the Gaussian-smoothed density on ``grid`` (width ``sigma``), which
    integrates to about 1 over the grid. Plot ``density`` against ``grid``, often on a log y-axis.
    """

    nodes: tuple[float, ...]
    weights: tuple[float, ...]
    grid: tuple[float, ...]
    density: tuple[float, ...]
    sigma: float
    n_vectors: int
    n_steps: int
    n_hvp: int
    dim: int
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable values."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def gaussian_smoothing(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Σ_i w_i N(x; θ_i, σ²) evaluated at each grid point x; shape (len(grid),)."""
    z = (grid[:, None] - nodes[None, :]) / sigma  # (G, n)
    return np.sum(np.exp(-0.5 * z**2) * weights, axis=1) / (sigma * math.sqrt(2 * math.pi))


def slq_spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    n_vectors: int = 4,
    n_steps: int = 32,
    n_grid: int = 1000,
    sigma: float | None = None,
    grid: Sequence[float] | None = None,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each of ``n_vectors`` start vectors v = z/‖z‖ (z Rademacher, from ``generator``), run
    ``n_steps`` Lanczos steps with full re-orthogonalisation (fewer if the Krylov space becomes
    invariant, in which case that quadrature is exact), diagonalise T = S diag(θ) Sᵀ and take
    nodes θ_i with weights S[0, i]². This is the Gauss quadrature of vᵀ f(H) v, exact for
    polynomials f of degree < 2·n_steps; in particular Σ w_i θ_i = vᵀHv, so ``P · Σ_i w_i θ_i``
    equals the Hutchinson trace estimate from the same probes. Weights are averaged over runs.
    The density Σ w_i N(x; θ_i, σ²) is evaluated on ``grid``.

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see ``HessianOperator``).
        hvp, fd_step: HVP path and finite-difference step (see ``HessianOperator``).
        generator: source of the start vectors.
        n_vectors: number of start vectors (positive int).
        n_steps: Lanczos steps per vector (positive int; capped at P).
        n_grid: number of grid points when ``grid`` is not given (int ≥ 2).
        sigma: smoothing width; default 1% of the node range (or 1e-3·max(1, |θ|) if the
            range is zero).
        grid: evaluation points; default ``n_grid`` points from min(nodes) − 6σ − 2% of the
            range to max(nodes) + the same margin, so the density integrates to ≈ 1.

    Returns:
        :class:`SpectralDensity`.

    Raises:
        ValueError: on bad arguments.
    """
    check_positive("n_vectors", n_vectors, integer=True)
    check_positive("n_steps", n_steps, integer=True)
    check_positive("n_grid", n_grid, integer=True)
    if n_grid < 2:
        raise ValueError("n_grid must be >= 2")
    if sigma is not None:
        check_positive("sigma", sigma)
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    steps = min(n_steps, op.dim)
    all_nodes, all_weights = [], []
    for _ in range(n_vectors):
        z = _rademacher((op.dim,), generator, op.dtype, op.device)
        proc = LanczosProcess(op.matvec, z, steps)
        while proc.m < steps:
            proc.step()
            if proc.broke_down():  # invariant Krylov space: quadrature already exact for v
                break
        theta, S, _ = proc.ritz()
        all_nodes.append(theta)
        all_weights.append(S[0, :] ** 2 / n_vectors)
    nodes, weights = np.concatenate(all_nodes), np.concatenate(all_weights)
    weights = weights / weights.sum()  # remove rounding drift (each run's weights sum to 1)

    lo, hi = float(nodes.min()), float(nodes.max())
    span = hi - lo
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 1e-3 * max(1.0, abs(lo))
    if grid is None:
        margin = 6 * sigma + 0.02 * span
        grid_arr = np.linspace(lo - margin, hi + margin, n_grid)
    else:
        grid_arr = np.asarray(grid, dtype=np.float64).reshape(-1)
        if grid_arr.size < 2 or not np.all(np.diff(grid_arr) > 0):
            raise ValueError("grid must hold at least 2 strictly increasing points")
    density = gaussian_smoothing(nodes, weights, grid_arr, sigma)
    return SpectralDensity(
        nodes=tuple(nodes.tolist()),
        weights=tuple(weights.tolist()),
        grid=tuple(grid_arr.tolist()),
        density=tuple(density.tolist()),
        sigma=float(sigma),
        n_vectors=n_vectors,
        n_steps=steps,
        n_hvp=op.n_hvp,
        dim=op.dim,
        **op.provenance(),
    )
