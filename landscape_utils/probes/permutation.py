"""Permutation alignment by weight matching (Ainsworth et al. 2023, "Git Re-Basin").

Hidden units (neurons, channels) can be reordered without changing what a network computes,
provided every parameter axis that indexes those units is reordered the same way: a unit's
incoming weights and bias, and the outgoing weights that read it. A :class:`PermutationSpec`
lists these axes as groups; for ReLU and max-pool networks (which act unit by unit) a
permuted network computes exactly the same function when the groups are complete.

Weight matching chooses, for network B, the permutation of every group that maximises
Σ_params ⟨θA, π(θB)⟩ (Frobenius inner product), i.e. minimises ‖θA − π(θB)‖. Jointly this is
NP-hard; the algorithm is a heuristic coordinate ascent: it solves one group's linear
assignment problem at a time with the other groups' permutations fixed, visiting groups in a
random order each sweep, until a sweep improves no group. It returns a local optimum, not
necessarily the global one.

Convention: ``perms[g][i] = j`` means unit i of the result is unit j of the input (along
every axis of group g: ``index_select(dim, perm)`` on the axis read as (units, inner)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .params import ParamDict, named_params

Params = Mapping[str, Tensor] | nn.Module


@dataclass(frozen=True)
class PermutedAxis:
    """Axis ``dim`` of parameter ``param``, read as (units, inner) (``inner`` > 1: e.g. a linear
    head reading channel-major flattened maps, ``inner`` = pixels per channel)."""

    param: str
    dim: int
    inner: int = 1

    def __post_init__(self) -> None:
        ints = [isinstance(v, int) and not isinstance(v, bool) for v in (self.dim, self.inner)]
        if not isinstance(self.param, str) or not all(ints) or self.dim < 0 or self.inner < 1:
            raise ValueError(f"bad permuted axis {self!r}: need a parameter name, a dim >= 0 and an inner >= 1")


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden units permuted together, and every parameter axis that indexes them."""

    name: str
    axes: tuple[PermutedAxis, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """The permutation symmetries of an architecture: groups of units and the axes they permute.

    Raises (on construction):
        ValueError: an empty group, two groups with one name, or one (parameter, dim) in two places.
    """

    groups: tuple[PermutationGroup, ...]

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"permutation group names must be unique; got {names}")
        owner: dict[tuple[str, int], str] = {}  # (parameter, dim) -> group
        for g in self.groups:
            if not g.axes:
                raise ValueError(f"permutation group {g.name!r} permutes no axis")
            for ax in g.axes:
                if (ax.param, ax.dim) in owner:
                    raise ValueError(f"axis {ax.dim} of {ax.param!r} is claimed by groups "
                                     f"{owner[ax.param, ax.dim]!r} and {g.name!r}")
                owner[ax.param, ax.dim] = g.name

    @classmethod
    def from_plain(cls, plain: Sequence) -> PermutationSpec:
        """Parse the registry's plain format ``((group, ((param, dim) | (param, dim, inner), ...)), ...)``.

        Raises:
            ValueError: malformed input (the message shows the offending entry).
        """
        groups = []
        for entry in plain:
            try:
                name, axes = entry
                if not isinstance(name, str) or isinstance(axes, str):
                    raise TypeError
                groups.append(PermutationGroup(name, tuple(PermutedAxis(*ax) for ax in axes)))
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad permutation group {entry!r} ({e}); "
                                 "expected (name, ((param, dim[, inner]), ...))") from e
        return cls(tuple(groups))

    def sizes(self, params: Params) -> dict[str, int]:
        """Number of units of every group in ``params`` (validated as by :meth:`check`)."""
        params = _as_params(params, "params")
        sizes: dict[str, int] = {}
        for g in self.groups:
            for ax in g.axes:
                if ax.param not in params:
                    raise ValueError(f"permutation group {g.name!r} names unknown parameter {ax.param!r}; "
                                     f"valid names: {list(params)}")
                shape = tuple(params[ax.param].shape)
                if ax.dim >= len(shape):
                    raise ValueError(f"group {g.name!r}: {ax.param!r} has shape {shape}, no dim {ax.dim}")
                if shape[ax.dim] % ax.inner:
                    raise ValueError(f"group {g.name!r}: dim {ax.dim} of {ax.param!r} has size {shape[ax.dim]}, "
                                     f"not divisible by inner={ax.inner}")
                units = shape[ax.dim] // ax.inner
                if sizes.setdefault(g.name, units) != units:
                    raise ValueError(f"group {g.name!r}: dim {ax.dim} of {ax.param!r} holds {units} units, "
                                     f"other axes of the group {sizes[g.name]}")
        return sizes

    def check(self, params: Params) -> None:
        """Validate the spec against a param dict or a module. (Duplicate axes and group names are
        refused when the spec is built.)

        Raises:
            ValueError: an unknown parameter (valid names listed), a dim out of range, an axis not
                divisible by its ``inner``, or axes of one group disagreeing on the number of units.
        """
        self.sizes(params)


