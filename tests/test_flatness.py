"""Flatness: quadratic-loss prediction ½σ²·tr(H), sign, seeds, scale-awareness under ReLU rescaling.

The antithetic estimator, E|ΔL| and the second-order ratio: tests/test_flatness_antithetic.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from tests.conftest import rescaled_relu
from landscape_utils.probes.directions import gaussian_like
from landscape_utils.probes.flatness import (
    isotropic_trace_prediction,
    noise_scales,
    perturbation_loss_changes,
)
from landscape_utils.probes.params import flatten, named_params, unflatten


def exact_hessian(model: nn.Module, loss_fn, data) -> torch.Tensor:
    """(P, P) Hessian of the mean loss over ``data`` w.r.t. the flat trainable parameters.

    Row by row from one first-order graph (cheaper than torch.autograd.functional.hessian).
    """
    theta = named_params(model)
    x, y = data
    flat = flatten(theta).clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss_fn(functional_call(model, unflatten(flat, theta), (x,)), y), flat,
                                create_graph=True)
    return torch.stack([torch.autograd.grad(grad[i], flat, retain_graph=True)[0] for i in range(flat.numel())])


def regression(tiny_data, at_minimum: bool):
    """Linear regression with MSE: a loss exactly quadratic in its 9 parameters."""
    x = tiny_data[0]
    g = torch.Generator().manual_seed(2)
    y = x @ torch.randn(8, 1, generator=g, dtype=torch.float64) + 0.3 * torch.randn(64, 1, generator=g,
                                                                                   dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(8, 1).double()
    if at_minimum:
        design = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], dim=1)
        sol = torch.linalg.lstsq(design, y).solution  # (9, 1)
        with torch.no_grad():
            model.weight.copy_(sol[:8].T)
            model.bias.copy_(sol[8])
    return model, (x, y)


@pytest.mark.parametrize("at_minimum", [True, False])
@pytest.mark.parametrize("sigma", [0.01, 0.3])
def test_isotropic_mean_matches_half_sigma_squared_trace(tiny_data, at_minimum, sigma):
    model, data = regression(tiny_data, at_minimum)
    trace = exact_hessian(model, F.mse_loss, data).trace().item()
    res = perturbation_loss_changes(model, F.mse_loss, data, [sigma], 0, n_draws=64)
    pred = isotropic_trace_prediction([sigma], trace).prediction[0]
    assert res.ci_low[0] <= pred <= res.ci_high[0]
    assert res.error_changes is None and res.base_error is None  # regression: no error
    # the interval is informative: excludes 0 and is narrower than the prediction at the minimum
    if at_minimum:
        assert res.ci_low[0] > 0 and res.ci_high[0] - res.ci_low[0] < pred


@pytest.mark.parametrize("antithetic", [False, True])
def test_each_draw_at_a_quadratic_minimum_is_half_sigma_squared_eps_h_eps(tiny_data, antithetic):
    model, data = regression(tiny_data, at_minimum=True)
    hess = exact_hessian(model, F.mse_loss, data)
    sigmas = [0.05, 0.2]
    res = perturbation_loss_changes(model, F.mse_loss, data, sigmas, 9, n_draws=8, antithetic=antithetic)
    n_eps = 4 if antithetic else 8  # one ε per pair, or per plain draw
    g = torch.Generator().manual_seed(9)
    eps = torch.stack([flatten(gaussian_like(named_params(model), g)) for _ in range(n_eps)])  # (M, P)
    quad = 0.5 * torch.einsum("kp,pq,kq->k", eps, hess, eps).numpy()
    expected = np.array(sigmas)[:, None] ** 2 * quad[None, :]
    assert res.changes.shape == (2, n_eps) and res.n_changes == n_eps and res.antithetic is antithetic
    np.testing.assert_allclose(res.changes, expected, rtol=1e-7, atol=1e-14)


def test_sign_is_kept_at_a_maximum(tiny_data):
    model, data = regression(tiny_data, at_minimum=True)
    res = perturbation_loss_changes(model, lambda o, t: -F.mse_loss(o, t), data, [0.1, 0.2], 0, n_draws=16)
    assert np.all(res.mean < 0) and np.all(res.changes < 0)
    np.testing.assert_array_equal(res.abs_mean, -res.mean)
    np.testing.assert_allclose(res.mean_abs, -res.mean, rtol=1e-12)


@pytest.mark.parametrize("antithetic,n_changes,t_quantile", [
    (False, 8, 2.364624251592785),  # t_{0.975, 7}: 8 plain draws
    (True, 4, 3.182446305284263),   # t_{0.975, 3}: 4 antithetic pairs for the same 8 evaluations
])
def test_statistics_are_those_of_the_raw_draws(tiny_mlp, tiny_data, antithetic, n_changes, t_quantile):
    res = perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, [0.01, 0.1, 0.5], 1, n_draws=8,
                                    antithetic=antithetic)
    assert res.changes.shape == (3, n_changes) and res.error_changes.shape == (3, n_changes)
    assert res.one_sided_changes.shape == (3, 8) and res.n_draws == res.n_evaluations == 8
    assert res.n_changes == n_changes
    np.testing.assert_allclose(res.mean, res.changes.mean(1), rtol=1e-12)
    np.testing.assert_allclose(res.std, res.changes.std(1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(res.stderr, res.std / np.sqrt(n_changes), rtol=1e-12)
    np.testing.assert_allclose(res.error_mean, res.error_changes.mean(1), rtol=1e-12)
    half = t_quantile * res.std / np.sqrt(n_changes)
    np.testing.assert_allclose(res.ci_high - res.mean, half, rtol=1e-9)
    np.testing.assert_allclose(res.mean - res.ci_low, half, rtol=1e-9)
    np.testing.assert_allclose(res.mean_abs, np.abs(res.one_sided_changes).mean(1), rtol=1e-12)
    assert np.all(np.diff(res.mean_abs) > 0)  # larger noise, larger change
    json.dumps(res.to_dict())


@pytest.mark.parametrize("noise", ["isotropic", "filter", "magnitude"])
def test_same_seed_same_draws_different_seed_different(tiny_mlp, tiny_data, noise):
    run = lambda seed: perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, [0.05], seed,  # noqa: E731
                                                 noise=noise, n_draws=4).changes
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_noise_scales_definitions(tiny_cnn):
    theta = named_params(tiny_cnn)
    filt, mag = noise_scales(theta, "filter"), noise_scales(theta, "magnitude")
    for name, t in theta.items():
        torch.testing.assert_close(mag[name], t.abs(), rtol=0, atol=0)
        rows, s = t.reshape(t.shape[0], -1), filt[name].reshape(t.shape[0], -1)
        # E‖δ_j‖² = σ²·Σ s² over the filter = σ²‖θ_j‖²: each filter's RMS relative perturbation is σ
        torch.testing.assert_close((s**2).sum(1), (rows**2).sum(1), rtol=1e-12, atol=0)
        assert torch.all(s == s[:, :1])  # one scale per filter
    assert torch.equal(filt["0.bias"], theta["0.bias"].abs())  # a bias entry is its own filter


def test_relu_rescaling_keeps_function_and_changes_raw_lambda_max(tiny_relu_mlp, tiny_data):
    model, other = tiny_relu_mlp, rescaled_relu(tiny_relu_mlp, 4.0)
    with torch.no_grad():
        torch.testing.assert_close(other(tiny_data[0]), model(tiny_data[0]), rtol=1e-13, atol=1e-13)
    lam = [torch.linalg.eigvalsh(exact_hessian(m, F.cross_entropy, tiny_data))[-1].item() for m in (model, other)]
    assert abs(lam[1] / lam[0] - 1) > 0.5  # raw λmax moves with a function-preserving rescaling


@pytest.mark.parametrize("c", [4.0, 0.125, 3.0])
@pytest.mark.parametrize("noise", ["filter", "magnitude"])
def test_relu_rescaling_leaves_scale_aware_flatness_unchanged(tiny_relu_mlp, tiny_data, c, noise):
    model, other = tiny_relu_mlp, rescaled_relu(tiny_relu_mlp, c)
    sig = [0.05, 0.2]
    a, b = (perturbation_loss_changes(m, F.cross_entropy, tiny_data, sig, 5, noise=noise, n_draws=6)
            for m in (model, other))
    np.testing.assert_allclose(b.changes, a.changes, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(b.error_changes, a.error_changes)
    assert np.all(a.mean_abs > 1e-4)  # the perturbations do change the loss


def test_relu_rescaling_changes_isotropic_flatness(tiny_relu_mlp, tiny_data):
    a, b = (perturbation_loss_changes(m, F.cross_entropy, tiny_data, [0.05, 0.2], 5, n_draws=6)
            for m in (tiny_relu_mlp, rescaled_relu(tiny_relu_mlp, 4.0)))
    assert np.max(np.abs(b.mean - a.mean)) > 1e-3  # isotropic flatness is not scale-aware


def test_trace_prediction():
    p = isotropic_trace_prediction([0.1, 0.2], 10.0, trace_stderr=2.0)
    np.testing.assert_allclose(p.prediction, [0.05, 0.2])
    np.testing.assert_allclose(p.prediction_stderr, [0.01, 0.04])
    json.dumps(p.to_dict())


@pytest.mark.parametrize("kwargs,match", [
    ({"sigmas": [0.0]}, "sigmas"),
    ({"sigmas": [-0.1]}, "sigmas"),
    ({"sigmas": []}, "sigmas"),
    ({"sigmas": [float("nan")]}, "sigmas"),
    ({"noise": "gaussian"}, "noise"),
    ({"n_draws": 1}, "n_draws"),
    ({"n_draws": 2.0}, "n_draws"),
    ({"n_draws": 1, "antithetic": False}, "n_draws"),
    ({"n_draws": 3}, "even int >= 4"),  # antithetic by default: pairs need an even count
    ({"n_draws": 2}, "even int >= 4"),  # one pair gives no interval
    ({"n_draws": 7}, "even int >= 4"),
    ({"antithetic": 1}, "antithetic"),
    ({"confidence": 1.0}, "confidence"),
    ({"generator": None}, "generator"),
])
def test_bad_arguments_are_rejected(tiny_mlp, tiny_data, kwargs, match):
    args = {"sigmas": [0.1], "generator": 0, **kwargs}
    sigmas, generator = args.pop("sigmas"), args.pop("generator")
    with pytest.raises(ValueError, match=match):
        perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, sigmas, generator, **args)
