"""The edge of stability in its clean form: λmax along full-batch gradient descent.

Cohen et al. (2021), "Gradient descent on neural networks typically occurs at the edge of
stability": full-batch gradient descent at step η on a fixed sample set first sharpens (the top
Hessian eigenvalue λmax of the training loss rises, "progressive sharpening") until λmax ≈ 2/η,
the largest curvature a quadratic model lets GD at step η descend stably, and then hovers there
while the loss keeps decreasing, non-monotonically. The squared error (:func:`mse_loss`) shows
the cleanest plateau; with cross-entropy λmax decays late in training as the margins grow.

* :func:`mse_loss` — ½ · mean over examples of the squared error against one-hot targets.
* :func:`full_batch_gd_sharpness` — trains a copy of a model by plain GD on the whole sample set,
  records the loss at every step and λmax (Lanczos, warm-started) every few steps, and
  summarises the plateau (:class:`EdgeOfStabilityRun`).

Same contract as every probe: the caller's model is never changed (GD runs on a deep copy),
every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .hessian import LossFn, check_generator, check_positive
from .lanczos import lanczos_top_eigs
from .params import check_data

# A run is marked diverged when the loss exceeds this multiple of its initial value (or is not finite).
DIVERGENCE_FACTOR = 1e3
# λmax has "reached" the edge of stability once it is at least this fraction of 2/η.
REACH_FRACTION = 0.9
# A loss increase counts only above this many machine epsilons (of the loss's dtype) relative to
# the previous loss: a converged run's loss jitters at rounding level, which is not a rise.
RISE_EPS = 100


def mse_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Squared error, ``½ · mean over examples of Σ over outputs (f(x) − y)²`` (Cohen et al.'s square loss).

    With class-index targets y is the one-hot encoding of the class (C = ``outputs.shape[1]``
    classes); floating targets shaped like ``outputs`` are used as they are. The ½ makes the
    Hessian of a linear model ``f(x) = W x + b`` exactly ``(1/N) X̃ᵀX̃ ⊗ I_C`` (X̃ = [X, 1]).

    Args:
        outputs: (N, C) model outputs.
        targets: (N,) integer class indices in [0, C), or (N, C) floating targets.

    Returns:
        The scalar mean loss over the N examples.

    Raises:
        ValueError: outputs not (N, C), or targets of another shape, kind or class range.
    """
    if outputs.dim() != 2:
        raise ValueError(f"outputs must have shape (N, C), got {tuple(outputs.shape)}")
    if targets.is_floating_point():
        if targets.shape != outputs.shape:
            raise ValueError(f"floating targets must have the outputs' shape {tuple(outputs.shape)}, "
                             f"got {tuple(targets.shape)}")
        onehot = targets.to(outputs.dtype)
    else:
        n, c = outputs.shape
        if targets.shape != (n,):
            raise ValueError(f"class-index targets must have shape ({n},), got {tuple(targets.shape)}")
        if n and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(f"class-index targets must lie in [0, {c}), got [{int(targets.min())}, "
                             f"{int(targets.max())}]")
        # (N, C) one-hot in the outputs' dtype.
        onehot = torch.nn.functional.one_hot(targets.long(), c).to(outputs.dtype)
    return 0.5 * (outputs - onehot).pow(2).sum(dim=1).mean()


