"""Slices and surfaces: grids, α = 0 is the loss, fitted curvature = vᵀHv on a quadratic, scale-awareness;
local curvature vᵀHv (one HVP) against the finite-scale fit on smooth and ReLU models."""

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
from landscape_utils.probes.params import flatten, named_params, unflatten
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
    assert res.fitted_curvatures[0] == pytest.approx(vhv, rel=1e-7)
    assert res.normalised_fitted_curvatures[0] == pytest.approx(vhv / v.flat().norm().item() ** 2, rel=1e-7)
    assert res.local_curvatures[0] == pytest.approx(vhv, rel=1e-10)  # one HVP: exact
    assert res.normalised_local_curvatures[0] == pytest.approx(vhv / v.flat().norm().item() ** 2, rel=1e-10)
    assert res.fit_radius == pytest.approx(0.05 * (fit_points // 2))  # grid step 0.05
    if kind == "eigenvector":
        top = torch.linalg.eigvalsh(hessian)[-1].item()
        assert res.normalised_fitted_curvatures[0] == pytest.approx(top, rel=1e-7)
        assert res.normalised_local_curvatures[0] == pytest.approx(top, rel=1e-10)
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
    np.testing.assert_allclose(b.fitted_curvatures, a.fitted_curvatures, rtol=1e-6)
    np.testing.assert_allclose(b.local_curvatures, a.local_curvatures, rtol=1e-9)
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
    ({"local_curvature": "yes"}, "local_curvature"),
    ({"batch_size": 0}, "batch_size"),
])
def test_slice_rejects_bad_arguments(tiny_mlp, tiny_data, kwargs, match):
    args = {"directions": random_direction(tiny_mlp, 0), "alphas": centred_grid(0.1, 5), **kwargs}
    with pytest.raises(ValueError, match=match):
        linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, args.pop("directions"), args.pop("alphas"),
                            **args)


# ------------------------------------------------------------------ local (dᵀHd) against fitted curvature


def exact_hessian(model: nn.Module, loss_fn, data) -> torch.Tensor:
    """(P, P) Hessian of the mean loss over ``data`` by ``torch.autograd.functional.hessian`` (float64)."""
    from torch.func import functional_call

    theta = named_params(model)
    x, y = data
    return torch.autograd.functional.hessian(
        lambda flat: loss_fn(functional_call(model, unflatten(flat, theta), (x,)), y), flatten(theta).clone())


def test_smooth_model_fitted_curvature_tends_to_the_local_one(tiny_mlp, tiny_data):
    d = random_direction(tiny_mlp, 0)
    vhv = (d.flat() @ exact_hessian(tiny_mlp, F.cross_entropy, tiny_data) @ d.flat()).item()
    radii = [0.1, 0.05, 0.025, 0.0125, 0.00625, 1e-3]
    rel = []
    for r in radii:
        res = linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, d, centred_grid(r, 5))
        assert res.fit_radius == r and res.hvp_path == "autograd"
        assert res.local_curvatures[0] == pytest.approx(vhv, rel=1e-10)  # the same at every radius
        rel.append(abs(res.fitted_curvatures[0] / vhv - 1))
    assert np.all(np.diff(rel) < 0)  # monotone approach as the radius shrinks ...
    assert 3.0 < rel[-3] / rel[-2] < 5.0  # ... at the O(r²) rate of a 5-point fit
    assert rel[-1] < 1e-4  # and tight at small r
    assert rel[0] > 0.05  # while at r = 0.1 the fit is a different (finite-scale) quantity


def relu_margin(model: nn.Sequential, direction, x: torch.Tensor) -> float:
    """Smallest |z|/|dz| over the hidden pre-activations z(α) = z + α·dz: no kink is crossed for |α| below it."""
    t = direction.tensors
    z = x @ model[0].weight.T + model[0].bias
    dz = x @ t["0.weight"].T + t["0.bias"]
    return (z.abs() / dz.abs()).min().item()


@pytest.mark.parametrize("make", [lambda m: random_direction(m, 0), lambda m: filter_normalised_direction(m, 1),
                                  lambda m: random_direction(m, 5)], ids=["raw", "filter", "raw-5"])
