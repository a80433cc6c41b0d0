"""Trace and spectral-density estimators, and the contract every curvature probe keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape_utils.probes import params
from landscape_utils.probes.hessian import HessianOperator
from landscape_utils.probes.lanczos import lanczos_extremes, lanczos_top_eigs
from landscape_utils.probes.power import power_iteration_top_eig
from landscape_utils.probes.spectrum import (
    _rademacher,
    hutchinson_trace,
    hutchpp_lanczos_trace,
    hutchpp_trace,
    slq_spectral_density,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_hessian(model: nn.Module, data, train: bool = False) -> torch.Tensor:
    """(P, P) Hessian of the mean cross-entropy by autograd.functional (buffers cloned in train mode)."""
    x, y = data
    like = params.named_params(model)

    def loss_of(flat):
        args = dict(params.unflatten(flat, like))
        if train:
            args.update({n: b.clone() for n, b in model.named_buffers()})
        return F.cross_entropy(functional_call(model, args, (x,)), y)

    with params.probe_mode(model, train=train):
        return torch.autograd.functional.hessian(loss_of, params.flatten(like).clone())


_EXACT: dict[str, torch.Tensor] = {}


@pytest.fixture
def mlp_case(tiny_mlp, tiny_data):
    if "mlp" not in _EXACT:  # the fixture is seeded: compute once
        _EXACT["mlp"] = exact_hessian(tiny_mlp, tiny_data)
    return tiny_mlp, tiny_data, _EXACT["mlp"]


class Quadratic(nn.Module):
    """Outputs ½θᵀAθ for every sample; with ``mean_loss`` its Hessian is exactly A."""

    def __init__(self, eigs) -> None:
        super().__init__()
        eigs = torch.as_tensor(eigs, dtype=torch.float64)
        U, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen(7), dtype=torch.float64))
        self.register_buffer("A", U @ torch.diag(eigs) @ U.T)
        self.theta = nn.Parameter(torch.randn(len(eigs), generator=gen(5), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


QUAD_DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4))
# A few dominant eigenvalues over a small bulk: where Hutch++ should beat Hutchinson.
DOMINANT = [100.0, 60.0, 30.0] + list(np.linspace(-0.5, 1.0, 47))


# --------------------------------------------------------------------------- trace


@pytest.mark.parametrize(
    "method,budget,n_seeds",
    [(hutchinson_trace, {"n_probes": 10}, 100), (hutchpp_trace, {"n_hvp": 30}, 100)],
    ids=["hutchinson", "hutch++"],
)
def test_trace_interval_covers_exact_trace_at_stated_rate(mlp_case, method, budget, n_seeds):
    model, data, H = mlp_case
    exact = float(np.linalg.eigvalsh(H.numpy()).sum())
    hits = 0
    for seed in range(n_seeds):
        lo, hi = method(model, F.cross_entropy, data, gen(seed), **budget).interval(1.96)
        hits += lo <= exact <= hi
    assert 0.88 <= hits / n_seeds <= 0.99


def test_hutchinson_samples_and_stderr_are_what_they_say(mlp_case):
    model, data, H = mlp_case
    res = hutchinson_trace(model, F.cross_entropy, data, gen(3), n_probes=12)
    g = gen(3)
    want = [float(z @ H @ z) for z in (_rademacher((H.shape[0],), g, H.dtype, "cpu") for _ in range(12))]
    np.testing.assert_allclose(res.samples, want, rtol=1e-10)
    assert res.estimate == pytest.approx(np.mean(want), rel=1e-12)
    assert res.stderr == pytest.approx(np.std(want, ddof=1) / np.sqrt(12), rel=1e-10)
    assert res.n_hvp == 12 and res.exact_part == 0.0


def test_hutchpp_is_exact_when_the_sketch_spans_the_space(mlp_case):
    model, data, H = mlp_case
    P = H.shape[0]
    res = hutchpp_trace(model, F.cross_entropy, data, gen(), n_hvp=3 * P + 2)
    assert res.estimate == pytest.approx(float(np.linalg.eigvalsh(H.numpy()).sum()), rel=1e-9)
    assert res.exact_part == pytest.approx(res.estimate, rel=1e-9) and res.stderr < 1e-9


def test_hutchpp_has_lower_variance_with_dominant_eigenvalues():
    model, exact, n = Quadratic(DOMINANT), sum(DOMINANT), 30
    hutch = [hutchinson_trace(model, mean_loss, QUAD_DATA, gen(s), n_probes=30).estimate for s in range(n)]
    hpp = [hutchpp_trace(model, mean_loss, QUAD_DATA, gen(s), n_hvp=30).estimate for s in range(n)]
    rmse = lambda e: float(np.sqrt(np.mean((np.asarray(e) - exact) ** 2)))  # noqa: E731
    assert rmse(hpp) < 0.25 * rmse(hutch)  # measured: about 0.05
    assert abs(np.mean(hpp) - exact) < 4 * np.std(hpp) / np.sqrt(n)  # unbiased


# --------------------------------------------------------------------------- SLQ


@pytest.mark.parametrize("n_vectors,n_steps", [(1, 5), (4, 20), (3, 60)])
def test_slq_quadrature_properties(mlp_case, n_vectors, n_steps):
    model, data, H = mlp_case
    ev = np.linalg.eigvalsh(H.numpy())
    P = len(ev)
    d = slq_spectral_density(model, F.cross_entropy, data, gen(2), n_vectors=n_vectors, n_steps=n_steps)
    nodes, w = np.asarray(d.nodes), np.asarray(d.weights)
    assert d.n_hvp == n_vectors * n_steps and len(nodes) == len(w) == n_vectors * n_steps
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and np.all(w >= 0)
    assert ev[0] - 1e-10 <= nodes.min() and nodes.max() <= ev[-1] + 1e-10  # Ritz values interlace
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    # Gauss quadrature moments: Σwθ^j = mean over runs of vᵀH^j v (v = z/‖z‖), for j < 2·n_steps.
    g = gen(2)
    zs = torch.stack([_rademacher((P,), g, H.dtype, "cpu") for _ in range(n_vectors)]) / np.sqrt(P)
    for j in (1, 2, 3):
        Hj = torch.linalg.matrix_power(H, j)
        want = float(torch.einsum("vp,pq,vq->", zs, Hj, zs)) / n_vectors
        assert np.sum(w * nodes**j) == pytest.approx(want, rel=1e-8, abs=1e-12)
    # First moment × P is the Hutchinson estimate with the same probes.
    hut = hutchinson_trace(model, F.cross_entropy, data, gen(2), n_probes=max(n_vectors, 2))
    if n_vectors >= 2:
        assert P * np.sum(w * nodes) == pytest.approx(hut.estimate, rel=1e-9)
    if n_steps >= 60:  # extreme Ritz values have converged
        assert nodes.max() == pytest.approx(ev[-1], rel=1e-8) and nodes.min() == pytest.approx(ev[0], rel=1e-6)


def test_slq_breakdown_and_grid_options():
    model = Quadratic([3.0, 3.0, 1.0, -2.0, 0.0, 0.0])  # 4 distinct eigenvalues: breakdown at step 4
    d = slq_spectral_density(model, mean_loss, QUAD_DATA, gen(), n_vectors=2, n_steps=10, sigma=0.05)
    assert d.n_hvp == 8 and d.n_steps == 6  # capped at P, stopped at the breakdown
    np.testing.assert_allclose(sorted(set(np.round(d.nodes, 8))), [-2.0, 0.0, 1.0, 3.0], atol=1e-8)
    # Weight at each eigenvalue = average squared projection; the 3.0-eigenspace is 2-D.
    grid = np.linspace(-3, 4, 701)
    e = slq_spectral_density(model, mean_loss, QUAD_DATA, gen(), n_vectors=2, n_steps=10, sigma=0.05, grid=grid)
    np.testing.assert_allclose(e.grid, grid)
    assert np.trapezoid(e.density, e.grid) == pytest.approx(1.0, abs=1e-6)
    assert e.density[np.argmin(abs(grid - 3.0))] > e.density[np.argmin(abs(grid - 2.0))] * 100


# --------------------------------------------------------------------------- contract, every probe

PROBES = {
    "lanczos": lambda m, l, d, g, **kw: lanczos_top_eigs(m, l, d, g, k=2, **kw),
    "lanczos_smallest": lambda m, l, d, g, **kw: lanczos_top_eigs(m, l, d, g, which="smallest", tol=1e-2, **kw),
    "power": lambda m, l, d, g, **kw: power_iteration_top_eig(m, l, d, g, max_iter=20, **kw),
    "hutchinson": lambda m, l, d, g, **kw: hutchinson_trace(m, l, d, g, n_probes=5, **kw),
    "hutch++": lambda m, l, d, g, **kw: hutchpp_trace(m, l, d, g, n_hvp=9, **kw),
    "slq": lambda m, l, d, g, **kw: slq_spectral_density(m, l, d, g, n_vectors=2, n_steps=8, **kw),
    "slq_products": lambda m, l, d, g, **kw: slq_spectral_density(m, l, d, g, n_vectors=2, n_steps=8,
                                                                  keep_products=True, **kw),
    "lanczos_extremes": lambda m, l, d, g, **kw: lanczos_extremes(m, l, d, g, k=2, tol=1e-3, **kw),
    "hutchpp_lanczos": lambda m, l, d, g, **kw: hutchpp_lanczos_trace(
        m, l, d, g, lanczos_extremes(m, l, d, g, k=1, tol=1e-2, max_iter=5, **kw).basis, n_probes=4, **kw)[0],
    "lanczos_linearized": lambda m, l, d, g, **kw: lanczos_top_eigs(m, l, d, g, k=2, hvp="linearize", **kw),
}


def bn_model() -> nn.Module:
    """A float64 MLP with BatchNorm whose submodules are in mixed modes and running stats are set."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4)).double()
    with torch.no_grad():
        model(torch.randn(16, 8, dtype=torch.float64) * 3 + 1)  # non-trivial running stats
    model.train()
    model[1].eval()
    model[3].eval()
    return model


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("batch_size", [None, 24], ids=["inmem", "batched"])
@pytest.mark.parametrize("probe", list(PROBES), ids=list(PROBES))
def test_probe_leaves_model_untouched_and_is_deterministic(tiny_data, probe, batch_size, train):
    model = bn_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    model[0].weight.grad = torch.ones_like(model[0].weight)  # a caller's gradient stays as it was
    run = lambda seed: PROBES[probe](  # noqa: E731
        model, F.cross_entropy, tiny_data, gen(seed), batch_size=batch_size, train=train
    )
    first = run(11).to_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # params and buffers
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")
    assert json.loads(json.dumps(first)) == first  # plain values
    assert run(11).to_dict() == first  # same seed, same numbers
    assert run(12).to_dict() != first


