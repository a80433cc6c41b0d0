"""Directions in parameter space for slices, surfaces and perturbations.

A direction is a dict name -> tensor shaped like every trainable parameter (in
:func:`~landscape_utils.probes.params.named_params` order), wrapped in :class:`Direction` together
with how it was normalised and the seed that reproduces it.

Normalisations (θ = the reference parameters, by default the model's own):

- ``"raw"``: d ~ N(0, I) on every parameter, as the original study drew it.
- ``"filter"`` (Li et al. 2018): draw d ~ N(0, I); for every weight tensor (more than one
  dimension) and every output filter/neuron j (index along the first axis), rescale d_j to
  ‖θ_j‖; zero on biases and other tensors with at most one dimension. Then θ + αd moves every
  filter by the fraction α of its own norm, which makes slices invariant to the layer-wise
  rescaling symmetry of ReLU networks.
- ``"layer"``: as ``"filter"`` but each weight tensor as a whole is rescaled to ‖θ_tensor‖.
- ``"eigenvector"``: a flat vector (e.g. a Hessian eigenvector in ``params.flatten`` order)
  split into tensors; no rescaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .evaluation import as_param_dict
from .params import ParamDict, flatten, named_params, unflatten

NORMALISATIONS = ("raw", "filter", "layer", "eigenvector")


@dataclass(frozen=True, eq=False)
class Direction:
    """A parameter-space direction and how it was made.

    Attributes:
        tensors: name -> tensor, shaped like the model's trainable parameters.
        normalisation: one of :data:`NORMALISATIONS` (or ``"custom"``).
        seed: the seed that reproduces a random direction (``None`` if drawn from a
            caller's generator or not random).
        info: extra plain values (e.g. the eigenvalue of an eigenvector direction).
    """

    tensors: ParamDict
    normalisation: str
    seed: int | None = None
    info: dict = field(default_factory=dict)

    def flat(self) -> Tensor:
        """The direction as one vector in ``params.flatten`` order."""
        return flatten(self.tensors)

    def norm(self) -> float:
        """Euclidean norm over all parameters."""
        return float(torch.linalg.vector_norm(self.flat()))

    def to_dict(self) -> dict:
        return {"normalisation": self.normalisation, "seed": self.seed, "norm": self.norm(),
                "n_params": sum(t.numel() for t in self.tensors.values()), **self.info}


def as_generator(generator: torch.Generator | int) -> tuple[torch.Generator, int | None]:
    """A generator and the seed to record: an int seeds a fresh CPU generator.

    Raises:
        ValueError: neither a ``torch.Generator`` nor an int.
    """
    if isinstance(generator, torch.Generator):
        return generator, None
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator), generator
    raise ValueError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")


def gaussian_like(reference: Mapping[str, Tensor], generator: torch.Generator) -> ParamDict:
    """Independent N(0, 1) entries shaped like each tensor, drawn in mapping order.

    Drawn on the generator's device in the tensor's dtype, then moved to the tensor's device,
    so a seed gives the same numbers whatever device the model is on.
    """
    return {name: torch.randn(t.shape, generator=generator, dtype=t.dtype, device=generator.device).to(t.device)
            for name, t in reference.items()}


def _reference(model: nn.Module, reference: Mapping[str, Tensor] | nn.Module | None) -> ParamDict:
    return named_params(model) if reference is None else as_param_dict(model, reference, "reference")


def _rescale_rows(d: Tensor, theta: Tensor) -> Tensor:
    # d, theta: (out, ...) -> each row d_j rescaled to ‖θ_j‖ (rows of θ that are zero give zero).
    d2, t2 = d.reshape(d.shape[0], -1), theta.reshape(theta.shape[0], -1)
    d_norm = torch.linalg.vector_norm(d2, dim=1, keepdim=True)
    t_norm = torch.linalg.vector_norm(t2, dim=1, keepdim=True)
    return (d2 * (t_norm / d_norm.clamp_min(torch.finfo(d.dtype).tiny))).reshape(d.shape)


def random_direction(model: nn.Module, generator: torch.Generator | int) -> Direction:
    """A raw Gaussian direction d ~ N(0, I) over every trainable parameter (the study's).

    Args:
        model: any module; only its parameter names, shapes, dtypes and devices are read.
        generator: a ``torch.Generator`` or an int seed (recorded in the result).
    """
    g, seed = as_generator(generator)
    return Direction(gaussian_like(named_params(model), g), "raw", seed)


def filter_normalised_direction(model: nn.Module, generator: torch.Generator | int, *,
                                reference: Mapping[str, Tensor] | nn.Module | None = None) -> Direction:
    """A Gaussian direction with every output filter rescaled to its filter's norm (Li et al. 2018).

    For each weight tensor θ (dim > 1) and filter j (first axis), d_j ← d_j · ‖θ_j‖ / ‖d_j‖;
    tensors with dim ≤ 1 (biases) get zero.

    Args:
        model: any module.
        generator: a ``torch.Generator`` or an int seed (recorded).
        reference: parameters whose filter norms are used (param dict, state_dict or module;
            default the model's own).
    """
    g, seed = as_generator(generator)
    theta = _reference(model, reference)
    raw = gaussian_like(theta, g)
    tensors = {name: _rescale_rows(raw[name], t) if t.dim() > 1 else torch.zeros_like(t)
               for name, t in theta.items()}
    return Direction(tensors, "filter", seed)


def layer_normalised_direction(model: nn.Module, generator: torch.Generator | int, *,
                               reference: Mapping[str, Tensor] | nn.Module | None = None) -> Direction:
    """A Gaussian direction with every weight tensor rescaled to that tensor's norm; zero on biases.

    Arguments as :func:`filter_normalised_direction`.
    """
    g, seed = as_generator(generator)
    theta = _reference(model, reference)
    raw = gaussian_like(theta, g)
    tensors = {name: _rescale_rows(raw[name].reshape(1, -1), t.reshape(1, -1)).reshape(t.shape)
               if t.dim() > 1 else torch.zeros_like(t) for name, t in theta.items()}
    return Direction(tensors, "layer", seed)


def eigenvector_direction(model: nn.Module, vector: Tensor, *, eigenvalue: float | None = None,
                          index: int | None = None) -> Direction:
    """Wrap a flat vector (``params.flatten`` order, e.g. a Hessian eigenvector) as a direction.

    Args:
        model: the module whose trainable parameters the vector indexes.
        vector: 1-D tensor of length P; cast to the parameters' dtype and device, not rescaled.
        eigenvalue, index: recorded in ``info`` (e.g. λ and its rank, 0 = top).

    Raises:
        ValueError: if the vector's length is not the number of trainable parameters.
    """
    theta = named_params(model)
    if not isinstance(vector, Tensor):
        vector = torch.as_tensor(vector)
    first = next(iter(theta.values()))
    pieces = unflatten(vector.detach().to(device=first.device, dtype=first.dtype), theta)
    info = {k: v for k, v in (("eigenvalue", eigenvalue), ("index", index)) if v is not None}
    if "eigenvalue" in info:
        info["eigenvalue"] = float(info["eigenvalue"])
    return Direction({name: t.clone() for name, t in pieces.items()}, "eigenvector", None, info)


def as_direction(model: nn.Module, direction: Direction | Mapping[str, Tensor]) -> Direction:
    """A :class:`Direction` from a Direction or a plain dict (recorded as ``"custom"``), checked
    against the model's parameters (names and shapes) and cast to their dtype and device.

    Raises:
        ValueError: a missing parameter or wrong shape.
    """
    if isinstance(direction, Direction):
        tensors = as_param_dict(model, direction.tensors, "direction")
        return Direction(tensors, direction.normalisation, direction.seed, dict(direction.info))
    return Direction(as_param_dict(model, direction, "direction"), "custom")
