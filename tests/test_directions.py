"""Directions: shapes, normalisations, seeds, eigenvector wrapping."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from landscape_utils.probes.directions import (
    Direction,
    as_direction,
    eigenvector_direction,
    filter_normalised_direction,
    layer_normalised_direction,
    random_direction,
)
from landscape_utils.probes.params import flatten, named_params


MODELS = ["tiny_mlp", "tiny_cnn", "tiny_relu_mlp"]
MAKERS = {"raw": random_direction, "filter": filter_normalised_direction, "layer": layer_normalised_direction}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_direction_matches_parameters_and_records_normalisation(request, model_name, kind):
    model = request.getfixturevalue(model_name)
    d = MAKERS[kind](model, 7)
    theta = named_params(model)
    assert list(d.tensors) == list(theta)
    assert all(d.tensors[k].shape == t.shape and d.tensors[k].dtype == t.dtype for k, t in theta.items())
    assert d.normalisation == kind and d.seed == 7
    info = d.to_dict()
    assert info["normalisation"] == kind and info["seed"] == 7 and info["n_params"] == flatten(theta).numel()
    json.dumps(info)


def test_raw_direction_is_standard_normal_in_parameter_order(tiny_mlp):
    g = torch.Generator().manual_seed(3)
    expected = torch.cat([torch.randn(t.shape, generator=g, dtype=t.dtype).reshape(-1)
                          for t in named_params(tiny_mlp).values()])
    assert torch.equal(random_direction(tiny_mlp, 3).flat(), expected)
    # a caller's generator gives the same numbers, but no recorded seed
    d = random_direction(tiny_mlp, torch.Generator().manual_seed(3))
    assert torch.equal(d.flat(), expected) and d.seed is None


@pytest.mark.parametrize("model_name", MODELS)
def test_filter_normalised_filters_have_their_filters_norm_and_biases_zero(request, model_name):
    model = request.getfixturevalue(model_name)
    d = filter_normalised_direction(model, 0)
    for name, theta in named_params(model).items():
        t = d.tensors[name]
        if theta.dim() <= 1:
            assert torch.count_nonzero(t) == 0, name
        else:
            got = t.reshape(t.shape[0], -1).norm(dim=1)
            want = theta.reshape(theta.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("model_name", MODELS)
def test_layer_normalised_tensors_have_their_tensors_norm_and_biases_zero(request, model_name):
    model = request.getfixturevalue(model_name)
    d = layer_normalised_direction(model, 0)
    for name, theta in named_params(model).items():
        t = d.tensors[name]
        if theta.dim() <= 1:
            assert torch.count_nonzero(t) == 0, name
        else:
            assert t.norm().item() == pytest.approx(theta.norm().item(), rel=1e-12)
            rows = t.reshape(t.shape[0], -1).norm(dim=1) / theta.reshape(theta.shape[0], -1).norm(dim=1)
            assert rows.std() > 1e-3  # rescaled as a whole, not per filter


def test_normalised_directions_are_rescaled_raw_draws(tiny_cnn):
    raw = random_direction(tiny_cnn, 4).tensors
    for maker in (filter_normalised_direction, layer_normalised_direction):
        d = maker(tiny_cnn, 4).tensors
        for name, t in d.items():
            if t.dim() > 1:  # same draw, positively rescaled filter by filter
                ratio = (t / raw[name]).reshape(t.shape[0], -1)
                assert torch.all(ratio > 0)
                torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)


def test_zero_filter_gives_zero_direction_not_nan():
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight[0] = 0.0
    d = filter_normalised_direction(model, 0).tensors["weight"]
    assert torch.all(d[0] == 0) and torch.all(torch.isfinite(d)) and d[1].norm() > 0


def test_filter_norms_follow_the_reference(tiny_mlp):
    reference = {k: 3.0 * t for k, t in named_params(tiny_mlp).items()}
    d = filter_normalised_direction(tiny_mlp, 0, reference=reference).tensors["0.weight"]
    torch.testing.assert_close(d.norm(dim=1), reference["0.weight"].norm(dim=1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_same_seed_same_direction_different_seed_different(tiny_cnn, kind):
    make = MAKERS[kind]
    assert torch.equal(make(tiny_cnn, 11).flat(), make(tiny_cnn, 11).flat())
    assert not torch.equal(make(tiny_cnn, 11).flat(), make(tiny_cnn, 12).flat())


def test_eigenvector_direction_wraps_a_flat_vector(tiny_mlp):
    v = torch.randn(flatten(named_params(tiny_mlp)).numel(), dtype=torch.float64)
    d = eigenvector_direction(tiny_mlp, v, eigenvalue=2.5, index=0)
    assert torch.equal(d.flat(), v) and d.normalisation == "eigenvector"
    assert d.to_dict()["eigenvalue"] == 2.5 and d.to_dict()["index"] == 0
    assert torch.equal(eigenvector_direction(tiny_mlp, v.float()).flat(), v.float().double())
    with pytest.raises(ValueError, match="expected"):
        eigenvector_direction(tiny_mlp, v[:-1])


def test_as_direction_checks_and_labels_plain_dicts(tiny_mlp):
    theta = named_params(tiny_mlp)
    d = as_direction(tiny_mlp, {k: torch.ones_like(t) for k, t in theta.items()})
    assert isinstance(d, Direction) and d.normalisation == "custom"
    with pytest.raises(ValueError, match="shape"):
        as_direction(tiny_mlp, {k: torch.ones(2, dtype=t.dtype) for k, t in theta.items()})
    with pytest.raises(ValueError, match="lacks"):
        as_direction(tiny_mlp, {})


@pytest.mark.parametrize("generator", [None, 1.5, "0", True])
def test_bad_generator_is_rejected(tiny_mlp, generator):
    with pytest.raises(ValueError, match="generator"):
        random_direction(tiny_mlp, generator)
