"""Antithetic flatness: E[ΔL] by ±δ pairs (curvature) against E|ΔL| (gradient norm), the second-order ratio,
and the standard-error gain on a trained study model at the study's σ."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.conftest import SHARED_DATA
from landscape_utils.probes.directions import gaussian_like
from landscape_utils.probes.evaluation import functional_loss
from landscape_utils.probes.flatness import (
    isotropic_trace_prediction,
    perturbation_loss_changes,
    second_order_prediction,
    second_order_ratio,
)
from landscape_utils.probes.params import named_params

P = 12


class Quadratic(nn.Module):
    """Outputs its parameter vector θ for every sample; with :func:`quadratic_loss` L(θ) = gᵀθ + ½θᵀAθ."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(x.shape[0], -1)


def quadratic_problem(grad_scale: float):
    """(model, loss_fn, data, g, A): L(θ) = gᵀθ + ½θᵀAθ exactly, A positive definite, ‖g‖ ∝ grad_scale."""
    gen = torch.Generator().manual_seed(7)
    m = torch.randn(P, P, generator=gen, dtype=torch.float64)
    a = m @ m.T / P + 0.1 * torch.eye(P, dtype=torch.float64)
    g = grad_scale * torch.randn(P, generator=gen, dtype=torch.float64)
    theta = torch.zeros(P, dtype=torch.float64)  # the gradient at θ = 0 is g itself

    def loss_fn(out, _targets):
        return (out @ g + 0.5 * torch.einsum("np,pq,nq->n", out, a, out)).mean()

    data = (torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))  # non-class targets
    return Quadratic(theta), loss_fn, data, g, a


