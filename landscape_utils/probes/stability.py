"""Stability thresholds of gradient descent, heavy-ball momentum and Adam, and Adam's
preconditioned sharpness (Cohen et al. 2021, 2022: "Gradient descent on neural networks typically
occurs at the edge of stability"; "Adaptive gradient methods at the edge of stability").

On a quadratic with curvature λ along some direction, an optimiser's iterates along it stay
bounded iff λ is below a threshold set by the step size η:

* gradient descent (θ ← θ − η g): λ < 2/η;
* heavy-ball momentum β in PyTorch's convention (``buf ← β·buf + g; θ ← θ − η·buf``,
  ``torch.optim.SGD(lr=η, momentum=β)``): λ < (2 + 2β)/η;
* Adam with β₁ acts, once its second moment has settled, as heavy ball on the *preconditioned*
  Hessian P⁻¹H with P = diag(√v̂ + ε) the denominator ``torch.optim.Adam`` divides by
  (v̂ = ``exp_avg_sq / (1 − β₂^t)``, t its step count) and step η(1 − β₁): stable iff
  λmax(P⁻¹H) < (2 + 2β₁)/((1 − β₁)η), i.e. 38/η for β₁ = 0.9. Cohen et al. find that full-batch
  Adam drives λmax(P⁻¹H) up to that value and keeps it there (the adaptive edge of stability).

* :func:`gd_stability_threshold`, :func:`heavy_ball_stability_threshold`,
  :func:`adam_stability_threshold`, :func:`stability_threshold` — the thresholds above.
* :func:`adam_preconditioner` (from second-moment tensors) and :func:`adam_preconditioner_of`
  (from a live ``torch.optim.Adam``) — the diagonal P as a flat vector.
* :class:`PreconditionedOperator` — ``v -> P^{-1/2} H P^{-1/2} v`` over a Hessian operator; it has
  the eigenvalues of P⁻¹H and is symmetric, so Lanczos applies.
* :func:`preconditioned_top_eig` — λmax(P⁻¹H) by Lanczos (:func:`operator_top_eigs`).

Same contract as the other probes: vectors are flat, of length P, in the order of
:func:`landscape_utils.probes.params.flatten` over the model's trainable parameters; the model is
left as found; every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .hessian import HessianOperator, LossFn, check_generator, check_positive
from .lanczos import EigResult, _check_lanczos_args, operator_top_eigs

OPTIMIZERS = ("sgd", "adam")


# --------------------------------------------------------------------------- thresholds


def _check_fraction(name: str, value: float) -> None:
    """Require a float in [0, 1) (a momentum or an exponential-average coefficient)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_lr(lr: float) -> None:
    if isinstance(lr, bool):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    check_positive("lr", lr)


def gd_stability_threshold(lr: float) -> float:
    """2/η: the largest curvature gradient descent with step ``lr`` is stable on.

    Raises:
        ValueError: ``lr`` not positive and finite.
    """
    _check_lr(lr)
    return 2.0 / lr


def heavy_ball_stability_threshold(lr: float, momentum: float) -> float:
    """(2 + 2β)/η: the stability threshold of ``torch.optim.SGD(lr=η, momentum=β)``.

    PyTorch's convention (``buf ← β·buf + g; θ ← θ − η·buf``; dampening 0, no Nesterov) is
    heavy ball θ_{t+1} = θ_t − ηλθ_t + β(θ_t − θ_{t−1}) on a quadratic, whose iteration matrix
    has spectral radius < 1 iff 0 < ηλ < 2 + 2β. ``momentum=0`` gives gradient descent's 2/η.

    Raises:
        ValueError: ``lr`` not positive and finite, ``momentum`` outside [0, 1).
    """
    _check_lr(lr)
    _check_fraction("momentum", momentum)
    return (2.0 + 2.0 * momentum) / lr


