"""Sharpness as the optimiser feels it: λmax over mini-batches, and worst-case adaptive sharpness.

Two probes, with the contract of :mod:`landscape_utils.probes.hessian` (any ``nn.Module``, left
as found: parameters, ``.grad``, buffers and per-submodule train/eval mode; every random draw
from the ``torch.Generator`` passed in):

* :func:`minibatch_top_eigs` — the top Hessian eigenvalue of the mean loss over each of several
  mini-batches (one :func:`~landscape_utils.probes.lanczos.lanczos_top_eigs` run per batch), with
  their mean and standard error. The Hessian of a batch of B samples is not the Hessian of the
  full training loss: its λmax is larger on average (the batch Hessians scatter around the full
  one and λmax is convex in H), and it is the curvature SGD's step at batch size B actually
  meets. :func:`training_batches` draws such batches from a training set.
* :func:`adaptive_sharpness` — worst-case elementwise-adaptive ℓ2 sharpness (Kwon et al. 2021,
  ASAM; Andriushchenko et al. 2023, "A modern look at the relationship between sharpness and
  generalization"): ``S = max_{‖δ ⊘ |θ|‖₂ ≤ ρ} L(θ + δ) − L(θ)``, approximated from below by
  projected normalised gradient ascent. ``adaptive=False`` gives the plain ℓ2 sharpness
  ``max_{‖δ‖₂ ≤ ρ}``, which is not invariant to rescalings that leave the function unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .hessian import LossFn, check_generator, check_positive
from .lanczos import CRITERIA, lanczos_top_eigs
from .params import check_data, flatten, named_params, probe_mode, unflatten

# --------------------------------------------------------------------------- mini-batch λmax


@dataclass(frozen=True)
class MinibatchSharpness:
    """λmax of the Hessian of each mini-batch's mean loss (:func:`minibatch_top_eigs`).

    Attributes:
        values: one λmax per batch, in the order of the batches.
        mean: their mean; ``stderr``: sample standard deviation (ddof = 1) / sqrt(n_batches), the
            standard error of the mean over batches drawn independently; ``std``: that deviation.
        n_batches, batch_size: number of batches and samples per batch (all equal).
        n_hvp: HVPs spent over all batches; ``n_hvp_per_batch``: per batch.
        converged: True when every batch's Lanczos run met its rule (see ``tol``, ``criterion``).
        tol, criterion: the stopping rule of each run (see ``lanczos_top_eigs``).
        warm_start: whether every run started from the caller's ``start`` vector.
        hvp_path: the HVP path of the runs (``"autograd"``, ...; see ``HessianOperator``).
    """

    values: tuple[float, ...]
    mean: float
    stderr: float
    std: float
    n_batches: int
    batch_size: int
    n_hvp: int
    n_hvp_per_batch: tuple[int, ...]
    converged: bool
    tol: float
    criterion: str
    warm_start: bool
    hvp_path: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _check_batches(batches: Sequence[Sequence[Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """The batches as a list of (inputs, targets), all of one non-zero size, at least two."""
    if isinstance(batches, (tuple, list)) and len(batches) == 2 and all(isinstance(b, Tensor) for b in batches):
        raise ValueError("batches must be a sequence of (inputs, targets) pairs, got a single (inputs, targets) pair")
    if not isinstance(batches, Sequence) or isinstance(batches, (str, bytes)):
        raise ValueError(f"batches must be a sequence of (inputs, targets) pairs, got {type(batches).__name__}")
    if len(batches) < 2:
        raise ValueError(f"batches must hold at least 2 batches (a standard error needs two), got {len(batches)}")
    out = []
    for i, batch in enumerate(batches):
        try:
            out.append(check_data(batch))
        except ValueError as err:
            raise ValueError(f"batches[{i}]: {err}") from None
    sizes = sorted({x.shape[0] for x, _ in out})
    if len(sizes) > 1:
        raise ValueError(f"batches must all have the same size (λmax depends on the batch size), got sizes {sizes}")
    return out


def minibatch_top_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Sequence[Tensor]],
    generator: torch.Generator,
    tol: float = 1e-3,
    criterion: str = "gap",
    max_iter: int | None = None,
    start: Tensor | None = None,
    *,
    train: bool = False,
    hvp: str = "auto",
) -> MinibatchSharpness:
    """λmax of the Hessian of the mean loss over each mini-batch, with mean and standard error.

    One :func:`~landscape_utils.probes.lanczos.lanczos_top_eigs` run (k = 1) per batch, in the
    order given, all drawing from the same ``generator`` one after the other: the values are
    exactly those of separate ``lanczos_top_eigs(model, loss_fn, batch, generator, tol=tol,
    criterion=criterion, max_iter=max_iter, start=start)`` calls made in that order.

    Args:
        model, loss_fn: the model and the mean loss (see ``HessianOperator``).
        batches: a sequence of at least two ``(inputs, targets)`` pairs of one common, non-zero
            size, e.g. from :func:`training_batches`.
        generator: random start vectors (unless ``start``) and restart vectors of every run.
        tol, criterion, max_iter: each run's stopping rule and HVP budget (see
            ``lanczos_top_eigs``; the default ``"gap"`` rule targets a relative eigenvalue error of
            ``tol``, well below the batch-to-batch spread).
        start: a flat vector of P entries warm-starting every run, e.g. the top eigenvector of
            the Hessian over a larger sample (saves HVPs: batch top eigenvectors are close to it);
            ``None``: a random start per batch.
        train, hvp: forward mode and HVP path of each batch's ``HessianOperator``.

    Returns:
        :class:`MinibatchSharpness`.

    Raises:
        ValueError: fewer than two batches, a malformed or empty batch, batches of unequal
            sizes, bad ``tol``/``criterion``/``max_iter``/``start``/``generator``.
        HessianUnavailableError: no HVP path works for this model.
    """
    data = _check_batches(batches)
    check_positive("tol", tol)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if max_iter is not None:
        check_positive("max_iter", max_iter, integer=True)
    check_generator(generator)
    results = [lanczos_top_eigs(model, loss_fn, batch, generator, k=1, tol=tol, max_iter=max_iter,
                                criterion=criterion, train=train, hvp=hvp, start=start) for batch in data]
    values = tuple(float(r.eigenvalues[0]) for r in results)
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    per_batch = tuple(int(r.n_hvp) for r in results)
    return MinibatchSharpness(
        values=values, mean=mean, stderr=std / math.sqrt(n), std=std, n_batches=n,
        batch_size=int(data[0][0].shape[0]), n_hvp=sum(per_batch), n_hvp_per_batch=per_batch,
        converged=all(r.converged for r in results), tol=float(tol), criterion=criterion,
        warm_start=start is not None, hvp_path=results[0].hvp_path)


def training_batches(
    x: Tensor, y: Tensor, batch_size: int, n_batches: int, generator: torch.Generator
) -> list[tuple[Tensor, Tensor]]:
    """``n_batches`` disjoint random mini-batches of a training set: the batches SGD would draw.

    One random permutation of the N samples (from ``generator``) is cut into consecutive
    batches of ``batch_size``, as a shuffling data loader does within one epoch; the first
    ``n_batches`` are returned. So each batch is drawn without replacement and the batches are
    disjoint (hence distinct), which needs ``batch_size · n_batches ≤ N``.

    Args:
        x, y: the training inputs (N, ...) and targets (N, ...).
        batch_size: samples per batch (a positive int).
        n_batches: number of batches (an int ≥ 2, as :func:`minibatch_top_eigs` needs).
        generator: the permutation's source (a CPU generator; indices are moved to x's device).

    Returns:
        A list of ``(inputs, targets)`` pairs, each of ``batch_size`` samples.

    Raises:
        ValueError: bad data, sizes, counts or generator, or more samples asked than N.
    """
    x, y = check_data((x, y))
    check_positive("batch_size", batch_size, integer=True)
    check_positive("n_batches", n_batches, integer=True)
    if n_batches < 2:
        raise ValueError(f"n_batches must be >= 2, got {n_batches}")
    check_generator(generator)
    n = x.shape[0]
    if batch_size * n_batches > n:
        raise ValueError(f"batch_size * n_batches = {batch_size * n_batches} exceeds the {n} samples "
                         f"(the batches are disjoint)")
    order = torch.randperm(n, generator=generator, device=generator.device)  # (N,)
    out = []
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        out.append((x[idx.to(x.device)], y[idx.to(y.device)]))
    return out


# --------------------------------------------------------------------------- adaptive sharpness

STEP_RULE = ("normalised gradient ascent in u = δ ⊘ |θ| (u = δ if not adaptive), projected on ‖u‖₂ ≤ ρ; "
             "first step 2ρ, halved whenever a step fails to increase the loss (the step is then "
             "retried from the last accepted point)")


@dataclass(frozen=True)
class AdaptiveSharpness:
    """Worst-case (adaptive) ℓ2 sharpness found by :func:`adaptive_sharpness`.

    Attributes:
        value: the largest ``L(θ + δ) − L(θ)`` seen over all points evaluated (θ itself
            included, so ≥ 0): a lower bound on the maximum over the ball.
        loss: L(θ); ``perturbed_loss``: L(θ + δ*) = loss + value at the best point δ*.
        rho, steps, adaptive: the ball's radius, the number of ascent steps and whether the
            ball is ``‖δ ⊘ |θ|‖₂ ≤ ρ`` (True) or ``‖δ‖₂ ≤ ρ`` (False).
        start_value: ``L(θ + δ₀) − L(θ)`` at the random start δ₀ (what no ascent would give).
        u_norm: ``‖δ* ⊘ |θ|‖₂`` (``‖δ*‖₂`` if not adaptive) of the best point, ≤ rho;
            ``delta_norm``: ``‖δ*‖₂``.
        history: best value after the start and after each step (length steps + 1).
        final_step: the step length in u at the end (2ρ halved once per rejected step).
        n_accepted: steps that increased the loss; ``n_evaluations``: loss-and-gradient
            evaluations over ``data`` (steps + 1, plus one loss at θ).
        n_params: P perturbed (every trainable parameter, biases included, as in the paper);
            ``n_fixed``: entries with θ_i = 0, which the adaptive ball cannot move.
        step_rule: the ascent rule in words.
    """

    value: float
    loss: float
    perturbed_loss: float
    rho: float
    steps: int
    adaptive: bool
    start_value: float
    u_norm: float
    delta_norm: float
    history: tuple[float, ...] = field(repr=False)
    final_step: float = 0.0
    n_accepted: int = 0
    n_evaluations: int = 0
    n_params: int = 0
    n_fixed: int = 0
    step_rule: str = STEP_RULE

    def to_dict(self) -> dict:
        """Plain JSON values (``history`` as a list)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["history"] = list(d["history"])
        return d


