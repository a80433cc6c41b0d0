"""Tables of cases for intervals over seeds and the orderings stated from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape_utils.study.stats import (
    BCA,
    CONTRADICTED,
    HOLDS,
    NOT_RESOLVED,
    PAIRED_T,
    SIGN_FLIP_EXACT,
    SIGN_FLIP_MC,
    SINGLE_PAIR,
    SINGLE_RUN,
    SMALL_N_NOTE,
    SUPPORTED,
    UNRESOLVED,
    Claim,
    Interval,
    bca_bounds,
    compare_to_reported,
    holm,
    judge_claims,
    mean_interval,
    ordering_statement,
    pair_interval,
    paired_difference,
    range_text,
    relation_to_value,
    resolved_ordering,
    seeds_needed,
    sign_flip_p_value,
)


def iv(low: float, high: float, n: int = 3) -> Interval:
    """A hand-made interval with its mean at the centre."""
    return Interval((low + high) / 2, low, high, n, 0.95, "student-t")


def point(x: float) -> Interval:
    return mean_interval([x])


# --------------------------------------------------------------------------- mean_interval


@pytest.mark.parametrize(
    "values, level, mean, half",
    [
        # t(0.975, df=2) = 4.302653; sd([1,2,3]) = 1, sem = 1/sqrt(3)
        ([1.0, 2.0, 3.0], 0.95, 2.0, 4.302653 / math.sqrt(3)),
        # t(0.95, df=1) = 6.313752; sd([0, 2]) = sqrt(2), sem = 1
        ([0.0, 2.0], 0.90, 1.0, 6.313752),
        ([5.0, 5.0, 5.0, 5.0], 0.95, 5.0, 0.0),  # zero spread: the point itself
    ],
)
def test_mean_interval_student_t(values, level, mean, half):
    got = mean_interval(values, level)
    assert got.method == "student-t" and got.n == len(values) and got.level == level
    assert got.mean == pytest.approx(mean)
    assert got.low == pytest.approx(mean - half, abs=1e-6)
    assert got.high == pytest.approx(mean + half, abs=1e-6)


def test_mean_interval_matches_scipy_reference():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=7)
    lo, hi = sps.t.interval(0.95, df=6, loc=x.mean(), scale=sps.sem(x))
    got = mean_interval(x)
    assert (got.low, got.high) == pytest.approx((lo, hi))


def test_single_run_has_no_interval():
    got = mean_interval([4.2])
    assert (got.mean, got.low, got.high, got.n) == (4.2, 4.2, 4.2, 1)
    assert got.single_run and got.method == SINGLE_RUN
    assert got.format() == f"4.2 ({SINGLE_RUN})"


@pytest.mark.parametrize(
    "values, level, match",
    [
        ([1.0, float("nan"), 2.0], 0.95, "finite"),
        ([1.0, float("inf")], 0.95, "finite"),
        ([], 0.95, "empty"),
        ([[1.0, 2.0]], 0.95, "one-dimensional"),
        ([1.0, 2.0], 1.0, "level"),
        ([1.0, 2.0], 0.0, "level"),
    ],
)
def test_mean_interval_rejects(values, level, match):
    with pytest.raises(ValueError, match=match):
        mean_interval(values, level)


def test_format():
    assert iv(1.0, 3.0).format("{:.1f}") == "2.0 [1.0, 3.0]"
    assert iv(1.0, 3.0).format(lambda x: f"{x:.0e}") == "2e+00 [1e+00, 3e+00]"


# --------------------------------------------------------------------------- orderings


@pytest.mark.parametrize(
    "intervals, groups, resolved",
    [
        # separated: a full chain
        ({"a": iv(5, 6), "b": iv(3, 4), "c": iv(0, 1)}, [["a"], ["b"], ["c"]], {("a", "b"), ("a", "c"), ("b", "c")}),
        # overlapping pair below a separated top
        ({"mlp": iv(3.9, 4.6), "cnn": iv(30, 36), "rescnn": iv(4.0, 4.8)},
         [["cnn"], ["rescnn", "mlp"]], {("cnn", "rescnn"), ("cnn", "mlp")}),
        # partial order: a > c resolved but a~b and b~c, so no cut is possible
        ({"a": iv(2, 3), "b": iv(0.5, 2.5), "c": iv(0, 1)}, [["a", "b", "c"]], {("a", "c")}),
        # touching intervals do not separate
        ({"a": iv(1, 2), "b": iv(0, 1)}, [["a", "b"]], set()),
        # exact tie (same mean, zero width, n > 1): unresolved, caller's order kept
        ({"x": iv(1, 1), "y": iv(1, 1)}, [["x", "y"]], set()),
        # single runs never resolve, however far apart
        ({"a": point(33.0), "b": point(4.0)}, [["a", "b"]], set()),
        # zero-width intervals from several seeds do separate
        ({"a": iv(2, 2), "b": iv(1, 1)}, [["a"], ["b"]], {("a", "b")}),
    ],
)
def test_resolved_ordering(intervals, groups, resolved):
    order = resolved_ordering(intervals)
    assert [list(g) for g in order.groups] == groups
    assert set(order.resolved) == resolved
    n = len(intervals)
    assert len(order.resolved) + len(order.unresolved) == n * (n - 1) // 2
    assert order.fully_resolved == (len(resolved) == n * (n - 1) // 2)


def test_relation():
    order = resolved_ordering({"a": iv(5, 6), "b": iv(0, 1), "c": iv(0.5, 2)})
    assert (order.relation("a", "b"), order.relation("b", "a"), order.relation("b", "c")) == (">", "<", "≈")


@pytest.mark.parametrize(
    "intervals, expected_parts, absent",
    [
        (
            {"cnn": iv(30, 36), "mlp": iv(3.9, 4.6), "rescnn": iv(4.0, 4.8)},
            ["CNN 33 [30, 36] > Residual CNN 4.4 [4, 4.8] ≈ MLP 4.25 [3.9, 4.6]",
             "higher is sharper", "95% Student-t intervals over 3 seeds",
             "The Residual CNN–MLP difference is not resolved by the intervals."],
            ["All differences"],
        ),
        (
            {"cnn": iv(30, 36), "rescnn": iv(10, 20), "mlp": iv(3, 5)},
            ["CNN 33 [30, 36] > Residual CNN 15 [10, 20] > MLP 4 [3, 5]", "All differences are resolved"],
            ["not resolved"],
        ),
        (
            {"a": iv(2, 3), "b": iv(0.5, 2.5), "c": iv(0, 1)},
            ["a 2.5 [2, 3] ≈ b 1.5 [0.5, 2.5] ≈ c 0.5 [0, 1]",
             "The a–b and b–c differences are not resolved", "Within that, a > c is resolved."],
            [],
        ),
        (
            {"a": iv(0, 2), "b": iv(1, 3)},
            ["b 2 [1, 3] ≈ a 1 [0, 2]", "None of the differences is resolved"],
            [],
        ),
        (
            {"cnn": point(33.0), "mlp": point(4.0)},
            ["CNN 33 (single run, no interval) ≈ MLP 4 (single run, no interval)",
             "single runs, no intervals", "no ordering is resolved"],
            ["Student-t"],
        ),
    ],
)
def test_ordering_statement(intervals, expected_parts, absent):
    text = ordering_statement(intervals, "Top Hessian eigenvalue")
    assert text.startswith("Top Hessian eigenvalue: ")
    for part in expected_parts:
        assert part in text, (part, text)
    for part in absent:
        assert part not in text, (part, text)


def test_ordering_statement_options():
    text = ordering_statement({"p": iv(1, 2), "q": iv(3, 4)}, "Barrier", higher_is="", fmt="{:.2f}",
                              labels={"p": "P-net"})
    assert text.startswith("Barrier: q 3.50 [3.00, 4.00] > P-net 1.50 [1.00, 2.00] (95% Student-t")


@pytest.mark.parametrize(
    "intervals",
    [{"a": iv(1, 2)}, {"a": iv(1, 2), "b": Interval(float("nan"), 0, 1, 3, 0.95, "student-t")}],
)
def test_ordering_rejects(intervals):
    with pytest.raises(ValueError):
        resolved_ordering(intervals)
    with pytest.raises(ValueError):
        ordering_statement(intervals, "q")


# --------------------------------------------------------------------------- vs the write-up

CURVATURE_REPORTED = {"cnn": 33.0, "rescnn": 17.0, "mlp": 4.0}


@pytest.mark.parametrize(
    "ours, reported, verdict, claims",
    [
        # the write-up's curvature ordering fully reproduced
        ({"cnn": iv(30, 36), "rescnn": iv(10, 20), "mlp": iv(3, 5)}, CURVATURE_REPORTED, HOLDS,
         {("cnn", "rescnn"): HOLDS, ("cnn", "mlp"): HOLDS, ("rescnn", "mlp"): HOLDS}),
        # residual CNN not below CNN: one claim contradicted, one unresolved
        ({"cnn": iv(10, 12), "rescnn": iv(14, 16), "mlp": iv(3, 11)}, CURVATURE_REPORTED, CONTRADICTED,
         {("cnn", "rescnn"): CONTRADICTED, ("cnn", "mlp"): UNRESOLVED, ("rescnn", "mlp"): HOLDS}),
        # ordering-only claim (flatness: CNN sharpest, MLP middle, residual CNN flattest)
        ({"cnn": iv(5, 6), "mlp": iv(1, 2), "rescnn": iv(1.5, 3)}, ["cnn", "mlp", "rescnn"], UNRESOLVED,
         {("cnn", "mlp"): HOLDS, ("cnn", "rescnn"): HOLDS, ("mlp", "rescnn"): UNRESOLVED}),
        # single runs: nothing can be checked
        ({"cnn": point(40), "rescnn": point(20), "mlp": point(5)}, CURVATURE_REPORTED, UNRESOLVED,
         {("cnn", "rescnn"): UNRESOLVED, ("cnn", "mlp"): UNRESOLVED, ("rescnn", "mlp"): UNRESOLVED}),
    ],
)
def test_compare_to_reported(ours, reported, verdict, claims):
    cmp = compare_to_reported(ours, reported)
    assert cmp.verdict == verdict
    assert {(c.higher, c.lower): c.verdict for c in cmp.claims} == claims
    order = list(reported)
    if isinstance(reported, dict):
        order = sorted(reported, key=lambda k: -reported[k])
    assert [r.name for r in cmp.rows] == order
    assert [r.reported_rank for r in cmp.rows] == [1, 2, 3]
    for row in cmp.rows:
        assert row.ours is ours[row.name]
        assert row.ours_text == ours[row.name].format()
        assert row.reported == (reported.get(row.name) if isinstance(reported, dict) else None)
        involved = [v for (a, b), v in claims.items() if row.name in (a, b)]
        worst = CONTRADICTED if CONTRADICTED in involved else UNRESOLVED if UNRESOLVED in involved else HOLDS
        assert row.verdict == worst
    rec = cmp.records()[0]
    assert set(rec) == {"name", "reported", "ours", "write-up's ordering"}


@pytest.mark.parametrize(
    "reported, match",
    [
        ({"cnn": 33.0, "mlp": float("nan")}, "finite"),
        ({"cnn": 4.0, "mlp": 4.0}, "tie"),
        (["cnn", "cnn"], "duplicate"),
        (["cnn"], "at least two"),
        (["cnn", "vit"], "no result of ours"),
        ("cnn", "not a string"),
    ],
)
def test_compare_to_reported_rejects(reported, match):
    with pytest.raises(ValueError, match=match):
        compare_to_reported({"cnn": iv(1, 2), "mlp": iv(0, 1)}, reported)


@pytest.mark.parametrize(
    "interval, value, rel",
    [(iv(0.1, 0.3), 0.0, ">"), (iv(-0.3, -0.1), 0.0, "<"), (iv(-0.1, 0.3), 0.0, "≈"),
     (point(0.5), 0.0, "≈"), (iv(2, 3), 2.0, "≈")],
)
def test_relation_to_value(interval, value, rel):
    assert relation_to_value(interval, value) == rel



# --------------------------------------------------------------------------- bounded intervals

T975_2 = 4.302653  # t(0.975, df=2)


@pytest.mark.parametrize(
    "values, bounds, low, high, method",
    [
        # mean 0.1, sd sqrt(0.03), sem 0.1: t-interval [-0.330, 0.530] cut at 0
        ([0.0, 0.0, 0.3], (0, None), 0.0, 0.1 + T975_2 * 0.1, "student-t, clipped to [0, ∞)"),
        # accuracies near 1: mean 0.96, cut at 1
        ([0.9, 0.99, 0.99], (0, 1), 0.96 - T975_2 * math.sqrt(0.0027) / math.sqrt(3), 1.0,
         "student-t, clipped to [0, 1]"),
        # inside the range: nothing to cut, plain Student-t
        ([10.0, 11.0, 12.0], (0, None), 11 - T975_2 / math.sqrt(3), 11 + T975_2 / math.sqrt(3), "student-t"),
        # asymmetry in [-1, 1], both ends cut
        ([-0.9, 0.9, 0.0], (-1, 1), -1.0, 1.0, "student-t, clipped to [-1, 1]"),
        # exactly at the bound, zero spread: the point, no clipping
        ([0.0, 0.0, 0.0], (0, None), 0.0, 0.0, "student-t"),
    ],
)
def test_clipped_t(values, bounds, low, high, method):
    got = mean_interval(values, bounds=bounds)  # n < 10: auto is the (clipped) t-interval
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-5)
    assert got.method == method and got.clipped == ("clipped" in method)
    assert got.bounds == (bounds[0], bounds[1]) and got.mean == pytest.approx(np.mean(values))


def test_range_text():
    assert [range_text(b) for b in [(0, None), (-1, 1), (None, 1), None, (0, math.inf)]] == \
        ["[0, ∞)", "[-1, 1]", "(-∞, 1]", "(-∞, ∞)", "[0, ∞)"]


def test_auto_method_choice():
    x10 = np.linspace(0.9, 0.99, 10)
    assert mean_interval(x10).method == "student-t"  # unbounded: t, as before
    assert mean_interval(x10, bounds=(0, 1)).method == BCA  # bounded and n >= 10: BCa
    assert mean_interval(x10[:9], bounds=(0, 1)).method.startswith("student-t")  # n < 10: t
    assert mean_interval(x10, bounds=(0, 1), method="t").method == "student-t"
    assert mean_interval(x10[:3], method="bca").method == BCA
    assert BCA == "BCa bootstrap (4000 resamples, expanded for small n)"
    assert mean_interval([0.5], bounds=(0, 1), method="bca").method == SINGLE_RUN


def test_bca_is_deterministic_and_inside_the_data_range():
    x = np.random.default_rng(3).exponential(1.0, 12)
    a, b = mean_interval(x, bounds=(0, None)), mean_interval(x.copy(), bounds=(0, None))
    assert a == b
    assert x.min() <= a.low < a.mean < a.high <= x.max()
    assert not a.clipped and a.method == BCA


@pytest.mark.parametrize("values", [[0.0] * 10, [0.97] * 12, [0.0] * 9 + [1e-3], [1.0] * 9 + [0.5], [0.0, 1.0]])
def test_bca_degenerate_inputs(values):
    got = mean_interval(values, bounds=(0, 1), method="bca")
    assert all(math.isfinite(v) for v in (got.low, got.high))
    assert 0.0 <= got.low <= got.mean <= got.high <= 1.0
    if len(set(values)) == 1:
        assert got.low == got.high == got.mean and got.note == "all values equal"


def test_bca_matches_scipy_without_expansion():
    x = np.random.default_rng(5).gamma(2.0, 1.0, 15)
    lo, hi = bca_bounds(x, 0.95, resamples=20000, expand=False)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20000, method="BCa", random_state=1).confidence_interval
    width = ref.high - ref.low
    assert lo == pytest.approx(ref.low, abs=0.05 * width) and hi == pytest.approx(ref.high, abs=0.05 * width)
    # the expansion widens the interval (sqrt(n/(n-1)) t_{n-1} > z)
    elo, ehi = bca_bounds(x, 0.95, resamples=20000)
    assert elo < lo and ehi > hi


def test_bca_rows_match_single_calls():
    x = np.random.default_rng(6).beta(5, 1, (4, 10))
    lo, hi = bca_bounds(x)
    for k in range(4):
        iv = mean_interval(x[k], bounds=(0, 1))
        assert (iv.low, iv.high) == pytest.approx((lo[k], hi[k]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": [-0.1, 0.2], "bounds": (0, None)}, "outside the bounds"),
        ({"values": [0.5, 1.2], "bounds": (0, 1)}, "outside the bounds"),
        ({"values": [0.5, 0.6], "bounds": (1, 0)}, "lo < hi"),
        ({"values": [0.5, 0.6], "bounds": (0,)}, "bounds"),
        ({"values": [0.5, 0.6], "method": "wilson"}, "method"),
    ],
)
def test_mean_interval_rejects_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mean_interval(**kwargs)


def test_interval_dict_round_trip_and_old_dicts():
    import json

    got = mean_interval([0.0, 0.0, 0.3], bounds=(0, None))
    d = json.loads(json.dumps(got.to_dict()))
    assert d["bounds"] == [0.0, None] and d["clipped"] is True
    assert Interval.from_dict(d) == got
    old = {"mean": 2.0, "low": 1.0, "high": 3.0, "n": 3, "level": 0.95, "method": "student-t", "values": [1, 2, 3]}
    back = Interval.from_dict(old)
    assert back == Interval(2.0, 1.0, 3.0, 3, 0.95, "student-t", (1.0, 2.0, 3.0))
    assert (back.bounds, back.clipped, back.note) == ((None, None), False, "")


def test_ordering_statement_names_the_methods():
    x = np.random.default_rng(8)
    ivs = {"a": mean_interval(x.uniform(0.9, 1.0, 10), bounds=(0, 1)),
           "b": mean_interval(x.uniform(0.5, 0.6, 10), bounds=(0, 1))}
    text = ordering_statement(ivs, "Test accuracy", higher_is="better")
    assert f"95% {BCA} intervals over 10 seeds" in text and "Student-t" not in text
    mixed = {"a": ivs["a"], "c": mean_interval([0.1, 0.2, 0.15])}
    assert f"95% {BCA} and Student-t intervals over 3–10 seeds" in ordering_statement(mixed, "q")


# --------------------------------------------------------------------------- paired comparisons


def test_paired_difference_small_n():
    # d = [2, 3, 2]: mean 7/3, sd sqrt(1/3), t = 7 on 2 df
    got = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    assert got.n == 3 and got.mean == pytest.approx(7 / 3) and got.sd == pytest.approx(math.sqrt(1 / 3))
    assert got.effect_size == pytest.approx((7 / 3) / math.sqrt(1 / 3))
    assert got.t_p_value == pytest.approx(2 * sps.t.sf(7.0, 2))
    assert got.p_value is None and got.p == got.t_p_value and got.test == PAIRED_T and got.note == SMALL_N_NOTE
    half = T975_2 * math.sqrt(1 / 3) / math.sqrt(3)
    assert (got.interval.low, got.interval.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert got.interval.method == "student-t" and got.differences == (2.0, 3.0, 2.0)
    ref = sps.ttest_rel([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    assert got.t_p_value == pytest.approx(ref.pvalue)


def _brute_sign_flip(d):
    import itertools

    d = np.asarray(d, float)
    obs = abs(d.sum())
    stats = [abs(np.dot(s, d)) for s in itertools.product([-1, 1], repeat=len(d))]
    return np.mean([s >= obs - 1e-12 for s in stats])


@pytest.mark.parametrize(
    "d, p",
    [
        ([1.0, 2.0, 3.0], 0.25),  # n = 3: the smallest two-sided p-value is 2/8
        ([1, 2, 3, 4, 5], 0.0625),  # n = 5: 2/32, still above 0.05
        ([1, 2, 3, 4, 5, 6], 2 / 64),  # n = 6: 2/64 can resolve
        ([1, 2, 3, 4, 5, -0.5], 4 / 64),  # flipping the 0.5 gives 14.5 too
        ([0.3, -1.2, 0.8, 0.1, -0.4, 0.9, 1.1], None),
    ],
)
def test_sign_flip_exact(d, p):
    got, test = sign_flip_p_value(d)
    assert test == SIGN_FLIP_EXACT
    assert got == pytest.approx(_brute_sign_flip(d))
    if p is not None:
        assert got == pytest.approx(p)


def test_paired_difference_permutation_from_n6():
    a = np.arange(6) + 10.0
    got = paired_difference(a, a - np.arange(1, 7))
    assert got.p_value == pytest.approx(2 / 64) and got.test == SIGN_FLIP_EXACT and got.note == ""
    assert got.p == got.p_value
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.5, 1, 20), rng.normal(0, 1, 20)
    mc = paired_difference(x, y)
    assert mc.test == SIGN_FLIP_MC and 0 < mc.p_value <= 1 and paired_difference(x, y) == mc
    ref = sps.permutation_test((x - y,), np.mean, permutation_type="samples", n_resamples=20000,
                               random_state=0).pvalue
    assert mc.p_value == pytest.approx(ref, abs=0.02)


@pytest.mark.parametrize(
    "a, b, effect, t_p, p",
    [
        ([2.0] * 6, [1.0] * 6, math.inf, 0.0, 2 / 64),  # identical differences: infinite d_z
        ([1.0] * 6, [2.0] * 6, -math.inf, 0.0, 2 / 64),
        ([1.0] * 6, [1.0] * 6, 0.0, 1.0, 1.0),  # no difference at all
    ],
)
def test_paired_difference_zero_spread(a, b, effect, t_p, p):
    got = paired_difference(a, b)
    assert got.effect_size == effect and got.t_p_value == t_p and got.p_value == pytest.approx(p)


def test_paired_difference_single_and_rejects():
    one = paired_difference([1.0], [0.5])
    assert one.interval.single_run and one.p is None and one.effect_size is None and one.sd is None
    with pytest.raises(ValueError, match="shared seed"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "p, adjusted",
    [
        # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.5, 0.9], [1.0, 1.0]),  # capped at 1
        ([0.3, 0.2, 0.01], [0.4, 0.4, 0.03]),
        ([0.02, 0.02], [0.04, 0.04]),  # ties
        ([0.04], [0.04]),
        ([None, 0.01], [1.0, 0.02]),  # no test counts as p = 1
        ([], []),
    ],
)
def test_holm(p, adjusted):
    assert holm(p) == pytest.approx(adjusted)


@pytest.mark.parametrize("p", [[0.1, 1.5], [-0.1], [float("nan")]])
def test_holm_rejects(p):
    with pytest.raises(ValueError):
        holm(p)


def test_judge_claims():
    base = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0])
    up = paired_difference(base + np.linspace(1, 2, 8), base)  # a > b on every seed: p = 2/256
    down = paired_difference(base - np.linspace(1, 2, 8), base)
    noisy = paired_difference(base + np.array([1, -1, 0.5, -0.5, 0.2, -0.3, 0.1, 0.0]), base)
    verdicts = judge_claims([Claim("up", up), Claim("down", down), Claim("noisy", noisy),
                             Claim("down, claimed <", down, "<")])
    assert [v.verdict for v in verdicts] == [SUPPORTED, CONTRADICTED, NOT_RESOLVED, SUPPORTED]
    raw = [up.p, down.p, noisy.p, down.p]
    assert [v.p for v in verdicts] == raw and [v.p_adjusted for v in verdicts] == pytest.approx(holm(raw))
    assert all(v.n_claims == 4 for v in verdicts)
    row = verdicts[0].as_dict()
    assert row["p (Holm-adjusted over 4 claims)"] == verdicts[0].p_adjusted and row["verdict"] == SUPPORTED


def test_judge_claims_holm_can_unresolve():
    six = np.arange(6.0)
    d = paired_difference(six + 1, six)  # p = 2/64 = 0.031 alone
    assert judge_claims({"alone": d})[0].verdict == SUPPORTED
    two = judge_claims({"first": d, "second": d})  # Holm: 2 x 0.031 = 0.0625
    assert [v.verdict for v in two] == [NOT_RESOLVED, NOT_RESOLVED]
    assert two[0].p_adjusted == pytest.approx(0.0625)
    single = judge_claims({"one run": paired_difference([2.0], [1.0])})
    assert single[0].verdict == NOT_RESOLVED and single[0].p is None and single[0].p_adjusted == 1.0
    with pytest.raises(ValueError):
        judge_claims([Claim("bad", d, ">=")])


# --------------------------------------------------------------------------- pair quantities


def test_pair_interval_hand_worked():
    # leave-one-seed-out means: drop 0 -> 6, drop 1 -> 2, drop 2 -> 1; mean 3
    # variance (2/3) * (9 + 1 + 4) = 28/3; half = t(0.975, 2) * sqrt(28/3)
    pv = {(0, 1): 1.0, (0, 2): 2.0, (1, 2): 6.0}
    half = T975_2 * math.sqrt(28 / 3)
    got = pair_interval(pv)
    assert got.mean == 3.0 and got.n == 3 and got.method == "jackknife over seeds" and not got.clipped
    assert (got.low, got.high) == pytest.approx((3 - half, 3 + half), abs=1e-5)
    assert got.values == (1.0, 2.0, 6.0) and got.note == "3 pairs of 3 seeds"
    barrier = pair_interval({(1, 0): 1.0, (2, 0): 2.0, (2, 1): 6.0}, bounds=(0, None))  # order-free keys
    assert barrier.low == 0.0 and barrier.high == pytest.approx(3 + half, abs=1e-5)
    assert barrier.clipped and barrier.method == "jackknife over seeds, clipped to [0, ∞)"


def test_pair_interval_matches_direct_jackknife():
    rng = np.random.default_rng(4)
    n = 5
    pv = {(i, j): float(rng.exponential()) for i in range(n) for j in range(i + 1, n)}
    loo = np.array([np.mean([v for k, v in pv.items() if s not in k]) for s in range(n)])
    se = math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    got = pair_interval(pv)
    t = sps.t.ppf(0.975, n - 1)
    assert (got.low, got.high) == pytest.approx((np.mean(list(pv.values())) - t * se,
                                                 np.mean(list(pv.values())) + t * se))


def test_pair_interval_degenerate():
    zeros = pair_interval({(0, 1): 0.0, (0, 2): 0.0, (1, 2): 0.0}, bounds=(0, None))
    assert zeros.low == zeros.high == 0.0 and not zeros.clipped
    one = pair_interval({(0, 1): 0.4})
    assert one.single_run and one.method == SINGLE_PAIR and one.format() == f"0.4 ({SINGLE_PAIR})"


@pytest.mark.parametrize(
    "pv, match",
    [
        ({}, "empty"),
        ({(0, 0): 1.0, (0, 1): 1.0}, "two different seeds"),
        ({(0, 1): 1.0, (1, 0): 2.0}, "duplicate"),
        ({(0, 1): 1.0, (0, 2): 2.0}, "leaves no pair"),  # a star: dropping seed 0 leaves nothing
        ({(0, 1): 1.0, (0, 2): float("nan"), (1, 2): 0.0}, "finite"),
    ],
)
def test_pair_interval_rejects(pv, match):
    with pytest.raises(ValueError, match=match):
        pair_interval(pv)
    with pytest.raises(ValueError, match="outside"):
        pair_interval({(0, 1): -1.0, (0, 2): 1.0, (1, 2): 1.0}, bounds=(0, None))


# --------------------------------------------------------------------------- seeds needed


def _direct_seeds(sd, target, level, n_max):
    for n in range(2, n_max + 1):
        if sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) <= target:
            return n
    return None


@pytest.mark.parametrize(
    "sd, target, level, n_max, expected",
    [
        (1.0, 1.0, 0.95, 1000, 7),  # 2.571/sqrt(6) = 1.05 > 1 >= 2.447/sqrt(7) = 0.925
        (0.0, 0.1, 0.95, 1000, 2),  # no spread: the minimum
        (1.0, 0.1, 0.95, 1000, 387),  # about (1.96 / 0.1)^2 = 384, a little more for t
        (1.0, 0.1, 0.95, 2000, 387),
        (2.0, 0.5, 0.9, 1000, 46),
        (3.3, 0.7, 0.99, 1000, 152),
        (1.0, 100.0, 0.95, 1000, 2),
        (1.0, 0.1, 0.95, 100, None),  # beyond n_max
    ],
)
def test_seeds_needed(sd, target, level, n_max, expected):
    got = seeds_needed(sd, target, level, n_max)
    assert got == _direct_seeds(sd, target, level, n_max) == expected
    if got is not None and got > 2:
        t = lambda n: sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)  # noqa: E731
        assert t(got) <= target < t(got - 1)


@pytest.mark.parametrize("args", [(-1.0, 0.1), (1.0, 0.0), (float("nan"), 0.1), (1.0, 0.1, 1.0), (1.0, 0.1, 0.95, 1)])
def test_seeds_needed_rejects(args):
    with pytest.raises(ValueError):
        seeds_needed(*args)
