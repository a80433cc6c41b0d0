"""HVP paths when double backward is missing: path choice, finite differences against exact
float64 Hessians, the ε rule, solvers on finite-difference HVPs, and the "nothing works" error.

Facts checked here for torch 2.14.1 on CPU: ``hardsigmoid`` and the fused CPU attention kernel
(``_scaled_dot_product_flash_attention_for_cpu``, picked by default for float32 and float64
``F.scaled_dot_product_attention``) have no double backward; ``hardswish`` *does* have one in this
version (checked against x·relu6(x+3)/6 below), so the finite-difference path is tested with
``nn.Hardsigmoid``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_utils.probes import hvp_paths
from landscape_utils.probes.hessian import HessianOperator, HessianUnavailableError
from landscape_utils.probes.lanczos import lanczos_top_eigs
from landscape_utils.probes.power import power_iteration_top_eig
from landscape_utils.probes.spectrum import hutchinson_trace, hutchpp_trace, slq_spectral_density


from tests.test_hessian import exact_hessian, gen  # noqa: E402  (one exact reference for both files)


class Attention(nn.Module):
    """Tokens -> one self-attention layer (F.scaled_dot_product_attention) -> mean -> classes."""

    def __init__(self, dim: int = 6, classes: int = 3, manual: bool = False) -> None:
        super().__init__()
        self.qkv, self.head, self.manual = nn.Linear(dim, 3 * dim), nn.Linear(dim, classes), manual

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.manual:  # softmax(QKᵀ/√d)V from operations with double backward
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        return self.head(a.mean(dim=1))


class NoDerivative(torch.autograd.Function):
    """An operation with no derivative at all (no backward): even gradients fail."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x


class WithNoDerivative(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x):
        return NoDerivative.apply(self.lin(x))


class Hardsigmoid6(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3) / 6


def hardsigmoid_mlp(exact: bool = False) -> nn.Module:
    torch.manual_seed(3)
    act = Hardsigmoid6() if exact else nn.Hardsigmoid()
    return nn.Sequential(nn.Linear(8, 14), nn.Tanh(), nn.Linear(14, 14), act, nn.Linear(14, 4)).double()


# --------------------------------------------------------------------------- facts about torch


def test_double_backward_facts_of_this_torch():
    """Which operations lack double backward here (the premise of the fallback)."""
    x = torch.randn(50, dtype=torch.float64) * 4

    def second(f, at=x):
        z = at.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
        return torch.autograd.grad((g * g).sum(), z)[0]

    with pytest.raises(RuntimeError, match="hardsigmoid_backward is not implemented"):
        second(F.hardsigmoid)
    torch.testing.assert_close(second(F.hardswish), second(lambda t: t * F.relu6(t + 3) / 6))
    q = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="scaled_dot_product_flash_attention_for_cpu_backward"):
        second(lambda t: F.scaled_dot_product_attention(t, q, q), at=q)


# --------------------------------------------------------------------------- path choice


def test_path_choice_and_results_say_which(tiny_mlp, tiny_data):
    x = torch.randn(16, 4, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen(1))
    torch.manual_seed(0)
    attn = Attention().double()
    cases = [
        (tiny_mlp, tiny_data, hvp_paths.AUTOGRAD),
        (attn, (x, y), hvp_paths.MATH_ATTENTION),
        (hardsigmoid_mlp(), tiny_data, hvp_paths.FINITE_DIFFERENCES),
    ]
    for model, data, path in cases:
        op = HessianOperator(model, F.cross_entropy, data)
        assert op.hvp_path is None  # chosen on the first product
        op.matvec(torch.ones(op.dim, dtype=torch.float64))
        assert op.hvp_path == path and op.hvp_reason
        res = lanczos_top_eigs(model, F.cross_entropy, data, gen())
        d = res.to_dict()
        assert d["hvp_path"] == path and json.loads(json.dumps(d)) == d
        assert (d["hvp_rel_error"] is None) == (path != hvp_paths.FINITE_DIFFERENCES)
        for r in (power_iteration_top_eig(model, F.cross_entropy, data, gen(), max_iter=3),
                  hutchinson_trace(model, F.cross_entropy, data, gen(), n_probes=2),
                  hutchpp_trace(model, F.cross_entropy, data, gen(), n_hvp=5),
                  slq_spectral_density(model, F.cross_entropy, data, gen(), n_vectors=1, n_steps=3)):
            assert r.to_dict()["hvp_path"] == path
    op = HessianOperator(attn, F.cross_entropy, (x, y))
    op.matvec(torch.ones(op.dim, dtype=torch.float64))
    assert "flash_attention" in op.hvp_reason


