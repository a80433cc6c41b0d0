"""Curve mode connectivity: a quadratic Bézier curve between two minima, trained, then probed.

Garipov et al. (2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs") join
two parameter points θA and θB by the curve

    φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB,   t ∈ [0, 1],

and train the control point θC (endpoints fixed) to minimise the loss averaged along the
curve, E_{t~U(0,1)} L(φ(t)), by SGD with one t drawn per step. With θC = (θA+θB)/2 (the
usual initialisation, :func:`midpoint_control`) the curve is the straight line θA + t(θB−θA).

:func:`bezier_path_losses` then evaluates loss and error along the curve and reports the same
:class:`~landscape_utils.probes.connectivity.PathResult` as the straight line: the barrier is
the height above the chord between the two endpoint values (:func:`path_barrier`), so a
curve's barrier and the line's are directly comparable. t is the curve's parameter, not its
arc length, so points are not evenly spaced along the curve.

Cost: training takes one forward and one backward pass of a mini-batch per step (the same as
a training step of the model itself, plus three parameter-sized axpys); evaluation is one
forward pass of the samples per point, as for the straight line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .connectivity import DEFAULT_PATH_POINTS, PathResult, check_path_alphas, path_alphas, path_result
from .evaluation import LossFn, as_param_dict, check_point, functional_losses, match_layout
from .hessian import check_generator, check_positive
from .params import ParamDict, check_data, named_params, probe_mode

Params = Mapping[str, Tensor] | nn.Module


@dataclass(frozen=True, eq=False)
class CurveFit:
    """A trained Bézier control point and its training record.

    Attributes:
        control: θC, detached tensors keyed like ``named_params(model)``.
        steps: SGD steps taken.
        losses: (steps,) float64 training loss of each step's mini-batch at its drawn t.
        seconds: wall time of the training.
        settings: batch_size, lr, momentum, init ("midpoint" or "given"), n_samples, batches_per_pass.
    """

    control: ParamDict
    steps: int
    losses: np.ndarray
    seconds: float
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON: everything but the control tensors."""
        return {"steps": self.steps, "losses": self.losses.tolist(), "seconds": self.seconds,
                "settings": dict(self.settings)}


def _bezier(a: Tensor, c: Tensor, b: Tensor, t: float) -> Tensor:
    # Weights in float64 Python arithmetic; the result keeps a's layout (all three share it).
    return (1 - t) ** 2 * a + (2 * t * (1 - t)) * c + t**2 * b


def bezier_point(start: Mapping[str, Tensor], control: Mapping[str, Tensor], end: Mapping[str, Tensor],
                 t: float) -> ParamDict:
    """φ(t) = (1−t)²A + 2t(1−t)C + t²B, tensor by tensor.

    Args:
        start, control, end: A, C, B as dicts name -> tensor with the same names, shapes and dtypes.
        t: curve parameter in [0, 1]. t = 0 returns a copy of A and t = 1 a copy of B, bit for bit.

    Raises:
        ValueError: t outside [0, 1], or the three dicts do not match.
    """
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be a number in [0, 1], got {t!r}")
    reference = dict(start)
    check_point(control, reference, "control")
    check_point(end, reference, "end")
    if t == 0.0:  # exact: the formula would turn −0.0 into +0.0 and propagate inf/NaN from C or B
        return {k: v.detach().clone() for k, v in start.items()}
    if t == 1.0:
        return {k: v.detach().clone() for k, v in end.items()}
    return {k: _bezier(start[k], control[k], end[k], float(t)) for k in reference}


def midpoint_control(start: Mapping[str, Tensor], end: Mapping[str, Tensor]) -> ParamDict:
    """(A+B)/2 per tensor: the control point that makes the Bézier curve the straight line.

    Raises:
        ValueError: the two dicts do not have the same names, shapes and dtypes.
    """
    check_point(end, dict(start), "end")
    return {k: torch.lerp(a.detach(), end[k].detach(), 0.5) for k, a in start.items()}


