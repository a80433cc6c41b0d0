"""Parameters as dicts and flat vectors, and the model-state guard every probe uses.

Probes never mutate a model: they read its parameters with :func:`named_params`, build
new tensors (θ + αv, Hessian-vector products, ...) and evaluate them functionally. The
guard :func:`probe_mode` sets the mode a probe needs and restores the caller's mode on
every submodule afterwards, even if the probe raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

ParamDict = dict[str, Tensor]
Data = tuple[Tensor, Tensor]


def named_params(model: nn.Module) -> ParamDict:
    """Detached views of the model's trainable parameters, keyed by name (definition order).

    The tensors share storage with the model: treat them as read-only.
    """
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def flatten(tensors: Mapping[str, Tensor]) -> Tensor:
    """Concatenate tensors (in mapping order) into one 1-D vector of length P."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> ParamDict:
    """Split a 1-D vector of length P back into tensors shaped like ``like``.

    Raises:
        ValueError: if the vector's length is not the total size of ``like``.
    """
    total = sum(t.numel() for t in like.values())
    if vector.dim() != 1 or vector.numel() != total:
        raise ValueError(f"vector has shape {tuple(vector.shape)}; expected ({total},)")
    out: ParamDict = {}
    offset = 0
    for name, t in like.items():
        out[name] = vector[offset : offset + t.numel()].view_as(t)
        offset += t.numel()
    return out


def check_data(data: Sequence[Tensor]) -> Data:
    """Validate a probe's ``data = (inputs, targets)``.

    Raises:
        ValueError: unless it is two tensors with the same, non-zero first (sample) dimension.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data must be a tuple (inputs, targets) of two tensors")
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError("data must be a tuple (inputs, targets) of two tensors")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs and targets must share their first (sample) dimension; "
                         f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("data holds no samples")
    return x, y


def num_params(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def probe_mode(model: nn.Module, train: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode for a probe; restore every submodule's mode after.

    A model whose submodules are in mixed modes gets exactly its mixture back.
    """
    saved = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for m, was_training in saved:
            m.training = was_training
