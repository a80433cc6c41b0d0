"""Coverage of the intervals for a mean over seeds, and of the pair interval, on named generators.

Each generator has a known true (arithmetic) mean and a range. For each method and n, 2,000
independent samples are drawn (fixed seed) and the share of intervals that contain the true mean
is the coverage (its Monte Carlo standard error is about 0.005 near 0.95). ``pytest -s`` prints
the tables; :func:`coverage_table` and :func:`pair_coverage_table` return them.

Methods (all at the 95% level, all through the public :func:`mean_interval`):

* ``"t"``: Student-t, no bounds (may leave the range; the share that does is reported);
* ``"clipped t"``: Student-t cut at the generator's range (``method="t"``, ``bounds=...``);
* ``"BCa"``: expanded BCa bootstrap (``method="bca"``, ``bounds=...``), 4,000 resamples.

Generators (asserted at n = 10 unless marked):

* ``normal``: N(0, 1), unbounded;
* ``lognormal (σ=0.5)``: skewed (skewness 1.75), range [0, ∞);
* ``beta(40, 2)``: near 1 (mean 0.952, like a high accuracy), range [0, 1];
* ``zero (p=0.3) + exponential``: 0 with probability 0.3, else Exp(1) (like barriers, many
  exactly 0), range [0, ∞);
* ``lognormal (σ=1)``: heavily skewed (skewness 6.2), range [0, ∞) — reported, not asserted:
  no method reaches 0.90 there at n = 10 (a stated limit).

Known shortfall (asserted as such, not hidden): the t-interval, clipped or not, covers the
``zero + exponential`` mean only about 0.88 at n = 10 (0.883 over 20,000 samples while
developing); clipping cannot change coverage because the true mean is inside the range. BCa,
which ``method="auto"`` uses for bounded quantities from n = 10, covers it at about 0.92.
At n = 3 coverage is reported, not asserted: bootstraps are degenerate (10 distinct resamples).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

from landscape_utils.study.stats import BCA, mean_interval, pair_interval

REPLICATES = 2000
PAIR_REPLICATES = 1000
LEVEL = 0.95
NS = (10, 3)
METHODS = ("t", "clipped t", "BCa")


def _zero_exp(rng, size, p=0.3):
    return np.where(rng.random(size) < p, 0.0, rng.exponential(1.0, size))


# name -> (sampler(rng, size), true mean, bounds, asserted at n = 10)
GENERATORS = {
    "normal": (lambda rng, s: rng.normal(0.0, 1.0, s), 0.0, None, True),
    "lognormal (σ=0.5)": (lambda rng, s: rng.lognormal(0.0, 0.5, s), math.exp(0.125), (0.0, None), True),
    "beta(40, 2)": (lambda rng, s: rng.beta(40.0, 2.0, s), 40.0 / 42.0, (0.0, 1.0), True),
    "zero (p=0.3) + exponential": (_zero_exp, 0.7, (0.0, None), True),
    "lognormal (σ=1)": (lambda rng, s: rng.lognormal(0.0, 1.0, s), math.exp(0.5), (0.0, None), False),
}
# (generator, method) whose coverage at n = 10 is known to fall below 0.90: asserted >= 0.85.
KNOWN_SHORTFALLS = {("zero (p=0.3) + exponential", "t"), ("zero (p=0.3) + exponential", "clipped t")}


def _interval(x, method, bounds):
    if method == "t":
        return mean_interval(x, LEVEL, method="t")
    if method == "clipped t":
        return mean_interval(x, LEVEL, bounds=bounds, method="t")
    return mean_interval(x, LEVEL, bounds=bounds, method="bca")


def _outside(lo, hi, bounds):
    if bounds is None:
        return False
    b_lo, b_hi = bounds
    return (b_lo is not None and lo < b_lo) or (b_hi is not None and hi > b_hi)


@functools.lru_cache(maxsize=1)
def coverage_table() -> tuple[dict, ...]:
    """Rows ``{"method", "generator", "n", "coverage", "outside_range", "clipped", "mean_width",
    "method_strings", "seconds"}`` for every method × generator × n (``REPLICATES`` samples each).

    ``outside_range``: share of intervals with an end outside the generator's range;
    ``clipped``: share marked clipped; ``method_strings``: the distinct ``Interval.method`` seen.
    """
    rows = []
    for g_i, (gname, (sampler, mu, bounds, _)) in enumerate(GENERATORS.items()):
        for n in NS:
            samples = sampler(np.random.default_rng(1000 + 10 * g_i + n), (REPLICATES, n))
            for method in METHODS:
                t0 = time.perf_counter()
                hits = outside = clipped = 0
                width = 0.0
                names = set()
                for x in samples:
                    iv = _interval(x, method, bounds)
                    hits += iv.low <= mu <= iv.high
                    outside += _outside(iv.low, iv.high, bounds)
                    clipped += iv.clipped
                    width += iv.high - iv.low
                    names.add(iv.method)
                rows.append({"method": method, "generator": gname, "n": n, "coverage": hits / REPLICATES,
                             "outside_range": outside / REPLICATES, "clipped": clipped / REPLICATES,
                             "mean_width": width / REPLICATES, "method_strings": tuple(sorted(names)),
                             "seconds": time.perf_counter() - t0})
    return tuple(rows)


def _pair_sample(rng, n_seeds, sd_seed=1.0, sd_pair=1.0, mu=1.0):
    """Random-effects pair data: value_ij = mu + u_i + u_j + e_ij."""
    u = rng.normal(0.0, sd_seed, n_seeds)
    return {(i, j): mu + u[i] + u[j] + rng.normal(0.0, sd_pair)
            for i in range(n_seeds) for j in range(i + 1, n_seeds)}


@functools.lru_cache(maxsize=1)
def pair_coverage_table() -> tuple[dict, ...]:
    """Coverage of the true mean (1.0) by the jackknife :func:`pair_interval` and by a naive
    t-interval over the pairs, on ``PAIR_REPLICATES`` samples of the random-effects model
    ``1 + u_i + u_j + e_ij`` (u, e ~ N(0, 1)) at 10 and 3 seeds."""
    rows = []
    for n_seeds in (10, 3):
        rng = np.random.default_rng(77 + n_seeds)
        hits = {"jackknife over seeds": 0, "naive t over pairs": 0}
        widths = {k: 0.0 for k in hits}
        n_pairs = 0
        for _ in range(PAIR_REPLICATES):
            pv = _pair_sample(rng, n_seeds)
            n_pairs = len(pv)
            for name, iv in (("jackknife over seeds", pair_interval(pv, LEVEL)),
                             ("naive t over pairs", mean_interval(list(pv.values()), LEVEL, method="t"))):
                hits[name] += iv.low <= 1.0 <= iv.high
                widths[name] += iv.high - iv.low
        for name in hits:
            rows.append({"method": name, "seeds": n_seeds, "pairs": n_pairs,
                         "coverage": hits[name] / PAIR_REPLICATES, "mean_width": widths[name] / PAIR_REPLICATES})
    return tuple(rows)


def format_tables() -> str:
    lines = [f"Coverage of the true mean, {REPLICATES} samples per cell, {LEVEL:.0%} intervals",
             f"{'generator':<28} {'n':>2} {'method':<10} {'coverage':>8} {'outside':>8} {'clipped':>8} "
             f"{'width':>8} {'s':>5}"]
    for r in coverage_table():
        lines.append(f"{r['generator']:<28} {r['n']:>2} {r['method']:<10} {r['coverage']:>8.3f} "
                     f"{r['outside_range']:>8.3f} {r['clipped']:>8.3f} {r['mean_width']:>8.3g} {r['seconds']:>5.1f}")
    lines.append(f"Pair quantities, random effects 1 + u_i + u_j + e_ij, {PAIR_REPLICATES} samples")
    for r in pair_coverage_table():
        lines.append(f"{r['method']:<22} seeds={r['seeds']:>2} pairs={r['pairs']:>2} "
                     f"coverage={r['coverage']:.3f} width={r['mean_width']:.3g}")
    return "\n".join(lines)


def _row(gen, method, n):
    (row,) = [r for r in coverage_table() if (r["generator"], r["method"], r["n"]) == (gen, method, n)]
    return row


def test_print_tables():
    print("\n" + format_tables())
    assert len(coverage_table()) == len(GENERATORS) * len(NS) * len(METHODS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gen", [g for g, v in GENERATORS.items() if v[3]])
def test_coverage_at_n10(gen, method):
    cov = _row(gen, method, 10)["coverage"]
    if (gen, method) in KNOWN_SHORTFALLS:
        assert 0.85 <= cov <= 0.99, cov  # documented shortfall of the t-interval on skewed data
    else:
        assert 0.90 <= cov <= 0.99, cov


def test_bca_beats_t_on_the_skewed_point_mass():
    gen = "zero (p=0.3) + exponential"
    assert _row(gen, "BCa", 10)["coverage"] > _row(gen, "clipped t", 10)["coverage"]


@pytest.mark.parametrize("n", NS)
def test_every_cell_is_computed_and_bounded_intervals_stay_in_range(n):
    for r in coverage_table():
        if r["n"] != n:
            continue
        assert 0.0 <= r["coverage"] <= 1.0 and math.isfinite(r["mean_width"])
        if r["method"] != "t":
            assert r["outside_range"] == 0.0, r
        if r["method"] == "BCa":
            assert r["method_strings"] == (BCA,)
            assert r["clipped"] == 0.0  # BCa ends are resampled means: inside the range already
        if r["method"] == "clipped t" and r["clipped"] > 0:
            assert any(", clipped to " in s for s in r["method_strings"])


def test_unclipped_t_leaves_the_range_near_a_bound_at_n3():
    # The reason for clipping: near 1 at n = 3 the plain t-interval often passes 1.
    assert _row("beta(40, 2)", "t", 3)["outside_range"] > 0.1
    assert _row("beta(40, 2)", "clipped t", 3)["clipped"] == _row("beta(40, 2)", "t", 3)["outside_range"]


def test_pair_interval_coverage():
    rows = {(r["method"], r["seeds"]): r for r in pair_coverage_table()}
    jk = rows[("jackknife over seeds", 10)]["coverage"]
    naive = rows[("naive t over pairs", 10)]["coverage"]
    assert 0.88 <= jk <= 0.99, jk
    assert naive < 0.80, naive  # pairs sharing seeds are not independent: the naive interval is far too narrow
