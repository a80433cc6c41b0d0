"""Stability thresholds against torch.optim itself, and Adam's preconditioned sharpness against
exact float64 references.

* SGD (with and without momentum) on quadratics ½θᵀAθ of known λmax: 2% below the threshold it
  converges, 2% above it diverges.
* Adam: P from a live ``torch.optim.Adam`` reproduces its next update to rounding, and
  λmax(P⁻¹H) by Lanczos matches the eigenvalues of diag(P)⁻¹·H from ``autograd.functional.hessian``.
* Adam on a 1-D quadratic settles its preconditioned sharpness λ/P just below 38/η (β₁ = 0.9).
* ``operator_top_eigs`` is the code path of ``lanczos_top_eigs`` (identical results).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from landscape_utils.probes import params
from landscape_utils.probes.hessian import HessianOperator
from landscape_utils.probes.lanczos import lanczos_top_eigs, operator_top_eigs
from landscape_utils.probes.stability import (PreconditionedOperator, adam_preconditioner, adam_preconditioner_of,
                                              adam_stability_threshold, gd_stability_threshold,
                                              heavy_ball_stability_threshold, preconditioned_top_eig,
                                              stability_threshold)
from tests.test_hessian import exact_hessian

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Quadratic(nn.Module):
    """One parameter θ (n,) with loss ½θᵀAθ (``mean_loss`` ignores the targets): H = A exactly."""

    def __init__(self, A: torch.Tensor, theta0: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta0.clone().to(A.dtype))
        self.register_buffer("A", A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


QUAD_DATA = (torch.zeros(2, 1, dtype=F64), torch.zeros(2))


def spd(eigs, seed: int = 7) -> torch.Tensor:
    """U diag(eigs) Uᵀ with a random orthogonal U."""
    U, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen(seed), dtype=F64))
    return U @ torch.diag(torch.as_tensor(eigs, dtype=F64)) @ U.T


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("value, expected", [
    (lambda: gd_stability_threshold(0.1), 20.0),
    (lambda: heavy_ball_stability_threshold(0.1, 0.0), 20.0),
    (lambda: heavy_ball_stability_threshold(0.1, 0.9), 38.0),
    (lambda: adam_stability_threshold(0.01), 3800.0),
    (lambda: adam_stability_threshold(0.01, beta1=0.0), 200.0),
    (lambda: stability_threshold("sgd", 0.1), 20.0),
    (lambda: stability_threshold("sgd", 0.1, momentum=0.5), 30.0),
    (lambda: stability_threshold("adam", 1e-3), 38000.0),
    (lambda: stability_threshold("adam", 1e-3, momentum=0.5, beta1=0.5), 6000.0),
], ids=["gd", "hb beta 0", "hb beta 0.9", "adam", "adam beta1 0", "sgd", "sgd momentum", "adam dispatch",
        "adam ignores momentum"])
def test_threshold_values(value, expected):
    assert value() == pytest.approx(expected, rel=1e-12)


QUADRATICS = {  # name: A (λmax = 1 before scaling; the smallest eigenvalue 0.2 so every mode settles)
    "diagonal": torch.diag(torch.tensor([1.0, 0.6, 0.3, 0.2], dtype=F64)),
    "random SPD": spd(np.linspace(0.2, 1.0, 6)),
}


def sgd_growth(A: torch.Tensor, lr: float, momentum: float, steps: int = 400) -> float:
    """‖θ_steps‖ / ‖θ_0‖ under torch.optim.SGD(lr, momentum) on ½θᵀAθ from a random θ_0."""
    model = Quadratic(A, torch.randn(A.shape[0], generator=gen(1), dtype=F64))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    x, y = QUAD_DATA
    n0 = float(model.theta.detach().norm())
    for _ in range(steps):
        opt.zero_grad()
        mean_loss(model(x), y).backward()
        opt.step()
    return float(model.theta.detach().norm()) / n0


@pytest.mark.parametrize("side", [-0.02, 0.02], ids=["2% below", "2% above"])
@pytest.mark.parametrize("lam_max", [4.0, 150.0])
@pytest.mark.parametrize("name", list(QUADRATICS))
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_threshold_against_torch(momentum, name, lam_max, side):
    A = lam_max * QUADRATICS[name]
    # threshold(lr) = c / lr: choose lr so that λmax = (1 + side) · threshold(lr).
    lr = (1 + side) * stability_threshold("sgd", 1.0, momentum=momentum) / lam_max
    assert lam_max == pytest.approx((1 + side) * stability_threshold("sgd", lr, momentum=momentum))
    growth = sgd_growth(A, lr, momentum)
    if side < 0:
        assert growth < 1e-4, f"did not converge below the threshold (growth {growth:.3g})"
    else:
        assert growth > 1e4, f"did not diverge above the threshold (growth {growth:.3g})"


# --------------------------------------------------------------------------- Adam's preconditioner


def adam_mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """3 -> 5 (tanh) -> 1, float64, 26 parameters; 16 random points with MSE targets."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    g = gen(11)
    x = torch.randn(16, 3, generator=g, dtype=F64)
    return model, (x, torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(16, 1, generator=g, dtype=F64))


