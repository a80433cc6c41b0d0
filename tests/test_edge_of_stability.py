"""Full-batch GD sharpness (edge of stability) against exact float64 references.

A linear model under ``mse_loss`` has the constant Hessian (1/N) X̃ᵀX̃ ⊗ I_C (X̃ = [X, 1]), so λmax
is known exactly at every step and GD is stable exactly for η < 2/λmax; on a quadratic loss GD at
η < 2/λmax also decreases the loss monotonically. A tiny tanh network shows the edge of stability
itself: λmax rises from half of 2/η and settles at it while the loss keeps falling, non-monotonically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape_utils.probes import edge_of_stability as eos
from landscape_utils.probes.edge_of_stability import _plateau, full_batch_gd_sharpness, mse_loss
from landscape_utils.probes.lanczos import lanczos_top_eigs

N, D, C = 64, 8, 4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(0)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randint(0, C, (N,), generator=g)


def linear_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(D, C).double()


def tanh_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 14), nn.Tanh(), nn.Linear(14, C)).double()


def design(x: torch.Tensor) -> torch.Tensor:
    """X̃ = [X, 1], (N, D+1)."""
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def exact_lambda(x: torch.Tensor) -> float:
    """λmax of the linear model's Hessian: the top eigenvalue of X̃ᵀX̃ / N (each repeated C times)."""
    X = design(x)
    return float(torch.linalg.eigvalsh(X.T @ X / x.shape[0]).max())


def reference_linear_losses(model: nn.Linear, data, lr: float, steps: int) -> list[float]:
    """Losses of plain GD on ½/N‖X̃Θ − Y‖² from the model's Θ, by the closed-form gradient."""
    x, y = data
    X, Y = design(x), torch.nn.functional.one_hot(y, C).double()  # (N, D+1), (N, C)
    theta = torch.cat([model.weight.detach().T, model.bias.detach()[None]], dim=0).clone()  # (D+1, C)
    out = []
    for _ in range(steps + 1):
        r = X @ theta - Y
        out.append(float(0.5 * (r**2).sum() / x.shape[0]))
        theta -= lr * X.T @ r / x.shape[0]
    return out


# --------------------------------------------------------------------------- mse_loss


def test_mse_loss_matches_its_formula():
    g = gen(1)
    out = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2, 0])
    onehot = torch.eye(3, dtype=torch.float64)[y]
    expected = 0.5 * sum(float(((out[i] - onehot[i]) ** 2).sum()) for i in range(5)) / 5
    assert float(mse_loss(out, y)) == pytest.approx(expected, rel=1e-14)
    assert float(mse_loss(out, onehot)) == pytest.approx(expected, rel=1e-14)  # floating targets used as given


@pytest.mark.parametrize("outputs, targets, match", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), "outputs"),
    (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), "class-index targets"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), r"\[0, 3\)"),
    (torch.zeros(4, 3), torch.tensor([0, -1, 2, 0]), r"\[0, 3\)"),
    (torch.zeros(4, 3), torch.zeros(4, 2), "floating targets"),
])
def test_mse_loss_refuses_bad_shapes(outputs, targets, match):
    with pytest.raises(ValueError, match=match):
        mse_loss(outputs, targets)


# --------------------------------------------------------------------------- constant Hessian