def adam_stability_threshold(lr: float, beta1: float = 0.9) -> float:
    """(2 + 2β₁)/((1 − β₁)η): the threshold of Adam's *preconditioned* sharpness λmax(P⁻¹H).

    With P frozen, Adam's update ``m ← β₁m + (1 − β₁)g; θ ← θ − η m/P`` (bias corrections
    → 1) is heavy ball with momentum β₁ and step η(1 − β₁) on P⁻¹H. 38/η for β₁ = 0.9.

    Raises:
        ValueError: ``lr`` not positive and finite, ``beta1`` outside [0, 1).
    """
    _check_lr(lr)
    _check_fraction("beta1", beta1)
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def stability_threshold(optimizer: str, lr: float, momentum: float = 0.0, beta1: float = 0.9) -> float:
    """The stability threshold of ``optimizer`` at step ``lr``.

    Args:
        optimizer: ``"sgd"`` (``torch.optim.SGD``; ``momentum=0`` is plain gradient descent) or
            ``"adam"`` (``torch.optim.Adam``; the threshold applies to λmax(P⁻¹H)).
        lr: the step size η (> 0, finite).
        momentum: SGD's momentum β in [0, 1) (checked always, used by ``"sgd"`` only).
        beta1: Adam's β₁ in [0, 1) (checked always, used by ``"adam"`` only).

    Returns:
        The curvature threshold: 2/η, (2 + 2β)/η or (2 + 2β₁)/((1 − β₁)η).

    Raises:
        ValueError: unknown ``optimizer``, or ``lr``, ``momentum`` or ``beta1`` out of range.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(repr(o) for o in OPTIMIZERS)}, got {optimizer!r}")
    _check_lr(lr)
    _check_fraction("momentum", momentum)
    _check_fraction("beta1", beta1)
    if optimizer == "sgd":
        return heavy_ball_stability_threshold(lr, momentum)
    return adam_stability_threshold(lr, beta1)


# --------------------------------------------------------------------------- Adam's preconditioner


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive int (Adam's step count), got {step!r}")


def _check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")


def _denominator(exp_avg_sq: Tensor, step: int, beta2: float, eps: float) -> Tensor:
    """Adam's denominator √v / √(1 − β₂^t) + ε, computed as ``torch.optim.Adam`` does (flat)."""
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    return (exp_avg_sq.detach().reshape(-1).sqrt() / bias_correction2_sqrt).add_(eps)


def adam_preconditioner(exp_avg_sq: Tensor | Sequence[Tensor], step: int, beta2: float = 0.999,
                        eps: float = 1e-8) -> Tensor:
    """Adam's diagonal preconditioner P = √v̂ + ε as a flat vector.

    v̂ = ``exp_avg_sq / (1 − β₂^step)`` is the bias-corrected second moment; P is exactly the
    denominator ``torch.optim.Adam`` divides the bias-corrected first moment by (computed the way
    it computes it), so Adam's step is θ ← θ − η m̂ / P.

    Args:
        exp_avg_sq: the second moments, one flat tensor or a sequence of tensors in parameter
            order (flattened and concatenated), finite and >= 0.
        step: Adam's step count t (positive int; the state's ``"step"``).
        beta2: β₂ in [0, 1). eps: ε (finite, >= 0).

    Returns:
        P, a flat tensor (dtype and device of ``exp_avg_sq``) of positive entries when ε > 0.

    Raises:
        ValueError: empty or non-tensor ``exp_avg_sq``, negative or non-finite entries, mixed
            dtypes, or ``step``, ``beta2``, ``eps`` out of range.
    """
    _check_step(step)
    _check_fraction("beta2", beta2)
    _check_eps(eps)
    tensors = [exp_avg_sq] if isinstance(exp_avg_sq, Tensor) else list(exp_avg_sq)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ValueError("exp_avg_sq must be a tensor or a non-empty sequence of tensors")
    if len({t.dtype for t in tensors}) > 1:
        raise ValueError("exp_avg_sq tensors must share one dtype")
    v = torch.cat([t.detach().reshape(-1) for t in tensors])  # (P,)
    if v.numel() == 0:
        raise ValueError("exp_avg_sq holds no entries")
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise ValueError("exp_avg_sq must have finite, non-negative entries")
    return _denominator(v, step, beta2, eps)