class _Objective:
    """``f(u) = L(θ + s ⊙ u)`` and ``∇_u f = s ⊙ ∇L`` on the fixed data (flat (P,) vectors).

    Evaluated functionally on a fresh leaf per point: nothing is written to the model or its
    ``.grad``. With ``batch_size`` the data are walked in contiguous slices and the slice means
    combined weighted by ``len(slice) / N`` (the gradient of the mean loss over all of them).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, theta: Tensor, scale: Tensor,
                 like: dict[str, Tensor], batch_size: int | None) -> None:
        self.model, self.loss_fn, self.theta, self.scale, self.like = model, loss_fn, theta, scale, like
        n = x.shape[0]
        step = n if batch_size is None else batch_size
        self.slices = [(x[i : i + step], y[i : i + step], min(step, n - i) / n) for i in range(0, n, step)]
        self.n_evaluations = 0

    def _loss(self, params: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        loss = self.loss_fn(functional_call(self.model, params, (xb,)), yb)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the mean loss over the batch)")
        return loss.reshape(())

    def loss_at_theta(self) -> float:
        with torch.no_grad():
            params = unflatten(self.theta, self.like)
            return math.fsum(w * float(self._loss(params, xb, yb)) for xb, yb, w in self.slices)

    def __call__(self, u: Tensor) -> tuple[float, Tensor]:
        """(f(u), ∇_u f) with ∇_u f of shape (P,)."""
        leaf = (self.theta + self.scale * u).detach().requires_grad_(True)  # θ + δ, (P,)
        params = unflatten(leaf, self.like)
        total, grad = 0.0, torch.zeros_like(leaf)
        for xb, yb, w in self.slices:
            loss = self._loss(params, xb, yb)
            (g,) = torch.autograd.grad(loss, leaf)
            grad.add_(g, alpha=w)
            total += w * float(loss.detach())
        self.n_evaluations += 1
        return total, self.scale * grad  # chain rule: ∂f/∂u = s ⊙ ∂L/∂θ


def _project(u: Tensor, rho: float) -> Tensor:
    """The point of the ball ‖u‖₂ ≤ ρ closest to u."""
    norm = float(u.norm())
    return u if norm <= rho else u * (rho / norm)


def adaptive_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    rho: float,
    generator: torch.Generator,
    steps: int = 10,
    *,
    adaptive: bool = True,
    batch_size: int | None = None,
) -> AdaptiveSharpness:
    """Worst-case elementwise-adaptive ℓ2 sharpness ``max_{‖δ ⊘ |θ|‖₂ ≤ ρ} L(θ+δ) − L(θ)`` (from below).

    The definition of Kwon et al. (2021, ASAM) as evaluated by Andriushchenko et al. (2023):
    the perturbation of each parameter entry is measured relative to its magnitude, so the
    value is unchanged by rescalings of the parameters that leave the function unchanged (for
    a ReLU layer scaled by c > 0 and the next layer by 1/c: δ scales with θ). Every trainable
    parameter is perturbed, biases included (as in the paper's code); an entry with θ_i = 0
    cannot move (counted in ``n_fixed``).

    Method: in u = δ ⊘ |θ| the ball is ``‖u‖₂ ≤ ρ`` and ``∇_u = |θ| ⊙ ∇_θ L``. From a start u₀
    drawn uniformly in the ball (a Gaussian direction and radius ρ·U^(1/P), from ``generator``)
    take ``steps`` steps ``u ← Proj(u + η ∇_u/‖∇_u‖)``. The step length starts at η = 2ρ (the
    paper's APGD also starts at 2ρ; the first step can reach any point of the ball's boundary)
    and is halved whenever a step fails to increase the loss, the step then being retried from
    the last accepted point (a simple backtracking stand-in for APGD's step-size halving; no
    momentum). Every evaluated point lies in the ball, so the best value seen is a lower bound
    on the maximum; θ itself is counted (δ = 0 is feasible), so the value is ≥ 0. With the same
    generator, more steps never give less (the first steps are the same). For a quadratic loss
    the value approaches the exact trust-region maximum (tests/test_sharpness.py).

    The forwards run in eval mode (restored afterwards) with the model's own buffers, on copies
    of θ + δ through ``torch.func.functional_call``: the model and its ``.grad`` are untouched.
    Cost: steps + 1 gradients over ``data`` and one loss.

    Args:
        model: any ``nn.Module``; its trainable parameters are perturbed.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss over a batch.
        data: ``(inputs, targets)``, the fixed sample set.
        rho: the ball's radius (> 0), relative (adaptive) or absolute (``adaptive=False``).
        generator: the random start.
        steps: ascent steps (a positive int).
        adaptive: ``False``: the plain ball ``‖δ‖₂ ≤ ρ`` (not invariant to rescalings).
        batch_size: samples per forward (``None``: all at once); results are the same.

    Returns:
        :class:`AdaptiveSharpness`.

    Raises:
        ValueError: bad ``rho``, ``steps``, ``data``, ``batch_size``, ``generator`` or loss, or a
            model without trainable parameters.
    """
    if isinstance(rho, bool):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    check_positive("rho", rho)
    check_positive("steps", steps, integer=True)
    if not isinstance(adaptive, bool):
        raise ValueError(f"adaptive must be True or False, got {adaptive!r}")
    if batch_size is not None:
        check_positive("batch_size", batch_size, integer=True)
    check_generator(generator)
    x, y = check_data(data)
    like = named_params(model)
    if not like:
        raise ValueError("model has no trainable parameters")
    theta = flatten(like).detach().clone()  # (P,), a copy: nothing below can reach the model's storage
    scale = theta.abs() if adaptive else torch.ones_like(theta)  # (P,), δ = scale ⊙ u
    rho, p = float(rho), theta.numel()

    with probe_mode(model, train=False):
        f = _Objective(model, loss_fn, x, y, theta, scale, like, batch_size)
        base = f.loss_at_theta()
        # Uniform in the ball: Gaussian direction, radius ρ·U^(1/P). Drawn on the generator's device.
        z = torch.randn(p, generator=generator, dtype=theta.dtype, device=generator.device).to(theta.device)
        r = float(torch.rand(1, generator=generator, dtype=torch.float64, device=generator.device)) ** (1.0 / p)
        u = z * (rho * r / float(z.norm()))
        f_u, g_u = f(u)
        start_value = f_u - base
        best_value, best_u = max(0.0, start_value), (u if start_value > 0 else torch.zeros_like(u))
        history, eta, accepted = [best_value], 2.0 * rho, 0
        for _ in range(steps):
            g_norm = float(g_u.norm())
            if not math.isfinite(g_norm) or g_norm == 0.0:
                history.append(best_value)  # a stationary point of f: nothing to follow
                continue
            u_new = _project(u + (eta / g_norm) * g_u, rho)
            f_new, g_new = f(u_new)
            if f_new > f_u:
                u, f_u, g_u = u_new, f_new, g_new
                accepted += 1
            else:
                eta *= 0.5
            if f_new - base > best_value:
                best_value, best_u = f_new - base, u_new
            history.append(best_value)

    delta = scale * best_u
    return AdaptiveSharpness(
        value=best_value, loss=base, perturbed_loss=base + best_value, rho=rho, steps=steps, adaptive=adaptive,
        start_value=start_value, u_norm=float(best_u.norm()), delta_norm=float(delta.norm()),
        history=tuple(history), final_step=eta, n_accepted=accepted, n_evaluations=f.n_evaluations + 1,
        n_params=p, n_fixed=int((scale == 0).sum()) if adaptive else 0)