@pytest.mark.parametrize("factor, diverges, reaches", [
    (0.3, False, False),   # far from the edge: never reaches 90% of 2/η
    (0.95, False, True),   # just inside: converges, ratio 0.95 throughout
    (1.05, True, True),    # just outside: the top direction grows by |1 − ηλ| = 1.1 a step
])
@pytest.mark.parametrize("tol", [1e-3, 1e-8])
def test_linear_model_exact_sharpness_and_stability(data, factor, diverges, reaches, tol):
    lam = exact_lambda(data[0])
    lr = factor * 2 / lam
    model = linear_model()
    run = full_batch_gd_sharpness(model, mse_loss, data, lr=lr, steps=200, every=20, generator=gen(), tol=tol)
    assert run.threshold == pytest.approx(2 / lr, rel=1e-15)
    assert np.allclose(run.sharpness, lam, rtol=tol, atol=0)  # constant Hessian: λmax at every measurement
    ref = reference_linear_losses(model, data, lr, 200)
    assert np.allclose(run.loss, ref[: len(run.loss)], rtol=1e-10, atol=0)  # plain GD θ ← θ − η∇L
    assert run.diverged is diverges
    if diverges:
        assert run.diverged_at == len(run.loss) - 1 < 200
        assert run.loss[-1] > 1e3 * run.loss[0] and max(run.loss[:-1]) <= 1e3 * run.loss[0]
        assert run.steps[-1] < run.diverged_at
    else:
        assert run.diverged_at is None and len(run.loss) == 201 and run.steps[-1] == 200
    if reaches:
        assert run.first_reach_step == 0
        assert run.plateau_ratio == pytest.approx(factor, rel=tol)
    else:
        assert (run.first_reach_step, run.plateau_ratio, run.loss_increases) == (None, None, None)
    if factor == 0.95:
        x, y = data
        X, Y = design(x), torch.nn.functional.one_hot(y, C).double()
        lstsq = float(0.5 * ((X @ torch.linalg.lstsq(X, Y).solution - Y) ** 2).sum() / N)
        assert run.loss[-1] == pytest.approx(lstsq, rel=1e-8)  # converged to the minimum
        assert run.loss_increases == 0  # η < 2/λ on a quadratic: monotone (rounding jitter not counted)


@pytest.mark.parametrize("steps, every, measured", [
    (25, 10, (0, 10, 20, 25)),
    (20, 10, (0, 10, 20)),
    (7, 7, (0, 7)),
    (3, 1, (0, 1, 2, 3)),
])
def test_measurement_schedule(data, steps, every, measured):
    run = full_batch_gd_sharpness(linear_model(), mse_loss, data, lr=0.1, steps=steps, every=every, generator=gen())
    assert run.steps == measured
    assert len(run.sharpness) == len(run.accuracy) == len(run.n_hvp) == len(run.lanczos_converged) == len(measured)
    assert len(run.loss) == steps + 1
    assert all(n > 0 for n in run.n_hvp) and all(run.lanczos_converged)


# --------------------------------------------------------------------------- a nonlinear model


def test_warm_started_values_match_cold_lanczos_at_the_same_parameters(data, monkeypatch):
    calls = []
    real = eos.lanczos_top_eigs

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((kwargs["start"], result.eigenvectors[0]))
        return result

    monkeypatch.setattr(eos, "lanczos_top_eigs", recording)
    model, lr, tol = tanh_mlp(), 0.5, 1e-3
    run = full_batch_gd_sharpness(model, mse_loss, data, lr=lr, steps=60, every=20, generator=gen(), tol=tol)
    # Warm starts: the first from the generator, each later one from the previous top eigenvector.
    assert calls[0][0] is None
    assert all(torch.equal(start, prev_vec) for (start, _), (_, prev_vec) in zip(calls[1:], calls[:-1]))

    # Re-run plain GD on a copy and measure cold at the same parameters.
    net = copy.deepcopy(model).eval()
    x, y = data
    for t in range(61):
        loss = mse_loss(net(x), y)
        assert float(loss.detach()) == pytest.approx(run.loss[t], rel=1e-12)
        if t in run.steps:
            i = run.steps.index(t)
            cold = lanczos_top_eigs(net, mse_loss, data, gen(99), tol=1e-10, max_iter=186)
            assert run.sharpness[i] == pytest.approx(cold.eigenvalues[0], rel=tol)
            assert run.accuracy[i] == float((net(x).argmax(1) == y).double().mean())
        grads = torch.autograd.grad(loss, list(net.parameters()))
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads):
                p -= lr * g


@pytest.mark.parametrize("lr, reaches", [(0.5, True), (0.1, False)])
def test_edge_of_stability_on_a_tiny_network(data, lr, reaches):
    run = full_batch_gd_sharpness(tanh_mlp(), mse_loss, data, lr=lr, steps=1000, every=20, generator=gen())
    ratios = run.ratios
    assert not run.diverged and run.loss[-1] < run.loss[0] / 5
    if reaches:  # progressive sharpening from ~½ of 2/η, then λmax hovers at 2/η while the loss falls
        assert ratios[0] < 0.6 and run.first_reach_step > 0
        assert 0.97 <= run.plateau_ratio <= 1.1
        assert np.all(np.abs(ratios[-10:] - 1) < 0.05)
        assert run.loss_increases > 0
    else:  # 2/η = 20 is far above the network's sharpness: stable, monotone, never at the edge
        assert ratios.max() < 0.5 and run.first_reach_step is None
        assert np.all(np.diff(run.loss) <= 0)