def adam_preconditioner_of(optimizer: torch.optim.Optimizer, params: nn.Module | Iterable[Tensor]) -> Tensor:
    """Adam's current preconditioner P for ``params``, read from a live ``torch.optim.Adam``.

    Each parameter's entries use its own state (``exp_avg_sq``, ``step``) and its group's β₂ and
    ε, so P is exactly the denominator of Adam's next update but for the step count and second
    moment that update will bring (P *after* a step is the one that step divided by). ``AdamW``
    (a subclass) has the same P. With ``weight_decay`` (L2, not decoupled) Adam preconditions
    the gradient of loss + ½·wd·‖θ‖², whose Hessian is H + wd·I.

    Args:
        optimizer: a ``torch.optim.Adam`` that has taken at least one step on ``params``.
        params: the parameters, in the order of the flat vectors P should match: a module (its
            trainable parameters, as :func:`~landscape_utils.probes.params.flatten` orders them)
            or an iterable of parameter tensors.

    Returns:
        P, a flat tensor (parameters' dtype/device) with one entry per parameter scalar.

    Raises:
        ValueError: not an Adam optimiser, ``amsgrad`` (its denominator is a running maximum),
            an optimiser without state yet, no parameters, or a parameter that the optimiser
            does not manage or holds no state for (never had a gradient).
    """
    if not isinstance(optimizer, torch.optim.Adam):
        raise ValueError(f"optimizer must be a torch.optim.Adam, got {type(optimizer).__name__}")
    if not optimizer.state:
        raise ValueError("optimizer has no state yet: take at least one Adam step first")
    if isinstance(params, nn.Module):
        plist = [p for p in params.parameters() if p.requires_grad]
    else:
        plist = list(params)
    if not plist:
        raise ValueError("params holds no parameters")
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    pieces = []
    for i, p in enumerate(plist):
        group = group_of.get(id(p))
        if group is None:
            raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) is not managed by this optimizer")
        if group.get("amsgrad", False):
            raise ValueError("amsgrad=True is refused: its denominator is the running maximum of v̂")
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state or "step" not in state:
            raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) has no Adam state (it never had a gradient)")
        step = state["step"]
        step = int(step.item()) if isinstance(step, Tensor) else int(step)  # a float32 tensor in torch ≥ 1.12
        pieces.append(adam_preconditioner(state["exp_avg_sq"], step, group["betas"][1], group["eps"]))
    return torch.cat(pieces)


# --------------------------------------------------------------------------- preconditioned operator