def test_math_attention_matches_manual_attention():
    x = torch.randn(16, 4, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen(1))
    torch.manual_seed(0)
    fused = Attention().double()
    manual = Attention(manual=True).double()
    manual.load_state_dict(fused.state_dict())
    H = exact_hessian(manual, (x, y))
    op = HessianOperator(fused, F.cross_entropy, (x, y), batch_size=5)
    v = torch.randn(op.dim, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.hvp_path == hvp_paths.MATH_ATTENTION
    torch.testing.assert_close(op.matvec(2 * v), 2 * H @ v, rtol=1e-10, atol=1e-12)  # path kept


def test_forced_paths(tiny_mlp, tiny_data):
    H = exact_hessian(tiny_mlp, tiny_data)
    v = torch.randn(H.shape[0], generator=gen(), dtype=torch.float64)
    fd = HessianOperator(tiny_mlp, F.cross_entropy, tiny_data, hvp="finite-difference")
    assert fd.hvp_path == hvp_paths.FINITE_DIFFERENCES
    torch.testing.assert_close(fd.matvec(v), H @ v, rtol=1e-8, atol=1e-9)
    assert fd.n_grad == 4 and fd.loss == pytest.approx(float(F.cross_entropy(tiny_mlp(tiny_data[0]), tiny_data[1]).detach()))
    fd.matvec(v)
    assert fd.n_grad == 6  # two gradients per product after the first
    with pytest.raises(HessianUnavailableError, match="hardsigmoid_backward") as info:
        HessianOperator(hardsigmoid_mlp(), F.cross_entropy, tiny_data, hvp="autograd").matvec(torch.ones(396))
    assert "not tried" in str(info.value)
    with pytest.raises(ValueError):
        HessianOperator(tiny_mlp, F.cross_entropy, tiny_data, hvp="exact")
    with pytest.raises(ValueError):
        HessianOperator(tiny_mlp, F.cross_entropy, tiny_data, fd_step=0.0)


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("batch_size", [None, 10])
@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_cnn"])
def test_fd_hvp_matches_exact_hessian(request, name, batch_size):
    """float64 central differences at ε = eps^(1/3)·(1+‖θ‖)/‖v‖: truncation O(h²‖θ‖²) ≈ 1e-9
    relative on these smooth-almost-everywhere models; tolerance 1e-7, and the ε-vs-2ε estimate
    must not under-state the true error by more than a small factor."""
    model = request.getfixturevalue(name)
    data = request.getfixturevalue("tiny_data" if name == "tiny_mlp" else "tiny_image_data")
    H = exact_hessian(model, data)
    op = HessianOperator(model, F.cross_entropy, data, batch_size=batch_size, hvp="finite-difference")
    for seed in range(3):
        v = torch.randn(op.dim, generator=gen(seed), dtype=torch.float64) * 10**seed  # scale-free
        want = H @ v
        got = op.matvec(v)
        rel = float((got - want).norm() / want.norm())
        assert rel < 1e-7
        if seed == 0:
            assert op.hvp_rel_error < 1e-7 and rel <= 10 * op.hvp_rel_error + 1e-12
    assert op.fd_dtype == torch.float64 and op.fd_rel_step == pytest.approx(2.220446e-16 ** (1 / 3))


def test_fd_float32_model_computes_in_float64(tiny_mlp, tiny_data):
    """A float32 model: the differences run on a float64 copy (the model stays float32)."""
    H = exact_hessian(tiny_mlp, tiny_data)
    m32 = nn.Sequential(nn.Linear(8, 14), nn.Tanh(), nn.Linear(14, 4))
    m32.load_state_dict({k: t.float() for k, t in tiny_mlp.state_dict().items()})
    data = (tiny_data[0].float(), tiny_data[1])
    v = torch.randn(H.shape[0], generator=gen(), dtype=torch.float64)
    want = (H @ v).float()
    fd = HessianOperator(m32, F.cross_entropy, data, hvp="finite-difference")
    out = fd.matvec(v)
    assert out.dtype == torch.float32 and fd.fd_dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    # Only the float32 rounding of θ, the data and the output remain.
    assert float((out - want).norm() / want.norm()) < 1e-5
    f32 = HessianOperator(m32, F.cross_entropy, data, hvp="finite-difference", fd_float64=False)
    out32 = f32.matvec(v)
    assert f32.fd_dtype == torch.float32 and f32.fd_rel_step == pytest.approx(1.1920929e-07 ** (1 / 3))
    rel = float((out32 - want).norm() / want.norm())
    assert 1e-7 < rel < 1e-3 and f32.hvp_rel_error > 1e-6  # float32 differences: visibly noisier


def test_fd_model_refusing_float64_falls_back(tiny_data):
    class Float32Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x):
            return self.lin(x) @ torch.eye(4)  # a float32 constant made in forward

    model = Float32Constant()
    op = HessianOperator(model, F.cross_entropy, (tiny_data[0].float(), tiny_data[1]), hvp="finite-difference")
    op.matvec(torch.ones(op.dim))
    assert op.fd_dtype == torch.float32 and "float64 refused" in op.hvp_reason


