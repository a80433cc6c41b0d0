"""Hessian trace and spectral density of a mean loss: Hutchinson, Hutch++ (with a random sketch or
with a Lanczos run's Krylov basis as the sketch) and stochastic Lanczos quadrature.

Same Hessian and contract as :mod:`landscape_utils.probes.hessian`: the mean loss over a fixed sample set
``data = (inputs, targets)``, w.r.t. the model's trainable parameters; an explicit
``torch.Generator`` for every random draw; the model's parameters, modes, buffers and ``.grad``
are left as found. Estimates use a fixed HVP budget (no "the running mean stopped changing"
rule, which can stop far from the answer) and report their Monte-Carlo standard error.

Every estimator takes ``hvp="auto"|"autograd"|"finite-difference"|"linearize"`` (and ``fd_step``) like
:class:`~landscape_utils.probes.hessian.HessianOperator`, and its result records the HVP path used
(``hvp_path``, ``hvp_note``, ``hvp_rel_error``). On finite-difference HVPs each sample vᵀHv carries
a relative error of about ``hvp_rel_error`` (a bias far below the Monte-Carlo error in float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .hessian import HessianOperator, LossFn, check_generator, check_positive
from .lanczos import KrylovBasis, LanczosProcess


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
    the sketch Q (see :func:`hutchpp_trace` and :func:`hutchpp_lanczos_trace`).
    ``hvp_path``/``hvp_note``/``hvp_rel_error``: how the HVPs were computed (see
    ``HessianOperator``).

    HVP accounting: ``n_hvp`` HVPs were spent on this estimate and counted nowhere else;
    ``n_hvp_shared`` more were reused from another result (probe products from an SLQ run, or
    the same products as a sibling estimate); summing ``n_hvp`` over results counts each once.
    ``note`` says what was shared.
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
    n_hvp_shared: int = 0
    note: str = ""

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
            "n_hvp_shared": self.n_hvp_shared,
            "note": self.note,
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


def _check_products(products, dim: int) -> tuple[Tensor, Tensor]:
    """``(Z, HZ)``: two (n, P) tensors, Rademacher probes and their HVPs (n may be 0)."""
    if products is None:
        return torch.zeros(0, dim), torch.zeros(0, dim)
    if not (isinstance(products, (tuple, list)) and len(products) == 2
            and all(isinstance(t, Tensor) for t in products)):
        raise ValueError("products must be a pair (Z, HZ) of tensors")
    Z, HZ = products
    if Z.dim() != 2 or Z.shape != HZ.shape or Z.shape[1] != dim:
        raise ValueError(f"products must both have shape (n, {dim}), got {tuple(Z.shape)} and {tuple(HZ.shape)}")
    if not bool(torch.all(Z.abs() == 1)):
        raise ValueError("the probes Z of products must be Rademacher (entries ±1)")
    return Z, HZ


def _project(rows: Tensor, v: Tensor, block: int = 16) -> Tensor:
    """``rows @ v`` for rows (m, P) and v (P,), in float64, a few rows at a time (memory): (m,)."""
    v64 = v.to(torch.float64)
    parts = [rows[i : i + block].to(torch.float64) @ v64 for i in range(0, rows.shape[0], block)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def hutchpp_lanczos_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    basis: KrylovBasis,
    n_probes: int = 24,
    products: tuple[Tensor, Tensor] | None = None,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
) -> tuple[TraceResult, TraceResult]:
    """tr(H) by Hutch++ with a Lanczos run's Krylov basis as the sketch, and by plain Hutchinson
    from the same probes.

    With Q (m, P) the orthonormal basis of a Lanczos run (e.g. ``lanczos_extremes(...).basis``)
    and T = Q H Qᵀ its tridiagonal matrix::

        tr(H) = tr(T) + tr((I − QᵀQ) H (I − QᵀQ)),

    where tr(T) = Σ α costs no HVP and the second term is estimated à la Hutchinson: for each
    Rademacher probe z, with c = Qz and d = Q(Hz), the deflated sample is
    ``z̃ᵀHz̃ = zᵀHz − 2cᵀd + cᵀTc`` (z̃ = (I − QᵀQ)z). That is one HVP per probe, the same H z
    that gives the plain Hutchinson sample zᵀHz. A Lanczos run's Krylov space holds the top
    (and bottom) eigendirections far better than Hutch++'s one-pass random sketch, so when a
    few eigenvalues dominate, the deflated samples vary much less than zᵀHz.

    Unbiasedness needs Q independent of the probes: draw the basis's start vector and the probes
    from generators with different seeds. Given Q, tr(T) is exact and the deflated mean is
    unbiased for the rest; ``stderr`` is the deflated samples' standard deviation / sqrt(n)
    (conditional on Q). The identity uses T = Q H Qᵀ, which holds to rounding (full
    re-orthogonalisation) on exact HVPs and to the HVPs' relative error on finite differences.

    ``products=(Z, HZ)`` supplies probes already multiplied, e.g. the Rademacher start vectors of
    :func:`slq_spectral_density` (``keep_products=True``), whose first Lanczos step is exactly
    H z: they are used as the first probes, and only ``n_probes − len(Z)`` more are drawn from
    ``generator`` (one HVP each). They must be independent of the basis too.

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see ``HessianOperator``).
        hvp, fd_step: HVP path and finite-difference step (see ``HessianOperator``).
        generator: source of the probes (independent of the one that made ``basis``).
        basis: :class:`~landscape_utils.probes.lanczos.KrylovBasis` of this Hessian (same P).
        n_probes: total number of probes (int ≥ 2), counting those in ``products``.
        products: optional ``(Z, HZ)``, two (n, P) tensors with n ≤ n_probes: Rademacher probes
            (rows of ±1) and their HVPs.

    Returns:
        ``(deflated, plain)``, two :class:`TraceResult`: ``deflated`` (method
        ``"hutch++ (lanczos basis)"``, ``exact_part`` = tr(T), ``n_hvp`` = the HVPs spent here,
        ``n_hvp_shared`` = len(Z)) and ``plain`` (method ``"hutchinson"``, samples zᵀHz of the
        same probes, ``n_hvp`` = 0, ``n_hvp_shared`` = n_probes).

    Raises:
        ValueError: on bad arguments (n_probes, a basis of another length, malformed products, ...).
    """
    check_positive("n_probes", n_probes, integer=True)
    if n_probes < 2:
        raise ValueError("n_probes must be >= 2 for a standard error")
    check_generator(generator)
    if not isinstance(basis, KrylovBasis):
        raise ValueError(f"basis must be a KrylovBasis, got {type(basis).__name__}")
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    if basis.vectors.dim() != 2 or basis.vectors.shape[1] != op.dim:
        raise ValueError(f"basis vectors have shape {tuple(basis.vectors.shape)}; expected (m, {op.dim})")
    Z, HZ = _check_products(products, op.dim)
    if Z.shape[0] > n_probes:
        raise ValueError(f"products hold {Z.shape[0]} probes, more than n_probes={n_probes}")
    Q = basis.vectors.to(device=op.device)  # (m, P)
    T = torch.as_tensor(basis.tridiagonal(), dtype=torch.float64)  # (m, m)
    plain, deflated = np.empty(n_probes), np.empty(n_probes)
    for i in range(n_probes):
        if i < Z.shape[0]:
            z, hz = Z[i].to(op.dtype), HZ[i].to(op.dtype)
        else:
            z = _rademacher((op.dim,), generator, op.dtype, op.device)
            hz = op.matvec(z)
        zhz = float(torch.dot(z.to(torch.float64), hz.to(torch.float64)))
        c, d = _project(Q, z), _project(Q, hz)  # Qz, Q(Hz): (m,) each
        plain[i] = zhz
        deflated[i] = zhz - 2.0 * float(c @ d) + float(c @ (T @ c))
    exact = basis.trace()
    shared = int(Z.shape[0])
    note = f"sketch: the {basis.m}-dimensional Krylov basis of a Lanczos run"
    if shared:
        note += f"; {shared} of the {n_probes} probes reused from SLQ start vectors"
    mean, se = _mean_stderr(deflated)
    deflated_res = TraceResult("hutch++ (lanczos basis)", exact + mean, se, op.n_hvp, tuple(deflated.tolist()),
                               exact, **op.provenance(), n_hvp_shared=shared, note=note)
    p_mean, p_se = _mean_stderr(plain)
    plain_res = TraceResult("hutchinson", p_mean, p_se, 0, tuple(plain.tolist()), **op.provenance(),
                            n_hvp_shared=n_probes, note="the same probes and HVPs as the deflated estimate")
    return deflated_res, plain_res


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian spectrum, ready to plot.

    ``nodes``/``weights`` (same length) are the Ritz values of all runs and their quadrature
    weights (squared first components of T's eigenvectors, divided by the number of runs; they
    sum to 1). ``density`` is the Gaussian-smoothed density on ``grid`` (width ``sigma``), which
    integrates to about 1 over the grid. Plot ``density`` against ``grid``, often on a log y-axis.
    ``probe_products`` (only with ``keep_products=True``): ``(Z, HZ)``, the Rademacher start
    vectors z (rows, (n_vectors, P)) and H z (from each run's first Lanczos step), for use as
    Hutchinson probes (:func:`hutchpp_lanczos_trace`).
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
    probe_products: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable values (``probe_products`` left out: P floats per vector)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if k != "probe_products"}


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
    keep_products: bool = False,
) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each of ``n_vectors`` start vectors v = z/‖z‖ (z Rademacher, from ``generator``), run
    ``n_steps`` Lanczos steps with full re-orthogonalisation (fewer if the Krylov space becomes
    invariant, in which case that quadrature is exact), diagonalise T = S diag(θ) Sᵀ and take
    nodes θ_i with weights S[0, i]². This is the Gauss quadrature of vᵀ f(H) v, exact for
    polynomials f of degree < 2·n_steps; in particular Σ w_i θ_i = vᵀHv, so ``P · Σ_i w_i θ_i``
    equals the Hutchinson trace estimate from the same probes. Weights are averaged over runs.
    The density Σ w_i N(x; θ_i, σ²) is evaluated on ``grid``.

    Each run's first step computes H v, so z and ``H z = ‖z‖·H v`` are a Hutchinson probe and
    its product at no extra HVP: with ``keep_products=True`` they are returned in
    ``probe_products`` (i.i.d. Rademacher probes from ``generator``, independent of anything
    drawn from another generator), e.g. for :func:`hutchpp_lanczos_trace`.

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
        keep_products: also return the start vectors and their HVPs (``probe_products``).

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
    zs: list[Tensor] = []  # the start vectors z (kept only with keep_products)
    first: list[Tensor] = []  # H v of each run's first step (v = z/‖z‖)

    def matvec(v: Tensor) -> Tensor:
        out = op.matvec(v)
        if len(first) < len(zs):
            first.append(out)
        return out

    for _ in range(n_vectors):
        z = _rademacher((op.dim,), generator, op.dtype, op.device)
        if keep_products:
            zs.append(z)
        proc = LanczosProcess(matvec, z, steps)
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
    products = None
    if keep_products:  # H z = ‖z‖ · H (z/‖z‖), and ‖z‖ = √P for a Rademacher z
        products = (torch.stack(zs), torch.stack(first) * math.sqrt(op.dim))
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
        probe_products=products,
    )