def train_adam(model: nn.Module, data, steps: int, groups=None, **kw) -> torch.optim.Adam:
    opt = torch.optim.Adam(groups(model) if groups else model.parameters(), **kw)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(data[0]), data[1]).backward()
        opt.step()
    return opt


ADAM_CASES = {  # name: (steps, param groups or None, Adam keywords)
    "1 step": (1, None, dict(lr=1e-2)),
    "25 steps": (25, None, dict(lr=1e-2)),
    "beta2 0.99, eps 1e-3": (25, None, dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-3)),
    "two groups": (12, lambda m: [{"params": m[0].parameters(), "eps": 1e-6},
                                  {"params": m[2].parameters(), "betas": (0.5, 0.9), "lr": 5e-2}], dict(lr=1e-2)),
}


@pytest.mark.parametrize("name", list(ADAM_CASES))
def test_adam_preconditioner_reproduces_the_update(name):
    steps, groups, kw = ADAM_CASES[name]
    model, data = adam_mlp()
    opt = train_adam(model, data, steps, groups, **kw)
    before = params.flatten(params.named_params(model)).clone()
    opt.zero_grad()
    F.mse_loss(model(data[0]), data[1]).backward()
    opt.step()
    after = params.flatten(params.named_params(model))
    P = adam_preconditioner_of(opt, model)  # the state after the step: the P that step divided by
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    expected = []
    for p in model.parameters():
        st, g = opt.state[p], group_of[id(p)]
        t = int(st["step"])
        expected.append(-g["lr"] * (st["exp_avg"] / (1 - g["betas"][0] ** t)).reshape(-1))  # −η m̂
    expected = torch.cat(expected) / P
    torch.testing.assert_close(after - before, expected, rtol=1e-12, atol=1e-16)
    # adam_preconditioner on the raw state: a sequence or one flat tensor, same P (single group).
    if groups is None:
        v = [opt.state[p]["exp_avg_sq"] for p in model.parameters()]
        t = int(opt.state[next(model.parameters())]["step"])
        beta2, eps = opt.param_groups[0]["betas"][1], opt.param_groups[0]["eps"]
        assert torch.equal(adam_preconditioner(v, t, beta2, eps), P)
        assert torch.equal(adam_preconditioner(torch.cat([u.reshape(-1) for u in v]), t, beta2, eps), P)
    assert torch.equal(adam_preconditioner_of(opt, list(model.parameters())), P)


@pytest.mark.parametrize("name", list(ADAM_CASES))
def test_preconditioned_top_eig_matches_exact(name):
    steps, groups, kw = ADAM_CASES[name]
    model, data = adam_mlp()
    opt = train_adam(model, data, steps, groups, **kw)
    P = adam_preconditioner_of(opt, model)
    M = np.diag(1.0 / P.numpy()) @ exact_hessian(model, data, F.mse_loss).numpy()  # P⁻¹H, not symmetric
    ev = scipy.linalg.eigvals(M)
    assert np.abs(ev.imag).max() <= 1e-8 * np.abs(ev.real).max()  # similar to a symmetric matrix
    exact = ev.real.max()
    res = preconditioned_top_eig(model, F.mse_loss, data, P, gen(3), tol=1e-10, criterion="residual")
    assert res.converged
    assert res.eigenvalues[0] == pytest.approx(exact, rel=1e-8)
    # The eigenvector is the symmetric form's u; P^{-1/2}u is a right eigenvector of P⁻¹H.
    w = (res.eigenvectors[0] / P.sqrt()).numpy()
    assert np.linalg.norm(M @ w - exact * w) <= 1e-6 * np.linalg.norm(M @ w)
    assert "preconditioned" in res.hvp_note
    # Not a plain Hessian eigenvalue: the preconditioning matters on this model.
    assert abs(exact - np.linalg.eigvalsh(exact_hessian(model, data, F.mse_loss).numpy()).max()) > 0.1 * exact


@pytest.mark.parametrize("name, A, P, expected", [
    ("Jacobi", torch.diag(torch.tensor([9.0, 4.0, 0.5], dtype=F64)), torch.tensor([9.0, 4.0, 0.5], dtype=F64), 1.0),
    ("max a_i/p_i", torch.diag(torch.tensor([9.0, 4.0, 0.5], dtype=F64)), torch.tensor([3.0, 1.0, 0.01], dtype=F64),
     50.0),
    ("scalar P", spd([5.0, 2.0, 1.0, 0.1]), torch.full((4,), 4.0, dtype=F64), 1.25),
])
def test_preconditioned_quadratic_exact(name, A, P, expected):
    model = Quadratic(A, torch.ones(A.shape[0], dtype=F64))
    res = preconditioned_top_eig(model, mean_loss, QUAD_DATA, P, gen(0), tol=1e-12, criterion="residual")
    assert res.eigenvalues[0] == pytest.approx(expected, rel=1e-10)