def test_fd_epsilon_rule():
    f64, f32 = torch.float64, torch.float32
    h64 = 2.220446049250313e-16 ** (1 / 3)
    assert hvp_paths.fd_relative_step(f64) == pytest.approx(h64)
    assert hvp_paths.fd_epsilon(0.0, 1.0, f64) == pytest.approx(h64)
    assert hvp_paths.fd_epsilon(9.0, 2.0, f64) == pytest.approx(h64 * 10 / 2)
    assert hvp_paths.fd_epsilon(9.0, 2.0, f32) == pytest.approx(1.1920929e-07 ** (1 / 3) * 5)
    assert hvp_paths.fd_epsilon(9.0, 2.0, f64, rel_step=1e-4) == pytest.approx(5e-4)
    with pytest.raises(ValueError):
        hvp_paths.fd_epsilon(1.0, 0.0, f64)
    # The chosen h sits near the minimum of the error curve (truncation vs rounding) in float64.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 14), nn.Tanh(), nn.Linear(14, 4)).double()
    data = (torch.randn(64, 8, generator=gen(), dtype=f64), torch.randint(0, 4, (64,), generator=gen()))
    H = exact_hessian(model, data)
    v = torch.randn(H.shape[0], generator=gen(1), dtype=f64)
    err = {}
    for h in (1e-3, None, 1e-9):
        op = HessianOperator(model, F.cross_entropy, data, hvp="finite-difference", fd_step=h)
        err[h] = float((op.matvec(v) - H @ v).norm() / (H @ v).norm())
    assert err[None] < err[1e-3] / 100 and err[None] < err[1e-9] / 10


def test_solvers_on_fd_hvps_agree_with_exact_reference(tiny_data):
    """Hardsigmoid model: Lanczos/power/Hutchinson on FD HVPs vs the exact Hessian of the same
    model with hardsigmoid rebuilt as relu6(x+3)/6."""
    model, exact = hardsigmoid_mlp(), hardsigmoid_mlp(exact=True)
    H = exact_hessian(exact, tiny_data)
    ev = np.linalg.eigvalsh(H.numpy())
    res = lanczos_top_eigs(model, F.cross_entropy, tiny_data, gen(), k=2, tol=1e-8)
    assert res.hvp_path == hvp_paths.FINITE_DIFFERENCES and res.converged
    assert res.tolerance_used >= 10 * res.hvp_rel_error and res.tolerance_used >= 1e-8
    assert "tolerance" in res.tolerance_note and "finite differences" in res.hvp_note
    assert "smoothed" in res.hvp_note
    np.testing.assert_allclose(res.eigenvalues, ev[::-1][:2], rtol=max(1e-6, 10 * res.tolerance_used))
    tr = hutchinson_trace(model, F.cross_entropy, tiny_data, gen(), n_probes=20)
    tr_exact = hutchinson_trace(exact, F.cross_entropy, tiny_data, gen(), n_probes=20)
    assert tr.estimate == pytest.approx(tr_exact.estimate, rel=1e-6)
    assert tr.hvp_path == hvp_paths.FINITE_DIFFERENCES and tr_exact.hvp_path == hvp_paths.AUTOGRAD