def train_bezier_control(
    model: nn.Module, loss_fn: LossFn, data: Sequence[Tensor], start: Params, end: Params,
    generator: torch.Generator, *, steps: int, batch_size: int = 64, lr: float = 0.01,
    momentum: float = 0.9, control: Params | None = None, progress: bool = False,
) -> CurveFit:
    """Train θC of the Bézier curve from θA to θB to minimise E_{t~U(0,1)} L(φ(t)).

    Each step draws one t ~ U(0, 1) and one mini-batch, evaluates the loss at φ(t) through
    ``torch.func.functional_call`` and takes an SGD-with-momentum step on θC only. Batches are
    drawn without replacement from a fresh permutation of ``data`` each pass; the last
    ``len(data) % batch_size`` samples of a permutation are skipped so every batch is full.

    Args:
        model: a module of the endpoints' architecture. Never changed: its parameters, their
            ``requires_grad`` flags and ``.grad``; evaluated in eval mode, every submodule's mode
            restored. Frozen parameters (``requires_grad=False``) and buffers are the model's own.
        loss_fn: mean loss over a batch.
        data: ``(inputs, targets)``, the training samples; batches are moved to the model's device.
        start, end: θA and θB (param dicts, state_dicts or modules, as :func:`linear_path_losses`).
        generator: the source of every random draw (permutations and t); the global RNG is unused.
        steps: SGD steps (positive int).
        batch_size: samples per step, at most ``len(data)``.
        lr, momentum: ``torch.optim.SGD`` settings (lr > 0, 0 ≤ momentum < 1).
        control: initial θC (default: the midpoint); the caller's tensors are copied, not changed.
        progress: show a text progress bar.

    Returns:
        :class:`CurveFit` with the trained control and the per-step losses.

    Raises:
        ValueError: bad steps, batch_size, lr, momentum, data or generator; endpoints or control
            that do not match the model; a loss_fn that does not return a scalar.
        FloatingPointError: the training loss (or the control) became NaN or infinite; the message
            names the step.
    """
    from tqdm.std import tqdm  # text bar: readable in notebooks and static HTML

    check_generator(generator)
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("lr", lr)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    x, y = check_data(data)
    n = x.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) is larger than the data ({n} samples)")
    reference = named_params(model)
    if not reference:
        raise ValueError("model has no trainable parameters")
    # Endpoints on the model's device, dtype and memory layout (channels_last convs stay fast).
    theta_a = match_layout(as_param_dict(model, start, "start"), reference)
    theta_b = match_layout(as_param_dict(model, end, "end"), reference)
    init = midpoint_control(theta_a, theta_b) if control is None else as_param_dict(model, control, "control")
    # Fresh leaves in the parameters' layout: the optimiser writes these, never the caller's tensors.
    theta_c = {k: torch.empty_like(ref).copy_(init[k]).requires_grad_(True) for k, ref in reference.items()}
    optimizer = torch.optim.SGD(list(theta_c.values()), lr=lr, momentum=momentum)
    device = next(iter(reference.values())).device
    per_pass = n // batch_size

    losses = np.empty(steps, dtype=np.float64)
    began = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, unit="step", mininterval=1.0, desc="Bézier control")
    try:
        with probe_mode(model, train=False), torch.enable_grad():
            perm = torch.empty(0, dtype=torch.long)
            for step in range(steps):
                i = step % per_pass
                if i == 0:  # a new pass: reshuffle
                    perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
                idx = perm[i * batch_size : (i + 1) * batch_size]  # (batch_size,)
                t = float(torch.rand((), generator=generator, device=generator.device, dtype=torch.float64))
                xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
                point = {k: _bezier(theta_a[k], theta_c[k], theta_b[k], t) for k in reference}
                loss = loss_fn(functional_call(model, point, (xb,)), yb)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return the mean loss over the batch as a scalar tensor")
                value = loss.detach().reshape(()).item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"Bézier control training diverged: the loss became {value} at step "
                                             f"{step + 1} of {steps} (t={t:.4f}); lower the learning rate (lr={lr})")
                losses[step] = value
                optimizer.zero_grad(set_to_none=True)
                loss.reshape(()).backward()
                optimizer.step()
                bar.update(1)
                if (step + 1) % 50 == 0:
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    finally:
        bar.close()
    trained = {k: v.detach() for k, v in theta_c.items()}
    if not all(bool(torch.isfinite(v).all()) for v in trained.values()):
        raise FloatingPointError(f"Bézier control training diverged: the control became non-finite at step "
                                 f"{steps} of {steps}; lower the learning rate (lr={lr})")
    settings = {"batch_size": batch_size, "lr": float(lr), "momentum": float(momentum),
                "init": "midpoint" if control is None else "given", "n_samples": n, "batches_per_pass": per_pass}
    return CurveFit(control=trained, steps=steps, losses=losses, seconds=time.perf_counter() - began,
                    settings=settings)


def bezier_path_losses(
    model: nn.Module, loss_fn: LossFn, data: Sequence[Tensor], start: Params, control: Params, end: Params,
    *, n_points: int = DEFAULT_PATH_POINTS, alphas: Sequence[float] | np.ndarray | None = None,
    batch_size: int | None = None,
) -> PathResult:
    """Loss and error along the Bézier curve φ(t) from θA through control θC to θB, and the barriers.

    Args:
        model, loss_fn, data, batch_size: as :func:`~landscape_utils.probes.connectivity.linear_path_losses`
            (the model is not changed; eval mode, modes restored).
        start, control, end: θA, θC, θB (param dicts, state_dicts or modules).
        n_points: evenly spaced t in [0, 1] including both ends (default 25).
        alphas: explicit t values instead (strictly increasing, 0 and 1 included).

    Returns:
        :class:`PathResult` with ``alphas`` holding the t values; barriers are measured against the
        chord between the endpoint values, as for the straight line. The first and last values
        are the endpoint losses exactly.

    Raises:
        ValueError: mismatched endpoints or control, bad t values or evaluation arguments.
    """
    a = path_alphas(n_points) if alphas is None else check_path_alphas(alphas)
    theta_a = as_param_dict(model, start, "start")
    theta_c = as_param_dict(model, control, "control")
    theta_b = as_param_dict(model, end, "end")

    def points() -> Iterator[ParamDict]:
        for t in a:
            yield bezier_point(theta_a, theta_c, theta_b, float(t))

    return path_result(a, functional_losses(model, loss_fn, data, points(), batch_size=batch_size))
