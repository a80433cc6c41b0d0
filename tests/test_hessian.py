"""Hessian-vector products and eigen-solvers against exact float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.func import functional_call

from landscape_utils.probes import params
from landscape_utils.probes.hessian import HessianOperator, hvp
from landscape_utils.probes.lanczos import LanczosProcess, lanczos_top_eigs
from landscape_utils.probes.power import power_iteration_top_eig

MODELS = [("tiny_mlp", "tiny_data"), ("tiny_relu_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_hessian(model: nn.Module, data, loss_fn=F.cross_entropy) -> torch.Tensor:
    """(P, P) Hessian of the mean loss (cross-entropy unless given) over data, in eval mode, by
    autograd.functional."""
    x, y = data
    like = params.named_params(model)

    def loss_of(flat):
        return loss_fn(functional_call(model, params.unflatten(flat, like), (x,)), y)

    with params.probe_mode(model, train=False):
        return torch.autograd.functional.hessian(loss_of, params.flatten(like).clone())


_EXACT: dict[str, tuple[torch.Tensor, np.ndarray]] = {}  # the fixtures are seeded: compute once


@pytest.fixture(params=MODELS, ids=[m for m, _ in MODELS])
def case(request):
    """(model, data, exact Hessian, its eigenvalues ascending) for each tiny model."""
    model = request.getfixturevalue(request.param[0])
    data = request.getfixturevalue(request.param[1])
    if request.param[0] not in _EXACT:
        H = exact_hessian(model, data)
        _EXACT[request.param[0]] = (H, np.linalg.eigvalsh(H.numpy()))
    H, ev = _EXACT[request.param[0]]
    return model, data, H, ev


class Quadratic(nn.Module):
    """Outputs ½θᵀAθ for every sample; with ``mean_loss`` its Hessian is exactly A."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(A.shape[0], generator=gen(5), dtype=A.dtype))
        self.register_buffer("A", A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


QUAD_DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4))


def quadratic(eigs) -> tuple[Quadratic, np.ndarray]:
    """A Quadratic model whose Hessian has the given eigenvalues (random orthogonal basis)."""
    eigs = torch.as_tensor(eigs, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen(7), dtype=torch.float64))
    return Quadratic(U @ torch.diag(eigs) @ U.T), np.sort(eigs.numpy())


# --------------------------------------------------------------------------- HVPs


@pytest.mark.parametrize("batch_size", [None, 64, 10, 7, 1], ids=lambda b: f"bs={b}")
def test_hvp_matches_exact_hessian(case, batch_size):
    model, data, H, _ = case
    op = HessianOperator(model, F.cross_entropy, data, batch_size=batch_size)
    for seed in range(3):
        v = torch.randn(op.dim, generator=gen(seed), dtype=torch.float64)
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.n_hvp == 3
    with torch.no_grad():
        want = float(F.cross_entropy(model.eval()(data[0]), data[1]))
    assert op.loss == pytest.approx(want, rel=1e-12)


def test_hvp_float32_and_unused_parameter(tiny_mlp, tiny_data):
    """float32 model stays float32; a parameter outside the graph has a zero Hessian block."""
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = tiny_mlp.float(), nn.Linear(2, 2)  # unused: not in forward

        def forward(self, x):
            return self.net(x)

    model = WithUnused()
    x, y = tiny_data[0].float(), tiny_data[1]
    v = torch.randn(params.num_params(model), generator=gen())
    out = hvp(model, F.cross_entropy, (x, y), v)
    assert out.dtype == torch.float32 and out.shape == v.shape
    assert torch.all(out[-6:] == 0)
    ref = hvp(tiny_mlp.double(), F.cross_entropy, (x.double(), y), v[:-6].double())
    torch.testing.assert_close(out[:-6].double(), ref, rtol=1e-3, atol=1e-5)