# --------------------------------------------------------------------------- the derived numbers


@pytest.mark.parametrize("ratios, loss, expected", [
    ([0.5, 0.8, 0.95, 1.0, 1.05], [5, 4, 3, 3.5, 3, 3.2], (2, 1.0, 2)),    # rises, then hovers
    ([1.2, 0.8, 0.95, 1.0], [5, 4, 3, 3.5, 3], (2, 0.975, 1)),             # initial transient skipped
    ([0.95, 0.95, 0.95], [3, 2, 1, 0.5], (0, 0.95, 0)),                    # never below: from step 0
    ([1.2, 0.5, 0.6], [3, 2, 1, 0.5], (None, None, None)),                 # only the transient
    ([0.5, 0.6], [3, 2, 2.5], (None, None, None)),                         # never reached
    ([0.5, 0.9], [3, 2, 2 + 1e-14, 2.1], (1, 0.9, 1)),                     # jitter below rise_rtol
])
def test_plateau_numbers(ratios, loss, expected):
    steps = list(range(len(ratios)))
    first, ratio, rises = _plateau(steps, [2.0 * r for r in ratios], loss, threshold=2.0, rise_rtol=1e-12)
    assert (first, rises) == (expected[0], expected[2])
    assert (ratio is None) if expected[1] is None else ratio == pytest.approx(expected[1], rel=1e-12)


# --------------------------------------------------------------------------- contract


def test_callers_model_mode_and_grads_untouched(data):
    model = tanh_mlp()
    model.train()
    model[1].eval()  # mixed modes
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    run = full_batch_gd_sharpness(model, mse_loss, data, lr=0.5, steps=30, every=10, generator=gen())
    assert run.loss[-1] < run.loss[0]  # it did train (a copy)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[2].weight.grad is None


def test_same_seed_same_result_and_start_invariance(data):
    def run(seed):
        d = full_batch_gd_sharpness(tanh_mlp(), mse_loss, data, lr=0.5, steps=40, every=10, generator=gen(seed),
                                    tol=1e-6).to_dict()
        d.pop("seconds")
        return d

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert c["loss"] == a["loss"]  # GD itself draws nothing
    assert np.allclose(c["sharpness"], a["sharpness"], rtol=1e-6, atol=0)  # the start only changes the cost


def test_to_dict_is_plain_json_and_progress_bar(data, capsys):
    run = full_batch_gd_sharpness(linear_model(), mse_loss, data, lr=2.0, steps=50, every=10, generator=gen(),
                                  progress=True)
    assert run.diverged and "GD" in capsys.readouterr().err
    text = json.dumps(dataclasses.replace(run, loss=(*run.loss, math.inf, math.nan)).to_dict(), allow_nan=False)
    d = json.loads(text)
    assert d["loss"][-2:] == [None, None] and d["diverged_at"] == run.diverged_at and d["lr"] == 2.0


class _NoParams(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.0}, "lr"), ({"lr": -0.1}, "lr"), ({"lr": math.nan}, "lr"), ({"lr": math.inf}, "lr"),
    ({"steps": 0}, "steps"), ({"steps": 2.0}, "steps"), ({"steps": True}, "steps"),
    ({"every": 0}, "every"), ({"every": 11}, "every"), ({"every": 1.5}, "every"),
    ({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter"),
    ({"generator": None}, "generator"), ({"generator": 0}, "generator"),
    ({"loss_fn": None}, "loss_fn"), ({"loss_fn": lambda out, y: (out - 0).pow(2).sum(1)}, "loss_fn"),
    ({"data": (torch.zeros(3, D, dtype=torch.float64), torch.zeros(2, dtype=torch.long))}, "first"),
    ({"model": _NoParams()}, "trainable"),
])
def test_bad_arguments_refused(data, kwargs, match):
    args = {"model": linear_model(), "loss_fn": mse_loss, "data": data, "lr": 0.1, "steps": 10, "every": 5,
            "generator": gen(), **kwargs}
    with pytest.raises(ValueError, match=match):
        full_batch_gd_sharpness(**args)
