"""Lanczos stopping on an eigenvalue-error estimate (criterion="gap"), and warm starts.

The gap rule stops when min(r, r²/gap) ≤ tol·|θ| for the wanted Ritz pairs and the next one (the
guard). It is an estimate, not a bound: these tests check it against exact float64 Hessians over
50 random start vectors per case, on spectra chosen to fool it (near-degenerate tops with
λ₂/λ₁ = 0.98, clustered tops and bulks, nearly repeated eigenvalues) and on the tiny networks.

A Krylov method cannot see an eigenvector its start vector nearly misses: a start whose component
along a wanted eigenvector is a small fraction of the typical 1/√P can stop with that eigenvalue
missing, under either rule. Such starts (overlap below ``MIN_OVERLAP``/√P, about 2.4% per
eigenvector) are counted and reported, not held to the tolerance; every other start is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_utils.probes.hessian import random_unit_vector
from landscape_utils.probes.lanczos import lanczos_extremes, lanczos_top_eigs
from landscape_utils.probes.power import power_iteration_top_eig
from tests.test_hessian import exact_hessian

TOL = 1e-4
SEEDS = range(50)
MIN_OVERLAP = 0.03  # × 1/√P: below this a start "misses" an eigenvector (see the module docstring)
P = 200


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Quadratic(nn.Module):
    """One parameter θ (P,) with loss ½θᵀAθ + bᵀθ (``loss_fn`` ignores the targets): H = A exactly."""

    def __init__(self, A: torch.Tensor, seed: int = 3) -> None:
        super().__init__()
        g = gen(seed)
        self.theta = nn.Parameter(torch.randn(A.shape[0], generator=g, dtype=A.dtype))
        self.register_buffer("A", A)
        self.register_buffer("b", torch.randn(A.shape[0], generator=g, dtype=A.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta + self.b @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


QUAD_DATA = (torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2))


def basis(n: int, seed: int = 7) -> torch.Tensor:
    """A random orthogonal (n, n) matrix (columns are the eigenvectors)."""
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=torch.float64))
    return U


def quadratic(eigs, seed: int = 7) -> tuple[Quadratic, torch.Tensor]:
    """The model and its exact Hessian U diag(eigs) Uᵀ."""
    eigs = torch.as_tensor(np.asarray(eigs, dtype=np.float64))
    U = basis(len(eigs), seed)
    A = U @ torch.diag(eigs) @ U.T
    return Quadratic(A), A


_rng = np.random.default_rng(1)
SPECTRA = {  # name: eigenvalues (P of them); the top few are what the rule must not be fooled by
    "top pair 0.98": [1.0, 0.98] + list(np.linspace(-0.1, 0.6, P - 2)),
    "top pair 0.98, bulk close": [1.0, 0.98, 0.9] + list(np.linspace(-0.1, 0.85, P - 3)),
    "top pair 0.98, indefinite": [1.0, 0.98] + list(np.linspace(-1.5, 0.5, P - 2)),
    "top cluster 2%": [1.0, 0.98, 0.96, 0.94] + list(np.linspace(-0.05, 0.5, P - 4)),
    "top cluster 1%": [1.0, 0.99, 0.98, 0.97] + list(np.linspace(-0.05, 0.5, P - 4)),
    "clustered bulk": [1.0, 0.7, 0.69, 0.5] + list(np.concatenate([
        0.3 + 1e-3 * _rng.standard_normal(60), 1e-3 * _rng.standard_normal(P - 104),
        -0.2 + 1e-3 * _rng.standard_normal(40)])),
    "near-repeated top": [1.0 + 1e-7 * i for i in range(4)] + list(np.linspace(0, 0.8, P - 4)),
    "power law": list(1.0 / np.arange(1, P + 1)),
    "outliers and bulk": [4.5, 3.5, 2.7, 2.0, 1.6] + list(_rng.normal(0, 0.05, P - 5)),
    "uniform": list(np.linspace(-1, 1, P)),
}


def sweep(model, loss_fn, data, H: torch.Tensor, k: int, criterion: str, tol: float = TOL):
    """Relative errors of the k largest over SEEDS, and which starts miss a wanted eigenvector."""
    ev, U = torch.linalg.eigh(H)
    want, vecs = ev.flip(0)[:k].numpy(), U.flip(1)[:, :k]
    n = H.shape[0]
    errors, missed, hvps = [], [], []
    for seed in SEEDS:
        res = lanczos_top_eigs(model, loss_fn, data, gen(seed), k=k, tol=tol, criterion=criterion)
        assert res.converged
        errors.append(float(np.max(np.abs(np.asarray(res.eigenvalues) - want) / np.abs(want))))
        q0 = random_unit_vector(n, gen(seed), torch.float64, "cpu")  # the start the run drew
        missed.append(bool((vecs.T @ q0).abs().min() * np.sqrt(n) < MIN_OVERLAP))
        hvps.append(res.n_hvp)
    return np.asarray(errors), np.asarray(missed), np.asarray(hvps)


_WORST: dict[str, float] = {}


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", list(SPECTRA))
def test_gap_rule_error_within_tol_over_50_starts(name, k):
    model, A = quadratic(SPECTRA[name])
    err, missed, hvps = sweep(model, mean_loss, QUAD_DATA, A, k, "gap")
    held = err[~missed]
    _WORST[f"{name}, k={k}"] = float(held.max())
    print(f"\n{name}, k={k}: worst relative error {held.max():.2e} over {held.size} starts "
          f"(tol {TOL:g}; {missed.sum()} starts missing a wanted eigenvector, worst {err.max():.2e}); "
          f"HVPs median {np.median(hvps):.0f}, max {hvps.max()}")
    assert held.size >= 40  # the exclusion is rare, not a way out
    assert held.max() <= TOL


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("model_name,data_name", [("tiny_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")])
def test_gap_rule_error_within_tol_on_tiny_networks(request, model_name, data_name, k):
    model, data = request.getfixturevalue(model_name), request.getfixturevalue(data_name)
    H = exact_hessian(model, data)
    err, missed, hvps = sweep(model, F.cross_entropy, data, H, k, "gap")
    held = err[~missed]
    _WORST[f"{model_name}, k={k}"] = float(held.max())
    print(f"\n{model_name}, k={k}: worst relative error {held.max():.2e} over {held.size} starts; "
          f"HVPs median {np.median(hvps):.0f}")
    assert held.size >= 40 and held.max() <= TOL


def test_print_worst_gap_rule_error():
    """The worst relative error seen by the two tests above (run them first; -s shows it)."""
    if not _WORST:
        pytest.skip("run with the sweeps above")
    name = max(_WORST, key=_WORST.get)
    print(f"\nworst gap-rule relative error over all cases: {_WORST[name]:.3e} ({name}); tol {TOL:g}")
    assert _WORST[name] <= TOL


def test_unguarded_estimate_is_what_the_guard_fixes():
    """Why the guard: at the step the bare r²/gap estimate of θ₁ first passes, θ₁ can still sit on
    λ₂ (0.98) with θ₂ in the bulk, so the estimate is far below the true error. The guarded rule
    runs on until λ₁ is found."""
    model, A = quadratic(SPECTRA["top pair 0.98"])
    from landscape_utils.probes.hessian import HessianOperator
    from landscape_utils.probes.lanczos import LanczosProcess, _gap_bounds

    op = HessianOperator(model, mean_loss, QUAD_DATA)
    proc = LanczosProcess(op.matvec, random_unit_vector(P, gen(10), torch.float64, "cpu"), P)
    while True:  # the bare rule: the top pair only
        proc.step()
        theta, _, res = proc.ritz()
        if _gap_bounds(theta, res)[-1] <= TOL * abs(theta[-1]):
            break
    assert abs(theta[-1] - 1.0) > 100 * TOL  # fooled: stopped next to λ₂
    res = lanczos_top_eigs(model, mean_loss, QUAD_DATA, gen(10), k=1, tol=TOL, criterion="gap")
    assert abs(res.eigenvalues[0] - 1.0) <= TOL and res.n_hvp > proc.m


# --------------------------------------------------------------------------- warm starts


def perturbed(A: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    """A + scale·‖A‖₂·E with E a random symmetric matrix of unit spectral norm."""
    E = torch.randn(A.shape, generator=gen(seed), dtype=A.dtype)
    E = (E + E.T) / 2
    return A + scale * torch.linalg.matrix_norm(A, 2) * E / torch.linalg.matrix_norm(E, 2)


# The residual rule needs only the warm pair to converge: far fewer HVPs. The gap rule also waits
# for its guard pair, which a start near the top eigenvector does not help find: fewer HVPs.
@pytest.mark.parametrize("criterion,at_most", [("residual", 0.5), ("gap", 0.9)], ids=["residual", "gap"])
@pytest.mark.parametrize("name", ["outliers and bulk", "top pair 0.98", "power law"])
def test_warm_start_from_nearby_eigenvector_needs_far_fewer_hvps(name, criterion, at_most):
    model0, A0 = quadratic(SPECTRA[name])
    old_top = torch.linalg.eigh(A0)[1][:, -1]
    A1 = perturbed(A0, 1e-3, seed=11)  # θ moved a little: the Hessian changed by 0.1% of its norm
    model1, lam1 = Quadratic(A1), float(torch.linalg.eigvalsh(A1)[-1])
    cold = [lanczos_top_eigs(model1, mean_loss, QUAD_DATA, gen(s), tol=TOL, criterion=criterion) for s in range(5)]
    warm = lanczos_top_eigs(model1, mean_loss, QUAD_DATA, gen(0), tol=TOL, criterion=criterion,
                            start=3.0 * old_top.float())  # any norm, any float dtype
    assert warm.converged and warm.warm_start and not cold[0].warm_start
    assert abs(warm.eigenvalues[0] - lam1) <= TOL * abs(lam1)
    print(f"\n{name}, {criterion}: warm {warm.n_hvp} HVPs, cold {[c.n_hvp for c in cold]}")
    assert warm.n_hvp <= at_most * np.median([c.n_hvp for c in cold])
    power_cold = power_iteration_top_eig(model1, mean_loss, QUAD_DATA, gen(0), tol=1e-6, max_iter=500)
    power_warm = power_iteration_top_eig(model1, mean_loss, QUAD_DATA, gen(0), tol=1e-6, max_iter=500,
                                         start=old_top)
    assert power_warm.warm_start and power_warm.n_hvp < power_cold.n_hvp
    assert power_warm.eigenvalue == pytest.approx(power_cold.eigenvalue, rel=1e-4)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("criterion", ["residual", "gap"])
@pytest.mark.parametrize("twist", [0.0, 1e-3], ids=["exact swap", "swap and rotate"])
def test_warm_start_across_a_crossing_gives_the_cold_answer(criterion, k, twist):
    """λ₁ and λ₂ swap between A₀ and A₁; the start is A₀'s top eigenvector, now A₁'s second one
    (exactly, or nearly after a small rotation). Lanczos must still find A₁'s top eigenvalues: with
    an exact eigenvector it breaks down at once and restarts; it may not stop on the old value."""
    U = basis(60)
    eigs0 = torch.tensor([1.0, 0.9] + list(np.linspace(-0.2, 0.6, 58)), dtype=torch.float64)
    eigs1 = eigs0.clone()
    eigs1[[0, 1]] = eigs0[[1, 0]]
    A1 = U @ torch.diag(eigs1) @ U.T
    if twist:
        A1 = perturbed(A1, twist, seed=5)
    model1, ev1 = Quadratic(A1), torch.linalg.eigvalsh(A1).flip(0)[:k].numpy()
    old_top = U[:, 0]
    for seed in range(5):
        cold = lanczos_top_eigs(model1, mean_loss, QUAD_DATA, gen(seed), k=k, tol=TOL, criterion=criterion)
        warm = lanczos_top_eigs(model1, mean_loss, QUAD_DATA, gen(seed), k=k, tol=TOL, criterion=criterion,
                                start=old_top)
        assert warm.converged and cold.converged
        np.testing.assert_allclose(warm.eigenvalues, ev1, rtol=TOL)
        np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=2 * TOL)


@pytest.mark.parametrize(
    "start",
    [torch.zeros(186, dtype=torch.float64), torch.ones(185, dtype=torch.float64), torch.ones(1, 186),
     torch.full((186,), float("nan"), dtype=torch.float64), [1.0] * 186],
    ids=["zero", "short", "2-d", "nan", "list"],
)
@pytest.mark.parametrize("fn", [lanczos_top_eigs, lanczos_extremes, power_iteration_top_eig],
                         ids=lambda f: f.__name__)
def test_bad_start_vectors(tiny_mlp, tiny_data, fn, start):
    with pytest.raises(ValueError):
        fn(tiny_mlp, F.cross_entropy, tiny_data, gen(), start=start)