def _plain(x: float | None) -> float | None:
    """A JSON-safe float: None for None, NaN and ±inf."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class EdgeOfStabilityRun:
    """λmax and loss along full-batch GD (:func:`full_batch_gd_sharpness`).

    Step t means the parameters after t GD updates (t = 0 is the initial model).

    Attributes:
        lr: the step size η; ``threshold`` is 2/η.
        steps: the measured step indices (0, every, 2·every, ..., and the last step run),
            increasing; ``sharpness[i]`` is λmax at ``steps[i]``, ``accuracy[i]`` the fraction of
            samples whose largest output is the target class (None unless the targets are class
            indices and the outputs (N, C)), ``n_hvp[i]`` the HVPs that measurement cost and
            ``lanczos_converged[i]`` whether Lanczos met its tolerance.
        loss: the full-batch loss at every step 0..T run (T+1 values; the last is the diverging
            value if the run diverged, which may be inf or NaN).
        n_steps: the GD updates asked for; ``diverged`` whether the run stopped early because the
            loss became non-finite or exceeded ``DIVERGENCE_FACTOR`` × its initial value, and
            ``diverged_at`` that step (None otherwise). A diverged run's measurements stop at the
            last scheduled step before it.
        first_reach_step: the first measured step at which λmax has *risen* to
            ``REACH_FRACTION`` · 2/η: the first measurement at or above it that follows one below
            it (None if never). The sharpness at initialisation can exceed 2/η and drop within the
            first steps (on the study's MLP under MSE, 58 at step 0 and 53 by step 25); an initial
            stretch at or above the mark is that transient, not the edge of stability. If no
            measurement is below the mark, it is step 0.
        plateau_ratio: the median of λmax/(2/η) over the measurements from ``first_reach_step``
            on (that one included); None if never reached.
        loss_increases: the number of steps t > ``first_reach_step`` with
            loss[t] − loss[t−1] > ``rise_rtol`` · |loss[t−1]| (the non-monotone decrease at the
            edge of stability); None if never reached. ``rise_rtol`` is ``RISE_EPS`` (100) machine
            epsilons of the loss's dtype, so rounding-level jitter of a converged loss is not counted.
        tol: the Lanczos tolerance (``criterion="gap"``); ``hvp_path`` the HVP path used;
            ``seconds`` the run's wall time.
    """

    lr: float
    threshold: float
    n_steps: int
    every: int
    steps: tuple[int, ...]
    sharpness: tuple[float, ...]
    accuracy: tuple[float | None, ...]
    n_hvp: tuple[int, ...]
    lanczos_converged: tuple[bool, ...]
    loss: tuple[float, ...]
    diverged: bool
    diverged_at: int | None
    first_reach_step: int | None
    plateau_ratio: float | None
    loss_increases: int | None
    rise_rtol: float
    tol: float
    hvp_path: str | None
    seconds: float

    @property
    def ratios(self) -> np.ndarray:
        """λmax/(2/η) at the measured steps, shape (len(steps),)."""
        return np.asarray(self.sharpness, dtype=np.float64) / self.threshold

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists; non-finite losses as None)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        d["loss"] = [_plain(v) for v in self.loss]
        return d


def _plateau(steps: Sequence[int], sharpness: Sequence[float], loss: Sequence[float], threshold: float,
             rise_rtol: float):
    """(first_reach_step, plateau_ratio, loss_increases); all None if λmax never reaches the edge.

    See :class:`EdgeOfStabilityRun`. ``loss[t]`` is the loss at step t; an increase counts when
    it exceeds ``rise_rtol`` × the previous loss.
    """
    ratios = np.asarray(sharpness, dtype=np.float64) / threshold  # (n_measurements,)
    above = ratios >= REACH_FRACTION
    below = np.flatnonzero(~above)
    # Skip an initial stretch at or above the mark (the transient from initialisation).
    candidates = np.flatnonzero(above) if below.size == 0 else np.flatnonzero(above[below[0]:]) + below[0]
    if candidates.size == 0:
        return None, None, None
    i = int(candidates[0])
    first = int(steps[i])
    tail = np.asarray(loss[first:], dtype=np.float64)  # loss at steps first..T
    rises = tail[1:] - tail[:-1] > rise_rtol * np.abs(tail[:-1])
    return first, float(np.median(ratios[i:])), int(np.count_nonzero(rises))


def _accuracy(outputs: Tensor, targets: Tensor) -> float | None:
    if outputs.dim() != 2 or targets.is_floating_point() or targets.shape != outputs.shape[:1]:
        return None
    return float((outputs.argmax(dim=1) == targets).to(torch.float64).mean())


def full_batch_gd_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    lr: float,
    steps: int,
    every: int,
    generator: torch.Generator,
    tol: float = 1e-3,
    max_iter: int | None = None,
    progress: bool = False,
) -> EdgeOfStabilityRun:
    """Train a copy of ``model`` by full-batch GD and track λmax of the training loss against 2/η.

    Plain gradient descent ``θ ← θ − η ∇L(θ)`` with L the mean loss over all of ``data`` (one
    forward and backward on the whole set per step), on a deep copy of the model in eval mode
    (the same loss the Hessian probes measure; the caller's model, its mode and its ``.grad`` are
    never touched). The loss is recorded at every step; λmax is measured at steps 0, every,
    2·every, ... and at the last step by :func:`~landscape_utils.probes.lanczos.lanczos_top_eigs`
    (``criterion="gap"``, ``tol``), the first time from a random start drawn from ``generator``
    and then warm-started from the previous measurement's top eigenvector. (On the study's MLP at
    tol=1e-3 the warm start saves little: about 12 HVPs a measurement against 14 cold, most of
    them spent by the gap rule's guard on the second eigenvalue.)

    The run stops early, marked ``diverged``, when the loss becomes non-finite or exceeds
    ``DIVERGENCE_FACTOR`` (1e3) × its initial value: a divergence is a result, not an error.

    Args:
        model: any ``nn.Module`` with trainable parameters (copied, never changed).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss over the batch, e.g. :func:`mse_loss`.
        data: ``(inputs, targets)``, the fixed training set (on the model's device).
        lr: the step size η > 0.
        steps: the number T ≥ 1 of GD updates.
        every: measure λmax every ``every`` steps, 1 ≤ every ≤ steps.
        generator: source of the first Lanczos start vector and of any Lanczos restart.
        tol: Lanczos relative tolerance on λmax (gap-refined error estimate).
        max_iter: HVP budget of each measurement (default: Lanczos's, ``min(P, 100)``).
        progress: show a text (``tqdm.std``) progress bar.

    Returns:
        :class:`EdgeOfStabilityRun`.

    Raises:
        ValueError: bad ``lr``, ``steps``, ``every``, ``tol``, ``max_iter``, ``generator``, ``data``,
            a non-callable ``loss_fn`` or one not returning a scalar, a model without trainable
            parameters.
        HessianUnavailableError: no HVP path works for this model.
    """
    from tqdm.std import tqdm  # text bar: readable in notebooks and static HTML

    check_positive("lr", lr)
    check_positive("steps", steps, integer=True)
    check_positive("every", every, integer=True)
    if every > steps:
        raise ValueError(f"every ({every}) must be <= steps ({steps})")
    check_positive("tol", tol)
    if max_iter is not None:
        check_positive("max_iter", max_iter, integer=True)
    check_generator(generator)
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable as loss_fn(outputs, targets)")
    x, y = check_data(data)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")

    began = time.perf_counter()
    net = copy.deepcopy(model).eval()  # the caller's model (and its modes) stay as they are
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    schedule = set(range(0, steps + 1, every)) | {steps}

    measured: list[int] = []
    sharpness: list[float] = []
    accuracy: list[float | None] = []
    n_hvp: list[int] = []
    converged: list[bool] = []
    losses: list[float] = []
    diverged_at: int | None = None
    hvp_path: str | None = None
    start: Tensor | None = None
    limit = math.inf
    rise_rtol = 0.0
    bar = tqdm(total=steps, disable=not progress, unit="step", mininterval=1.0, desc=f"GD η={lr:g}")
    try:
        for t in range(steps + 1):
            with torch.enable_grad():
                outputs = net(x)
                loss = loss_fn(outputs, y)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return the mean loss over the batch as a scalar tensor")
                loss = loss.reshape(())
                value = float(loss.detach())
                losses.append(value)
                if t == 0:
                    limit = DIVERGENCE_FACTOR * abs(value)
                    rise_rtol = RISE_EPS * torch.finfo(loss.dtype).eps if loss.is_floating_point() else 0.0
                if not math.isfinite(value) or value > limit:
                    diverged_at = t
                    break
                grads = torch.autograd.grad(loss, params, allow_unused=True) if t < steps else None
            if t in schedule:
                eig = lanczos_top_eigs(net, loss_fn, (x, y), generator, k=1, tol=tol, max_iter=max_iter,
                                       criterion="gap", start=start)
                start = eig.eigenvectors[0]
                measured.append(t)
                sharpness.append(float(eig.eigenvalues[0]))
                accuracy.append(_accuracy(outputs.detach(), y))
                n_hvp.append(int(eig.n_hvp))
                converged.append(bool(eig.converged))
                hvp_path = hvp_path or eig.hvp_path
                bar.set_postfix(loss=f"{value:.4g}", ratio=f"{sharpness[-1] * lr / 2:.3f}", refresh=False)
            del outputs, loss
            if grads is None:
                break
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(g, alpha=lr)  # θ ← θ − η ∇L(θ)
            del grads
            bar.update(1)
    finally:
        bar.close()

    threshold = 2.0 / lr
    first, ratio, increases = _plateau(measured, sharpness, losses, threshold, rise_rtol)
    return EdgeOfStabilityRun(
        lr=float(lr), threshold=threshold, n_steps=steps, every=every, steps=tuple(measured),
        sharpness=tuple(sharpness), accuracy=tuple(accuracy), n_hvp=tuple(n_hvp),
        lanczos_converged=tuple(converged), loss=tuple(losses), diverged=diverged_at is not None,
        diverged_at=diverged_at, first_reach_step=first, plateau_ratio=ratio, loss_increases=increases,
        rise_rtol=float(rise_rtol), tol=float(tol), hvp_path=hvp_path, seconds=time.perf_counter() - began,
    )
