"""Kendall's tau-b with a bootstrap interval: scipy agreement, invariances, coverage, refusals, the sentence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from landscape_utils.study import rank_correlation as rc
from landscape_utils.study.rank_correlation import KendallTau, kendall_sentence, kendall_tau_interval


def _pairs(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(seed).multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    return z[:, 0], z[:, 1]


DATA = {  # name: (x, y)
    "normal n=20": _pairs(20, 0.5, 1),
    "negative n=12": _pairs(12, -0.6, 2),
    "n=4": (np.array([0.3, 0.1, 0.7, 0.5]), np.array([1.0, 2.0, 4.0, 3.0])),
    "ties in x": (np.array([1, 1, 2, 2, 3, 3, 4, 5.0]), np.array([0.5, 0.2, 0.9, 1.1, 0.7, 1.5, 1.2, 2.0])),
    "ties in both": (np.array([1, 1, 2, 2, 3, 3, 4, 4.0]), np.array([1, 2, 2, 2, 3, 1, 4, 4.0])),
}


@pytest.mark.parametrize("name", list(DATA))
def test_tau_and_p_value_equal_scipy(name):
    x, y = DATA[name]
    res = kendall_tau_interval(x, y, resamples=200)
    want = stats.kendalltau(x, y)
    assert res.tau == pytest.approx(want.statistic, abs=1e-14)
    assert res.p_value == pytest.approx(want.pvalue, rel=1e-12)
    assert res.n == len(x) and -1.0 <= res.low <= res.tau <= res.high <= 1.0


@pytest.mark.parametrize("name", list(DATA))
def test_bootstrap_and_jackknife_taus_equal_scipy_on_each_resample(name):
    """The vectorised tau-b of a resample (duplicated runs are ties in both) is scipy's."""
    x, y = DATA[name]
    boot = rc.bootstrap_taus(x, y, resamples=30, seed=3)
    idx = np.random.default_rng(3).integers(0, len(x), size=(30, len(x)))
    want = np.array([stats.kendalltau(x[i], y[i]).statistic for i in idx])
    np.testing.assert_allclose(boot, want, atol=1e-14, equal_nan=True)
    jack = rc._jackknife_taus(x, y)
    want = [stats.kendalltau(np.delete(x, i), np.delete(y, i)).statistic for i in range(len(x))]
    np.testing.assert_allclose(jack, want, atol=1e-14, equal_nan=True)


@pytest.mark.parametrize("method", rc.METHODS)
@pytest.mark.parametrize("transform", ["exp of x", "rank of y", "swap x and y"])
def test_interval_invariant_to_monotone_transforms_and_swap(transform, method):
    x, y = DATA["normal n=20"]
    ref = kendall_tau_interval(x, y, resamples=500, method=method)
    xt, yt = {"exp of x": (np.exp(x), y), "rank of y": (x, stats.rankdata(y)), "swap x and y": (y, x)}[transform]
    got = kendall_tau_interval(xt, yt, resamples=500, method=method)
    assert (got.tau, got.low, got.high) == pytest.approx((ref.tau, ref.low, ref.high), abs=1e-14)


def test_reproducible_by_seed_and_global_rng_untouched():
    x, y = DATA["normal n=20"]
    state = np.random.get_state()[1].copy()
    a, b = kendall_tau_interval(x, y, seed=5), kendall_tau_interval(x, y, seed=5)
    c = kendall_tau_interval(x, y, seed=6)
    assert a == b and a.to_dict() == b.to_dict()
    assert (c.low, c.high) != (a.low, a.high) and c.tau == a.tau
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_higher_level_gives_wider_nested_interval():
    x, y = DATA["normal n=20"]
    narrow, wide = kendall_tau_interval(x, y, level=0.5), kendall_tau_interval(x, y, level=0.95)
    assert wide.low < narrow.low <= narrow.tau <= narrow.high < wide.high


@pytest.mark.parametrize("method,n,rho", [("bca", 20, 0.5), ("percentile", 20, 0.5), ("bca", 12, 0.0)])
def test_interval_covers_true_tau_at_about_the_nominal_rate(method, n, rho):
    """Bivariate normal: true tau = (2/π) arcsin ρ. 200 data sets (binomial sd ≈ 0.015 at 0.95).

    Bounds: below 0.90 the interval is too short; above 0.995 it is needlessly wide (an interval
    of [-1, 1] would cover always). Measured 0.96-0.98 for these cells (see the module docstring).
    """
    true = 2 / np.pi * np.arcsin(rho)
    covered = 0
    for s in range(200):
        x, y = _pairs(n, rho, 100 + s)
        r = kendall_tau_interval(x, y, resamples=500, seed=s, method=method)
        covered += r.low <= true <= r.high
    print(f"\n{method}, n={n}, rho={rho}: coverage {covered / 200:.3f}")
    assert 0.90 <= covered / 200 <= 0.995