class PreconditionedOperator:
    """The symmetric operator ``v -> d ⊙ H(d ⊙ v)``, d = P^{-1/2}: P^{-1/2} H P^{-1/2} over ``op``.

    It is similar to P⁻¹H (P^{-1/2}·(P⁻¹H)·P^{1/2}), so it has the same eigenvalues; an
    eigenvector u of it gives the right eigenvector P^{-1/2}u of P⁻¹H. Each :meth:`matvec` is one
    product of ``op``.

    Args:
        op: a Hessian operator (``matvec``, ``dim``, ``dtype``, ``device``, ``n_hvp``,
            ``hvp_rel_error``, ``provenance()``; ``loss`` if it has one), e.g. a
            :class:`HessianOperator`.
        preconditioner: P, the diagonal as a flat tensor of ``op.dim`` positive finite entries
            (e.g. from :func:`adam_preconditioner_of`), cast to ``op``'s dtype and device.

    Attributes:
        dim, dtype, device, n_hvp, hvp_rel_error, loss: those of ``op`` (``hvp_rel_error`` is the
            relative error of ``op``'s products, not amplified by the conditioning of P).
        scale: d = P^{-1/2}, (P,).

    Raises:
        ValueError: ``op`` lacks ``matvec``/``dim``, or ``preconditioner`` is not a flat tensor of
            ``op.dim`` positive finite entries.
    """

    def __init__(self, op, preconditioner: Tensor) -> None:
        if not (hasattr(op, "matvec") and hasattr(op, "dim")):
            raise ValueError(f"op must be an operator with matvec and dim, got {type(op).__name__}")
        if not isinstance(preconditioner, Tensor):
            raise ValueError(f"preconditioner must be a flat tensor, got {type(preconditioner).__name__}")
        if preconditioner.dim() != 1 or preconditioner.numel() != op.dim:
            raise ValueError(f"preconditioner has shape {tuple(preconditioner.shape)}; expected ({op.dim},)")
        p = preconditioner.detach().to(dtype=op.dtype, device=op.device)
        if not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
            raise ValueError("preconditioner must have positive, finite entries")
        self.op = op
        self.scale = p.rsqrt()  # (P,)
        self._p_range = (float(p.min()), float(p.max()))

    @property
    def dim(self) -> int:
        return self.op.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.op.dtype

    @property
    def device(self):
        return self.op.device

    @property
    def n_hvp(self) -> int:
        return self.op.n_hvp

    @property
    def hvp_rel_error(self) -> float | None:
        return self.op.hvp_rel_error

    @property
    def loss(self) -> float | None:
        return getattr(self.op, "loss", None)

    def matvec(self, v: Tensor) -> Tensor:
        """``d ⊙ H(d ⊙ v)`` for a flat vector ``v`` of shape (P,)."""
        if not isinstance(v, Tensor) or v.dim() != 1 or v.numel() != self.dim:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"vector has shape {shape}; expected ({self.dim},)")
        v = v.detach().to(dtype=self.dtype, device=self.device)
        return self.scale * self.op.matvec(self.scale * v)

    __call__ = matvec

    def provenance(self) -> dict:
        """``op``'s provenance; ``hvp_note`` also says the products were preconditioned."""
        prov = dict(self.op.provenance())
        lo, hi = self._p_range
        note = f"preconditioned P^-1/2 H P^-1/2 (P in [{lo:.3g}, {hi:.3g}])"
        prov["hvp_note"] = f"{prov['hvp_note']}; {note}" if prov.get("hvp_note") else note
        return prov


def preconditioned_top_eig(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    preconditioner: Tensor,
    generator: torch.Generator,
    tol: float = 1e-3,
    criterion: str = "gap",
    max_iter: int | None = None,
    start: Tensor | None = None,
) -> EigResult:
    """λmax(P⁻¹H), the preconditioned sharpness, by Lanczos on P^{-1/2} H P^{-1/2}.

    H is the Hessian of the mean loss over ``data`` in eval mode (in-memory
    :class:`HessianOperator`; for batched or train-mode Hessians wrap your own operator in
    :class:`PreconditionedOperator` and call :func:`operator_top_eigs`). Compare the value with
    :func:`adam_stability_threshold`: Adam at step η with β₁ is unstable along directions where it
    exceeds (2 + 2β₁)/((1 − β₁)η).

    Args:
        model, loss_fn, data: define H (see :class:`HessianOperator`).
        preconditioner: P as a flat tensor of P positive entries (e.g. :func:`adam_preconditioner_of`).
        generator: source of the random start (unless ``start``) and of restart vectors.
        tol, criterion, max_iter: Lanczos stopping (see :func:`lanczos_top_eigs`).
        start: warm start in the coordinates of the symmetric form (e.g. a previous result's
            eigenvector).

    Returns:
        :class:`EigResult` with k = 1: ``eigenvalues[0]`` is λmax(P⁻¹H). ``eigenvectors[0]`` is the
        unit eigenvector u of the *symmetric* form P^{-1/2} H P^{-1/2}, not of P⁻¹H, whose
        (right) eigenvector is P^{-1/2}u; residuals are those of the symmetric form.
        ``hvp_note`` records the preconditioning.

    Raises:
        ValueError: on bad arguments (data, preconditioner, generator, tol, criterion, start, ...).
        HessianUnavailableError: no HVP path works for this model.
    """
    _check_lanczos_args(1, tol, "largest", 0.0, criterion)  # before the operator's forward pass
    check_generator(generator)
    op = PreconditionedOperator(HessianOperator(model, loss_fn, data), preconditioner)
    return operator_top_eigs(op, generator, k=1, tol=tol, max_iter=max_iter, which="largest",
                             criterion=criterion, start=start)