def test_tolerance_is_clamped_to_what_fd_hvps_deliver(tiny_mlp, tiny_data):
    """float32 differences (forced) are ~1e-5 accurate: a 1e-8 tolerance is raised and says so."""
    m32 = nn.Sequential(nn.Linear(8, 14), nn.Tanh(), nn.Linear(14, 4))
    m32.load_state_dict({k: t.float() for k, t in tiny_mlp.state_dict().items()})
    ev = np.linalg.eigvalsh(exact_hessian(tiny_mlp, tiny_data).numpy())
    data = (tiny_data[0].float(), tiny_data[1])
    op_kwargs = {"hvp": "finite-difference"}
    res = lanczos_top_eigs(m32, F.cross_entropy, data, gen(), tol=1e-8, **op_kwargs)
    assert res.tolerance_used == 1e-8  # float64 differences: kept
    assert hvp_paths.tolerance_for(1e-8, 1e-4)[0] == pytest.approx(1e-3)
    assert "raised" in hvp_paths.tolerance_for(1e-8, 1e-4)[1]
    assert hvp_paths.tolerance_for(1e-4, None) == (1e-4, "")
    assert res.eigenvalues[0] == pytest.approx(ev[-1], rel=1e-4)


# --------------------------------------------------------------------------- nothing works


def test_nothing_works_names_the_operation(tiny_data):
    torch.manual_seed(0)
    model = WithNoDerivative().double()
    with pytest.raises(HessianUnavailableError) as info:
        lanczos_top_eigs(model, F.cross_entropy, tiny_data, gen())
    err = info.value
    assert isinstance(err, RuntimeError)
    assert "NoDerivativeBackward" in err.operation and "test_hvp_paths.py" in err.operation
    assert [p for p, _ in err.attempts] == [hvp_paths.AUTOGRAD, hvp_paths.FINITE_DIFFERENCES]
    assert "needs first-order gradients" in str(err)
    with pytest.raises(HessianUnavailableError):  # batched mode too
        HessianOperator(model, F.cross_entropy, tiny_data, batch_size=16).matvec(torch.ones(36, dtype=torch.float64))


def test_nothing_works_with_a_real_operator(tiny_data):
    """igamma has no derivative w.r.t. its first argument in PyTorch."""

    class Igamma(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x):
            return torch.special.gammainc(F.softplus(self.lin(x)) + 0.5, torch.ones(()))

    with pytest.raises(HessianUnavailableError, match="igamma") as info:
        hutchinson_trace(Igamma().double(), F.cross_entropy, tiny_data, gen(), n_probes=2)
    assert "igamma" in info.value.operation


def test_other_errors_are_not_swallowed(tiny_mlp, tiny_data):
    def bad_loss(out, y):
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        lanczos_top_eigs(tiny_mlp, bad_loss, tiny_data, gen())


# --------------------------------------------------------------------------- contract on FD path


def test_fd_path_leaves_model_as_found(tiny_data):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 14), nn.BatchNorm1d(14), nn.Hardsigmoid(), nn.Linear(14, 4)).double()
    model.train()
    with torch.no_grad():
        model(tiny_data[0])  # non-trivial running statistics
    model[1].eval()  # mixed modes
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    for train in (False, True):
        res = lanczos_top_eigs(model, F.cross_entropy, tiny_data, gen(), train=train, batch_size=32)
        assert res.hvp_path == hvp_paths.FINITE_DIFFERENCES
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert [m.training for m in model.modules()] == modes