@pytest.mark.parametrize("n,sign,resolved", [(4, 1, False), (4, -1, False), (5, 1, True), (8, -1, True)])
def test_perfectly_monotone_data(n, sign, resolved):
    """tau = ±1 and a degenerate [±1, ±1] interval; the sign then rests on the p-value (n = 4: p = 0.083)."""
    x = np.arange(n, dtype=float)
    y = sign * x**3 + 2.0
    res = kendall_tau_interval(x, y)
    assert (res.tau, res.low, res.high) == pytest.approx((sign, sign, sign), abs=1e-12)
    assert res.degenerate and "no width" in res.note
    assert res.resolved_sign == (sign if resolved else 0)
    text = kendall_sentence("sharpness", "the gap", res)
    assert ("not resolved" in text) != resolved
    if resolved:
        assert ("same order" if sign > 0 else "opposite orders") in text


def _result(low: float, high: float, tau: float = 0.3) -> KendallTau:
    return KendallTau(tau=tau, low=low, high=high, n=20, p_value=0.01, level=0.95, resamples=2000, seed=0,
                      method="BCa bootstrap over the 20 pairs (2000 resamples, seed 0)")


@pytest.mark.parametrize("low,high,tau,words", [
    (0.1, 0.5, 0.3, "excludes 0, so the two rank the runs in the same order"),
    (-0.5, -0.1, -0.3, "excludes 0, so the two rank the runs in opposite orders"),
    (-0.1, 0.5, 0.3, "includes 0, so the sign of the association is not resolved"),
    (0.0, 0.5, 0.3, "includes 0"),  # touching 0 does not exclude it
])
def test_sentence_states_sign_only_when_interval_excludes_zero(low, high, tau, words):
    text = kendall_sentence("adaptive sharpness", "the generalisation gap", _result(low, high, tau))
    assert words in text
    assert text.startswith("Kendall's tau between adaptive sharpness and the generalisation gap is ")
    assert text.endswith(".") and text.count(". ") == 0  # one sentence
    assert f"[{low:.2f}, {high:.2f}]" in text and "95% interval" in text


BAD = {  # name: (kwargs, message fragment)
    "n < 4": (dict(x=[1, 2, 3], y=[1, 3, 2]), "at least 4"),
    "length mismatch": (dict(x=[1, 2, 3, 4, 5], y=[1, 2, 3, 4]), "same length"),
    "nan": (dict(x=[1, 2, np.nan, 4], y=[1, 2, 3, 4]), "finite"),
    "inf in y": (dict(x=[1, 2, 3, 4], y=[1, np.inf, 3, 4]), "finite"),
    "2-D": (dict(x=np.ones((4, 2)), y=np.ones((4, 2))), "one-dimensional"),
    "constant x": (dict(x=[2, 2, 2, 2], y=[1, 2, 3, 4]), "no two distinct"),
    "text": (dict(x=["a", "b", "c", "d"], y=[1, 2, 3, 4]), "numbers"),
    "level 1": (dict(level=1.0), "level"),
    "level 0": (dict(level=0), "level"),
    "few resamples": (dict(resamples=10), "resamples"),
    "float resamples": (dict(resamples=1000.0), "resamples"),
    "negative seed": (dict(seed=-1), "seed"),
    "float seed": (dict(seed=1.5), "seed"),
    "method": (dict(method="basic"), "method"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_refused(name):
    kwargs, fragment = BAD[name]
    args = {"x": [1.0, 2.0, 3.0, 5.0], "y": [2.0, 1.0, 4.0, 3.0], **kwargs}
    with pytest.raises(ValueError, match=fragment):
        kendall_tau_interval(**args)


def test_sentence_refuses_bad_arguments():
    with pytest.raises(ValueError, match="KendallTau"):
        kendall_sentence("a", "b", {"tau": 0.3})
    with pytest.raises(ValueError, match="name_y"):
        kendall_sentence("a", " ", _result(0.1, 0.5))
