"""Work shared between the curvature probes, each cross-checked against the independent computation.

* λmin from the same Krylov run as the top eigenvalues (``lanczos_extremes``) against a separate
  ``which="smallest"`` run;
* Hutch++ with the Lanczos basis as its sketch (``hutchpp_lanczos_trace``): its deflated samples
  against a direct computation, unbiasedness (given the basis, and over bases), lower variance
  than Hutchinson when a few eigenvalues dominate;
* SLQ's Rademacher start vectors as Hutchinson probes: their products are H z, and the plain
  Hutchinson estimate from the shared call equals ``hutchinson_trace`` with the same draws;
* ``curvature_of``: every HVP is counted once across its entries.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_utils.probes import hessian as hessian_module
from landscape_utils.probes import lanczos as lanczos_module
from landscape_utils.probes.lanczos import KrylovBasis, lanczos_extremes, lanczos_top_eigs
from landscape_utils.probes.spectrum import hutchinson_trace, hutchpp_lanczos_trace, slq_spectral_density
from tests.test_hessian import exact_hessian
from tests.test_lanczos_stopping import QUAD_DATA, gen, mean_loss, quadratic

# A few dominant eigenvalues over a small bulk (as in test_spectrum.py): where deflation pays.
DOMINANT = [100.0, 60.0, 30.0] + list(np.linspace(-0.5, 1.0, 47))
INDEFINITE = [5.0, 3.0, 2.9] + list(np.linspace(-2.0, 1.0, 57))
NEAR_ZERO = list(np.linspace(-1e-7, 1.0, 40))  # λmin ≈ 0: only the absolute floor can stop it


# --------------------------------------------------------------------------- λmin from the top run


@pytest.mark.parametrize(
    "case,k,tol,smallest_tol",
    [("tiny_mlp", 3, 1e-4, 1e-2), ("tiny_cnn", 3, 1e-4, 1e-2), ("tiny_mlp", 1, 1e-6, 1e-4),
     ("dominant", 3, 1e-4, 1e-2), ("indefinite", 2, 1e-4, 1e-3)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smallest_from_the_top_run_matches_a_separate_run(request, case, k, tol, smallest_tol, seed):
    if case.startswith("tiny"):
        model = request.getfixturevalue(case)
        data = request.getfixturevalue("tiny_data" if case == "tiny_mlp" else "tiny_image_data")
        loss_fn, H = F.cross_entropy, exact_hessian(model, data)
    else:
        model, H = quadratic(DOMINANT if case == "dominant" else INDEFINITE)
        loss_fn, data = mean_loss, QUAD_DATA
    ev = torch.linalg.eigvalsh(H).numpy()
    both = lanczos_extremes(model, loss_fn, data, gen(seed), k=k, tol=tol, criterion="gap", smallest_tol=smallest_tol)
    top = lanczos_top_eigs(model, loss_fn, data, gen(seed), k=k, tol=tol, criterion="gap")
    low = lanczos_top_eigs(model, loss_fn, data, gen(seed), k=1, tol=smallest_tol, which="smallest")
    # The top end is the standalone run; the smallest end agrees with the separate run within tol.
    assert both.top.eigenvalues == top.eigenvalues and both.top.n_hvp == top.n_hvp
    assert both.smallest.converged and low.converged
    lam_min = both.smallest.eigenvalues[0]
    assert abs(lam_min - low.eigenvalues[0]) <= smallest_tol * abs(low.eigenvalues[0])
    assert abs(lam_min - ev[0]) <= smallest_tol * abs(ev[0])
    # HVP accounting: one run, each HVP counted once; the smallest end reused the top's steps.
    assert both.n_hvp == both.top.n_hvp + both.smallest.n_hvp
    assert both.basis.m == both.n_hvp  # the basis is the whole run's
    standalone = both.smallest.n_hvp + both.smallest.n_hvp_shared
    if lanczos_module.SMALLEST_FLOOR * abs(ev[-1]) < abs(ev[0]):  # the absolute floor does not bind:
        assert lam_min == low.eigenvalues[0] and standalone == low.n_hvp  # the same run, step for step
        assert both.n_hvp == max(top.n_hvp, low.n_hvp)
    else:  # (dominant: floor 1e-2·tol·100 > tol·0.5) it stops earlier, within smallest_tol
        assert standalone < low.n_hvp


def test_smallest_near_zero_stops_on_the_absolute_floor():
    model, H = quadratic(NEAR_ZERO)
    both = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(), k=1, smallest_tol=1e-2, max_iter=40)
    floor = lanczos_module.SMALLEST_FLOOR * 1e-2 * 1.0  # × max|θ| = λmax = 1
    assert both.smallest.converged and both.n_hvp < 40
    assert abs(both.smallest.eigenvalues[0] - (-1e-7)) <= floor * 1.01
    # Without the floor the relative rule on |λmin| = 1e-7 is not met before the space is spanned.
    no_floor = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(), k=1, smallest_tol=1e-2, smallest_atol=0.0,
                                max_iter=30)
    assert not no_floor.smallest.converged


def test_krylov_basis_is_orthonormal_and_tridiagonalises(tiny_cnn, tiny_image_data):
    H = exact_hessian(tiny_cnn, tiny_image_data)
    both = lanczos_extremes(tiny_cnn, F.cross_entropy, tiny_image_data, gen(3), k=2)
    Q = both.basis.vectors
    torch.testing.assert_close(Q @ Q.T, torch.eye(both.basis.m, dtype=torch.float64), atol=1e-12, rtol=0)
    np.testing.assert_allclose((Q @ H @ Q.T).numpy(), both.basis.tridiagonal(), atol=1e-10)
    assert both.basis.trace() == pytest.approx(float(torch.trace(Q @ H @ Q.T)), rel=1e-12)


@pytest.mark.parametrize("warm", [False, True])
def test_top_eigs_keep_their_basis_when_asked(tiny_cnn, tiny_image_data, warm):
    H = exact_hessian(tiny_cnn, tiny_image_data)
    start = torch.linalg.eigh(H).eigenvectors[:, -1] + 0.3 * torch.randn(H.shape[0], dtype=H.dtype) if warm else None
    kept = lanczos_top_eigs(tiny_cnn, F.cross_entropy, tiny_image_data, gen(4), criterion="gap", start=start,
                            keep_basis=True)
    plain = lanczos_top_eigs(tiny_cnn, F.cross_entropy, tiny_image_data, gen(4), criterion="gap", start=start)
    assert plain.basis is None and "basis" not in kept.to_dict()
    assert kept.eigenvalues == plain.eigenvalues and kept.n_hvp == plain.n_hvp  # asking changes nothing else
    Q = kept.basis.vectors
    assert kept.basis.m == kept.n_hvp  # the basis at the stop: one vector per HVP
    torch.testing.assert_close(Q @ Q.T, torch.eye(kept.basis.m, dtype=torch.float64), atol=1e-12, rtol=0)
    np.testing.assert_allclose((Q @ H @ Q.T).numpy(), kept.basis.tridiagonal(), atol=1e-10)
    # Its top Ritz value is the result's eigenvalue.
    assert np.linalg.eigvalsh(kept.basis.tridiagonal())[-1] == pytest.approx(kept.eigenvalues[0], rel=1e-12)


# --------------------------------------------------------------------------- Hutch++ on the Lanczos basis


def deflated_direct(H: torch.Tensor, Q: torch.Tensor, z: torch.Tensor) -> float:
    """z̃ᵀHz̃ with z̃ = (I − QᵀQ) z, computed directly."""
    zt = z - Q.T @ (Q @ z)
    return float(zt @ H @ zt)


@pytest.mark.parametrize("case", ["dominant", "indefinite", "tiny_mlp"])
def test_deflated_samples_are_the_direct_computation(request, case):
    if case == "tiny_mlp":
        model, data = request.getfixturevalue("tiny_mlp"), request.getfixturevalue("tiny_data")
        loss_fn, H = F.cross_entropy, exact_hessian(model, data)
    else:
        (model, H), loss_fn, data = quadratic(DOMINANT if case == "dominant" else INDEFINITE), mean_loss, QUAD_DATA
    basis = lanczos_extremes(model, loss_fn, data, gen(1), k=2).basis
    deflated, plain = hutchpp_lanczos_trace(model, loss_fn, data, gen(100), basis, n_probes=6)
    g = gen(100)
    zs = [torch.randint(0, 2, (H.shape[0],), generator=g).double() * 2 - 1 for _ in range(6)]
    np.testing.assert_allclose(deflated.samples, [deflated_direct(H, basis.vectors, z) for z in zs], rtol=1e-9,
                               atol=1e-9 * float(H.abs().max()))
    np.testing.assert_allclose(plain.samples, [float(z @ H @ z) for z in zs], rtol=1e-10)
    assert deflated.exact_part == pytest.approx(float(torch.trace(basis.vectors @ H @ basis.vectors.T)), rel=1e-10)
    assert deflated.n_hvp == 6 and plain.n_hvp == 0 and plain.n_hvp_shared == 6
    # Plain Hutchinson from the shared call is hutchinson_trace with the same draws.
    ref = hutchinson_trace(model, loss_fn, data, gen(100), n_probes=6)
    np.testing.assert_allclose(plain.samples, ref.samples, rtol=1e-12)
    assert plain.estimate == pytest.approx(ref.estimate, rel=1e-12)


def test_deflated_trace_is_unbiased_given_the_basis_and_over_bases():
    model, H = quadratic(DOMINANT)
    exact = float(sum(DOMINANT))
    # Given one (small, 6-step) basis: the deflated samples average to tr(H) − tr(T).
    basis = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(0), k=1, tol=1e-2, max_iter=6).basis
    res, _ = hutchpp_lanczos_trace(model, mean_loss, QUAD_DATA, gen(1), basis, n_probes=2000)
    assert abs(res.estimate - exact) < 4 * res.stderr
    # Over bases: fresh basis and probes per seed (independent generators).
    estimates, stderrs = [], []
    for s in range(100):
        b = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(s), k=1, tol=1e-2, max_iter=4).basis
        r, _ = hutchpp_lanczos_trace(model, mean_loss, QUAD_DATA, gen(10_000 + s), b, n_probes=8)
        estimates.append(r.estimate)
        stderrs.append(r.stderr)
    estimates = np.asarray(estimates)
    assert abs(estimates.mean() - exact) < 4 * estimates.std(ddof=1) / np.sqrt(estimates.size)
    # The stated standard errors describe the spread: the estimate is unbiased given each basis,
    # so its variance over bases is the mean of the conditional variances.
    ratio = np.sqrt(np.mean(np.square(stderrs))) / estimates.std(ddof=1)
    print(f"\nrms stated s.e. / spread of the estimates over bases: {ratio:.2f}")
    assert 0.7 < ratio < 1.4


@pytest.mark.parametrize("budget", [8, 24])
def test_deflated_trace_has_lower_variance_than_hutchinson_when_a_few_eigenvalues_dominate(budget):
    model, _ = quadratic(DOMINANT)
    exact, n = float(sum(DOMINANT)), 30
    deflated, plain = [], []
    for s in range(n):
        basis = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(s), k=3, tol=1e-4).basis
        d, p = hutchpp_lanczos_trace(model, mean_loss, QUAD_DATA, gen(1000 + s), basis, n_probes=budget)
        deflated.append(d.estimate)
        plain.append(p.estimate)
    rmse = lambda e: float(np.sqrt(np.mean((np.asarray(e) - exact) ** 2)))  # noqa: E731
    print(f"\nbudget {budget}: RMSE deflated {rmse(deflated):.3g}, Hutchinson {rmse(plain):.3g}")
    assert rmse(deflated) < 0.1 * rmse(plain)


# --------------------------------------------------------------------------- SLQ probes as Hutchinson's


def test_slq_start_vectors_serve_as_hutchinson_probes():
    model, H = quadratic(INDEFINITE)
    g = gen(4)
    slq = slq_spectral_density(model, mean_loss, QUAD_DATA, g, n_vectors=3, n_steps=10, keep_products=True)
    Z, HZ = slq.probe_products
    assert Z.shape == HZ.shape == (3, H.shape[0]) and bool(torch.all(Z.abs() == 1))
    torch.testing.assert_close(HZ, Z @ H, rtol=1e-10, atol=1e-10)  # H z exactly (H symmetric)
    assert "probe_products" not in slq.to_dict()
    # The same generator continues with the remaining probes: the plain estimate is hutchinson_trace's.
    basis = lanczos_extremes(model, mean_loss, QUAD_DATA, gen(99), k=2).basis
    deflated, plain = hutchpp_lanczos_trace(model, mean_loss, QUAD_DATA, g, basis, n_probes=10, products=(Z, HZ))
    ref = hutchinson_trace(model, mean_loss, QUAD_DATA, gen(4), n_probes=10)
    np.testing.assert_allclose(plain.samples, ref.samples, rtol=1e-10)
    assert deflated.n_hvp == 7 and deflated.n_hvp_shared == 3
    # The density itself is unchanged by keeping the products.
    assert slq.to_dict() == slq_spectral_density(model, mean_loss, QUAD_DATA, gen(4), n_vectors=3,
                                                 n_steps=10).to_dict()


@pytest.mark.parametrize(
    "kwargs",
    [{"n_probes": 1}, {"n_probes": 2.0}, {"basis": "Q"}, {"basis": "short"}, {"products": "too many"},
     {"products": "not rademacher"}, {"products": "mismatched"}, {"generator": None}],
    ids=str,
)
def test_hutchpp_lanczos_bad_arguments(tiny_mlp, tiny_data, kwargs):
    kwargs = dict(kwargs)
    basis = lanczos_extremes(tiny_mlp, F.cross_entropy, tiny_data, gen(), k=1, tol=1e-2).basis
    P = basis.vectors.shape[1]
    ones = torch.ones(3, P, dtype=torch.float64)
    kwargs["basis"] = {"Q": basis.vectors, "short": KrylovBasis(basis.vectors[:, :-1], basis.alphas, basis.betas)}.get(
        kwargs.get("basis"), basis)
    kwargs["products"] = {"too many": (ones, ones), "not rademacher": (0.5 * ones[:1], ones[:1]),
                          "mismatched": (ones[:2], ones[:1])}.get(kwargs.get("products"))
    generator = kwargs.pop("generator", gen())
    kwargs.setdefault("n_probes", 2)
    with pytest.raises(ValueError):
        hutchpp_lanczos_trace(tiny_mlp, F.cross_entropy, tiny_data, generator, **kwargs)


# --------------------------------------------------------------------------- the study's curvature job


@pytest.mark.parametrize("density", [True, False])
def test_curvature_of_counts_every_hvp_once_and_shares_soundly(tiny_mlp, tiny_data, monkeypatch, density):
    from landscape_utils.study import jobs

    calls = {"n": 0}
    real = hessian_module.HessianOperator.matvec

    def counted(self, v):
        calls["n"] += 1
        return real(self, v)

    monkeypatch.setattr(hessian_module.HessianOperator, "matvec", counted)
    cfg = SimpleNamespace(curvature_seed=0, lanczos_k=3, lanczos_tol=1e-4, smallest_tol=1e-2, power_tol=1e-3,
                          power_max_iter=100, trace_probes=12, slq_vectors=2, slq_steps=8)
    probe = SimpleNamespace(train=SimpleNamespace(data=tiny_data))
    out = jobs.curvature_of(tiny_mlp, probe, cfg, density=density)
    counts = {key: v["n_hvp"] for key, v in out.items() if isinstance(v, dict) and "n_hvp" in v}
    assert set(counts) == {"top", "smallest", "power", "trace", "trace_hutchinson"} | (
        {"density"} if density else set())
    assert sum(counts.values()) == calls["n"]
    assert counts["trace"] == cfg.trace_probes - (cfg.slq_vectors if density else 0)
    assert counts["trace_hutchinson"] == 0
    # The same answers as the independent computations.
    monkeypatch.setattr(hessian_module.HessianOperator, "matvec", real)
    low = lanczos_top_eigs(tiny_mlp, F.cross_entropy, tiny_data, gen(0), k=1, tol=1e-2, which="smallest")
    assert out["lambda_min"] == pytest.approx(low.eigenvalues[0], rel=1e-2)
    H = exact_hessian(tiny_mlp, tiny_data)
    ev = torch.linalg.eigvalsh(H).numpy()
    np.testing.assert_allclose(out["top"]["eigenvalues"], ev[::-1][:3], rtol=1e-4)
    tr = out["trace"]
    assert tr["method"] == "hutch++ (lanczos basis)" and abs(tr["estimate"] - ev.sum()) < 5 * tr["stderr"]
    if not density:
        return
    assert out["trace_hutchinson"]["samples"][:2] == pytest.approx(
        [float(z @ H @ z) for z in jobs.slq_spectral_density(
            tiny_mlp, F.cross_entropy, tiny_data, gen(1), n_vectors=2, n_steps=8,
            keep_products=True).probe_products[0]], rel=1e-9)


def test_hvp_layout_copy_leaves_the_callers_model_and_changes_no_product(tiny_mlp, tiny_cnn, tiny_image_data):
    from landscape_utils.study.jobs import for_hvps

    assert for_hvps(tiny_mlp) is tiny_mlp  # nothing to convert without convolutions
    last = tiny_cnn.to(memory_format=torch.channels_last)
    copy = for_hvps(last)
    assert copy is not last
    # The caller's model stays channels_last (conv 3->4's weight is not contiguous in the default
    # layout); the copy is contiguous throughout.
    assert last[2].weight.is_contiguous(memory_format=torch.channels_last) and not last[2].weight.is_contiguous()
    assert all(p.is_contiguous() for p in copy.parameters())
    v = torch.randn(sum(p.numel() for p in last.parameters()), generator=gen(5), dtype=torch.float64)
    x, y = tiny_image_data
    products = [hessian_module.HessianOperator(m, F.cross_entropy, (x.contiguous(memory_format=torch.channels_last), y))
                .matvec(v) for m in (last, copy)]
    torch.testing.assert_close(products[0], products[1], rtol=1e-10, atol=1e-12)
