"""Tables of cases for intervals over seeds and the orderings stated from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from landscape_utils.study.stats import (
    CONTRADICTED,
    HOLDS,
    SINGLE_RUN,
    UNRESOLVED,
    Interval,
    compare_to_reported,
    mean_interval,
    ordering_statement,
    relation_to_value,
    resolved_ordering,
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
