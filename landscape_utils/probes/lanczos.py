"""Extreme Hessian eigenpairs by Lanczos: the k largest (or smallest), or both ends from one run.

Same Hessian and contract as :mod:`landscape_utils.probes.hessian`: the mean loss over a fixed
sample set, flat vectors of length P in the model's dtype, every HVP by
:class:`~landscape_utils.probes.hessian.HessianOperator` (whose HVP path every result records), the
model left as found, every random draw from the ``torch.Generator`` passed in.

* :func:`lanczos_top_eigs` — the k largest (or smallest) eigenpairs by Lanczos with full
  re-orthogonalisation, stopped on the Ritz residual or on a gap-refined error estimate; from a
  random or a given (warm) start vector.
* :func:`operator_top_eigs` — the same on any symmetric operator with a ``matvec`` (e.g. a
  preconditioned Hessian); :func:`lanczos_top_eigs` builds its ``HessianOperator`` and calls it.
* :func:`lanczos_extremes` — the k largest and the smallest eigenpair from one Lanczos run, with
  its Krylov basis (:class:`KrylovBasis`) for deflated trace estimates.
* :class:`LanczosProcess` — the tridiagonalisation itself (one HVP a step, restarts after a
  breakdown), for probes that need the Krylov basis or Ritz pairs directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn

from . import hvp_paths as paths
from .hessian import HessianOperator, LossFn, check_generator, check_positive, random_unit_vector, start_vector


# --------------------------------------------------------------------------- Lanczos core


class LanczosProcess:
    """Lanczos tridiagonalisation ``Qᵀ H Q = T`` with full re-orthogonalisation.

    Each :meth:`step` costs one matvec. ``Q`` holds the orthonormal Lanczos vectors taken so far
    as rows (shape (m, P), model dtype). They are stored in blocks allocated as steps are taken
    (a block holds ``max(1, min(32, 2**20 // P))`` rows), so memory grows with the steps actually
    taken, not with ``max_steps``: on an 11.7M-parameter model, 13 steps hold 13 vectors rather
    than the 100 a preallocated basis would. ``alphas``/``betas`` the diagonal and off-diagonal of
    T as floats. ``betas[j]`` couples step j to step j+1, so after m steps ``betas[m-1]`` is the
    residual scale of every Ritz pair: ``‖H y_i − θ_i y_i‖ = betas[m-1] · |s_i[m-1]|``.
    ``block_starts`` lists the steps at which a Krylov sequence began (0, then every restart):
    T is block diagonal along them.
    """

    def __init__(self, matvec: Callable[[Tensor], Tensor], q0: Tensor, max_steps: int) -> None:
        self.matvec, self.max_steps = matvec, max_steps
        self._dim, self._dtype, self._device = q0.numel(), q0.dtype, q0.device
        self._block_rows = max(1, min(32, 2**20 // max(1, self._dim)))
        self._blocks: list[Tensor] = []  # each (rows, P); the last may be partly filled
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.block_starts: list[int] = [0]
        self._next: Tensor | None = q0 / q0.norm()  # unit vector for the next step
        # Breakdown threshold: β below this (relative to ‖T‖) means an invariant subspace.
        self._tiny = 100 * torch.finfo(q0.dtype).eps

    @property
    def m(self) -> int:
        """Number of steps (matvecs) taken."""
        return len(self.alphas)

    @property
    def dim(self) -> int:
        """P, the length of the vectors."""
        return self._dim

    def _filled(self, upto: int):
        """The filled parts of the blocks covering rows [0, upto)."""
        left = upto
        for block in self._blocks:
            if left <= 0:
                break
            yield block[: min(left, block.shape[0])]
            left -= block.shape[0]

    @property
    def Q(self) -> Tensor:
        """The Lanczos vectors taken so far as rows, (m, P) (a copy)."""
        rows = list(self._filled(self.m))
        return torch.cat(rows) if rows else torch.zeros(0, self._dim, dtype=self._dtype, device=self._device)

    def _store(self, j: int, q: Tensor) -> None:
        b, r = divmod(j, self._block_rows)
        if b == len(self._blocks):
            rows = min(self._block_rows, self.max_steps - j)
            self._blocks.append(torch.zeros(rows, self._dim, dtype=self._dtype, device=self._device))
        self._blocks[b][r] = q

    def _orthogonalise(self, w: Tensor, upto: int) -> Tensor:
        # Classical Gram-Schmidt twice against the first `upto` Lanczos vectors ("twice is enough").
        # In place on a private copy: a fresh P-vector per block would cost more than the
        # arithmetic on large models (page faults on every allocation).
        w = w.clone()
        for _ in range(2):
            coeffs = [Qb @ w for Qb in self._filled(upto)]  # all projections from the same w
            for Qb, c in zip(self._filled(upto), coeffs):
                w.addmv_(Qb.T, c, alpha=-1)
        return w

    def step(self) -> None:
        """Take one step (one matvec); requires a next vector (see :meth:`restart`)."""
        j = self.m
        if j >= self.max_steps or self._next is None:
            raise RuntimeError("Lanczos process cannot step (max_steps reached or breakdown)")
        q = self._next
        w = self.matvec(q)  # (P,)
        self._store(j, q)
        self.alphas.append(float(torch.dot(q, w)))
        w = self._orthogonalise(w, j + 1)  # removes α_j q_j, β_{j-1} q_{j-1} and rounding drift
        beta = float(w.norm())
        self.betas.append(beta)
        self._next = w / beta if beta > 0 else None

    def broke_down(self) -> bool:
        """True when the last β is negligible: span(Q) is an invariant subspace of H."""
        scale = max(max(abs(a) for a in self.alphas), max(self.betas[:-1], default=0.0), 1e-300)
        return self.betas[-1] <= self._tiny * scale

    def restart(self, generator: torch.Generator) -> bool:
        """After a breakdown, continue from a random unit vector orthogonal to Q.

        Sets the last β to 0, so T becomes block diagonal and the Ritz pairs found so far keep a
        zero residual. Returns False when no new direction exists (Q spans the whole space).
        """
        m, dim = self.m, self._dim
        if m >= min(dim, self.max_steps):
            return False
        for _ in range(3):
            v = random_unit_vector(dim, generator, self._dtype, self._device)
            v = self._orthogonalise(v, m)
            if float(v.norm()) > 1e-3:
                self.betas[-1] = 0.0
                self._next = v / v.norm()
                self.block_starts.append(m)
                return True
        return False

    def tridiagonal(self) -> np.ndarray:
        """T of the steps taken so far, shape (m, m), float64."""
        m = self.m
        T = np.diag(np.asarray(self.alphas, dtype=np.float64))
        off = np.asarray(self.betas[: m - 1], dtype=np.float64)
        return T + np.diag(off, 1) + np.diag(off, -1)

    def ritz(self, first: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values θ (ascending, (n,)), T's eigenvectors S (columns, (n, n)), residual norms (n,).

        Of all of T (``first=0``), or of its trailing block from step ``first`` on (n = m − first;
        a block of :attr:`block_starts` is itself the T of one Krylov sequence).
        """
        # LAPACK's tridiagonal solver: also avoids threaded dense eigh (slow when cores are shared).
        theta, S = eigh_tridiagonal(np.asarray(self.alphas[first:]), np.asarray(self.betas[first : self.m - 1]))
        return theta, S, np.abs(self.betas[-1] * S[-1, :])

    def ritz_vectors(self, S: np.ndarray) -> Tensor:
        """Ritz vectors ``Qᵀ s`` for the columns s of ``S`` (n, k), as unit rows (k, P).

        ``S`` may have fewer rows than steps taken (n ≤ m): the Ritz vectors of the first n steps
        (the basis only grows, so those of an earlier step can be formed later).
        """
        s = torch.as_tensor(S, dtype=self._dtype, device=self._device)  # (n, k)
        Y = torch.zeros(s.shape[1], self._dim, dtype=self._dtype, device=self._device)
        start = 0
        for Qb in self._filled(s.shape[0]):
            Y.addmm_(s[start : start + Qb.shape[0]].T, Qb)
            start += Qb.shape[0]
        return Y / Y.norm(dim=1, keepdim=True)

    def basis(self) -> "KrylovBasis":
        """The basis built so far and its T, as a :class:`KrylovBasis` (copies)."""
        return KrylovBasis(vectors=self.Q, alphas=tuple(self.alphas), betas=tuple(self.betas[: self.m - 1]),
                           block_starts=tuple(self.block_starts))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class KrylovBasis:
    """The orthonormal Krylov basis of a Lanczos run and the projection of H on it.

    ``vectors`` (m, P), model dtype: orthonormal rows q_j (rows of Q). ``alphas`` (m) and
    ``betas`` (m − 1) are the diagonal and off-diagonal of ``T = Q H Qᵀ`` (zeros in ``betas`` at
    restarts, listed in ``block_starts``). So ``tr(Q H Qᵀ) = Σ alphas`` costs no HVP, and
    ``Q H Qᵀ = T`` holds to rounding (full re-orthogonalisation) for exact HVPs, to the HVPs'
    relative error for finite differences. A random start vector makes the basis independent of
    any probe drawn from another generator: what unbiased deflation needs (see
    :func:`landscape_utils.probes.spectrum.hutchpp_lanczos_trace`).
    """

    vectors: Tensor = field(repr=False)
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    block_starts: tuple[int, ...] = (0,)

    @property
    def m(self) -> int:
        """Dimension of the Krylov space (number of Lanczos vectors)."""
        return len(self.alphas)

    def trace(self) -> float:
        """tr(Q H Qᵀ) = tr(T) = Σ alphas."""
        return float(math.fsum(self.alphas))

    def tridiagonal(self) -> np.ndarray:
        """T, shape (m, m), float64."""
        off = np.asarray(self.betas, dtype=np.float64)
        return np.diag(np.asarray(self.alphas, dtype=np.float64)) + np.diag(off, 1) + np.diag(off, -1)


@dataclass(frozen=True, eq=False)
class EigResult:
    """Eigenpairs from :func:`lanczos_top_eigs` (or one end of :func:`lanczos_extremes`).

    ``eigenvalues`` are sorted descending for ``which="largest"`` and ascending for
    ``"smallest"`` (so ``eigenvalues[0]`` is always the extreme one); ``eigenvectors[i]`` (unit,
    flat, model dtype) belongs to ``eigenvalues[i]``; ``residuals[i] = ‖H y_i − θ_i y_i‖`` (from
    the Lanczos recurrence), ``relative_residuals[i] = residuals[i] / |θ_i|`` and
    ``error_bounds[i] = min(r_i, r_i²/gap_i)``, the gap-refined estimate of |θ_i − λ_i|.
    ``history[j]`` is the extreme Ritz value after j+1 HVPs. ``criterion`` is the stopping rule
    (``"residual"`` or ``"gap"``), ``warm_start`` whether the caller gave the start vector.

    HVP accounting: ``n_hvp`` HVPs were spent on this result and not counted in any other;
    ``n_hvp_shared`` more came from a Krylov run shared with another result (for the smallest
    end of :func:`lanczos_extremes`: the steps the top end had already taken). A standalone run
    would have cost ``n_hvp + n_hvp_shared``; summing ``n_hvp`` over results counts each HVP once.

    Provenance of the HVPs: ``hvp_path`` (``"autograd"``, ``"autograd (math attention)"`` or
    ``"finite differences"``), ``hvp_note`` (why, and for finite differences ε, dtype and error),
    ``hvp_rel_error`` (estimated relative HVP error; None when exact), ``tolerance_used`` (the
    tolerance actually applied: ``max(tol, 10·hvp_rel_error)``) and ``tolerance_note``.

    ``basis``: the run's Krylov basis at the stop when asked for (``keep_basis=True``), e.g. as
    the sketch of :func:`~landscape_utils.probes.spectrum.hutchpp_lanczos_trace` or for Ritz
    pairs beyond the wanted ones; otherwise None.
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor = field(repr=False)
    residuals: tuple[float, ...]
    relative_residuals: tuple[float, ...]
    error_bounds: tuple[float, ...]
    n_hvp: int
    converged: bool
    which: str
    tol: float
    history: tuple[float, ...] = field(repr=False)
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None
    tolerance_used: float | None = None
    tolerance_note: str = ""
    criterion: str = "residual"
    atol: float = 0.0
    warm_start: bool = False
    n_hvp_shared: int = 0
    basis: KrylovBasis | None = field(default=None, repr=False)

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain JSON-serialisable values (eigenvectors only if asked: they are P floats each;
        the Krylov basis never)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "basis"}
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        vecs = d.pop("eigenvectors")
        if include_vectors:
            d["eigenvectors"] = vecs.detach().to(torch.float64).cpu().tolist()
        return d


@dataclass(frozen=True, eq=False)
class ExtremesResult:
    """Both ends of the spectrum from one Krylov run (:func:`lanczos_extremes`).

    ``top`` (``which="largest"``) and ``smallest`` (``which="smallest"``) are what standalone
    :func:`lanczos_top_eigs` runs with the same generator, start vector and stopping rules would
    return (each taken at the step its own rule was met), except for the HVP accounting:
    ``n_hvp = top.n_hvp + smallest.n_hvp`` is the run's total. ``basis`` is the whole run's
    Krylov basis (both ends' steps), for deflated trace estimates.
    """

    top: EigResult
    smallest: EigResult
    basis: KrylovBasis = field(repr=False)
    n_hvp: int

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain values: ``top``, ``smallest`` (see :meth:`EigResult.to_dict`), ``n_hvp`` and the basis size."""
        return {"top": self.top.to_dict(include_vectors), "smallest": self.smallest.to_dict(include_vectors),
                "n_hvp": self.n_hvp, "basis_dim": self.basis.m}


# --------------------------------------------------------------------------- eigen-solvers

CRITERIA = ("residual", "gap")
# lanczos_extremes' default absolute floor for the smallest end: this fraction of smallest_tol
# times the largest |Ritz value| (a lower bound on ‖H‖). Near a minimum λmin ≈ 0 and a purely
# relative rule may never be met; an error of 1e-2·tol·‖H‖ still tells its sign and size.
SMALLEST_FLOOR = 1e-2


def _gap_bounds(theta: np.ndarray, res: np.ndarray) -> np.ndarray:
    """min(r_i, r_i²/gap_i) with gap_i = min_{j≠i}(|θ_i − θ_j| − r_j); r_i where gap_i ≤ 0."""
    m = theta.size
    if m == 1:
        return res.copy()
    dist = np.abs(theta[:, None] - theta[None, :]) - res[None, :]  # (m, m): gap to pair j
    np.fill_diagonal(dist, np.inf)
    gap = dist.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        refined = np.where(gap > 0, res**2 / np.where(gap > 0, gap, 1.0), np.inf)
    return np.minimum(res, refined)


@dataclass
class _End:
    """Stopping rule and record of one end of the spectrum in a Lanczos run (internal).

    Wanted: the k extreme Ritz pairs at ``which`` end. The end is met when each wanted pair has
    its error estimate ``e_i ≤ max(tol·|θ_i|, atol, rel_floor·max|θ|)``, where e_i is r_i
    (``criterion="residual"``) or min(r_i, r_i²/gap_i) (``"gap"``, which also holds the next
    pair inward, the guard, to the same bound), *and* the extreme Ritz pair of
    the newest Krylov block (after a restart) meets the same rule at the scale of the wanted
    ones: until it has, an eigenvalue beyond the pairs found may still be hiding in the
    complement of the invariant subspace that broke the run down.
    """

    which: str
    k: int
    tol: float
    atol: float
    criterion: str
    rel_floor: float = 0.0
    tol_used: float | None = None
    tol_note: str = ""
    history: list[float] = field(default_factory=list)
    snapshot: tuple | None = None  # (values, S columns, residuals, error bounds, n_hvp, converged) at the stop

    def wanted(self, n: int) -> np.ndarray:
        """Indices (into ascending Ritz values) of the wanted pairs, extreme one first."""
        return np.arange(n)[::-1][: self.k] if self.which == "largest" else np.arange(n)[: self.k]

    def errors(self, theta: np.ndarray, res: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return res[idx] if self.criterion == "residual" else _gap_bounds(theta, res)[idx]

    def threshold(self, values: np.ndarray, theta: np.ndarray) -> np.ndarray:
        floor = max(self.atol, self.rel_floor * float(np.max(np.abs(theta))))
        return np.maximum(self.tol_used * np.abs(values), floor)

    def met(self, proc: LanczosProcess, theta: np.ndarray, res: np.ndarray) -> bool:
        # The gap rule also holds the guard pair (the next one inward) to the same bound: its
        # r²/gap estimate trusts θ_k − θ_{k+1} − r_{k+1} as the gap, which overstates it while
        # θ_{k+1} has not yet found its eigenvalue (an unresolved near-degenerate λ_{k+1} hides
        # inside θ_k's Ritz vector). Without the guard, 1 start in 50 stopped on λ₂ for λ₂/λ₁ = 0.98.
        n = self.k + (1 if self.criterion == "gap" else 0)
        if proc.m < n and proc.m < proc.dim:  # (at m = P, T is exact: every pair is converged)
            return False
        idx = self.wanted(proc.m)
        check = np.arange(proc.m)[::-1][:n] if self.which == "largest" else np.arange(proc.m)[:n]
        if not bool(np.all(self.errors(theta, res, check) <= self.threshold(theta[check], theta))):
            return False
        first = proc.block_starts[-1]
        if first == 0:  # one Krylov sequence: its extreme pair is the first wanted one
            return True
        bt, _, br = proc.ritz(first)  # the newest block's own Ritz pairs and residuals
        j = self.wanted(bt.size)[:1]
        # At the wanted pairs' scale: a block whose extreme value sits near 0 need only be
        # converged well enough to rule out its passing the last wanted value.
        scale = max(abs(float(bt[j[0]])), abs(float(theta[idx[-1]])))
        return bool(self.errors(bt, br, j)[0] <= self.threshold(np.array([scale]), theta)[0])

    def record(self, proc: LanczosProcess, theta: np.ndarray, S: np.ndarray, res: np.ndarray, n_hvp: int,
               converged: bool) -> None:
        idx = self.wanted(proc.m)
        self.snapshot = (theta[idx].copy(), S[:, idx].copy(), res[idx].copy(), _gap_bounds(theta, res)[idx],
                         n_hvp, converged)

    def result(self, proc: LanczosProcess, op: HessianOperator, tol: float, warm: bool, n_hvp: int,
               shared: int, basis: KrylovBasis | None = None) -> EigResult:
        vals, S, r, bounds, _, converged = self.snapshot
        rel = r / np.maximum(np.abs(vals), np.finfo(np.float64).tiny)
        return EigResult(
            eigenvalues=tuple(float(v) for v in vals),
            eigenvectors=proc.ritz_vectors(S),
            residuals=tuple(float(v) for v in r),
            relative_residuals=tuple(float(v) for v in rel),
            error_bounds=tuple(float(v) for v in bounds),
            n_hvp=n_hvp,
            converged=converged,
            which=self.which,
            tol=float(tol),
            history=tuple(self.history),
            **op.provenance(),
            tolerance_used=self.tol_used,
            tolerance_note=self.tol_note,
            criterion=self.criterion,
            atol=float(self.atol),
            warm_start=warm,
            n_hvp_shared=shared,
            basis=basis,
        )


def _run_lanczos(op: HessianOperator, q0: Tensor, generator: torch.Generator, ends: list[_End],
                 max_iter: int) -> LanczosProcess:
    """Step one Lanczos process from ``q0`` until every end is met (or ``max_iter``); each end
    records its pairs at the step its own rule was first met."""
    proc = LanczosProcess(op.matvec, q0, max_iter)
    while True:
        proc.step()
        open_ends = [e for e in ends if e.snapshot is None]
        for e in open_ends:
            if e.tol_used is None:  # the HVP path (and its error) is known after the first product
                e.tol_used, e.tol_note = paths.tolerance_for(e.tol, op.hvp_rel_error, f"{e.criterion} (relative)")
        theta, S, res = proc.ritz()
        for e in open_ends:
            e.history.append(float(theta[e.wanted(proc.m)[0]]))
        if proc.broke_down():
            # Invariant Krylov space: its Ritz pairs are exact, but eigenvalues whose
            # eigenvectors are orthogonal to it (e.g. a second copy of a repeated one, or a
            # larger one missed by a warm start that was an eigenvector) were missed. Restart
            # orthogonally and take at least one more step before stopping.
            if proc.restart(generator):
                continue
            for e in open_ends:  # nothing left to explore within max_iter: pairs are exact
                e.record(proc, theta, S, res, op.n_hvp, converged=proc.m >= e.k)
            return proc
        for e in open_ends:
            if e.met(proc, theta, res):
                e.record(proc, theta, S, res, op.n_hvp, converged=True)
        if all(e.snapshot is not None for e in ends):
            return proc
        if proc.m >= max_iter:
            for e in ends:
                if e.snapshot is None:
                    e.record(proc, theta, S, res, op.n_hvp, converged=False)
            return proc


def _check_lanczos_args(k: int, tol: float, which: str, atol: float, criterion: str, name: str = "") -> None:
    check_positive(f"{name}k" if name else "k", k, integer=True)
    check_positive(f"{name}tol", tol)
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and math.isfinite(atol) and atol >= 0):
        raise ValueError(f"{name}atol must be >= 0, got {atol!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"{name}criterion must be 'residual' or 'gap', got {criterion!r}")


def _budget(max_iter: int | None, k: int, dim: int) -> int:
    if max_iter is None:
        return min(dim, max(100, 10 * k))
    check_positive("max_iter", max_iter, integer=True)
    if max_iter < k:
        raise ValueError(f"max_iter={max_iter} must be >= k={k}")
    return min(max_iter, dim)  # P steps span the space: T is then exact


def _budget_and_start(op, generator: torch.Generator, k: int, max_iter: int | None,
                      start: Tensor | None) -> tuple[int, Tensor]:
    """The HVP budget and the unit start vector (``start`` or a random one) of a run on ``op``."""
    if k > op.dim:
        raise ValueError(f"k={k} exceeds the number of parameters P={op.dim}")
    budget = _budget(max_iter, k, op.dim)  # checked before the generator is drawn from
    q0 = (random_unit_vector(op.dim, generator, op.dtype, op.device) if start is None
          else start_vector(start, op.dim, op.dtype, op.device))
    return budget, q0


def lanczos_top_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    k: int = 1,
    tol: float = 1e-4,
    max_iter: int | None = None,
    which: str = "largest",
    atol: float = 0.0,
    criterion: str = "residual",
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
    keep_basis: bool = False,
) -> EigResult:
    """The k largest (or smallest, i.e. most negative) Hessian eigenpairs by Lanczos.

    Lanczos with full re-orthogonalisation from a random unit start vector (drawn from
    ``generator``) or from ``start``. After every HVP the tridiagonal T is diagonalised (its last
    row gives every Ritz residual ``r_i = ‖H y_i − θ_i y_i‖`` without extra HVPs) and the run
    stops as soon as each of the k wanted Ritz pairs (θ_i, y_i) has
    ``e_i ≤ max(tol·|θ_i|, atol)``, where

    * ``criterion="residual"`` (default): ``e_i = r_i``. This bounds the distance from θ_i to an
      eigenvalue of H rigorously, so the values are within relative ``tol`` of true eigenvalues
      (in practice far closer, as the error shrinks like r²/gap; it costs more HVPs);
    * ``criterion="gap"``: ``e_i = min(r_i, r_i²/gap_i)`` with
      ``gap_i = min_{j≠i}(|θ_i − θ_j| − r_j)`` over the other Ritz values (falling back to r_i
      when that is ≤ 0), required of the k wanted pairs *and of the next one* (the (k+1)-th
      from that end, a guard; not needed once m = P). This is the gap-refined bound
      |θ − λ| ≤ r²/gap with the gap estimated from the Ritz values. It is not rigorous: Ritz
      values lie inside the spectrum, so θ_k − θ_{k+1} overstates the distance to the next
      eigenvalue until θ_{k+1} has found it. The r_j margin alone did not cover that (1 start
      in 50 stopped on λ₂ when λ₂/λ₁ = 0.98, k = 1, error 200·tol); the guard does. It targets
      an eigenvalue *error* of ``tol`` and usually stops earlier than the residual rule.
      Validated in tests/test_lanczos_stopping.py over 50 start vectors on exact Hessians with
      near-degenerate (λ₂/λ₁ = 0.98), clustered, power-law and indefinite spectra.

    Neither rule can see an eigenvector the start vector almost misses: a start whose
    component along a wanted eigenvector is ~1/50 of the typical one or less can stop with
    that eigenvalue missing (both rules; the residual rule, being stricter, waits longer and
    misses fewer). With random starts that is a ~1% event per wanted eigenvector.

    The result's ``error_bounds`` hold ``min(r_i, r_i²/gap_i)`` whichever criterion stopped it.

    On an invariant-subspace breakdown (β ≈ 0) the pairs found are exact and the process
    restarts from a random vector orthogonal to the Krylov space (T becomes block diagonal), so
    that eigenvalues missed by the start vector, such as a second copy of a repeated eigenvalue
    or a larger eigenvalue missed by a ``start`` that was an exact eigenvector, can still be
    found: after a restart the run also waits for the newest block's extreme Ritz pair to meet
    the rule. Like any single-vector Krylov method it cannot otherwise see multiplicities. For
    ``which="smallest"`` near a minimum |θ| can be tiny: pass ``atol`` (e.g. a fraction of
    λmax) or expect more iterations.

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see :class:`HessianOperator`).
        generator: source of the start vector (unless ``start``) and of restart vectors.
        k: number of eigenpairs, 1 ≤ k ≤ P.
        tol: relative tolerance (> 0) on the residual or on the error bound (see ``criterion``).
        max_iter: HVP budget (default ``min(P, max(100, 10k))``); must be ≥ k.
        which: ``"largest"`` (algebraic) or ``"smallest"`` (algebraic, i.e. most negative).
        atol: absolute floor of the stopping threshold (≥ 0).
        criterion: ``"residual"`` or ``"gap"`` (see above).
        hvp, fd_step: HVP path (``"auto"``, ``"autograd"``, ``"finite-difference"``,
            ``"linearize"``) and finite-difference step (see :class:`HessianOperator`). On finite-difference HVPs the
            tolerance actually applied is ``max(tol, 10 · hvp_rel_error)``: no Ritz residual below
            the HVPs' own error means anything. The result records it (``tolerance_used``,
            ``tolerance_note``).
        start: warm start: a flat vector of P entries (any norm, any float dtype; scaled to unit
            norm in the model's dtype), e.g. the top eigenvector at a nearby θ. ``None``: a
            random start from ``generator``. A start close to the wanted eigenvector converges
            in far fewer HVPs; one that is an exact eigenvector of another eigenvalue breaks the
            run down at once and it restarts randomly (see above).
        keep_basis: also return the run's Krylov basis (``EigResult.basis``, m vectors of P).

    Returns:
        :class:`EigResult`; ``converged`` is False if ``max_iter`` ran out first.

    Raises:
        ValueError: on bad arguments (k, tol, max_iter, which, atol, data, generator, start, ...).
        HessianUnavailableError: no HVP path works for this model.
    """
    _check_lanczos_args(k, tol, which, atol, criterion)  # before the (costly) operator is built
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    return operator_top_eigs(op, generator, k=k, tol=tol, max_iter=max_iter, which=which, atol=atol,
                             criterion=criterion, start=start, keep_basis=keep_basis)


_OPERATOR_ATTRS = ("matvec", "dim", "dtype", "device", "n_hvp", "hvp_rel_error", "provenance")


def operator_top_eigs(
    op,
    generator: torch.Generator,
    k: int = 1,
    tol: float = 1e-4,
    max_iter: int | None = None,
    which: str = "largest",
    atol: float = 0.0,
    criterion: str = "residual",
    start: Tensor | None = None,
    keep_basis: bool = False,
) -> EigResult:
    """The k largest (or smallest) eigenpairs of any symmetric operator, by the Lanczos of
    :func:`lanczos_top_eigs` (same start vector, restarts, stopping rules and result).

    :func:`lanczos_top_eigs` is this function applied to the :class:`HessianOperator` it builds,
    so the two agree exactly for the same operator, generator and arguments. Use it for
    operators derived from a Hessian, e.g. the preconditioned ``P^{-1/2} H P^{-1/2}`` of
    :class:`landscape_utils.probes.stability.PreconditionedOperator`, or a ``HessianOperator``
    built with options of your own.

    Args:
        op: an object with ``matvec(v)`` (a flat (P,) tensor to a flat (P,) tensor, symmetric in
            v), ``dim`` (P), ``dtype``, ``device``, ``n_hvp`` (products so far; the result's
            ``n_hvp`` counts this run's), ``hvp_rel_error`` (estimated relative error of a product,
            None when exact) and ``provenance()`` (a dict of ``hvp_path``, ``hvp_note``,
            ``hvp_rel_error``), e.g. a :class:`HessianOperator`.
        generator, k, tol, max_iter, which, atol, criterion, start, keep_basis: as in
            :func:`lanczos_top_eigs`.

    Returns:
        :class:`EigResult`; ``converged`` is False if ``max_iter`` ran out first.

    Raises:
        ValueError: on bad arguments, or an ``op`` lacking one of the attributes above.
    """
    missing = [a for a in _OPERATOR_ATTRS if not hasattr(op, a)]
    if missing:
        raise ValueError(f"op must be an operator with {', '.join(_OPERATOR_ATTRS)}; "
                         f"{type(op).__name__} lacks {', '.join(missing)}")
    _check_lanczos_args(k, tol, which, atol, criterion)
    check_generator(generator)
    max_iter, q0 = _budget_and_start(op, generator, k, max_iter, start)
    end = _End(which, k, tol, atol, criterion)
    n_before = op.n_hvp  # an operator handed in may already have spent products
    proc = _run_lanczos(op, q0, generator, [end], max_iter)
    return end.result(proc, op, tol, start is not None, n_hvp=end.snapshot[4] - n_before, shared=0,
                      basis=proc.basis() if keep_basis else None)


def lanczos_extremes(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    k: int = 1,
    tol: float = 1e-4,
    criterion: str = "gap",
    smallest_tol: float = 1e-2,
    smallest_atol: float | None = None,
    smallest_criterion: str = "residual",
    max_iter: int | None = None,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
) -> ExtremesResult:
    """The k largest eigenpairs and the smallest eigenpair of the Hessian from ONE Lanczos run.

    Lanczos converges at both ends of the spectrum at once, so the smallest eigenvalue needs no
    separate run: this runs one process (same start vector, restarts and re-orthogonalisation as
    :func:`lanczos_top_eigs`) until both ends meet their rules, and records each end at the step
    its own rule was first met. Each end is therefore exactly what a standalone
    ``lanczos_top_eigs`` with the same generator (or ``start``) would return: ``top`` as with
    ``k, tol, criterion``, ``smallest`` as with ``k=1, tol=smallest_tol, which="smallest",
    criterion=smallest_criterion, atol=<the floor>``. The total cost is the larger of the two
    runs' HVP counts instead of their sum.

    Args:
        model, loss_fn, data, batch_size, train, hvp, fd_step: define the Hessian and how its
            HVPs are computed (see :class:`HessianOperator` and :func:`lanczos_top_eigs`).
        generator: source of the start vector (unless ``start``) and of restart vectors.
        k, tol, criterion: the top end (k largest pairs); see :func:`lanczos_top_eigs`.
        smallest_tol, smallest_criterion: relative tolerance (> 0) and rule of the smallest end.
        smallest_atol: absolute floor of the smallest end's threshold (≥ 0). ``None`` (default):
            ``SMALLEST_FLOOR · smallest_tol · max|θ|`` (1e-2 · tol times the largest |Ritz value|,
            a lower bound on ‖H‖, updated every step), so that λmin ≈ 0 still stops.
        max_iter: HVP budget of the whole run (default ``min(P, max(100, 10k))``); must be ≥ k.
        start: warm start vector (see :func:`lanczos_top_eigs`).

    Returns:
        :class:`ExtremesResult`: ``top`` (``n_hvp`` = the steps it needed), ``smallest``
        (``n_hvp`` = the steps the run took beyond ``top``'s, ``n_hvp_shared`` = those it
        reused), ``basis`` (the whole run's Krylov basis and T) and ``n_hvp`` (the total).

    Raises:
        ValueError: on bad arguments.
        HessianUnavailableError: no HVP path works for this model.
    """
    _check_lanczos_args(k, tol, "largest", 0.0, criterion)
    floor = 0.0 if smallest_atol is None else smallest_atol
    _check_lanczos_args(1, smallest_tol, "smallest", floor, smallest_criterion, name="smallest_")
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    max_iter, q0 = _budget_and_start(op, generator, k, max_iter, start)
    top = _End("largest", k, tol, 0.0, criterion)
    low = _End("smallest", 1, smallest_tol, floor, smallest_criterion,
               rel_floor=SMALLEST_FLOOR * smallest_tol if smallest_atol is None else 0.0)
    proc = _run_lanczos(op, q0, generator, [top, low], max_iter)
    n_top, n_low = top.snapshot[4], low.snapshot[4]
    warm = start is not None
    return ExtremesResult(
        top=top.result(proc, op, tol, warm, n_hvp=n_top, shared=0),
        smallest=low.result(proc, op, smallest_tol, warm, n_hvp=max(0, n_low - n_top), shared=min(n_low, n_top)),
        basis=proc.basis(),
        n_hvp=op.n_hvp,
    )