def eps_draws(model: nn.Module, seed: int, n: int) -> torch.Tensor:
    """The first n ε the probe draws from ``seed`` (isotropic noise: δ = σε), as (n, P)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([gaussian_like(named_params(model), g)["theta"] for _ in range(n)])


SIGMAS = [0.01, 0.1, 1.0]


@pytest.mark.parametrize("grad_scale", [0.0, 1.0, 10.0, 1000.0])
def test_antithetic_pair_is_the_quadratic_term_alone_whatever_the_gradient(grad_scale):
    model, loss_fn, data, g, a = quadratic_problem(grad_scale)
    res = perturbation_loss_changes(model, loss_fn, data, SIGMAS, 3, n_draws=16)
    eps = eps_draws(model, 3, 8)
    quad = 0.5 * torch.einsum("kp,pq,kq->k", eps, a, eps).numpy()  # ½εᵀAε per pair, no g in it
    expected = np.array(SIGMAS)[:, None] ** 2 * quad[None, :]
    assert res.antithetic and res.changes.shape == (3, 8) and res.n_changes == 8 and res.n_evaluations == 16
    # every pair equals ½δᵀAδ exactly, to the rounding of L(θ ± δ) (whose size grows with |gᵀδ|)
    first_order = np.abs(np.array(SIGMAS)[:, None] * (eps @ g).numpy()[None, :])
    assert np.all(np.abs(res.changes - expected) <= 1e-9 * expected + 1e-14 * (1 + first_order))
    # its mean is an estimate of ½σ²·tr(A) whose interval holds the exact value
    pred = second_order_prediction(SIGMAS, torch.trace(a).item()).prediction
    assert np.all(res.ci_low <= pred) and np.all(pred <= res.ci_high)


def test_plain_variance_grows_with_the_gradient_and_antithetic_does_not():
    rows = []
    for grad_scale in (0.0, 1.0, 10.0, 100.0):
        model, loss_fn, data, g, a = quadratic_problem(grad_scale)
        anti = perturbation_loss_changes(model, loss_fn, data, [0.1], 5, n_draws=32)
        plain = perturbation_loss_changes(model, loss_fn, data, [0.1], 5, n_draws=32, antithetic=False)
        # plain draws: ΔL = σgᵀε + ½σ²εᵀAε, exactly
        eps = eps_draws(model, 5, 32)
        exact = 0.1 * (eps @ g) + 0.005 * torch.einsum("kp,pq,kq->k", eps, a, eps)
        np.testing.assert_allclose(plain.changes[0], exact.numpy(), rtol=1e-9, atol=1e-12)
        rows.append((grad_scale, anti.std[0], plain.std[0], anti.changes[0]))
    anti_std, plain_std = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    for r in rows[1:]:  # the antithetic samples do not see g at all
        np.testing.assert_allclose(r[3], rows[0][3], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(anti_std, anti_std[0], rtol=1e-5)
    assert np.all(np.diff(plain_std) > 0)  # plain spread grows with ‖g‖ ...
    assert plain_std[-1] > 100 * anti_std[-1]  # ... and dwarfs the curvature signal


@pytest.mark.parametrize("n_draws,antithetic,ok", [
    (2, True, False), (3, True, False), (5, True, False), (4, True, True), (6, True, True),
    (2, False, True), (3, False, True),
])
def test_draw_counts(tiny_mlp, tiny_data, n_draws, antithetic, ok):
    call = lambda: perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, [0.05], 0,  # noqa: E731
                                             n_draws=n_draws, antithetic=antithetic)
    if not ok:
        with pytest.raises(ValueError, match="antithetic=True it must be an even int >= 4"):
            call()
        return
    res = call()
    assert res.n_evaluations == n_draws and res.n_changes == (n_draws // 2 if antithetic else n_draws)
    assert res.one_sided_changes.shape == (1, n_draws)


@pytest.mark.parametrize("grad_scale", [0.0, 50.0])
def test_mean_abs_counts_both_sides(grad_scale):
    model, loss_fn, data, g, a = quadratic_problem(grad_scale)
    sigma, k = 0.05, 64
    res = perturbation_loss_changes(model, loss_fn, data, [sigma], 11, n_draws=k)
    eps = eps_draws(model, 11, k // 2)
    lin, quad = sigma * (eps @ g), 0.5 * sigma**2 * torch.einsum("kp,pq,kq->k", eps, a, eps)
    sides = torch.stack([lin + quad, -lin + quad], dim=1).numpy()  # (pairs, ±): ΔL(+δ), ΔL(−δ)
    np.testing.assert_allclose(res.one_sided_changes[0], sides.reshape(-1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.mean_abs[0], np.abs(sides).mean(), rtol=1e-9)
    pair_abs = np.abs(sides).mean(axis=1)  # the independent samples of E|ΔL|
    np.testing.assert_allclose(res.mean_abs_stderr[0], pair_abs.std(ddof=1) / np.sqrt(k // 2), rtol=1e-9)
    if grad_scale:
        # E|ΔL| is a gradient-norm measure: ≈ σ‖g‖√(2/π), while E[ΔL] stays ½σ²·tr(A)
        expected = sigma * g.norm().item() * math.sqrt(2 / math.pi)
        assert abs(res.mean_abs[0] - expected) < 4 * res.mean_abs_stderr[0] + 0.05 * expected
        assert res.mean_abs[0] > 100 * abs(res.mean[0])
    else:
        np.testing.assert_allclose(res.mean_abs, res.mean, rtol=1e-9)  # at a minimum, |ΔL| = ΔL here


def test_pairs_reuse_the_plain_draws_and_errors_are_symmetric(tiny_mlp, tiny_data):
    sig = [0.1, 0.5]
    anti = perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, sig, 4, n_draws=8)
    plain = perturbation_loss_changes(tiny_mlp, F.cross_entropy, tiny_data, sig, 4, n_draws=8, antithetic=False)
    # pair k's +δ is plain draw k (same seed, same ε), evaluated bit for bit the same
    np.testing.assert_array_equal(anti.one_sided_changes[:, 0::2], plain.changes[:, :4])
    # and each sample is the symmetric mean of its two sides
    np.testing.assert_allclose(anti.changes, anti.one_sided_changes.reshape(2, 4, 2).mean(2), rtol=1e-12)
    theta = named_params(tiny_mlp)
    g = torch.Generator().manual_seed(4)
    base = functional_loss(tiny_mlp, F.cross_entropy, tiny_data)
    for k in range(4):
        eps = gaussian_like(theta, g)
        for i, s in enumerate(sig):
            err = [functional_loss(tiny_mlp, F.cross_entropy, tiny_data,
                                   {n: theta[n] + sign * s * eps[n] for n in theta}).error for sign in (1, -1)]
            assert anti.error_changes[i, k] == pytest.approx(0.5 * (err[0] + err[1]) - base.error, abs=1e-12)
    assert np.any(anti.error_changes != 0)
    np.testing.assert_allclose(anti.error_mean, anti.error_changes.mean(1), rtol=1e-12)
    d = anti.to_dict()
    json.dumps(d)
    assert {"antithetic", "one_sided_changes", "mean_abs_stderr", "n_evaluations", "n_changes"} <= set(d)


@pytest.mark.parametrize("mean,se,trace,trace_se,sigma,ratio,ratio_se", [
    # p = ½σ²·trace = 0.5; r = m/p; se = sqrt(se_m² + r²·se_p²)/p with se_p = ½σ²·trace_se
    (0.5, 0.05, 100.0, None, 0.1, 1.0, 0.1),
    (0.75, 0.0, 100.0, 10.0, 0.1, 1.5, 0.15),
    (0.75, 0.03, 100.0, 8.0, 0.1, 1.5, math.sqrt(0.03**2 + 1.5**2 * 0.04**2) / 0.5),
    (0.0, 0.05, 100.0, 10.0, 0.1, 0.0, 0.1),  # finite at a zero measurement
    (-0.25, 0.05, 100.0, None, 0.1, -0.5, 0.1),  # sign kept
])
def test_second_order_ratio_delta_method(mean, se, trace, trace_se, sigma, ratio, ratio_se):
    r = second_order_ratio(mean, se, trace, trace_se, sigma)
    assert r.ratio[0] == pytest.approx(ratio, rel=1e-12, abs=1e-15)
    assert r.ratio_stderr[0] == pytest.approx(ratio_se, rel=1e-12)
    assert r.prediction[0] == pytest.approx(0.5)
    json.dumps(r.to_dict())


def test_second_order_ratio_is_one_on_a_quadratic_and_vectorised_over_sigma():
    model, loss_fn, data, g, a = quadratic_problem(10.0)
    res = perturbation_loss_changes(model, loss_fn, data, SIGMAS, 0, n_draws=256)
    r = second_order_ratio(res.mean, res.stderr, torch.trace(a).item(), None, res.sigmas)
    assert r.ratio.shape == (3,)
    assert np.all(np.abs(r.ratio - 1) < 3 * r.ratio_stderr)
    np.testing.assert_allclose(r.ratio, r.ratio[0], rtol=1e-9)  # common ε: the same ratio at every σ
    with pytest.raises(ValueError, match="trace"):
        second_order_ratio(res.mean, res.stderr, 0.0, None, res.sigmas)
    with pytest.raises(ValueError, match="measured_stderr"):
        second_order_ratio(res.mean, -res.stderr, 1.0, None, res.sigmas)


def test_isotropic_trace_prediction_is_the_second_order_prediction():
    a, b = isotropic_trace_prediction([0.1, 0.3], 7.0, 0.5), second_order_prediction([0.1, 0.3], 7.0, 0.5)
    assert a.to_dict() == b.to_dict()
    np.testing.assert_allclose(a.prediction, [0.035, 0.315])


# ------------------------------------------------------------------- the study's trained model


@pytest.mark.parametrize("arch", ["mlp", pytest.param("cnn", marks=pytest.mark.slow)])
def test_antithetic_stderr_is_ten_times_smaller_on_a_trained_study_model(arch, tmp_path, monkeypatch):
    """Filter noise at σ = 0.01 (the study's smallest relative σ), N = 32 loss evaluations each:
    16 antithetic pairs against 32 plain draws, the same cost, both measured here."""
    if not (SHARED_DATA / "MNIST" / "raw").exists() and not (SHARED_DATA / "raw").exists():
        pytest.skip(f"no MNIST under {SHARED_DATA}")
    from landscape_utils.study.config import TrainConfig
    from landscape_utils.study.data import load_mnist, probe_subset
    from landscape_utils.study.training import train_or_load

    monkeypatch.setenv("LANDSCAPE_RUNS", str(tmp_path))
    run = train_or_load(TrainConfig(arch=arch, epochs=1, max_steps=40, train_size=4096), data_dir=SHARED_DATA,
                        progress=False, download=False)
    assert run.path.parent == tmp_path
    sub = probe_subset(load_mnist(SHARED_DATA, download=False).train, 256, 0)
    model = run.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = 32
    costs, results = {}, {}
    for antithetic in (True, False):
        started = time.perf_counter()
        results[antithetic] = perturbation_loss_changes(model, F.cross_entropy, (sub.x, sub.y), [0.01], 0,
                                                        noise="filter", n_draws=n, antithetic=antithetic)
        costs[antithetic] = time.perf_counter() - started
    anti, plain = results[True], results[False]
    assert anti.n_evaluations == plain.n_evaluations == n  # equal cost in loss evaluations
    ratio = plain.stderr[0] / anti.stderr[0]
    print(f"{arch}: stderr plain {plain.stderr[0]:.3g} / antithetic {anti.stderr[0]:.3g} = {ratio:.1f}x; "
          f"mean plain {plain.mean[0]:.3g}, antithetic {anti.mean[0]:.3g}; E|dL| {anti.mean_abs[0]:.3g}; "
          f"time {costs[False]:.2f}s / {costs[True]:.2f}s")
    assert ratio >= 10
    # the antithetic interval resolves the sign of E[ΔL] (> 0 near a minimum)
    assert anti.ci_low[0] > 0
    # E|ΔL| is first-order: far above the mean change it is confused with
    assert anti.mean_abs[0] > 10 * anti.mean[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
