"""Connectivity: endpoints, exact zero barrier between identical points, constructed barriers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape_utils.probes.connectivity import (
    check_path_alphas,
    linear_path_losses,
    path_alphas,
    path_barrier,
)
from landscape_utils.probes.evaluation import functional_loss
from landscape_utils.probes.params import flatten, named_params


def shifted(model: nn.Module, seed: int, scale: float = 0.5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in named_params(model).items()}


@pytest.mark.parametrize("model_name,data_name", [("tiny_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")])
@pytest.mark.parametrize("n_points,batch_size", [(25, None), (31, 7), (3, 5)])
def test_path_endpoints_are_the_endpoint_losses(request, model_name, data_name, n_points, batch_size):
    model, data = request.getfixturevalue(model_name), request.getfixturevalue(data_name)
    theta_a, theta_b = shifted(model, 0), shifted(model, 1)
    res = linear_path_losses(model, F.cross_entropy, data, theta_a, theta_b, n_points=n_points, batch_size=batch_size)
    la = functional_loss(model, F.cross_entropy, data, theta_a, batch_size=batch_size)
    lb = functional_loss(model, F.cross_entropy, data, theta_b, batch_size=batch_size)
    assert res.alphas.size == n_points and res.alphas[0] == 0.0 and res.alphas[-1] == 1.0
    assert (res.losses[0], res.losses[-1], res.start_loss, res.end_loss) == (la.loss, lb.loss, la.loss, lb.loss)
    assert (res.errors[0], res.errors[-1]) == (la.error, lb.error)
    assert res.loss_barrier.barrier >= 0 and res.error_barrier.barrier >= 0
    assert len(set(res.losses.tolist())) > n_points // 2  # the path really moves
    json.dumps(res.to_dict())


def test_barrier_between_identical_points_is_exactly_zero(tiny_cnn, tiny_image_data):
    theta = shifted(tiny_cnn, 3)
    res = linear_path_losses(tiny_cnn, F.cross_entropy, tiny_image_data, theta, dict(theta))
    assert np.all(res.losses == res.losses[0]) and np.all(res.errors == res.errors[0])
    assert res.loss_barrier.barrier == 0.0 and res.error_barrier.barrier == 0.0


@pytest.mark.parametrize("alphas,values,barrier,at", [
    ([0, 0.25, 0.5, 0.75, 1], [1, 2, 5, 2, 3], 3.0, 0.5),  # chord at 0.5 is 2
    ([0, 0.5, 1], [1, 1, 1], 0.0, 0.0),  # flat: the endpoints give 0
    ([0, 0.5, 1], [2, 0, 2], 0.0, 0.0),  # convex: no barrier
    ([0, 0.25, 0.5, 1], [0, 1, 0.5, 2], 0.5, 0.25),  # chord 0.5 at 0.25
    ([0, 0.1, 1], [0.3, 0.3, 0.1], 0.02, 0.1),  # unequal endpoints: chord 0.28 at 0.1
])
def test_path_barrier_on_constructed_curves(alphas, values, barrier, at):
    b = path_barrier(alphas, values)
    assert b.barrier == pytest.approx(barrier, abs=1e-15) and b.alpha == at


def test_barrier_on_a_concave_quadratic_path(tiny_data):
    # L = −MSE of linear regression: along the line the excess is ½α(1−α)·dᵀH_mse·d, peak at α = ½.
    x = tiny_data[0]
    y = x[:, :1] + 0.2
    torch.manual_seed(0)
    model = nn.Linear(8, 1).double()
    theta_a, theta_b = shifted(model, 0), shifted(model, 1)
    design = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], dim=1)
    d = flatten(theta_b) - flatten(theta_a)
    expected = (d @ (2 * design.T @ design / 64) @ d).item() / 8
    res = linear_path_losses(model, lambda o, t: -F.mse_loss(o, t), (x, y), theta_a, theta_b)
    assert res.loss_barrier.barrier == pytest.approx(expected, rel=1e-10) and res.loss_barrier.alpha == 0.5
    assert res.errors is None and res.error_barrier is None
    convex = linear_path_losses(model, F.mse_loss, (x, y), theta_a, theta_b)
    assert convex.loss_barrier.barrier == 0.0  # a convex loss has no barrier


def test_endpoints_as_state_dicts_modules_or_dicts_agree(tiny_data):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)).double()
    init, final = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for p in final.parameters():
            p.add_(0.3 * torch.randn_like(p))
    # init -> final path, given three ways
    ways = [(init.state_dict(), final.state_dict()), (init, final), (named_params(init), named_params(final)),
            (init.float().double().state_dict(), {k: v.float() for k, v in final.state_dict().items()})]
    results = [linear_path_losses(model, F.cross_entropy, tiny_data, a, b, n_points=5).losses for a, b in ways[:3]]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    cast = linear_path_losses(model, F.cross_entropy, tiny_data, *ways[3], n_points=5).losses
    np.testing.assert_allclose(cast, results[0], rtol=1e-5)


def test_path_alphas():
    a = path_alphas()
    assert a.size == 25 and a[0] == 0.0 and a[-1] == 1.0 and a[12] == 0.5
    np.testing.assert_allclose(np.diff(a), 1 / 24, rtol=1e-12)
    assert path_alphas(31)[-1] == 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"n_points": 2}, "n_points"),
    ({"n_points": 25.0}, "n_points"),
    ({"alphas": [0.0, 0.5, 0.9]}, "end at 1"),
    ({"alphas": [0.1, 0.5, 1.0]}, "start at 0"),
    ({"alphas": [0.0, 0.6, 0.5, 1.0]}, "increasing"),
    ({"end": {"0.weight": torch.zeros(14, 8, dtype=torch.float64)}}, "lacks"),
    ({"end": "wrong shape"}, "shape"),
])
def test_path_rejects_bad_arguments(tiny_mlp, tiny_data, kwargs, match):
    args = {"start": named_params(tiny_mlp), "end": shifted(tiny_mlp, 1), **kwargs}
    if isinstance(args["end"], str):
        args["end"] = {k: t[..., :1] for k, t in named_params(tiny_mlp).items()}
    with pytest.raises(ValueError, match=match):
        linear_path_losses(tiny_mlp, F.cross_entropy, tiny_data, args.pop("start"), args.pop("end"), **args)


def test_check_path_alphas_and_barrier_reject_bad_values():
    with pytest.raises(ValueError, match="at least 3"):
        check_path_alphas([0.0, 1.0])
    with pytest.raises(ValueError, match="one per alpha"):
        path_barrier([0.0, 0.5, 1.0], [1.0, 2.0])
    # a diverged path is reported, not refused
    assert np.isnan(path_barrier([0.0, 0.5, 1.0], [1.0, np.nan, 2.0]).barrier)
    assert np.isnan(path_barrier([0.0, 0.5, 1.0], [np.inf, 1.0, 2.0]).barrier)
    inf = path_barrier([0.0, 0.5, 1.0], [1.0, np.inf, 2.0])
    assert inf.barrier == np.inf and inf.alpha == 0.5
