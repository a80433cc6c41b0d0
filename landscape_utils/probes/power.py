"""The dominant Hessian eigenvalue by power iteration, as the original study and pyhessian compute it.

Same Hessian and contract as :mod:`landscape_utils.probes.hessian`: the mean loss over a fixed
sample set, flat vectors of length P in the model's dtype, every HVP by
:class:`~landscape_utils.probes.hessian.HessianOperator` (whose HVP path the result records), the
model left as found, the start vector from the ``torch.Generator`` passed in.

* :func:`power_iteration_top_eig` — the original study's (and pyhessian's) power iteration, with
  pyhessian's relative-change stopping rule (:func:`landscape_utils.probes.lanczos.lanczos_top_eigs`
  computes the same eigenvalue to a stated error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import hvp_paths as paths
from .hessian import HessianOperator, LossFn, check_generator, check_positive, random_unit_vector, start_vector


@dataclass(frozen=True, eq=False)
class PowerResult:
    """Result of :func:`power_iteration_top_eig` (``eigenvector`` unit, flat, model dtype).

    ``residual = ‖H v − λ v‖`` for the returned pair, ``history[j]`` the Rayleigh quotient of
    iteration j+1, ``warm_start`` whether the caller gave the start vector.

    Provenance of the HVPs: ``hvp_path`` (``"autograd"``, ``"autograd (math attention)"`` or
    ``"finite differences"``), ``hvp_note`` (why, and for finite differences ε, dtype and error),
    ``hvp_rel_error`` (estimated relative HVP error; None when exact), ``tolerance_used`` (the
    tolerance actually applied: ``max(tol, 10·hvp_rel_error)``) and ``tolerance_note``.
    """

    eigenvalue: float
    eigenvector: Tensor = field(repr=False)
    residual: float
    n_hvp: int
    converged: bool
    tol: float
    history: tuple[float, ...] = field(repr=False)
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None
    tolerance_used: float | None = None
    tolerance_note: str = ""
    warm_start: bool = False

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain JSON-serialisable values (the eigenvector only if asked)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        vec = d.pop("eigenvector")
        d["history"] = list(d["history"])
        if include_vectors:
            d["eigenvector"] = vec.detach().to(torch.float64).cpu().tolist()
        return d


def power_iteration_top_eig(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    tol: float = 1e-3,
    max_iter: int = 100,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
) -> PowerResult:
    """Power iteration for the dominant Hessian eigenvalue, as the original study and pyhessian do it.

    From a random unit vector v (drawn from ``generator``) or ``start``, repeat: ``w = H v``,
    ``λ = vᵀw`` (Rayleigh quotient), ``v = w/‖w‖``. **Stopping rule** (pyhessian's): stop when
    ``|λ_new − λ_old| / (|λ_old| + 1e-6) < tol``, or after ``max_iter`` HVPs. That rule measures
    how fast λ is *changing*, not its error: when λ2/λ1 ≈ 1 it stops early and off. It converges
    to the eigenvalue of largest *magnitude*, which is negative if the most negative eigenvalue
    outweighs the largest one (near saddles). Returns the last Rayleigh quotient with the vector
    it belongs to (pyhessian returns the previous one).

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see :class:`HessianOperator`).
        generator: source of the start vector (unused when ``start`` is given).
        tol: relative-change tolerance (> 0; pyhessian's default 1e-3).
        max_iter: HVP budget (positive int; pyhessian's default 100).
        hvp, fd_step: HVP path and finite-difference step (see :class:`HessianOperator`); on
            finite-difference HVPs the relative-change tolerance applied is
            ``max(tol, 10 · hvp_rel_error)`` (recorded in ``tolerance_used``).
        start: warm start: a flat vector of P entries (any norm; scaled to unit norm in the
            model's dtype). ``None``: random from ``generator``.

    Returns:
        :class:`PowerResult` with the residual ``‖Hv − λv‖`` of the returned pair.

    Raises:
        ValueError: on bad arguments (including a ``start`` of the wrong shape or zero norm).
    """
    check_positive("tol", tol)
    check_positive("max_iter", max_iter, integer=True)
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    v = (random_unit_vector(op.dim, generator, op.dtype, op.device) if start is None
         else start_vector(start, op.dim, op.dtype, op.device))
    history: list[float] = []
    converged = False
    tol_used: float | None = None
    for it in range(max_iter):
        w = op.matvec(v)
        if tol_used is None:
            tol_used, tol_note = paths.tolerance_for(tol, op.hvp_rel_error, "relative-change")
        lam = float(torch.dot(v, w))
        residual = float((w - lam * v).norm())
        history.append(lam)
        if len(history) > 1 and abs(lam - history[-2]) / (abs(history[-2]) + 1e-6) < tol_used:
            converged = True
            break
        wn = w.norm()
        if float(wn) == 0.0:  # v is in the null space: λ = 0 exactly
            converged = True
            break
        if it + 1 < max_iter:  # keep v paired with the returned λ
            v = w / wn
    return PowerResult(
        eigenvalue=lam,
        eigenvector=v,
        residual=residual,
        n_hvp=op.n_hvp,
        converged=converged,
        tol=float(tol),
        history=tuple(history),
        **op.provenance(),
        tolerance_used=tol_used,
        tolerance_note=tol_note,
        warm_start=start is not None,
    )