@dataclass(frozen=True, eq=False)
class WeightMatching:
    """Result of :func:`weight_matching`.

    Attributes:
        perms: group -> (units,) int64 CPU permutation for B (result unit i = B's unit perms[g][i]).
        objective: Σ ⟨θA, π(θB)⟩ over all parameters at ``perms`` (float64).
        identity_objective: the same without permuting, Σ ⟨θA, θB⟩.
        sweeps: sweeps over all groups done (the last one found no improvement if converged).
        converged: whether a sweep improved no group before ``max_iter`` sweeps.
    """

    perms: dict[str, Tensor]
    objective: float
    identity_objective: float
    sweeps: int
    converged: bool

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["perms"] = {g: p.tolist() for g, p in self.perms.items()}
        return out


def check_spec(spec: PermutationSpec | Sequence | None, what: str) -> PermutationSpec:
    """``spec`` as a :class:`PermutationSpec` (plain registry tuples are parsed).

    Raises:
        ValueError: ``spec`` is None (``what`` names the architecture in the message) or malformed.
    """
    if spec is None:
        raise ValueError(f"no permutation specification for {what}: alignment is not available "
                         "(give the architecture a permutation spec to enable it)")
    if isinstance(spec, PermutationSpec):
        return spec
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
        raise ValueError(f"permutation spec for {what} must be a PermutationSpec or plain tuples; got {spec!r}")
    return PermutationSpec.from_plain(spec)


def apply_permutation(spec: PermutationSpec | Sequence, params: Params, perms: Mapping[str, Tensor]) -> ParamDict:
    """A new param dict with every group's units reordered by ``perms``.

    Convention: the result's unit i is the input's unit ``perms[g][i]`` along every axis of group g
    (``index_select(dim, perms[g])`` on the axis read as (units, inner)).

    Args:
        spec: the architecture's :class:`PermutationSpec` (or its plain form).
        params: param dict, state_dict (every entry kept; a spec may name buffers too) or module
            (its trainable parameters); not modified.
        perms: group -> 1-D integer tensor, a permutation of range(units), for every group of ``spec``.

    Returns:
        A dict with the input's keys: permuted tensors are new; the rest are the input's tensors.

    Raises:
        ValueError: ``spec`` does not fit ``params``, or ``perms`` lacks a group, has an unknown one
            or holds something that is not a permutation of the group's units.
    """
    spec = check_spec(spec, "these parameters")
    params = _as_params(params, "params")
    sizes = spec.sizes(params)
    unknown = sorted(set(perms) - set(sizes))
    if unknown:
        raise ValueError(f"perms has unknown groups {unknown}; the spec's groups are {list(sizes)}")
    for g, n in sizes.items():
        p = perms.get(g)
        if not (isinstance(p, Tensor) and p.dtype in (torch.int64, torch.int32) and p.shape == (n,)
                and torch.equal(p.sort().values.cpu().long(), torch.arange(n))):
            raise ValueError(f"perms[{g!r}] must be a permutation of range({n}) as an int64/int32 tensor; got {p!r}")
    out = dict(params)
    for g in spec.groups:
        for ax in g.axes:
            out[ax.param] = _permute_axis(out[ax.param], ax, perms[g.name])
    return out


