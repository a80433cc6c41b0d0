"""Mini-batch λmax and worst-case adaptive sharpness against exact float64 references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from torch import nn

from landscape_utils.probes import params
from landscape_utils.probes.lanczos import lanczos_top_eigs
from landscape_utils.probes.sharpness import adaptive_sharpness, minibatch_top_eigs, training_batches
from tests.conftest import rescaled_relu
from tests.test_hessian import exact_hessian

MODELS = [("tiny_mlp", "tiny_data"), ("tiny_relu_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=MODELS, ids=[m for m, _ in MODELS])
def case(request):
    return request.getfixturevalue(request.param[0]), request.getfixturevalue(request.param[1])


def snapshot(model: nn.Module) -> dict:
    """Everything a probe must leave alone: parameters, .grad, buffers, per-submodule modes."""
    return {"params": [p.detach().clone() for p in model.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            "buffers": [b.clone() for b in model.buffers()],
            "modes": [m.training for m in model.modules()]}


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    for key in ("params", "buffers"):
        assert all(torch.equal(a, b) for a, b in zip(after[key], before[key]))
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(after["grads"], before["grads"]))


# --------------------------------------------------------------------------- training_batches


def test_training_batches_are_disjoint_random_and_reproducible(tiny_data):
    x, y = tiny_data
    batches = training_batches(x, y, 16, 4, gen(1))
    assert len(batches) == 4 and all(b[0].shape == (16, 8) and b[1].shape == (16,) for b in batches)
    rows = torch.cat([b[0] for b in batches])  # every sample of x at most once, in a shuffled order
    idx = [int((x == r).all(dim=1).nonzero()) for r in rows]
    assert sorted(idx) == list(range(64)) and idx != list(range(64))
    for bx, by in batches:  # targets travel with their inputs
        assert torch.equal(by, y[[int((x == r).all(dim=1).nonzero()) for r in bx]])
    again, other = training_batches(x, y, 16, 4, gen(1)), training_batches(x, y, 16, 4, gen(2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], other[0][0])


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(batch_size=16, n_batches=5), "exceeds the 64 samples"),
    (dict(batch_size=16, n_batches=1), "n_batches must be >= 2"),
    (dict(batch_size=0, n_batches=2), "batch_size"),
    (dict(batch_size=8.0, n_batches=2), "batch_size"),
    (dict(batch_size=8, n_batches=2, generator=0), "generator"),
], ids=["too many", "one batch", "zero size", "float size", "int generator"])
def test_training_batches_refusals(tiny_data, kwargs, fragment):
    kwargs = {"generator": gen(), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        training_batches(*tiny_data, **kwargs)


# --------------------------------------------------------------------------- minibatch_top_eigs


@pytest.mark.parametrize("criterion", ["gap", "residual"])
@pytest.mark.parametrize("warm", [False, True], ids=["random start", "warm start"])
def test_minibatch_values_equal_separate_lanczos_calls(tiny_mlp, tiny_data, criterion, warm):
    batches = training_batches(*tiny_data, 16, 3, gen(1))
    start = None
    if warm:  # the top eigenvector over all 64 samples, as the docstring suggests
        start = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(9), tol=1e-6).eigenvectors[0]
    res = minibatch_top_eigs(tiny_mlp, F.cross_entropy, batches, gen(4), tol=1e-4, criterion=criterion, start=start)
    g = gen(4)  # the same generator, consumed in the same order
    sep = [lanczos_top_eigs(tiny_mlp, F.cross_entropy, b, g, tol=1e-4, criterion=criterion, start=start)
           for b in batches]
    assert res.values == tuple(r.eigenvalues[0] for r in sep)
    assert res.n_hvp_per_batch == tuple(r.n_hvp for r in sep) and res.n_hvp == sum(r.n_hvp for r in sep)
    assert res.warm_start == warm and res.converged and res.criterion == criterion
    assert res.hvp_path == "autograd" and res.batch_size == 16 and res.n_batches == 3


def test_warm_start_saves_hvps(tiny_mlp, tiny_data):
    """Batch top eigenvectors are near the full-sample one: starting there needs fewer HVPs."""
    batches = training_batches(*tiny_data, 32, 2, gen(1))
    top = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(9), tol=1e-6).eigenvectors[0]
    cold = minibatch_top_eigs(tiny_mlp, F.cross_entropy, batches, gen(4), tol=1e-6, criterion="residual")
    warm = minibatch_top_eigs(tiny_mlp, F.cross_entropy, batches, gen(4), tol=1e-6, criterion="residual", start=top)
    np.testing.assert_allclose(warm.values, cold.values, rtol=1e-5)
    assert warm.n_hvp < cold.n_hvp


def test_minibatch_matches_exact_hessians(case):
    """λmax per batch vs eigvalsh of the exact float64 Hessian of that batch; mean and stderr likewise."""
    model, data = case
    batches = training_batches(*data, 8, 4, gen(2))
    before = snapshot(model)
    res = minibatch_top_eigs(model, F.cross_entropy, batches, gen(0), tol=1e-3)  # defaults: criterion "gap"
    assert_untouched(model, before)
    exact = np.array([np.linalg.eigvalsh(exact_hessian(model, b).numpy())[-1] for b in batches])
    np.testing.assert_allclose(res.values, exact, rtol=1e-3)
    assert res.mean == pytest.approx(exact.mean(), rel=1e-3)
    assert res.stderr == pytest.approx(exact.std(ddof=1) / 2.0, rel=1e-2, abs=1e-3 * exact.mean())
    assert res.stderr == pytest.approx(np.std(res.values, ddof=1) / np.sqrt(4), rel=1e-12)
    full = np.linalg.eigvalsh(exact_hessian(model, data).numpy())[-1]
    print(f"\nbatch-8 λmax {exact.round(3)} (mean {exact.mean():.3f}) vs all-sample λmax {full:.3f}")
    d = res.to_dict()
    assert isinstance(d["values"], list) and d["n_batches"] == 4


def _batches(tiny_data, sizes):
    x, y = tiny_data
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


BAD_BATCHES = {  # name: (batches from tiny_data, message fragment)
    "one batch": (lambda d: _batches(d, [16]), "at least 2 batches"),
    "no batches": (lambda d: [], "at least 2 batches"),
    "single pair": (lambda d: d, "single \\(inputs, targets\\) pair"),
    "empty batch": (lambda d: _batches(d, [16, 16]) + [(d[0][:0], d[1][:0])], "batches\\[2\\]: data holds no samples"),
    "unequal sizes": (lambda d: _batches(d, [16, 8]), "same size"),
    "targets mismatch": (lambda d: [(d[0][:8], d[1][:8]), (d[0][8:16], d[1][8:15])], "batches\\[1\\]"),
    "not pairs": (lambda d: [d[0][:8], d[0][8:16], d[0][16:24]], "batches\\[0\\]"),
    "an iterator": (lambda d: iter(_batches(d, [8, 8])), "sequence"),
}


@pytest.mark.parametrize("name", list(BAD_BATCHES))
def test_minibatch_refuses_bad_batches(tiny_mlp, tiny_data, name):
    make, fragment = BAD_BATCHES[name]
    with pytest.raises(ValueError, match=fragment):
        minibatch_top_eigs(tiny_mlp, F.cross_entropy, make(tiny_data), gen())


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(tol=0.0), "tol"), (dict(criterion="relative"), "criterion"), (dict(max_iter=0), "max_iter"),
    (dict(generator=1), "generator"), (dict(start=torch.ones(3, dtype=torch.float64)), "start has shape"),
], ids=["tol", "criterion", "max_iter", "generator", "start"])
def test_minibatch_refuses_bad_arguments(tiny_mlp, tiny_data, kwargs, fragment):
    kwargs = {"generator": gen(), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        minibatch_top_eigs(tiny_mlp, F.cross_entropy, _batches(tiny_data, [8, 8]), **kwargs)


# --------------------------------------------------------------------------- adaptive sharpness


@pytest.mark.parametrize("c", [0.25, 3.0, 10.0])
def test_adaptive_sharpness_invariant_to_relu_rescaling_plain_is_not(tiny_relu_mlp, tiny_data, c):
    x, y = tiny_data
    other = rescaled_relu(tiny_relu_mlp, c)
    torch.testing.assert_close(other(x), tiny_relu_mlp(x), rtol=1e-12, atol=1e-12)  # same function
    a = adaptive_sharpness(tiny_relu_mlp, F.cross_entropy, tiny_data, 0.1, gen(0), steps=10)
    b = adaptive_sharpness(other, F.cross_entropy, tiny_data, 0.1, gen(0), steps=10)
    assert a.value > 1e-3 and a.n_accepted > 0  # a real ascent, not a trivial zero
    assert abs(a.value - b.value) <= 1e-10 and abs(a.loss - b.loss) <= 1e-12
    assert a.history == pytest.approx(b.history, abs=1e-10)
    plain_a = adaptive_sharpness(tiny_relu_mlp, F.cross_entropy, tiny_data, 0.1, gen(0), steps=10, adaptive=False)
    plain_b = adaptive_sharpness(other, F.cross_entropy, tiny_data, 0.1, gen(0), steps=10, adaptive=False)
    print(f"\nc={c}: adaptive {a.value:.6f} vs {b.value:.6f}; plain {plain_a.value:.6f} vs {plain_b.value:.6f}")
    assert abs(plain_a.value - plain_b.value) > 0.1 * plain_a.value


class Quadratic(nn.Module):
    """Outputs ½θᵀAθ for every sample; with ``mean_loss`` the loss is exactly ½θᵀAθ."""

    def __init__(self, A: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())
        self.register_buffer("A", A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


QUAD_DATA = (torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2))


def trust_region_max(A: np.ndarray, theta: np.ndarray, rho: float, scale: np.ndarray) -> float:
    """Exact max over ‖u‖ ≤ ρ of L(θ + s⊙u) − L(θ) = bᵀu + ½uᵀMu, M = SAS, b = SAθ (S = diag(s)).

    With λmax(M) > 0 the maximiser is on the sphere, u(λ) = (λI − M)⁻¹b with λ > λmax(M) solving
    ‖u(λ)‖ = ρ (‖u(λ)‖ falls from ∞ to 0 on that ray, so the root is unique; b generic: no hard case).
    """
    M, b = scale[:, None] * A * scale[None, :], scale * (A @ theta)
    w, V = np.linalg.eigh(M)
    assert w[-1] > 0
    c = V.T @ b
    lam = brentq(lambda t: np.linalg.norm(c / (t - w)) - rho, w[-1] * (1 + 1e-12) + 1e-300,
                 w[-1] + np.linalg.norm(b) / rho + 1.0, xtol=1e-15, rtol=1e-15)
    u = V @ (c / (lam - w))
    return float(b @ u + 0.5 * u @ M @ u)


@pytest.mark.parametrize("adaptive,rho", [(True, 0.3), (True, 1.0), (False, 0.5)])
@pytest.mark.parametrize("spectrum", ["indefinite", "near-degenerate top"])
def test_quadratic_approaches_exact_trust_region_max_from_below(adaptive, rho, spectrum):
    P = 12
    g = gen(3)
    U, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    eig = {"indefinite": torch.linspace(-1, 3, P, dtype=torch.float64),
           "near-degenerate top": torch.cat([torch.tensor([2.0, 1.96]), torch.linspace(0, 1, P - 2)]).double()}
    A = U @ torch.diag(eig[spectrum]) @ U.T
    theta = torch.randn(P, generator=g, dtype=torch.float64)
    model = Quadratic(A, theta)
    exact = trust_region_max(A.numpy(), theta.numpy(), rho, theta.abs().numpy() if adaptive else np.ones(P))
    values, history = [], ()
    for steps in (1, 3, 30):
        r = adaptive_sharpness(model, mean_loss, QUAD_DATA, rho, gen(0), steps=steps, adaptive=adaptive)
        assert r.value <= exact * (1 + 1e-12) and r.u_norm <= rho * (1 + 1e-12)
        assert r.history[: len(history)] == history  # the shorter run's path, extended
        assert r.final_step == 2 * rho * 0.5 ** (steps - r.n_accepted)  # 2ρ, halved per rejected step
        values.append(r.value)
        history = r.history
    print(f"\n{spectrum}, adaptive={adaptive}, ρ={rho}: value/exact after 1, 3, 30 steps "
          f"{np.round(np.asarray(values) / exact, 6)}")
    assert values[0] <= values[1] <= values[2]  # the same start: more steps never give less
    assert values[1] >= 0.9 * exact and values[2] >= (1 - 1e-6) * exact


def test_more_steps_extend_the_same_path(tiny_relu_mlp, tiny_data):
    short = adaptive_sharpness(tiny_relu_mlp, F.cross_entropy, tiny_data, 0.1, gen(5), steps=4)
    long = adaptive_sharpness(tiny_relu_mlp, F.cross_entropy, tiny_data, 0.1, gen(5), steps=12)
    assert long.history[:5] == short.history and long.value >= short.value


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_relu_mlp"])
def test_value_is_nonnegative_and_beats_the_random_start(request, tiny_data, name):
    model = request.getfixturevalue(name)
    x, y = tiny_data
    model.train()
    model[1].eval()  # mixed modes come back as they were
    model(x).sum().backward()  # a .grad the probe must not touch
    before = snapshot(model)
    rho, steps = 0.05, 8
    r = adaptive_sharpness(model, F.cross_entropy, tiny_data, rho, gen(7), steps=steps)
    assert_untouched(model, before)
    # The documented start: Gaussian direction and radius ρ·U^(1/P) from the generator, δ₀ = |θ| ⊙ u₀.
    theta = params.flatten(params.named_params(model))
    g = gen(7)
    z = torch.randn(theta.numel(), generator=g, dtype=theta.dtype)
    u0 = z * (rho * float(torch.rand(1, generator=g, dtype=torch.float64)) ** (1 / theta.numel()) / z.norm())
    with torch.no_grad(), params.probe_mode(model):
        base = float(F.cross_entropy(model(x), y))
        point = params.unflatten(theta + theta.abs() * u0, params.named_params(model))
        moved = torch.func.functional_call(model, point, (x,))
        start = float(F.cross_entropy(moved, y)) - base
    assert r.loss == pytest.approx(base, rel=1e-12) and r.start_value == pytest.approx(start, rel=1e-9, abs=1e-15)
    assert r.value >= 0.0 and r.value >= r.start_value and r.value > 5 * abs(r.start_value)
    assert r.perturbed_loss == pytest.approx(r.loss + r.value, rel=1e-15)
    assert list(r.history) == sorted(r.history) and len(r.history) == steps + 1 and r.history[-1] == r.value
    assert r.u_norm <= rho * (1 + 1e-12) and r.n_evaluations == steps + 2
    assert r.n_params == theta.numel() and r.n_fixed == 0
    d = r.to_dict()
    assert d["value"] == r.value and isinstance(d["history"], list) and d["adaptive"] is True


def test_batch_size_gives_the_same_value(tiny_mlp, tiny_data):
    whole = adaptive_sharpness(tiny_mlp, F.cross_entropy, tiny_data, 0.1, gen(1), steps=5)
    sliced = adaptive_sharpness(tiny_mlp, F.cross_entropy, tiny_data, 0.1, gen(1), steps=5, batch_size=10)
    assert sliced.value == pytest.approx(whole.value, rel=1e-10) and sliced.loss == pytest.approx(whole.loss, rel=1e-12)


def test_zero_entries_cannot_move_in_the_adaptive_ball(tiny_mlp, tiny_data):
    model = copy.deepcopy(tiny_mlp)
    with torch.no_grad():
        model[0].bias.zero_()
    r = adaptive_sharpness(model, F.cross_entropy, tiny_data, 0.1, gen(0), steps=3)
    assert r.n_fixed == 14
    assert adaptive_sharpness(model, F.cross_entropy, tiny_data, 0.1, gen(0), steps=3, adaptive=False).n_fixed == 0


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(rho=0.0), "rho"), (dict(rho=-0.1), "rho"), (dict(rho=float("nan")), "rho"),
    (dict(rho=float("inf")), "rho"), (dict(rho=True), "rho"), (dict(rho="0.1"), "rho"),
    (dict(steps=0), "steps"), (dict(steps=-3), "steps"), (dict(steps=2.0), "steps"), (dict(steps=True), "steps"),
    (dict(batch_size=0), "batch_size"), (dict(generator=3), "generator"), (dict(adaptive="yes"), "adaptive"),
], ids=lambda v: str(v))
def test_adaptive_sharpness_refusals(tiny_mlp, tiny_data, kwargs, fragment):
    kwargs = {"rho": 0.1, "generator": gen(), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        adaptive_sharpness(tiny_mlp, F.cross_entropy, tiny_data, **kwargs)
