"""Slices and surfaces: grids, α = 0 is the loss, fitted curvature = vᵀHv on a quadratic, scale-awareness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.conftest import rescaled_relu
from landscape_utils.probes.directions import (
    eigenvector_direction,
    filter_normalised_direction,
    random_direction,
)
from landscape_utils.probes.evaluation import functional_loss
from landscape_utils.probes.params import flatten, named_params
from landscape_utils.probes.slices import (
    centred_grid,
    check_centred_grid,
    linear_slice_losses,
    linear_surface_losses,
    quadratic_fit_curvature,
)


def regression(tiny_data):
    """Linear regression with MSE (exactly quadratic in its 9 parameters) and its exact Hessian."""
    x = tiny_data[0]
    y = x[:, :1] - 0.5 * x[:, 1:2] + 0.1
    torch.manual_seed(0)
    model = nn.Linear(8, 1).double()
    design = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], dim=1)  # params order: weight, bias
    hessian = 2.0 * design.T @ design / 64
    return model, (x, y), hessian


@pytest.mark.parametrize("radius,n", [(0.05, 21), (1.0, 3), (0.3, 31), (1e-3, 7)])
def test_centred_grid_is_symmetric_with_exact_zero(radius, n):
    grid = centred_grid(radius, n)
    assert grid.size == n and grid[n // 2] == 0.0 and grid[0] == -radius and grid[-1] == radius
    np.testing.assert_array_equal(grid, -grid[::-1])
    assert np.all(np.diff(grid) > 0)
    check_centred_grid(grid)


@pytest.mark.parametrize("radius,n", [(0.05, 20), (0.05, 1), (0.0, 5), (-1.0, 5), (float("inf"), 5), (0.1, 5.0)])
def test_centred_grid_rejects_bad_arguments(radius, n):
    with pytest.raises(ValueError):
        centred_grid(radius, n)


@pytest.mark.parametrize("grid,match", [
    ([-0.1, 0.05, 0.1], "0 exactly"),
    ([-0.1, 0.0, 0.2], "symmetric"),
    ([0.1, 0.0, -0.1], "increasing"),
    ([-0.1, 0.0], "at least 3"),
    ([-np.inf, 0.0, np.inf], "finite"),
])
def test_check_centred_grid_rejects(grid, match):
    with pytest.raises(ValueError, match=match):
        check_centred_grid(grid)


@pytest.mark.parametrize("model_name,data_name", [("tiny_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")])
@pytest.mark.parametrize("batch_size", [None, 5])
def test_slice_at_zero_is_exactly_the_loss(request, model_name, data_name, batch_size):
    model, data = request.getfixturevalue(model_name), request.getfixturevalue(data_name)
    dirs = [random_direction(model, 0), filter_normalised_direction(model, 1)]
    res = linear_slice_losses(model, F.cross_entropy, data, dirs, centred_grid(0.5, 9), batch_size=batch_size)
    base = functional_loss(model, F.cross_entropy, data, batch_size=batch_size)
    assert res.losses.shape == (2, 9) and res.errors.shape == (2, 9)
    assert np.all(res.losses[:, 4] == base.loss) and res.loss == base.loss and res.error == base.error
    assert np.all(np.ptp(res.losses, axis=1) > 0)  # the slice does move away from the centre
    assert [d["normalisation"] for d in res.directions] == ["raw", "filter"]
    json.dumps(res.to_dict())


@pytest.mark.parametrize("fit_points", [3, 5, 7])
@pytest.mark.parametrize("kind", ["random", "unit", "eigenvector"])
def test_fitted_curvature_on_a_quadratic_is_vHv(tiny_data, fit_points, kind):
    model, data, hessian = regression(tiny_data)
    v = random_direction(model, 3)
    if kind == "unit":
        v = eigenvector_direction(model, v.flat() / v.flat().norm())
    elif kind == "eigenvector":
        evals, evecs = torch.linalg.eigh(hessian)
        v = eigenvector_direction(model, evecs[:, -1], eigenvalue=evals[-1].item())
    res = linear_slice_losses(model, F.mse_loss, data, v, centred_grid(0.2, 9), fit_points=fit_points)
    vhv = (v.flat() @ hessian @ v.flat()).item()
    assert res.curvatures[0] == pytest.approx(vhv, rel=1e-7)
    assert res.normalised_curvatures[0] == pytest.approx(vhv / v.flat().norm().item() ** 2, rel=1e-7)
    if kind == "eigenvector":
        assert res.normalised_curvatures[0] == pytest.approx(torch.linalg.eigvalsh(hessian)[-1].item(), rel=1e-7)
    assert res.fit_residuals[0] < 1e-10 * max(1.0, res.loss)
    assert res.errors is None and res.error is None  # regression targets


def test_quadratic_fit_recovers_a_known_parabola_and_reports_misfit():
    a = centred_grid(0.1, 11)
    fit = quadratic_fit_curvature(a, 1.0 + 2.0 * a + 1.5 * a**2, fit_points=7)
    assert (fit.curvature, fit.slope, fit.intercept) == pytest.approx((3.0, 2.0, 1.0), rel=1e-10)
    assert fit.residual_rms < 1e-12
    cubic = quadratic_fit_curvature(a, a**3 + 100 * a**4, fit_points=7)
    assert cubic.residual_rms > 1e-6  # a non-quadratic slice shows in the residual
    with pytest.raises(ValueError, match="fit_points"):
        quadratic_fit_curvature(a, a, fit_points=4)
    with pytest.raises(ValueError, match="exceeds"):
        quadratic_fit_curvature(a, a, fit_points=13)


def test_surface_centre_and_axes_are_the_loss_and_the_slices(tiny_mlp, tiny_data):
    u, v = random_direction(tiny_mlp, 0), filter_normalised_direction(tiny_mlp, 1)
    ga, gb = centred_grid(0.3, 5), centred_grid(0.2, 3)
    surf = linear_surface_losses(tiny_mlp, F.cross_entropy, tiny_data, u, v, ga, gb)
    assert surf.losses.shape == (5, 3)
    assert surf.loss == surf.losses[2, 1] == functional_loss(tiny_mlp, F.cross_entropy, tiny_data).loss
    np.testing.assert_array_equal(surf.losses[:, 1], linear_slice_losses(
        tiny_mlp, F.cross_entropy, tiny_data, u, ga).losses[0])
    np.testing.assert_array_equal(surf.losses[2, :], linear_slice_losses(
        tiny_mlp, F.cross_entropy, tiny_data, v, gb).losses[0])
    assert abs(surf.cosine) < 0.5
    json.dumps(surf.to_dict())


def test_surface_of_a_quadratic_is_the_quadratic_form(tiny_data):
    model, data, hessian = regression(tiny_data)
    u, v = random_direction(model, 0), random_direction(model, 1)
    g = centred_grid(0.1, 3)
    surf = linear_surface_losses(model, F.mse_loss, data, u, v, g)
    theta = flatten(named_params(model))
    x, y = data
    design = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], dim=1)
    for i, a in enumerate(g):
        for j, b in enumerate(g):
            p = theta + a * u.flat() + b * v.flat()
            assert surf.losses[i, j] == pytest.approx(((design @ p - y[:, 0]) ** 2).mean().item(), rel=1e-12)
    assert hessian.shape == (9, 9)


@pytest.mark.parametrize("c", [4.0, 0.125, 3.0])
def test_relu_rescaling_leaves_filter_normalised_slices_unchanged(tiny_relu_mlp, tiny_data, c):
    other = rescaled_relu(tiny_relu_mlp, c)
    grid = centred_grid(0.5, 7)
    a, b = (linear_slice_losses(m, F.cross_entropy, tiny_data, [filter_normalised_direction(m, s) for s in (0, 1)],
                                grid) for m in (tiny_relu_mlp, other))
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b.curvatures, a.curvatures, rtol=1e-6)
    # a raw direction (the same draw) sees a different landscape on the rescaled network
    ra, rb = (linear_slice_losses(m, F.cross_entropy, tiny_data, random_direction(m, 0), grid)
              for m in (tiny_relu_mlp, other))
    assert np.max(np.abs(rb.losses - ra.losses)) > 1e-3


@pytest.mark.parametrize("kwargs,match", [
    ({"directions": []}, "at least one"),
    ({"directions": {"weight": torch.zeros(3)}}, "lacks"),
    ({"alphas": [-0.1, 0.1]}, "at least 3"),
    ({"alphas": np.linspace(-0.1, 0.1, 4)}, "0 exactly"),
    ({"fit_points": 9}, "exceeds"),
    ({"fit_points": 2}, "fit_points"),
    ({"batch_size": 0}, "batch_size"),
])
def test_slice_rejects_bad_arguments(tiny_mlp, tiny_data, kwargs, match):
    args = {"directions": random_direction(tiny_mlp, 0), "alphas": centred_grid(0.1, 5), **kwargs}
    with pytest.raises(ValueError, match=match):
        linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, args.pop("directions"), args.pop("alphas"),
                            **args)