def test_train_mode_hessian_is_the_train_mode_loss_hessian(tiny_data):
    """Train mode uses batch statistics (and differs from eval mode) without updating buffers."""
    model = bn_model()
    v = torch.randn(params.num_params(model), generator=gen(), dtype=torch.float64)
    H_train, H_eval = exact_hessian(model, tiny_data, train=True), exact_hessian(model, tiny_data)
    got = HessianOperator(model, F.cross_entropy, tiny_data, train=True).matvec(v)
    torch.testing.assert_close(got, H_train @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(HessianOperator(model, F.cross_entropy, tiny_data).matvec(v), H_eval @ v)
    assert float((H_train @ v - H_eval @ v).norm()) > 0.05 * float((H_eval @ v).norm())


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (hutchinson_trace, {"n_probes": 1}),
        (hutchinson_trace, {"n_probes": 0}),
        (hutchinson_trace, {"n_probes": 10.0}),
        (hutchpp_trace, {"n_hvp": 4}),
        (hutchpp_trace, {"batch_size": -2}),
        (slq_spectral_density, {"n_vectors": 0}),
        (slq_spectral_density, {"n_steps": 0}),
        (slq_spectral_density, {"sigma": 0.0}),
        (slq_spectral_density, {"n_grid": 1}),
        (slq_spectral_density, {"grid": [1.0, 0.0]}),
        (hutchinson_trace, {"data": "mismatched"}),
        (hutchpp_trace, {"data": "mismatched"}),
        (slq_spectral_density, {"data": "mismatched"}),
        (hutchinson_trace, {"generator": 0}),
        (slq_spectral_density, {"generator": None}),
    ],
    ids=lambda x: x.__name__ if callable(x) else str(x),
)
def test_bad_arguments(tiny_mlp, tiny_data, fn, kwargs):
    kwargs = dict(kwargs)
    data = (tiny_data[0][:-1], tiny_data[1]) if kwargs.pop("data", None) else tiny_data
    generator = kwargs.pop("generator", gen())
    with pytest.raises(ValueError):
        fn(tiny_mlp, F.cross_entropy, data, generator, **kwargs)
