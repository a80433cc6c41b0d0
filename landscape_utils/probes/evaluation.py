"""Evaluation engine: the loss and error of one architecture at many parameter points.

Every landscape probe (slices, surfaces, paths, perturbations) evaluates the same fixed
samples at many parameter vectors. Here each point is swapped into the *same* module with
:func:`torch.func.functional_call` (no model copy, no state-dict load, nothing written to the
model), under :func:`torch.inference_mode` (no autograd), and several points are evaluated
per data batch so each batch is moved to the device once per chunk of points. What remains
is the cost of the forward passes (benchmarks/bench_evaluation.py: about 0.94x the throughput
of a bare ``no_grad`` forward on the study's CNN). A copy-and-load loop measures about the
same there, since a 10k-parameter copy is cheap next to 2,048 samples' forwards; its
overhead matters for large models and small sample sets.
(Stacking points under ``torch.func.vmap`` was measured 1.6x slower for the CNN and 3x for
the MLP on CPU, so points run one after another.)

The model is put in eval mode for the evaluation and every submodule's mode is restored
afterwards (:func:`landscape_utils.probes.params.probe_mode`). Buffers (e.g. BatchNorm running
statistics) are the model's own at every point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .params import ParamDict, check_data, named_params, probe_mode

LossFn = Callable[[Tensor, Tensor], Tensor]

# Samples per forward pass. Measured on the study's CNN on a 2-core CPU (one thread): 256
# and 512 run at the same speed, 1,024 is 1.6x slower (conv activations drop out of cache);
# with two threads small batches lose to thread overhead. At 512 the CNN's largest activation
# (16 x 28 x 28 floats per sample) is 26 MB.
DEFAULT_BATCH_SIZE = 512
# Parameter points evaluated per data batch (bounded further by DEFAULT_CHUNK_BYTES).
DEFAULT_POINTS_PER_CHUNK = 32
# At most this many bytes of materialised parameter points are alive at once.
DEFAULT_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True, eq=False)
class PointLosses:
    """Mean loss and error at each of several parameter points on the same samples.

    Attributes:
        losses: (n_points,) float64, mean loss over the samples at each point.
        errors: (n_points,) float64 misclassification rate, or ``None`` when the targets
            are not class indices.
        n_samples: number of samples evaluated.
    """

    losses: np.ndarray
    errors: np.ndarray | None
    n_samples: int

    def to_dict(self) -> dict:
        return {
            "losses": self.losses.tolist(),
            "errors": None if self.errors is None else self.errors.tolist(),
            "n_samples": self.n_samples,
        }


@dataclass(frozen=True)
class PointLoss:
    """Mean loss and error (``None`` for non-class targets) at one parameter point."""

    loss: float
    error: float | None
    n_samples: int

    def to_dict(self) -> dict:
        return {"loss": self.loss, "error": self.error, "n_samples": self.n_samples}


# ----------------------------------------------------------------------------- checks


def check_batch_size(batch_size: int | None) -> int:
    """``batch_size`` or the default; raises ValueError unless a positive int."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def check_point(point: Mapping[str, Tensor], reference: ParamDict, what: str = "point") -> None:
    """Raise ValueError unless ``point`` has exactly the reference's names, shapes and dtypes."""
    if not isinstance(point, Mapping):
        raise ValueError(f"{what} must be a mapping name -> tensor, got {type(point).__name__}")
    if list(point) != list(reference):
        missing = [n for n in reference if n not in point]
        extra = [n for n in point if n not in reference]
        if missing or extra:
            raise ValueError(f"{what} does not match the model's trainable parameters: "
                             f"missing {missing}, unexpected {extra}")
    for name, ref in reference.items():
        t = point[name]
        if not isinstance(t, Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
            got = (tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what}[{name!r}] is {got}; expected {tuple(ref.shape)}, {ref.dtype}")


def match_layout(point: Mapping[str, Tensor], reference: ParamDict) -> Mapping[str, Tensor]:
    """``point`` with each tensor on its parameter's device and in its memory layout.

    A model converted to ``channels_last`` runs its fast kernels only if the weights it is
    given are channels_last too (1.8x on the study's CNN on CPU); points built as θ + αv
    from contiguous directions may not be. Tensors already matching are passed through.
    """
    if all(t.device == reference[k].device and t.stride() == reference[k].stride() for k, t in point.items()):
        return point
    out = {}
    for name, t in point.items():
        ref = reference[name]
        same = t.device == ref.device and t.stride() == ref.stride()
        out[name] = t if same else torch.empty_like(ref).copy_(t)  # empty_like keeps ref's layout
    return out


def is_class_target(outputs: Tensor, targets: Tensor) -> bool:
    """Whether error (argmax of outputs vs targets) is defined: integer targets (N,), outputs (N, C, ...)."""
    return (not targets.is_floating_point() and not targets.is_complex() and targets.dim() == 1
            and outputs.dim() >= 2)


# ----------------------------------------------------------------------------- engine


def functional_losses(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    points: Iterable[Mapping[str, Tensor]],
    *,
    batch_size: int | None = None,
    points_per_chunk: int | None = None,
) -> PointLosses:
    """Mean loss and error of ``model``'s architecture at each parameter point, on ``data``.

    Args:
        model: any module; its parameters and (per-submodule) train/eval mode are left as
            found. It is evaluated in eval mode with its own buffers.
        loss_fn: ``loss_fn(outputs, targets)`` returning the mean loss over a batch; batch
            means are combined weighted by batch size.
        data: ``(inputs, targets)``, the fixed samples; moved batch by batch to the model's device.
        points: parameter dicts keyed like :func:`~landscape_utils.probes.params.named_params` (same
            names, shapes and dtypes; any device or memory layout, matched to the model's);
            may be a lazy iterable, consumed chunk by chunk.
        batch_size: samples per forward pass (default :data:`DEFAULT_BATCH_SIZE`).
        points_per_chunk: points evaluated per data batch (default: 32, fewer if 32 points
            would exceed 256 MB).

    Returns:
        :class:`PointLosses`, one entry per point in iteration order. ``errors`` is the
        misclassification rate (argmax over dim 1 vs integer targets), ``None`` otherwise.

    Raises:
        ValueError: bad data, batch size, a point that does not match the model, no points,
            or a loss_fn that does not return a scalar.
    """
    x, y = check_data(data)
    batch_size = check_batch_size(batch_size)
    reference = named_params(model)
    if not reference:
        raise ValueError("model has no trainable parameters")
    point_bytes = sum(t.numel() * t.element_size() for t in reference.values())
    if points_per_chunk is None:
        points_per_chunk = max(1, min(DEFAULT_POINTS_PER_CHUNK, DEFAULT_CHUNK_BYTES // max(point_bytes, 1)))
    elif isinstance(points_per_chunk, bool) or not isinstance(points_per_chunk, int) or points_per_chunk < 1:
        raise ValueError(f"points_per_chunk must be a positive int, got {points_per_chunk!r}")
    device = next(iter(reference.values())).device

    n = x.shape[0]
    losses: list[Tensor] = []  # one float64 scalar per point, kept on device (no sync per batch)
    wrongs: list[Tensor] = []  # misclassified counts per point
    classify: bool | None = None
    iterator: Iterator[Mapping[str, Tensor]] = iter(points)
    with probe_mode(model, train=False), torch.inference_mode():
        while True:
            chunk = list(islice(iterator, points_per_chunk))
            if not chunk:
                break
            for i, point in enumerate(chunk):
                check_point(point, reference, f"point {len(losses) + i}")
            chunk = [match_layout(point, reference) for point in chunk]
            chunk_loss = [torch.zeros((), dtype=torch.float64, device=device) for _ in chunk]
            chunk_wrong = [torch.zeros((), dtype=torch.int64, device=device) for _ in chunk]
            for start in range(0, n, batch_size):
                xb = x[start : start + batch_size].to(device, non_blocking=True)
                yb = y[start : start + batch_size].to(device, non_blocking=True)
                # Weight each batch mean by its share of the samples; a single batch gets
                # weight 1.0 exactly, so its loss equals loss_fn(model(x), y) bit for bit.
                weight = xb.shape[0] / n
                for k, point in enumerate(chunk):
                    out = functional_call(model, point, (xb,))
                    loss = loss_fn(out, yb)
                    if not isinstance(loss, Tensor) or loss.numel() != 1:
                        raise ValueError("loss_fn must return the mean loss over the batch as a scalar tensor")
                    chunk_loss[k] += loss.reshape(()).double() * weight
                    if classify is None:
                        classify = is_class_target(out, yb)
                    if classify:
                        chunk_wrong[k] += (out.argmax(dim=1) != yb).sum()
            losses.extend(chunk_loss)
            wrongs.extend(chunk_wrong)
    if not losses:
        raise ValueError("no parameter points to evaluate")
    loss_arr = torch.stack(losses).cpu().numpy()
    err_arr = (torch.stack(wrongs).double() / n).cpu().numpy() if classify else None
    return PointLosses(losses=loss_arr, errors=err_arr, n_samples=n)


def functional_loss(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    params: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int | None = None,
) -> PointLoss:
    """Mean loss and error at one parameter point (default: the model's own parameters).

    Same arguments and evaluation as :func:`functional_losses` (same batching, so the value
    equals the matching entry of any probe that evaluates that point with that batch size).
    """
    point = named_params(model) if params is None else params
    res = functional_losses(model, loss_fn, data, [point], batch_size=batch_size)
    return PointLoss(loss=float(res.losses[0]),
                     error=None if res.errors is None else float(res.errors[0]),
                     n_samples=res.n_samples)


# ----------------------------------------------------------------------------- point builders


def as_param_dict(model: nn.Module, params: Mapping[str, Tensor] | nn.Module, what: str = "params") -> ParamDict:
    """Trainable-parameter dict for ``model`` from a param dict, a ``state_dict`` or a module.

    Entries are taken by the model's trainable-parameter names (extra entries such as
    buffers are ignored), detached, and cast to each parameter's dtype and device as
    ``load_state_dict`` would.

    Raises:
        ValueError: a trainable parameter is missing or has the wrong shape.
    """
    reference = named_params(model)
    if isinstance(params, nn.Module):
        params = named_params(params)
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} must be a dict name -> tensor, a state_dict or a module")
    missing = [name for name in reference if name not in params]
    if missing:
        raise ValueError(f"{what} lacks the model's trainable parameters {missing}")
    out: ParamDict = {}
    for name, ref in reference.items():
        t = params[name]
        if not isinstance(t, Tensor) or t.shape != ref.shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what}[{name!r}] has shape {got}; expected {tuple(ref.shape)}")
        out[name] = t.detach().to(device=ref.device, dtype=ref.dtype)
    return out


def affine_points(base: Mapping[str, Tensor], directions: Sequence[Mapping[str, Tensor]],
                  coefficients: np.ndarray) -> Iterator[ParamDict]:
    """Lazily yield ``base + Σ_k c[i, k] · directions[k]`` for each row ``c[i]`` of ``coefficients``.

    A row of zeros yields ``base`` itself, so the centre of a slice or surface is evaluated
    at exactly the base parameters.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)  # (n_points, n_directions)
    for row in coefficients:
        if not np.any(row):
            yield dict(base)
            continue
        terms = [(float(c), d) for c, d in zip(row, directions) if c != 0.0]
        point = {}
        for name, b in base.items():
            t = torch.add(b, terms[0][1][name], alpha=terms[0][0])  # one pass, b's layout
            for c, d in terms[1:]:
                t.add_(d[name], alpha=c)
            point[name] = t
        yield point