def test_preconditioned_top_eig_leaves_model_untouched(tiny_mlp, tiny_data):
    tiny_mlp.train()
    before = {n: p.clone() for n, p in tiny_mlp.named_parameters()}
    rng = torch.get_rng_state()
    P = torch.rand(sum(p.numel() for p in tiny_mlp.parameters()), generator=gen(2), dtype=F64) + 0.5
    preconditioned_top_eig(tiny_mlp, F.cross_entropy, tiny_data, P, gen(1))
    assert tiny_mlp.training and all(m.training for m in tiny_mlp.modules())
    assert all(torch.equal(before[n], p) and p.grad is None for n, p in tiny_mlp.named_parameters())
    assert torch.equal(rng, torch.get_rng_state())


# --------------------------------------------------------------------------- Adam's adaptive edge of stability


@pytest.mark.parametrize("lam, lr, theta0", [(1.0, 1e-2, 1.0), (100.0, 1e-2, 0.3), (10.0, 3e-2, -2.0)])
def test_adam_settles_at_its_threshold(lam, lr, theta0):
    """Adam (β₁ = 0.9, β₂ = 0.99) on ½λθ²: λ/P rises as the gradients shrink, then hovers just
    below 38/η (median of the last 1,000 of 3,000 steps; measured 0.86–0.97 of the threshold)."""
    model = Quadratic(torch.tensor([[lam]], dtype=F64), torch.tensor([theta0], dtype=F64))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    x, y = QUAD_DATA
    sharpness = []
    for _ in range(3000):
        opt.zero_grad()
        mean_loss(model(x), y).backward()
        opt.step()
        sharpness.append(lam / float(adam_preconditioner_of(opt, model)[0]))
    ratio = np.median(sharpness[-1000:]) / adam_stability_threshold(lr, beta1=0.9)
    assert 0.7 <= ratio <= 1.1, f"median preconditioned sharpness {ratio:.3f} x 38/lr"
    assert sharpness[10] < 0.2 * adam_stability_threshold(lr)  # it rose there: not a start-up artefact


# --------------------------------------------------------------------------- operator_top_eigs


@pytest.mark.parametrize("k, criterion, which", [(1, "residual", "largest"), (3, "gap", "largest"),
                                                 (1, "residual", "smallest")])
def test_operator_top_eigs_is_lanczos_top_eigs(tiny_mlp, tiny_data, k, criterion, which):
    ref = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(4), k=k, tol=1e-3, criterion=criterion,
                           which=which, atol=1e-3 if which == "smallest" else 0.0)
    op = HessianOperator(tiny_mlp, F.cross_entropy, tiny_data)
    res = operator_top_eigs(op, gen(4), k=k, tol=1e-3, criterion=criterion, which=which,
                            atol=1e-3 if which == "smallest" else 0.0)
    assert res.eigenvalues == ref.eigenvalues and res.history == ref.history and res.n_hvp == ref.n_hvp
    assert torch.equal(res.eigenvectors, ref.eigenvectors)
    assert res.to_dict() == ref.to_dict()
    # Products already spent on the operator are not charged to the next run.
    again = operator_top_eigs(op, gen(4), k=k, tol=1e-3, criterion=criterion, which=which,
                              atol=1e-3 if which == "smallest" else 0.0)
    assert again.n_hvp == ref.n_hvp and op.n_hvp == 2 * ref.n_hvp


@pytest.mark.parametrize("c", [1.0, 0.25, 40.0])
def test_scalar_preconditioner_scales_the_eigenvalue(tiny_mlp, tiny_data, c):
    ref = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(6), tol=1e-8)
    op = PreconditionedOperator(HessianOperator(tiny_mlp, F.cross_entropy, tiny_data),
                                torch.full((ref.eigenvectors.shape[1],), c, dtype=F64))
    res = operator_top_eigs(op, gen(6), tol=1e-8)
    assert res.eigenvalues[0] == pytest.approx(ref.eigenvalues[0] / c, rel=1e-10)
    assert res.n_hvp == ref.n_hvp


# --------------------------------------------------------------------------- refusals


def _op():
    model = Quadratic(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64))
    return HessianOperator(model, mean_loss, QUAD_DATA)


_V = torch.ones(3, dtype=F64)
_QUAD = Quadratic(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64))