def weight_matching(spec: PermutationSpec | Sequence, params_a: Params, params_b: Params,
                    generator: torch.Generator, max_iter: int = 100) -> WeightMatching:
    """Permutations of B's units maximising Σ ⟨θA, π(θB)⟩ by coordinate ascent (weight matching).

    Each sweep visits the groups in a random order drawn from ``generator``; for group g it
    solves the linear assignment on the (units × units) similarity S[i, j] = Σ_axes ⟨A's unit i,
    B's unit j⟩, B with every other group's current permutation applied, and keeps the solution
    if it raises the objective by more than a relative 1e-12 (so float noise cannot loop forever).
    It stops after a sweep that improves no group, or after ``max_iter`` sweeps. All arithmetic
    is in float64. A heuristic: the result is a local optimum, not necessarily the global one.

    Args:
        spec: the architecture's :class:`PermutationSpec` (or its plain form).
        params_a, params_b: the two networks as param dicts, state_dicts or modules. A module's
            trainable parameters define the compared set (the other side's extra entries, e.g. a
            state_dict's buffers, are ignored); two mappings must hold the same entries.
        generator: draws the visiting order.
        max_iter: the most sweeps (≥ 1).

    Returns:
        A :class:`WeightMatching`; ``apply_permutation(spec, params_b, result.perms)`` aligns B to A.

    Raises:
        ValueError: the networks differ in parameter names or shapes (the parameter is named),
            ``spec`` does not fit them, or ``max_iter`` is not a positive int.
    """
    spec = check_spec(spec, "these parameters")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    a, b = _matched_pair(params_a, params_b)
    sizes = spec.sizes(a)
    a = {k: t.detach().to(torch.float64) for k, t in a.items()}
    b = {k: t.detach().to(a[k].device, torch.float64) for k, t in b.items()}
    perms = {g: torch.arange(n) for g, n in sizes.items()}
    axes_of: dict[str, list[tuple[PermutedAxis, str]]] = {}  # parameter -> its permuted axes and their groups
    for g in spec.groups:
        for ax in g.axes:
            axes_of.setdefault(ax.param, []).append((ax, g.name))

    def similarity(group: PermutationGroup) -> np.ndarray:
        n = sizes[group.name]
        s = torch.zeros(n, n, dtype=torch.float64, device=a[group.axes[0].param].device)
        for ax in group.axes:
            tb = b[ax.param]  # B with the current permutation of every other axis on this parameter
            for other, other_group in axes_of[ax.param]:
                if other is not ax:
                    tb = _permute_axis(tb, other, perms[other_group])
            s += _units_first(a[ax.param], ax) @ _units_first(tb, ax).T  # (units, rest) @ (rest, units)
        return s.cpu().numpy()

    # Cauchy–Schwarz bounds |objective| by ‖θA‖‖θB‖: a fixed scale for the relative tolerance.
    tol = 1e-12 * math.sqrt(_inner(a, a) * _inner(b, b))
    sweeps, converged = 0, False
    while sweeps < max_iter and not converged:
        sweeps += 1
        converged = True
        for i in torch.randperm(len(spec.groups), generator=generator).tolist():
            group = spec.groups[i]
            s = similarity(group)
            rows, cols = linear_sum_assignment(s, maximize=True)  # rows = 0..n-1
            old = perms[group.name].numpy()
            # With the other groups fixed the objective is const + Σ_i S[i, perm[i]].
            if s[rows, cols].sum() - s[rows, old].sum() > tol:
                perms[group.name] = torch.as_tensor(cols, dtype=torch.int64)
                converged = False
    return WeightMatching(perms=perms, objective=_inner(a, apply_permutation(spec, b, perms)),
                          identity_objective=_inner(a, b), sweeps=sweeps, converged=converged)


def aligned_params(spec: PermutationSpec | Sequence, params_a: Params, params_b: Params,
                   generator: torch.Generator, max_iter: int = 100) -> tuple[ParamDict, WeightMatching]:
    """B's parameters permuted into alignment with A by :func:`weight_matching`, and the matching.

    The aligned dict keeps B's dtypes and devices (permuting is exact); see :func:`weight_matching`
    for the arguments and errors.
    """
    matching = weight_matching(spec, params_a, params_b, generator, max_iter)
    return apply_permutation(spec, params_b, matching.perms), matching


def _as_params(params: Params, what: str) -> ParamDict:
    """A module's trainable parameters, or a mapping's entries, as a new dict (tensors not copied)."""
    if isinstance(params, nn.Module):
        return named_params(params)
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} must be a dict name -> tensor, a state_dict or a module; got {type(params).__name__}")
    bad = [k for k, t in params.items() if not isinstance(t, Tensor)]
    if bad:
        raise ValueError(f"{what} entries {bad} are not tensors")
    return dict(params)


def _matched_pair(params_a: Params, params_b: Params) -> tuple[ParamDict, ParamDict]:
    """Both networks' parameters with the same names and shapes (see :func:`weight_matching`)."""
    a, b = _as_params(params_a, "params_a"), _as_params(params_b, "params_b")
    if isinstance(params_a, nn.Module):
        b = {k: t for k, t in b.items() if k in a}
    if isinstance(params_b, nn.Module):
        a = {k: t for k, t in a.items() if k in b}
    for name in [*a, *(k for k in b if k not in a)]:
        if name not in a or name not in b:
            raise ValueError(f"the networks differ: parameter {name!r} is only in "
                             f"{'params_a' if name in a else 'params_b'}")
        if a[name].shape != b[name].shape:
            raise ValueError(f"the networks differ: parameter {name!r} has shape {tuple(a[name].shape)} in params_a "
                             f"and {tuple(b[name].shape)} in params_b")
    return a, {k: b[k] for k in a}


def _inner(a: ParamDict, b: ParamDict) -> float:
    """Σ over parameters of the Frobenius inner product ⟨a, b⟩."""
    return sum(float((a[k] * b[k]).sum()) for k in a)


def _units_view(t: Tensor, ax: PermutedAxis) -> Tensor:
    """``t`` with axis ``ax.dim`` split into (units, inner)."""
    d = ax.dim
    return t.reshape(*t.shape[:d], t.shape[d] // ax.inner, ax.inner, *t.shape[d + 1:])


def _units_first(t: Tensor, ax: PermutedAxis) -> Tensor:
    """(units, everything else): one row per unit of the axis."""
    v = _units_view(t, ax).movedim(ax.dim, 0)
    return v.reshape(v.shape[0], -1)


def _permute_axis(t: Tensor, ax: PermutedAxis, perm: Tensor) -> Tensor:
    """A new tensor whose unit i along ``ax`` is ``t``'s unit ``perm[i]``."""
    return _units_view(t, ax).index_select(ax.dim, perm.to(t.device)).reshape(t.shape)