def test_relu_local_curvature_is_the_central_second_difference(tiny_relu_mlp, tiny_data, make):
    model, d = tiny_relu_mlp, make(tiny_relu_mlp)
    res = linear_slice_losses(model, F.cross_entropy, tiny_data, d, centred_grid(0.1, 5))
    margin = relu_margin(model, d, tiny_data[0])
    h = margin / 10
    assert h < margin  # θ ± h·d stay in θ's linear region: the slice is smooth on [−h, h]
    theta = named_params(model)
    loss = lambda a: functional_loss(model, F.cross_entropy, tiny_data,  # noqa: E731
                                     {n: theta[n] + a * d.tensors[n] for n in theta}).loss
    second_difference = (loss(h) - 2 * loss(0.0) + loss(-h)) / h**2
    rounding = 8 * np.finfo(np.float64).eps * loss(0.0) / h**2
    assert res.local_curvatures[0] == pytest.approx(second_difference, rel=1e-5, abs=rounding)
    vhv = (d.flat() @ exact_hessian(model, F.cross_entropy, tiny_data) @ d.flat()).item()
    assert res.local_curvatures[0] == pytest.approx(vhv, rel=1e-10)
    # a 3-point fit at radius h is that second difference (to rounding); at radius 0.1 the fit crosses kinks
    # and is not the curvature at 0 (here off by more than 50%)
    small = linear_slice_losses(model, F.cross_entropy, tiny_data, d, [-h, 0.0, h], fit_points=3)
    assert small.fitted_curvatures[0] == pytest.approx(second_difference, rel=1e-9, abs=rounding)
    assert abs(res.fitted_curvatures[0] / res.local_curvatures[0] - 1) > 0.5


@pytest.mark.parametrize("which", [-1, 0, 93])  # top, bottom (negative) and a middle eigenvalue
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_local_curvature_along_an_eigenvector_is_its_eigenvalue(tiny_mlp, tiny_data, which, scale):
    evals, evecs = torch.linalg.eigh(exact_hessian(tiny_mlp, F.cross_entropy, tiny_data))
    lam = evals[which].item()
    d = eigenvector_direction(tiny_mlp, scale * evecs[:, which], eigenvalue=lam)
    res = linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, d, centred_grid(0.01, 5))
    tol = 1e-10 * evals.abs().max().item()
    assert res.normalised_local_curvatures[0] == pytest.approx(lam, abs=tol)
    assert res.local_curvatures[0] == pytest.approx(scale**2 * lam, abs=scale**2 * tol)
    if which == 0:
        assert lam < 0  # tiny_mlp is not at a minimum: the sign is kept


def test_slice_curvatures_leave_the_model_unchanged(tiny_data):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 4)).double()
    model.train()
    model[3].eval()
    with torch.no_grad():  # non-trivial running statistics
        model(tiny_data[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    res = linear_slice_losses(model, F.cross_entropy, tiny_data, [random_direction(model, 0),
                                                                  filter_normalised_direction(model, 1)],
                              centred_grid(0.05, 5))
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert res.local_curvatures.shape == (2,) and np.all(np.isfinite(res.local_curvatures))
    # evaluated in eval mode, as the slice's losses are: dᵀHd of the eval-mode loss
    model.eval()
    d = random_direction(model, 0).flat()
    assert res.local_curvatures[0] == pytest.approx((d @ exact_hessian(model, F.cross_entropy, tiny_data) @ d).item(),
                                                    rel=1e-9)


def test_slice_result_fields_and_deprecated_aliases(tiny_mlp, tiny_data):
    dirs = [random_direction(tiny_mlp, 0), filter_normalised_direction(tiny_mlp, 1)]
    res = linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, dirs, centred_grid(0.2, 9), fit_points=7)
    assert res.fit_points == 7 and res.fit_radius == pytest.approx(0.15)
    norms = np.array([d.norm() ** 2 for d in dirs])
    np.testing.assert_allclose(res.normalised_local_curvatures, res.local_curvatures / norms, rtol=1e-12)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(res.curvatures, res.fitted_curvatures)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(res.normalised_curvatures, res.normalised_fitted_curvatures)
    out = json.loads(json.dumps(res.to_dict()))
    assert {"local_curvatures", "normalised_local_curvatures", "hvp_path", "fitted_curvatures",
            "normalised_fitted_curvatures", "fit_radius", "curvatures", "normalised_curvatures"} <= set(out)
    assert out["curvatures"] == out["fitted_curvatures"]
    assert out["normalised_curvatures"] == out["normalised_fitted_curvatures"]
    off = linear_slice_losses(tiny_mlp, F.cross_entropy, tiny_data, dirs, centred_grid(0.2, 9), fit_points=7,
                              local_curvature=False)
    assert off.local_curvatures is None and off.normalised_local_curvatures is None and off.hvp_path is None
    np.testing.assert_array_equal(off.losses, res.losses)
    np.testing.assert_array_equal(off.fitted_curvatures, res.fitted_curvatures)
    json.dumps(off.to_dict())
