"""Permutation alignment: the registry's groups preserve the function, weight matching recovers
known permutations and improves on the identity, and bad specs and inputs are refused."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape_utils.probes.params import named_params
from landscape_utils.probes.permutation import (
    PermutationGroup,
    PermutationSpec,
    PermutedAxis,
    aligned_params,
    apply_permutation,
    check_spec,
    weight_matching,
)
from landscape_utils.study.models import build_model
from landscape_utils.study.registry import ARCHITECTURES

ARCHS = list(ARCHITECTURES)


def spec_of(arch: str) -> PermutationSpec:
    return check_spec(ARCHITECTURES[arch].permutation, arch)


def random_perms(spec: PermutationSpec, params, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(n, generator=g) for name, n in spec.sizes(params).items()}


def inputs(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(123), dtype=dtype)


def max_logit_change(model: nn.Module, params: dict, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((functional_call(model, params, (x,)) - model(x)).abs().max())


def sq_norm(params: dict) -> float:
    return sum(float((t.double() ** 2).sum()) for t in params.values())


def test_every_registered_architecture_has_a_valid_spec():
    for arch in ARCHS:
        spec = spec_of(arch)
        spec.check(build_model(arch, seed=0))
        assert all(n == 256 if arch == "mlp" else n == 16 for n in spec.sizes(build_model(arch, seed=0)).values())
    assert spec_of("cnn").groups[1] == PermutationGroup("conv2", (
        PermutedAxis("conv2.weight", 0), PermutedAxis("conv2.bias", 0), PermutedAxis("fc.weight", 1, 49)))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_random_permutation_preserves_the_function(arch, dtype, tol):
    model = build_model(arch, seed=0).to(dtype)
    spec = spec_of(arch)
    perms = random_perms(spec, model, seed=7)
    assert all(not torch.equal(p, torch.arange(p.numel())) for p in perms.values())
    permuted = apply_permutation(spec, model, perms)
    changed = [k for k, t in named_params(model).items() if not torch.equal(t, permuted[k])]
    assert len(changed) >= 3  # the permutation really moves the parameters
    assert max_logit_change(model, permuted, inputs(dtype)) <= tol


@pytest.mark.parametrize("arch,group,dropped", [
    ("rescnn", "conv1", "skip.weight"),  # the skip's input channels
    ("rescnn", "conv2", "skip.bias"),
    ("cnn", "conv2", "fc.weight"),  # the head's columns
    ("mlp", "fc1", "fc2.weight"),
])
def test_an_incomplete_spec_changes_the_function(arch, group, dropped):
    full = spec_of(arch)
    incomplete = PermutationSpec(tuple(
        PermutationGroup(g.name, tuple(ax for ax in g.axes if not (g.name == group and ax.param == dropped)))
        for g in full.groups))
    assert incomplete != full
    model = build_model(arch, seed=0)
    permuted = apply_permutation(incomplete, model, random_perms(full, model, seed=7))
    assert max_logit_change(model, permuted, inputs()) > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_matching_recovers_a_known_permutation(arch):
    spec, a = spec_of(arch), named_params(build_model(arch, seed=0))
    perms = random_perms(spec, a, seed=3)
    b = apply_permutation(spec, a, perms)
    aligned, matching = aligned_params(spec, a, b, torch.Generator().manual_seed(0))
    assert matching.converged and matching.sweeps >= 2  # the last sweep confirms
    for g, p in perms.items():
        assert torch.equal(matching.perms[g], torch.argsort(p))  # the inverse permutation
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    assert matching.objective == pytest.approx(sq_norm(a), rel=1e-12)
    assert matching.identity_objective < matching.objective


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_matching_of_independent_networks(arch):
    model_a, model_b = build_model(arch, seed=0), build_model(arch, seed=1)
    spec = spec_of(arch)
    aligned, matching = aligned_params(spec, model_a, model_b, torch.Generator().manual_seed(0))
    assert matching.converged and matching.objective > matching.identity_objective
    a = named_params(model_a)
    direct = sum(float((a[k].double() * aligned[k].double()).sum()) for k in a)
    assert direct == pytest.approx(matching.objective, rel=1e-9)
    assert all(aligned[k].dtype == torch.float32 for k in aligned)
    assert max_logit_change(model_b, aligned, inputs()) <= 1e-5
    # A local optimum: no single group's assignment can improve on it any more.
    again = weight_matching(spec, a, aligned, torch.Generator().manual_seed(1))
    assert again.sweeps == 1 and all(torch.equal(p, torch.arange(p.numel())) for p in again.perms.values())
    json.dumps(matching.to_dict())


def test_weight_matching_is_deterministic_and_leaves_global_rng_alone():
    spec, a, b = spec_of("rescnn"), build_model("rescnn", seed=0), build_model("rescnn", seed=2)
    state = torch.get_rng_state()
    runs = [weight_matching(spec, a, b, torch.Generator().manual_seed(5)).to_dict() for _ in range(2)]
    assert runs[0] == runs[1]
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_permutation_and_inputs_untouched(arch):
    model = build_model(arch, seed=0)
    spec = spec_of(arch)
    params = dict(model.state_dict())
    before = {k: t.clone() for k, t in params.items()}
    identity = {g: torch.arange(n) for g, n in spec.sizes(params).items()}
    out = apply_permutation(spec, params, identity)
    assert out is not params and out.keys() == params.keys()
    assert all(torch.equal(out[k], before[k]) for k in before)
    apply_permutation(spec, params, random_perms(spec, params, seed=1))
    assert all(torch.equal(params[k], before[k]) for k in before)
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())


def test_state_dict_buffers_are_ignored_when_a_module_is_given():
    a, b = build_model("cnn", seed=0), build_model("cnn", seed=1)
    state = {**b.state_dict(), "extra_buffer": torch.ones(3)}
    assert weight_matching(spec_of("cnn"), a, state, torch.Generator()).to_dict() == \
        weight_matching(spec_of("cnn"), a, b, torch.Generator()).to_dict()


def _spec(*groups) -> PermutationSpec:
    return PermutationSpec.from_plain(groups)


@pytest.mark.parametrize("make,match", [
    (lambda: _spec(("fc1", (("fc1.wieght", 0),))), r"unknown parameter 'fc1.wieght'.*fc1.weight"),
    (lambda: _spec(("fc1", (("fc1.weight", 0), ("fc2.weight", 0)))), r"fc2.weight.*holds 10 units.*256"),
    (lambda: _spec(("fc1", (("fc1.bias", 1),))), r"no dim 1"),
    (lambda: _spec(("fc1", (("fc1.weight", 1, 3),))), r"not divisible by inner=3"),
    (lambda: _spec(("fc1", (("fc1.weight", 0),)), ("again", (("fc1.weight", 0),))), r"claimed by groups"),
    (lambda: _spec(("fc1", (("fc1.weight", 0), ("fc1.weight", 0)))), r"claimed by groups"),
    (lambda: _spec(("fc1", ())), r"permutes no axis"),
    (lambda: _spec(("fc1", (("fc1.weight", 0),)), ("fc1", (("fc1.bias", 0),))), r"names must be unique"),
    (lambda: _spec(("fc1", (("fc1.weight", -1),))), r"bad permuted axis"),
    (lambda: _spec(("fc1", ("fc1.weight", 0))), r"bad permutation group"),
    (lambda: check_spec(None, "the transformer"), r"no permutation specification for the transformer: alignment"),
    (lambda: check_spec("fc1", "mlp"), r"must be a PermutationSpec"),
])
def test_bad_specs_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make().check(build_model("mlp", seed=0))


def test_cnn_head_needs_its_inner_size():
    bad = _spec(("conv2", (("conv2.weight", 0), ("fc.weight", 1))))
    with pytest.raises(ValueError, match=r"fc.weight.*holds 784 units.*16"):
        bad.check(build_model("cnn", seed=0))


@pytest.mark.parametrize("perms,match", [
    ({}, r"perms\['fc1'\] must be a permutation"),
    ({"fc1": torch.zeros(256, dtype=torch.long)}, r"must be a permutation of range\(256\)"),
    ({"fc1": torch.arange(255)}, r"range\(256\)"),
    ({"fc1": torch.arange(256.0)}, r"int64/int32 tensor"),
    ({"fc1": torch.arange(256), "fc2": torch.arange(10)}, r"unknown groups \['fc2'\]"),
])
def test_bad_perms_are_refused(perms, match):
    with pytest.raises(ValueError, match=match):
        apply_permutation(spec_of("mlp"), build_model("mlp", seed=0), perms)


@pytest.mark.parametrize("a,b,match", [
    ("cnn", "rescnn", r"parameter 'skip.weight' is only in params_b"),
    ("rescnn", "cnn", r"parameter 'skip.weight' is only in params_a"),
    ("mlp", "cnn", r"networks differ: parameter"),
])
def test_different_architectures_are_refused(a, b, match):
    with pytest.raises(ValueError, match=match):
        weight_matching(spec_of(a), dict(build_model(a, seed=0).state_dict()),
                        dict(build_model(b, seed=0).state_dict()), torch.Generator())


def test_different_shapes_and_bad_max_iter_are_refused():
    a = named_params(build_model("mlp", seed=0))
    b = {**a, "fc2.bias": torch.zeros(11)}
    with pytest.raises(ValueError, match=r"'fc2.bias' has shape \(10,\) in params_a and \(11,\) in params_b"):
        weight_matching(spec_of("mlp"), a, b, torch.Generator())
    with pytest.raises(ValueError, match=r"max_iter"):
        weight_matching(spec_of("mlp"), a, a, torch.Generator(), max_iter=0)


def test_max_iter_caps_the_sweeps():
    spec, a, b = spec_of("rescnn"), build_model("rescnn", seed=0), build_model("rescnn", seed=1)
    capped = weight_matching(spec, a, b, torch.Generator().manual_seed(0), max_iter=1)
    assert capped.sweeps == 1 and not capped.converged
    assert capped.objective > capped.identity_objective


def test_ties_cannot_loop():
    # Zero networks: every assignment scores 0, so the first sweep improves nothing and stops.
    zeros = {k: torch.zeros_like(t) for k, t in named_params(build_model("rescnn", seed=0)).items()}
    matching = weight_matching(spec_of("rescnn"), zeros, zeros, torch.Generator())
    assert matching.converged and matching.sweeps == 1 and matching.objective == 0.0
    assert all(torch.equal(p, torch.arange(16)) for p in matching.perms.values())