BAD_CALLS = {  # name: (call, the argument the message must name)
    "unknown optimizer": (lambda: stability_threshold("rmsprop", 0.1), "optimizer.*'sgd', 'adam'"),
    "lr zero": (lambda: stability_threshold("sgd", 0.0), "lr"),
    "lr negative": (lambda: gd_stability_threshold(-0.1), "lr"),
    "lr nan": (lambda: stability_threshold("adam", float("nan")), "lr"),
    "lr inf": (lambda: heavy_ball_stability_threshold(float("inf"), 0.5), "lr"),
    "lr bool": (lambda: gd_stability_threshold(True), "lr"),
    "momentum 1": (lambda: stability_threshold("sgd", 0.1, momentum=1.0), "momentum"),
    "momentum negative": (lambda: heavy_ball_stability_threshold(0.1, -0.1), "momentum"),
    "beta1 1": (lambda: stability_threshold("adam", 0.1, beta1=1.0), "beta1"),
    "beta1 nan": (lambda: adam_stability_threshold(0.1, float("nan")), "beta1"),
    "step 0": (lambda: adam_preconditioner(_V, 0), "step"),
    "step float": (lambda: adam_preconditioner(_V, 1.5), "step"),
    "beta2 1": (lambda: adam_preconditioner(_V, 1, beta2=1.0), "beta2"),
    "eps negative": (lambda: adam_preconditioner(_V, 1, eps=-1e-8), "eps"),
    "no moments": (lambda: adam_preconditioner([], 1), "exp_avg_sq"),
    "negative moment": (lambda: adam_preconditioner(-_V, 1), "exp_avg_sq"),
    "nan moment": (lambda: adam_preconditioner(torch.tensor([float("nan")]), 1), "exp_avg_sq"),
    "P wrong length": (lambda: PreconditionedOperator(_op(), torch.ones(4, dtype=F64)), "preconditioner"),
    "P zero entry": (lambda: PreconditionedOperator(_op(), torch.tensor([1.0, 0.0, 1.0])), "preconditioner"),
    "P nan entry": (lambda: PreconditionedOperator(_op(), torch.tensor([1.0, float("nan"), 1.0])), "preconditioner"),
    "P not a tensor": (lambda: PreconditionedOperator(_op(), [1.0, 1.0, 1.0]), "preconditioner"),
    "op not an operator": (lambda: PreconditionedOperator(object(), _V), "op"),
    "matvec wrong shape": (lambda: PreconditionedOperator(_op(), _V).matvec(torch.ones(2, dtype=F64)), "shape"),
    "operator_top_eigs op": (lambda: operator_top_eigs(object(), gen()), "op must be an operator"),
    "operator_top_eigs k": (lambda: operator_top_eigs(_op(), gen(), k=4), "k=4"),
    "operator_top_eigs criterion": (lambda: operator_top_eigs(_op(), gen(), criterion="x"), "criterion"),
    "operator_top_eigs generator": (lambda: operator_top_eigs(_op(), None), "generator"),
    "top eig tol": (lambda: preconditioned_top_eig(_QUAD, mean_loss, QUAD_DATA, _V, gen(), tol=0), "tol"),
    "top eig criterion": (lambda: preconditioned_top_eig(_QUAD, mean_loss, QUAD_DATA, _V, gen(), criterion="x"),
                          "criterion"),
    "top eig generator": (lambda: preconditioned_top_eig(_QUAD, mean_loss, QUAD_DATA, _V, 0), "generator"),
    "top eig start": (lambda: preconditioned_top_eig(_QUAD, mean_loss, QUAD_DATA, _V, gen(), start=_V[:2]),
                      "start"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_arguments_refused(name):
    call, match = BAD_CALLS[name]
    with pytest.raises(ValueError, match=match):
        call()


def _adam_refusals():
    model, data = adam_mlp()
    extra = nn.Parameter(torch.zeros(2, dtype=F64))
    return {
        "not Adam": (lambda: torch.optim.SGD(model.parameters(), lr=0.1), model, "torch.optim.Adam"),
        "no state yet": (lambda: torch.optim.Adam(model.parameters()), model, "no state"),
        "amsgrad": (lambda: train_adam(model, data, 1, amsgrad=True), model, "amsgrad"),
        "param not managed": (lambda: train_adam(model, data, 1), [*model.parameters(), extra], "not managed"),
        "param without state": (
            lambda: train_adam(model, data, 1, groups=lambda m: [{"params": [*m.parameters(), extra]}]),
            [*model.parameters(), extra], "no Adam state"),
        "no params": (lambda: train_adam(model, data, 1), [], "no parameters"),
    }


@pytest.mark.parametrize("name", list(_adam_refusals()))
def test_adam_preconditioner_of_refusals(name):
    make, which, match = _adam_refusals()[name]
    with pytest.raises(ValueError, match=match):
        adam_preconditioner_of(make(), which)