def test_linearized_hvp_matches_exact_hessian(case):
    """hvp="linearize": forward-over-reverse traced once; the same products as double backward."""
    model, data, H, _ = case
    op = HessianOperator(model, F.cross_entropy, data, hvp="linearize")
    assert op.hvp_path == "forward-over-reverse (linearized)" and "linearize" in op.hvp_note
    for seed in range(3):
        v = torch.randn(op.dim, generator=gen(seed), dtype=torch.float64)
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        want = float(F.cross_entropy(model.eval()(data[0]), data[1]))
    assert op.n_hvp == 3 and op.loss == pytest.approx(want, rel=1e-12)
    res = lanczos_top_eigs(model, F.cross_entropy, data, gen(1), k=2, tol=1e-8, hvp="linearize")
    assert res.hvp_path == "forward-over-reverse (linearized)"
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(H.numpy())[::-1][:2], rtol=1e-7)


class _NoForwardAD(torch.autograd.Function):
    """x² with a backward but no setup_context: functorch transforms (linearize) refuse it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _Squared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4).double()

    def forward(self, x):
        return _NoForwardAD.apply(self.lin(x))


@pytest.mark.parametrize("why", ["batched", "untraceable"])
def test_linearize_falls_back_to_autograd_and_says_why(tiny_mlp, tiny_data, why):
    model, kw = (tiny_mlp, {"batch_size": 16}) if why == "batched" else (_Squared(), {})
    op = HessianOperator(model, F.cross_entropy, tiny_data, hvp="linearize", **kw)
    ref = HessianOperator(model, F.cross_entropy, tiny_data, hvp="autograd")
    v = torch.randn(op.dim, generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), ref.matvec(v), rtol=1e-12, atol=1e-14)
    assert op.hvp_path == "autograd" and op.hvp_reason.startswith("hvp='linearize'")
    assert ("batch_size" if why == "batched" else "failed") in op.hvp_reason


def test_scipy_linear_operator(case):
    model, data, H, _ = case
    lo = HessianOperator(model, F.cross_entropy, data).as_linear_operator()
    v = np.random.default_rng(0).standard_normal(lo.shape[0])
    np.testing.assert_allclose(lo @ v, H.numpy() @ v, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- Lanczos


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_eigvalsh(case, k, which):
    model, data, H, ev = case
    res = lanczos_top_eigs(model, F.cross_entropy, data, gen(1), k=k, tol=1e-8, which=which)
    want = ev[::-1][:k] if which == "largest" else ev[:k]
    assert res.converged and res.n_hvp < len(ev)  # stopped before exhausting the space
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-7, atol=1e-10)
    # Reported residuals are truthful, and each pair is an eigenpair.
    for lam, y, r, rr in zip(res.eigenvalues, res.eigenvectors, res.residuals, res.relative_residuals):
        true = float((H @ y - lam * y).norm())
        assert abs(true - r) <= 1e-9 + 1e-6 * r
        assert rr == pytest.approx(r / abs(lam)) and rr <= 1e-8
        assert float(y.norm()) == pytest.approx(1.0)


@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
def test_lanczos_tolerance_is_an_error_bound(case, tol):
    """Both criteria deliver relative eigenvalue error <= tol (the gap rule is not always cheaper:
    its guard pair must converge too; costs are compared in benchmarks/bench_curvature.py)."""
    model, data, _, ev = case
    want = ev[::-1][:2]
    res = lanczos_top_eigs(model, F.cross_entropy, data, gen(2), k=2, tol=tol)
    assert res.converged and max(res.relative_residuals) <= tol
    err = np.abs(np.asarray(res.eigenvalues) - want)
    assert np.all(err <= tol * np.abs(want))
    assert np.all(err <= np.asarray(res.error_bounds) * (1 + 1e-6) + 1e-13)
    gap = lanczos_top_eigs(model, F.cross_entropy, data, gen(2), k=2, tol=tol, criterion="gap")
    assert gap.converged and gap.criterion == "gap" and res.criterion == "residual"
    assert np.all(np.asarray(gap.error_bounds) <= tol * np.abs(gap.eigenvalues))
    assert np.all(np.abs(np.asarray(gap.eigenvalues) - want) <= tol * np.abs(want))


def test_lanczos_matches_scipy_eigsh(case):
    model, data, _, _ = case
    lo = HessianOperator(model, F.cross_entropy, data).as_linear_operator()
    ref = np.sort(eigsh(lo, k=3, which="LA", tol=1e-12, v0=np.ones(lo.shape[0]))[0])[::-1]
    res = lanczos_top_eigs(model, F.cross_entropy, data, gen(3), k=3, tol=1e-9)
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=1e-8)


@pytest.mark.parametrize(
    "eigs,k,want",
    [
        ([5, 5, 2] + [0] * 7, 3, [5, 5, 2]),  # repeated top eigenvalue: needs a breakdown restart
        ([3, -1, 0, 0], 2, [3, 0]),  # rank 2: breakdown after 3 steps
        ([4.0] * 6, 6, [4.0] * 6),  # H = 4I: breakdown at step 1, k = P
        (list(range(1, 9)), 8, list(range(8, 0, -1))),  # k = P, no breakdown
    ],
)
def test_lanczos_breakdown_and_multiplicity(eigs, k, want):
    model, _ = quadratic(eigs)
    res = lanczos_top_eigs(model, mean_loss, QUAD_DATA, gen(4), k=k, tol=1e-10)
    assert res.converged and res.n_hvp <= len(eigs)
    np.testing.assert_allclose(res.eigenvalues, want, atol=1e-10)


def test_lanczos_max_iter_reports_not_converged(tiny_mlp, tiny_data):
    res = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(), k=3, tol=1e-12, max_iter=4)
    assert not res.converged and res.n_hvp == 4 and len(res.history) == 4


def test_lanczos_atol_stops_near_zero_eigenvalue():
    model, _ = quadratic(np.linspace(-1e-6, 1.0, 40))
    loose = lanczos_top_eigs(model, mean_loss, QUAD_DATA, gen(), which="smallest", tol=1e-3, atol=1e-3)
    assert loose.converged and loose.residuals[0] <= 1e-3 and loose.n_hvp < 40


def test_lanczos_process_is_orthonormal_and_tridiagonalises(case):
    model, data, H, _ = case
    op = HessianOperator(model, F.cross_entropy, data)
    proc = LanczosProcess(op.matvec, torch.ones(op.dim, dtype=torch.float64), 40)
    for _ in range(40):
        proc.step()
    Q = proc.Q
    torch.testing.assert_close(Q @ Q.T, torch.eye(40, dtype=torch.float64), atol=1e-12, rtol=0)
    np.testing.assert_allclose((Q @ H @ Q.T).numpy(), proc.tridiagonal(), atol=1e-10)


# --------------------------------------------------------------------------- power iteration


def test_power_iteration_agrees_with_lanczos_on_psd_dominant_case():
    model, ev = quadratic([10.0, 6.0, 3.0, 1.0, -0.5, 0.2, 0.1, 0.0])
    lan = lanczos_top_eigs(model, mean_loss, QUAD_DATA, gen(), tol=1e-10)
    pw = power_iteration_top_eig(model, mean_loss, QUAD_DATA, gen(), tol=1e-12, max_iter=500)
    assert pw.converged and lan.converged
    assert pw.eigenvalue == pytest.approx(lan.eigenvalues[0], rel=1e-9) == pytest.approx(10.0)
    assert pw.n_hvp > lan.n_hvp  # the point of using Lanczos


@pytest.mark.parametrize("tol,max_iter", [(1e-3, 100), (1e-6, 300), (1e-3, 3)])
def test_power_iteration_stopping_rule_and_residual(tiny_mlp, tiny_data, tol, max_iter):
    H = exact_hessian(tiny_mlp, tiny_data)
    res = power_iteration_top_eig(tiny_mlp, F.cross_entropy, tiny_data, gen(), tol=tol, max_iter=max_iter)
    h = res.history
    assert res.n_hvp == len(h) <= max_iter and res.eigenvalue == h[-1]
    if res.converged:  # stopped by the stated rule, and not one step earlier
        assert abs(h[-1] - h[-2]) / (abs(h[-2]) + 1e-6) < tol
        assert all(abs(b - a) / (abs(a) + 1e-6) >= tol for a, b in zip(h[:-2], h[1:-1]))
    else:
        assert res.n_hvp == max_iter
    v = res.eigenvector
    assert res.eigenvalue == pytest.approx(float(v @ H @ v), rel=1e-10)
    assert res.residual == pytest.approx(float((H @ v - res.eigenvalue * v).norm()), rel=1e-8)


def test_power_iteration_finds_largest_magnitude_not_largest():
    model, _ = quadratic([2.0, 1.0, -5.0, 0.5])
    pw = power_iteration_top_eig(model, mean_loss, QUAD_DATA, gen(), tol=1e-12, max_iter=300)
    lan = lanczos_top_eigs(model, mean_loss, QUAD_DATA, gen(), tol=1e-10)
    assert pw.eigenvalue == pytest.approx(-5.0) and lan.eigenvalues[0] == pytest.approx(2.0)


# --------------------------------------------------------------------------- contract


def test_results_are_json_plain_values(tiny_mlp, tiny_data):
    import json

    for res in (
        lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(), k=2),
        power_iteration_top_eig(tiny_mlp, F.cross_entropy, tiny_data, gen()),
    ):
        d = res.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert len(json.dumps(res.to_dict(include_vectors=True))) > len(json.dumps(d))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0},
        {"k": 1.5},
        {"k": 500},  # > P
        {"tol": 0.0},
        {"tol": -1e-3},
        {"which": "LA"},
        {"max_iter": 0},
        {"k": 3, "max_iter": 2},
        {"batch_size": 0},
        {"atol": -1.0},
        {"criterion": "error"},
        {"generator": None},
        {"data": "mismatched"},
        {"data": "empty"},
        {"data": "single"},
    ],
    ids=str,
)
def test_lanczos_bad_arguments(tiny_mlp, tiny_data, kwargs):
    kwargs = dict(kwargs)
    data = {
        "mismatched": (tiny_data[0], tiny_data[1][:10]),
        "empty": (tiny_data[0][:0], tiny_data[1][:0]),
        "single": tiny_data[0],
    }.get(kwargs.pop("data", None), tiny_data)
    generator = kwargs.pop("generator", gen())
    with pytest.raises(ValueError):
        lanczos_top_eigs(tiny_mlp, F.cross_entropy, data, generator, **kwargs)


@pytest.mark.parametrize("kwargs", [{"tol": 0}, {"max_iter": 0}, {"max_iter": 2.5}, {"generator": 0}], ids=str)
def test_power_iteration_bad_arguments(tiny_mlp, tiny_data, kwargs):
    kwargs = dict(kwargs)
    generator = kwargs.pop("generator", gen())
    with pytest.raises(ValueError):
        power_iteration_top_eig(tiny_mlp, F.cross_entropy, tiny_data, generator, **kwargs)


def test_operator_bad_inputs(tiny_mlp, tiny_data):
    op = HessianOperator(tiny_mlp, F.cross_entropy, tiny_data)
    with pytest.raises(ValueError):
        op.matvec(torch.zeros(op.dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError):  # not a mean: a vector loss
        HessianOperator(tiny_mlp, lambda o, t: F.cross_entropy(o, t, reduction="none"), tiny_data)
    with pytest.raises(ValueError):
        HessianOperator(nn.Sequential(nn.Dropout(0.5), tiny_mlp), F.cross_entropy, tiny_data, train=True)
    frozen = nn.Linear(8, 4).double().requires_grad_(False)
    with pytest.raises(ValueError):
        HessianOperator(frozen, F.cross_entropy, tiny_data)


def test_solvers_stay_importable_from_the_hessian_module():
    """The eigen-solvers moved to lanczos.py and power.py; the old import path gives the same objects."""
    from landscape_utils.probes import hessian, lanczos, power
    from landscape_utils.probes.hessian import EigResult, PowerResult, _gap_bounds, lanczos_extremes

    assert (EigResult, _gap_bounds, lanczos_extremes) == (lanczos.EigResult, lanczos._gap_bounds,
                                                          lanczos.lanczos_extremes)
    assert PowerResult is power.PowerResult
    for name in ("LanczosProcess", "KrylovBasis", "ExtremesResult", "SMALLEST_FLOOR", "CRITERIA", "lanczos_top_eigs"):
        assert getattr(hessian, name) is getattr(lanczos, name)
    assert hessian.power_iteration_top_eig is power.power_iteration_top_eig
    assert "lanczos_top_eigs" in dir(hessian)
    with pytest.raises(AttributeError):
        getattr(hessian, "no_such_name")
