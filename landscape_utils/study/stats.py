"""Intervals over seeds, paired comparisons, and orderings stated only where the data resolve them.

The summary notebook writes every sentence of analysis from these functions, so that no
conclusion is hard-coded: an ordering is stated as an ordering only where the intervals of
the quantities do not overlap, and otherwise the text says that the difference is not resolved.

Conventions
-----------
* A single run (n = 1) has no interval: ``low == high == mean`` and ``method`` says
  ``"single run, no interval"``. Such an interval never resolves an ordering: two single runs
  that differ are reported as *not resolved*, because nothing measures the run-to-run spread.
* Two intervals *separate* when one's ``low`` is strictly above the other's ``high``;
  touching or overlapping intervals (ties included) do not.

Estimand and interval methods (:func:`mean_interval`)
-----------------------------------------------------
* **The estimand is always the arithmetic mean over seeds** (:data:`ESTIMAND`). No interval here is
  computed on a log or logit scale: mapped back, such an interval covers the geometric mean (or
  another transformed mean) instead, which would silently change what is estimated.
* **Unbounded quantities** (tr(H), which is not guaranteed positive; differences): two-sided
  Student-t interval, ``method == "student-t"`` (:data:`STUDENT_T`).
* **Bounded quantities** are passed with ``bounds=(lo, hi)`` (``None`` for an open side):
  accuracies and error rates over seeds ``(0, 1)``, asymmetries ``(-1, 1)``, λmax at a minimum and
  barriers ``(0, None)`` (values may be exactly at the bound, e.g. all zeros). The interval for
  the mean never leaves the range:

  - ``n >= 10`` (``method="auto"``): a BCa bootstrap (bias-corrected and accelerated;
    Efron 1987) with :data:`BOOTSTRAP_RESAMPLES` resamples drawn from a fixed generator
    (:data:`BOOTSTRAP_SEED`), so the interval is a deterministic function of the values. Every
    resampled mean lies in ``[min(values), max(values)]``, hence inside the range. The nominal
    normal quantile is *expanded* for small n (Hesterberg 2015, "What teachers should know about
    the bootstrap", §"expanded percentile"): ``z → sqrt(n/(n-1)) · t_{n-1}``, which corrects the
    bootstrap's ``1/n`` variance and the normal-vs-t quantile. Without it BCa covered only
    0.87–0.90 at n = 10 on the generators of ``tests/test_stats_coverage.py`` (measured while
    developing); with it, 0.92–0.94 there.
    ``method == "BCa bootstrap (4000 resamples, expanded for small n)"`` (:data:`BCA`).
  - ``n < 10``: the Student-t interval, cut at the bounds where it leaves the range, and then
    marked: ``clipped=True`` and ``method == "student-t, clipped to [0, ∞)"`` (the range
    written out). When the t-interval lies inside the range, ``method == "student-t"``. Small-n
    bootstraps are degenerate (at n = 3 there are only 10 distinct resamples) and undercover
    badly (about 0.7 at n = 3), so ``auto`` does not use them.

  Not Wilson: the Wilson interval is for a proportion of test images, not for a mean over seeds.
* Known limits (measured in ``tests/test_stats_coverage.py``, 95% level, n = 10, 2,000 samples):
  the t-interval (clipped or not; clipping cannot change coverage) undercovers strongly skewed
  data — 0.89 for a point mass at 0 (p = 0.3) plus an exponential tail, 0.83 for lognormal(σ = 1);
  BCa reaches 0.92 and 0.87 there. At n = 3 the t-interval covers 0.85–0.95 on those generators.

Paired comparisons, claims and pair quantities
----------------------------------------------
* :func:`paired_difference`: runs of two architectures that share a seed are paired; the
  interval is a Student-t interval on the per-seed differences ``a_i - b_i`` with the effect
  size Cohen's ``d_z``; a sign-flip permutation test only from ``n >= 6`` (at n = 3 its smallest
  two-sided p-value is 0.25; at n = 5 it is 0.0625), otherwise the paired t-test's p-value.
* :func:`holm` and :func:`judge_claims`: the claims of a conclusion are judged together with a
  Holm step-down correction across them (tables should say "Holm-adjusted over k claims").
* :func:`pair_interval`: quantities measured on pairs of seeds (connectivity barriers of
  pairs (0, 1), (0, 2), (1, 2), ...) share runs, so the pairs are not independent; the interval
  is a leave-one-seed-out jackknife with ``n_seeds - 1`` degrees of freedom.
* :func:`seeds_needed`: the number of seeds at which a t-interval's half-width would fall below a
  stated smallest effect of interest, from the observed per-seed standard deviation (precision,
  not post-hoc power).

Pure numpy/scipy; no torch, no notebook tooling.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sps

from .registry import label as _registry_label

SINGLE_RUN = "single run, no interval"
SINGLE_PAIR = "single pair, no interval"
NO_INTERVAL = (SINGLE_RUN, SINGLE_PAIR)
ESTIMAND = "arithmetic mean over seeds"
STUDENT_T = "student-t"
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 20240607
BCA = f"BCa bootstrap ({BOOTSTRAP_RESAMPLES} resamples, expanded for small n)"
JACKKNIFE = "jackknife over seeds"
BCA_MIN_N = 10  # ``method="auto"`` uses BCa from this many seeds when bounds are given
METHODS = ("auto", "t", "bca")

Bounds = tuple[float | None, float | None]


def display_name(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The label for ``name``: ``labels[name]``, else the registered architecture's label, else ``name``."""
    if labels and name in labels:
        return labels[name]
    return _registry_label(name)


def _fmt_number(fmt: str | Callable[[float], str], x: float) -> str:
    return fmt(x) if callable(fmt) else fmt.format(x)


def _norm_bounds(bounds: Sequence[float | None] | None) -> Bounds:
    """``(lo, hi)`` with ``None`` for an open side (``±inf`` is accepted as open)."""
    if bounds is None:
        return (None, None)
    if isinstance(bounds, str) or len(bounds) != 2:
        raise ValueError(f"bounds must be (lo, hi) with None for an open side, got {bounds!r}")
    out = []
    for b, inf in zip(bounds, (-math.inf, math.inf)):
        if b is None or b == inf:
            out.append(None)
            continue
        b = float(b)
        if not math.isfinite(b):
            raise ValueError(f"bounds must be finite or None, got {bounds!r}")
        out.append(b)
    lo, hi = out
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"bounds must have lo < hi, got {bounds!r}")
    return (lo, hi)


def range_text(bounds: Sequence[float | None] | None) -> str:
    """``"[0, ∞)"``, ``"[-1, 1]"``, ``"(-∞, 1]"`` or ``"(-∞, ∞)"``."""
    lo, hi = _norm_bounds(bounds)
    left = "(-∞" if lo is None else f"[{lo:g}"
    right = "∞)" if hi is None else f"{hi:g}]"
    return f"{left}, {right}"


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` runs with a two-sided interval at confidence ``level``.

    The estimand is the arithmetic mean over seeds (:data:`ESTIMAND`).

    Attributes:
        mean, low, high: the mean and the interval's ends.
        n: number of runs (seeds); for :func:`pair_interval`, the number of seeds (overlapping
            pairs) or of pairs (disjoint pairs).
        level: confidence level.
        method: which interval, in words a report can quote: ``"student-t"``,
            ``"student-t, clipped to [0, ∞)"`` (range written out), :data:`BCA`
            (``"BCa bootstrap (4000 resamples, expanded for small n)"``),
            ``"jackknife over seeds"`` (optionally ``", clipped to [...]"``), or
            :data:`SINGLE_RUN` / :data:`SINGLE_PAIR` (then ``low == high == mean``).
        values: per-run values (per-pair values for :func:`pair_interval`).
        bounds: the quantity's range ``(lo, hi)``, ``None`` for an open side.
        clipped: True when the interval had to be cut at ``bounds`` (then ``method`` says so).
        note: free text (e.g. "all values equal", "45 pairs of 10 seeds").
    """

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str
    values: tuple[float, ...] = ()
    bounds: Bounds = (None, None)
    clipped: bool = False
    note: str = ""

    def to_dict(self) -> dict:
        """Plain values: ``mean``, ``low``, ``high``, ``n``, ``level``, ``method``, ``values``,
        ``bounds`` (``[lo, hi]``, ``None`` for an open side), ``clipped``, ``note``."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level,
                "method": self.method, "values": list(self.values), "bounds": list(self.bounds),
                "clipped": self.clipped, "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping) -> Interval:
        """Inverse of :meth:`to_dict`; dicts written before ``bounds``/``clipped``/``note`` existed load too."""
        b = d.get("bounds") or (None, None)
        return cls(float(d["mean"]), float(d["low"]), float(d["high"]), int(d["n"]), float(d["level"]),
                   str(d["method"]), tuple(float(v) for v in d.get("values", ())),
                   tuple(None if v is None else float(v) for v in b), bool(d.get("clipped", False)),
                   str(d.get("note", "")))

    @property
    def single_run(self) -> bool:
        """True when there is no interval (one run, or one pair)."""
        return self.method in NO_INTERVAL

    @property
    def half_width(self) -> float:
        """``(high - low) / 2``."""
        return (self.high - self.low) / 2.0

    def separated_above(self, other: Interval) -> bool:
        """True when this interval lies strictly above ``other`` and both are real intervals."""
        if self.single_run or other.single_run:
            return False
        return self.low > other.high

    def format(self, fmt: str | Callable[[float], str] = "{:.3g}") -> str:
        """``"mean [low, high]"``, or ``"mean (single run, no interval)"``."""
        m = _fmt_number(fmt, self.mean)
        if self.single_run:
            return f"{m} ({self.method})"
        return f"{m} [{_fmt_number(fmt, self.low)}, {_fmt_number(fmt, self.high)}]"


def _check_values(values, level: float) -> np.ndarray:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional (one number per run), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("values is empty: need at least one run")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite (no NaN or inf), got {x.tolist()}")
    return x


def _check_in_bounds(x: np.ndarray, bounds: Bounds) -> None:
    lo, hi = bounds
    if (lo is not None and np.any(x < lo)) or (hi is not None and np.any(x > hi)):
        raise ValueError(f"values {x.tolist()} lie outside the bounds {range_text(bounds)}")


def _clip(low: float, high: float, bounds: Bounds) -> tuple[float, float, bool]:
    lo, hi = bounds
    clipped = False
    if lo is not None and low < lo:
        low, clipped = lo, True
    if hi is not None and high > hi:
        high, clipped = hi, True
    return low, high, clipped


def _t_half(sd: float, n: int, level: float) -> float:
    return float(_sps.t.ppf(0.5 + level / 2.0, df=n - 1)) * sd / math.sqrt(n)


@functools.lru_cache(maxsize=64)
def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    """The fixed ``(resamples, n)`` index matrix of the bootstrap (read-only)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    idx.setflags(write=False)
    return idx


def bca_bounds(x: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED, expand: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Expanded BCa bootstrap interval for the mean of each row of ``x`` (vectorised).

    Args:
        x: ``(n,)`` or ``(rows, n)`` finite values, ``n >= 2``.
        level: confidence level in (0, 1).
        resamples, seed: the bootstrap's fixed index matrix (same for every row and call).
        expand: use Hesterberg's small-sample expansion ``z → sqrt(n/(n-1)) t_{n-1}``.

    Returns:
        ``(low, high)`` arrays of shape ``(rows,)`` (scalars' shape for 1-D ``x``). Rows with zero
        spread give the point itself; no NaN arises for ties or values at a bound.
    """
    x = np.asarray(x, dtype=float)
    one = x.ndim == 1
    x2 = np.atleast_2d(x)
    rows, n = x2.shape
    if n < 2:
        raise ValueError("the bootstrap needs at least two values")
    idx = _resample_index(n, resamples, seed)
    theta = x2.mean(axis=1)
    boot = x2[:, idx].mean(axis=2)  # rows x resamples
    # Bias correction: share of resampled means below the estimate (ties count half).
    tol = 1e-12 * np.abs(x2).max(axis=1)[:, None]  # float noise of a mean of equal values
    below = (boot < theta[:, None] - tol).sum(axis=1)
    equal = (np.abs(boot - theta[:, None]) <= tol).sum(axis=1)
    p0 = np.clip((below + 0.5 * equal) / resamples, 0.5 / resamples, 1 - 0.5 / resamples)
    z0 = _sps.norm.ppf(p0)
    # Acceleration from the jackknife of the mean.
    jack = (x2.sum(axis=1)[:, None] - x2) / (n - 1)
    d = jack.mean(axis=1)[:, None] - jack
    ss = (d ** 2).sum(axis=1)
    den = 6.0 * ss ** 1.5
    accel = np.divide((d ** 3).sum(axis=1), den, out=np.zeros(rows), where=den > 0)
    tail = 0.5 + level / 2.0
    zq = math.sqrt(n / (n - 1)) * float(_sps.t.ppf(tail, n - 1)) if expand else float(_sps.norm.ppf(tail))
    boot_sorted = np.sort(boot, axis=1)
    out = []
    for z in (-zq, zq):
        w = z0 + z
        with np.errstate(divide="ignore", invalid="ignore"):
            q = _sps.norm.cdf(z0 + w / (1.0 - accel * w))
        q = np.clip(np.nan_to_num(q, nan=0.5), 0.0, 1.0)
        pos = q * (resamples - 1)
        lo_i = np.floor(pos).astype(int)
        hi_i = np.minimum(lo_i + 1, resamples - 1)
        frac = pos - lo_i
        r = np.arange(rows)
        out.append(boot_sorted[r, lo_i] * (1 - frac) + boot_sorted[r, hi_i] * frac)
    low, high = out
    flat = ss <= 0
    low = np.where(flat, theta, np.minimum(low, theta))
    high = np.where(flat, theta, np.maximum(high, theta))
    if one:
        return low[0], high[0]
    return low, high


def mean_interval(
    values: Sequence[float] | np.ndarray,
    level: float = 0.95,
    bounds: Sequence[float | None] | None = None,
    method: str = "auto",
) -> Interval:
    """Mean over seeds (the arithmetic mean is the estimand) with a two-sided interval.

    Args:
        values: one finite number per run (seed), inside ``bounds``.
        level: confidence level in (0, 1).
        bounds: the quantity's range ``(lo, hi)``, ``None`` (or ±inf) for an open side:
            ``(0, 1)`` for accuracies and error rates, ``(-1, 1)`` for asymmetries, ``(0, None)``
            for λmax at a minimum or barriers. ``None``: unbounded (e.g. tr(H)).
        method: ``"t"`` Student-t, cut at ``bounds`` and marked ``clipped`` where it leaves them;
            ``"bca"`` expanded BCa bootstrap (:data:`BCA`); ``"auto"`` BCa when ``bounds`` has a
            finite side and ``n >= 10`` (:data:`BCA_MIN_N`), else ``"t"``.

    Returns:
        An :class:`Interval` whose ``method`` names what was used: ``"student-t"``,
        ``"student-t, clipped to [0, ∞)"``, :data:`BCA`, or :data:`SINGLE_RUN` for one value
        (``low == high == mean``; orderings involving it stay unresolved). For identical values
        (zero spread) the interval is the point itself (``note == "all values equal"``).
        Bounded intervals never leave ``bounds``.

    Raises:
        ValueError: empty input, a NaN or infinite value, non-1-D input, a level outside (0, 1),
            malformed bounds, values outside the bounds, or an unknown method.
    """
    x = _check_values(values, level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    bnd = _norm_bounds(bounds)
    _check_in_bounds(x, bnd)
    mean = float(x.mean())
    n = int(x.size)
    vals = tuple(map(float, x))
    if n == 1:
        return Interval(mean, mean, mean, 1, level, SINGLE_RUN, vals, bnd)
    bounded = bnd != (None, None)
    use_bca = method == "bca" or (method == "auto" and bounded and n >= BCA_MIN_N)
    note = "all values equal" if np.all(x == x[0]) else ""
    if use_bca:
        low, high = bca_bounds(x, level)
        low, high, clipped = _clip(float(low), float(high), bnd)  # never needed; kept as a guard
        return Interval(mean, low, high, n, level, BCA, vals, bnd, clipped, note)
    half = _t_half(float(x.std(ddof=1)), n, level)
    low, high, clipped = _clip(mean - half, mean + half, bnd)
    name = f"{STUDENT_T}, clipped to {range_text(bnd)}" if clipped else STUDENT_T
    return Interval(mean, low, high, n, level, name, vals, bnd, clipped, note)


# --------------------------------------------------------------------------- orderings


@dataclass(frozen=True)
class Ordering:
    """What the intervals say about the order of several quantities (highest first).

    Attributes:
        groups: chain of groups, highest first. Every member of a group is resolved above every
            member of every later group; within a group, not all differences are resolved.
        resolved: pairs ``(higher, lower)`` whose intervals separate.
        unresolved: pairs ``(a, b)`` (a has the higher mean) whose intervals overlap or touch,
            or where one is a single run.
    """

    groups: tuple[tuple[str, ...], ...]
    resolved: tuple[tuple[str, str], ...]
    unresolved: tuple[tuple[str, str], ...]
    intervals: Mapping[str, Interval] = field(repr=False, default_factory=dict)

    @property
    def fully_resolved(self) -> bool:
        """True when every pair is resolved (each group has one member)."""
        return not self.unresolved

    def relation(self, a: str, b: str) -> str:
        """``">"`` if a is resolved above b, ``"<"`` if below, ``"≈"`` if not resolved."""
        if (a, b) in self.resolved:
            return ">"
        if (b, a) in self.resolved:
            return "<"
        return "≈"


def _check_intervals(intervals: Mapping[str, Interval]) -> None:
    if len(intervals) < 2:
        raise ValueError(f"need at least two quantities to order, got {list(intervals)}")
    for name, iv in intervals.items():
        if not all(math.isfinite(v) for v in (iv.mean, iv.low, iv.high)):
            raise ValueError(f"interval for {name!r} is not finite: {iv}")


def resolved_ordering(intervals: Mapping[str, Interval]) -> Ordering:
    """Order names by mean, highest first, keeping only the distinctions the intervals resolve.

    Args:
        intervals: name -> :class:`Interval` (at least two).

    Returns:
        An :class:`Ordering`. Groups are cut between consecutive names (by mean) only where
        every name before the cut is resolved above every name after it.

    Raises:
        ValueError: fewer than two names, or a non-finite interval.
    """
    _check_intervals(intervals)
    # Stable sort: ties keep the caller's order, so statements are reproducible.
    names = sorted(intervals, key=lambda k: -intervals[k].mean)
    resolved, unresolved = [], []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (resolved if intervals[a].separated_above(intervals[b]) else unresolved).append((a, b))
    res = set(resolved)
    groups, current = [], [names[0]]
    for k in range(1, len(names)):
        if all((a, b) in res for a in names[:k] for b in names[k:]):
            groups.append(tuple(current))
            current = []
        current.append(names[k])
    groups.append(tuple(current))
    return Ordering(tuple(groups), tuple(resolved), tuple(unresolved), dict(intervals))


def method_label(method: str) -> str:
    """A method string as a report names it: ``"student-t"`` → ``"Student-t"``, others unchanged."""
    return method.replace(STUDENT_T, "Student-t", 1) if method.startswith(STUDENT_T) else method


def methods_text(intervals) -> str:
    """The distinct methods of real (non-single-run) intervals, in first-seen order, joined:
    e.g. ``"Student-t"`` or ``"Student-t and BCa bootstrap (4000 resamples, expanded for small n)"``."""
    seen = []
    for iv in intervals:
        if not iv.single_run and method_label(iv.method) not in seen:
            seen.append(method_label(iv.method))
    return _join(seen) if seen else "no"


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def ordering_statement(
    intervals: Mapping[str, Interval],
    quantity: str,
    higher_is: str = "sharper",
    fmt: str | Callable[[float], str] = "{:.3g}",
    labels: Mapping[str, str] | None = None,
) -> str:
    """One or two sentences stating the ordering of ``quantity`` that the intervals support.

    Example: ``"Top Hessian eigenvalue: CNN 33.1 [30.2, 36.0] > MLP 4.2 [3.9, 4.6] ≈ residual CNN
    4.4 [4.0, 4.8] (higher is sharper; 95% Student-t intervals over 3 seeds). The MLP–residual CNN
    difference is not resolved by the intervals."``

    Args:
        intervals: name -> :class:`Interval` (at least two).
        quantity: what is measured, starts the sentence.
        higher_is: what a higher value means, e.g. ``"sharper"``; ``""`` to omit.
        fmt: format string or callable for the numbers.
        labels: optional display names (default: the architecture registry's labels).

    Raises:
        ValueError: as :func:`resolved_ordering`.
    """
    order = resolved_ordering(intervals)
    lab = lambda n: display_name(n, labels)  # noqa: E731
    chain = " > ".join(
        " ≈ ".join(f"{lab(n)} {intervals[n].format(fmt)}" for n in group) for group in order.groups
    )
    ns = sorted({iv.n for iv in intervals.values()})
    levels = sorted({iv.level for iv in intervals.values()})
    if all(iv.single_run for iv in intervals.values()):
        basis = "single runs, no intervals"
    else:
        n_txt = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        basis = (f"{_join([f'{100 * lv:g}%' for lv in levels])} {methods_text(intervals.values())} "
                 f"intervals over {n_txt} seeds")
    paren = f"higher is {higher_is}; {basis}" if higher_is else basis
    text = f"{quantity}: {chain} ({paren})."
    if order.fully_resolved:
        return text + " All differences are resolved by the intervals."
    if len(order.groups) == 1 and not order.resolved:
        if all(iv.single_run for iv in intervals.values()):
            return text + " With one run each there is no measure of spread, so no ordering is resolved."
        return text + " None of the differences is resolved by the intervals."
    pairs = [f"{lab(a)}–{lab(b)}" for a, b in order.unresolved]
    word = "difference is" if len(pairs) == 1 else "differences are"
    text += f" The {_join(pairs)} {word} not resolved by the intervals."
    # Resolved pairs hidden inside a group (partial orders) are worth stating explicitly.
    hidden = [(a, b) for g in order.groups for a in g for b in g if (a, b) in order.resolved]
    if hidden:
        verb = "is" if len(hidden) == 1 else "are"
        text += " Within that, " + _join([f"{lab(a)} > {lab(b)}" for a, b in hidden]) + f" {verb} resolved."
    return text


# --------------------------------------------------------------------------- vs the write-up

HOLDS, CONTRADICTED, UNRESOLVED = "holds", "contradicted", "unresolved"


@dataclass(frozen=True)
class ClaimCheck:
    """One pairwise claim of the write-up (``higher`` above ``lower``) against our intervals."""

    higher: str
    lower: str
    verdict: str  # HOLDS, CONTRADICTED or UNRESOLVED


@dataclass(frozen=True)
class ComparisonRow:
    """One name's line in the table beside the write-up."""

    name: str
    label: str
    reported: float | None  # the write-up's value, or None if it reported only an ordering
    reported_rank: int  # 1 = highest in the write-up's ordering
    ours: Interval
    ours_text: str
    verdict: str  # the worst verdict over the claims involving this name

    def as_dict(self) -> dict:
        """Plain dict for a table (pandas.DataFrame(rows) works on a list of these)."""
        return {
            "name": self.label,
            "reported": self.reported if self.reported is not None else f"rank {self.reported_rank}",
            "ours": self.ours_text,
            "write-up's ordering": self.verdict,
        }


@dataclass(frozen=True)
class ReportedComparison:
    """Result of :func:`compare_to_reported`."""

    rows: tuple[ComparisonRow, ...]
    claims: tuple[ClaimCheck, ...]
    verdict: str  # CONTRADICTED if any claim is, else UNRESOLVED if any is, else HOLDS

    def records(self) -> list[dict]:
        """Rows as plain dicts, in the write-up's order."""
        return [r.as_dict() for r in self.rows]


def _combine(verdicts: Sequence[str]) -> str:
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return UNRESOLVED if UNRESOLVED in verdicts else HOLDS


def compare_to_reported(
    ours: Mapping[str, Interval],
    reported: Mapping[str, float] | Sequence[str],
    fmt: str | Callable[[float], str] = "{:.3g}",
    labels: Mapping[str, str] | None = None,
) -> ReportedComparison:
    """Check the write-up's ordering against our intervals, pair by pair.

    Args:
        ours: name -> our :class:`Interval`; must cover every reported name.
        reported: either name -> reported value (its ordering is by value, highest first) or a
            sequence of names, highest first (when the write-up gave only an ordering).
        fmt, labels: as in :func:`ordering_statement`.

    Returns:
        A :class:`ReportedComparison`: one row per reported name (write-up's order) and one
        :class:`ClaimCheck` per pair the write-up ordered. A claim *holds* when our intervals
        separate in the same direction, is *contradicted* when they separate the other way, and is
        *unresolved* otherwise (overlap, or single runs).

    Raises:
        ValueError: a reported name missing from ``ours``, fewer than two names, ties or NaN in
            the reported values, or duplicate names.
    """
    if isinstance(reported, Mapping):
        values = {k: float(v) for k, v in reported.items()}
        if any(not math.isfinite(v) for v in values.values()):
            raise ValueError(f"reported values must be finite, got {values}")
        if len(set(values.values())) != len(values):
            raise ValueError(f"reported values tie, so they give no ordering: {values}")
        order = sorted(values, key=lambda k: -values[k])
    else:
        if isinstance(reported, str):
            raise ValueError("reported must be a mapping or a sequence of names, not a string")
        values, order = {}, list(reported)
        if len(set(order)) != len(order):
            raise ValueError(f"duplicate names in reported ordering: {order}")
    if len(order) < 2:
        raise ValueError(f"need at least two reported names, got {order}")
    missing = [n for n in order if n not in ours]
    if missing:
        raise ValueError(f"no result of ours for {missing} (have {sorted(ours)})")
    _check_intervals({n: ours[n] for n in order})
    claims = []
    for i, hi in enumerate(order):
        for lo in order[i + 1:]:
            if ours[hi].separated_above(ours[lo]):
                verdict = HOLDS
            elif ours[lo].separated_above(ours[hi]):
                verdict = CONTRADICTED
            else:
                verdict = UNRESOLVED
            claims.append(ClaimCheck(hi, lo, verdict))
    rows = tuple(
        ComparisonRow(
            name=n,
            label=display_name(n, labels),
            reported=values.get(n),
            reported_rank=rank,
            ours=ours[n],
            ours_text=ours[n].format(fmt),
            verdict=_combine([c.verdict for c in claims if n in (c.higher, c.lower)]),
        )
        for rank, n in enumerate(order, start=1)
    )
    return ReportedComparison(rows, tuple(claims), _combine([c.verdict for c in claims]))


def relation_to_value(interval: Interval, value: float = 0.0) -> str:
    """``">"`` if the interval lies strictly above ``value``, ``"<"`` if strictly below,
    ``"≈"`` if it contains it or is a single run (e.g. "is the barrier resolved above 0?")."""
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value!r}")
    if interval.single_run:
        return "≈"
    if interval.low > value:
        return ">"
    if interval.high < value:
        return "<"
    return "≈"


# --------------------------------------------------------------------------- paired comparisons

PERMUTATION_MIN_N = 6  # below this a two-sided sign-flip test cannot reach p < 0.05 (n = 5: 2/32)
EXACT_SIGN_FLIP_MAX_N = 16  # exact enumeration of all 2^n sign patterns up to here
SIGN_FLIP_RESAMPLES = 20000  # seeded Monte Carlo sign patterns above EXACT_SIGN_FLIP_MAX_N
SIGN_FLIP_EXACT = "sign-flip permutation test (exact, all 2^n sign patterns)"
SIGN_FLIP_MC = f"sign-flip permutation test (Monte Carlo, {SIGN_FLIP_RESAMPLES} sign patterns)"
PAIRED_T = "paired t-test"
NO_TEST = "no test (single paired run)"
SMALL_N_NOTE = "n < 6: a sign-flip test cannot reach p < 0.05"


def sign_flip_p_value(differences: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """Two-sided sign-flip permutation p-value of ``mean(differences) == 0``.

    The statistic is ``|Σ s_i d_i|`` over sign patterns ``s``. Exact (all ``2^n`` patterns,
    observed one included) for ``n <= 16``; otherwise :data:`SIGN_FLIP_RESAMPLES` patterns from a
    generator seeded with :data:`BOOTSTRAP_SEED`, with ``p = (1 + hits) / (1 + patterns)``.

    Returns:
        ``(p, test)`` with ``test`` :data:`SIGN_FLIP_EXACT` or :data:`SIGN_FLIP_MC`.
    """
    d = np.asarray(differences, dtype=float)
    n = d.size
    obs = abs(float(d.sum()))
    tol = 1e-9 * max(float(np.abs(d).sum()), 1e-300)
    if n <= EXACT_SIGN_FLIP_MAX_N:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
        stat = np.abs((1 - 2 * bits) @ d)
        return float(np.mean(stat >= obs - tol)), SIGN_FLIP_EXACT
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(SIGN_FLIP_RESAMPLES, n))
    hits = int(np.sum(np.abs(signs @ d) >= obs - tol))
    return (1 + hits) / (1 + SIGN_FLIP_RESAMPLES), SIGN_FLIP_MC


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences ``a_i - b_i`` of two quantities measured on the same seeds.

    Attributes:
        mean: mean difference (the estimand: arithmetic mean over seeds of ``a_i - b_i``).
        interval: Student-t :class:`Interval` on the differences (``SINGLE_RUN`` for n = 1).
        n: number of paired seeds.
        sd: standard deviation of the differences (``ddof=1``); ``None`` for n = 1.
        effect_size: Cohen's ``d_z = mean / sd``. ``sd == 0``: ``±inf`` when ``mean != 0``
            (every seed differs by the same amount), ``0.0`` when ``mean == 0``; ``None`` for n = 1.
        p_value: two-sided sign-flip permutation p-value, only for ``n >= 6``; else ``None``.
        t_p_value: two-sided paired t-test p-value (``sd == 0``: 0 if ``mean != 0`` else 1);
            ``None`` for n = 1.
        test: the test behind :attr:`p` (:data:`SIGN_FLIP_EXACT`, :data:`SIGN_FLIP_MC`,
            :data:`PAIRED_T` or :data:`NO_TEST`).
        note: e.g. :data:`SMALL_N_NOTE` when ``n < 6``.
        differences: the per-seed differences.
    """

    mean: float
    interval: Interval
    n: int
    sd: float | None
    effect_size: float | None
    p_value: float | None
    t_p_value: float | None
    test: str
    note: str = ""
    differences: tuple[float, ...] = ()

    @property
    def p(self) -> float | None:
        """The p-value used for claims and Holm: the sign-flip p from n >= 6, else the t-test's."""
        return self.p_value if self.p_value is not None else self.t_p_value

    def to_dict(self) -> dict:
        """Plain values (``effect_size`` may be ``±inf``)."""
        return {"mean": self.mean, "interval": self.interval.to_dict(), "n": self.n, "sd": self.sd,
                "effect_size": self.effect_size, "p_value": self.p_value, "t_p_value": self.t_p_value,
                "p": self.p, "test": self.test, "note": self.note, "differences": list(self.differences)}


def paired_difference(a_values: Sequence[float] | np.ndarray, b_values: Sequence[float] | np.ndarray,
                      level: float = 0.95) -> PairedDifference:
    """Paired comparison of ``a`` and ``b`` over shared seeds (``a_values[i]`` and ``b_values[i]``
    come from the same seed).

    Raises:
        ValueError: different lengths, or as :func:`mean_interval`.
    """
    a = _check_values(a_values, level)
    b = _check_values(b_values, level)
    if a.shape != b.shape:
        raise ValueError(f"a and b need one value per shared seed each, got {a.size} and {b.size}")
    d = a - b
    n = int(d.size)
    iv = mean_interval(d, level, method="t")
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(mean, iv, 1, None, None, None, None, NO_TEST, SMALL_N_NOTE, (mean,))
    sd = float(d.std(ddof=1))
    if sd > 0:
        effect = mean / sd
        t_p = float(2 * _sps.t.sf(abs(mean) / (sd / math.sqrt(n)), df=n - 1))
    else:
        effect = math.copysign(math.inf, mean) if mean != 0 else 0.0
        t_p = 0.0 if mean != 0 else 1.0
    if n >= PERMUTATION_MIN_N:
        p, test = sign_flip_p_value(d)
        note = ""
    else:
        p, test, note = None, PAIRED_T, SMALL_N_NOTE
    return PairedDifference(mean, iv, n, sd, effect, p, t_p, test, note, tuple(map(float, d)))


def holm(p_values: Sequence[float | None]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order.

    ``adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))`` over the ascending order ``p_(1) <= ...``
    (ties keep input order); monotone in the raw p-values and capped at 1. ``None`` (no test
    possible) counts as ``p = 1``.

    Raises:
        ValueError: a p-value outside [0, 1] or NaN.
    """
    p = np.array([1.0 if v is None else float(v) for v in p_values], dtype=float)
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {list(p_values)}")
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


SUPPORTED, NOT_RESOLVED = "supported", "not resolved"  # CONTRADICTED as above


@dataclass(frozen=True)
class Claim:
    """A claim that ``a > b`` (``direction=">"``) or ``a < b`` (``"<"``) about a
    :class:`PairedDifference` of ``a - b``."""

    name: str
    difference: PairedDifference
    direction: str = ">"


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim judged among ``n_claims`` with Holm's correction."""

    name: str
    direction: str
    verdict: str  # SUPPORTED, CONTRADICTED or NOT_RESOLVED
    p: float | None  # the raw p-value (sign-flip from n >= 6, else paired t), None for n = 1
    p_adjusted: float  # Holm-adjusted over the n_claims claims judged together
    test: str
    n_claims: int
    alpha: float
    difference: PairedDifference

    def as_dict(self) -> dict:
        """A table row; the column name says the correction."""
        d = self.difference
        return {"claim": self.name, "difference": d.interval.format(), "n": d.n,
                "effect size d_z": d.effect_size, "test": self.test, "p": self.p,
                f"p (Holm-adjusted over {self.n_claims} claims)": self.p_adjusted, "verdict": self.verdict}


def judge_claims(claims: Sequence[Claim] | Mapping[str, PairedDifference],
                 alpha: float = 0.05) -> tuple[ClaimVerdict, ...]:
    """Judge the claims of one conclusion together.

    A claim is *supported* when its Holm-adjusted p-value is ``<= alpha`` **and** its interval on
    ``a - b`` lies strictly on the claimed side of 0; *contradicted* when the adjusted p is
    ``<= alpha`` and the interval lies strictly on the other side; otherwise *not resolved*
    (including n = 1, whose p counts as 1). The raw p is the sign-flip p from n >= 6, else the
    paired t-test's (:attr:`PairedDifference.p`).

    Args:
        claims: :class:`Claim` objects, or name -> :class:`PairedDifference` (each claiming a > b).
        alpha: family-wise error rate in (0, 1).

    Returns:
        One :class:`ClaimVerdict` per claim, in the input order.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(claims, Mapping):
        claims = [Claim(k, v) for k, v in claims.items()]
    claims = list(claims)
    for c in claims:
        if c.direction not in (">", "<"):
            raise ValueError(f"direction must be '>' or '<', got {c.direction!r} for {c.name!r}")
    adjusted = holm([c.difference.p for c in claims])
    out = []
    for c, adj in zip(claims, adjusted):
        iv = c.difference.interval
        above, below = iv.low > 0, iv.high < 0
        if iv.single_run or adj > alpha:
            verdict = NOT_RESOLVED
        elif (above and c.direction == ">") or (below and c.direction == "<"):
            verdict = SUPPORTED
        elif (below and c.direction == ">") or (above and c.direction == "<"):
            verdict = CONTRADICTED
        else:
            verdict = NOT_RESOLVED
        out.append(ClaimVerdict(c.name, c.direction, verdict, c.difference.p, adj, c.difference.test,
                                len(claims), alpha, c.difference))
    return tuple(out)


# --------------------------------------------------------------------------- pair quantities


def pair_interval(pair_values: Mapping[tuple[Any, Any], float], level: float = 0.95,
                  bounds: Sequence[float | None] | None = None) -> Interval:
    """Mean over pairs of runs, with an interval valid whether or not pairs share runs.

    Pairs that share no run (``(0, 1), (2, 3), ...``) are independent samples: the interval is
    :func:`mean_interval`'s over the pair values (``note`` e.g. ``"5 disjoint pairs"``, ``n`` the
    number of pairs). Pairs ``(0, 1), (0, 2), (1, 2)`` share seeds, so they are not independent and a
    t-interval over pairs is too narrow; then this is a leave-one-seed-out jackknife: ``θ_(i)`` is the mean over
    the pairs that do not contain seed ``i``; the variance is ``(n-1)/n Σ (θ_(i) - mean θ_(·))²``
    and the interval ``θ ± t_{n-1} · sqrt(variance)`` with ``n`` the number of seeds, cut at
    ``bounds`` (then ``clipped`` and ``method == "jackknife over seeds, clipped to [0, ∞)"``).
    The centre is the mean over all pairs.

    Args:
        pair_values: ``(i, j) -> value`` for runs ``i != j`` (seeds, or any sortable run names);
            ``(i, j)`` and ``(j, i)`` are the same pair and may not both appear. For overlapping
            pairs, every seed's removal must leave at least one pair (true for all pairs of >= 3 seeds).
        level: confidence level in (0, 1).
        bounds: as :func:`mean_interval` (barriers: ``(0, None)``).

    Returns:
        An :class:`Interval` with ``n`` = number of seeds, ``values`` the pair values in sorted
        pair order, ``note`` e.g. ``"45 pairs of 10 seeds"``; one pair gives :data:`SINGLE_PAIR`.

    Raises:
        ValueError: no pairs, a pair (i, i), a duplicate pair, a non-finite value, a value outside
            the bounds, or a seed whose removal leaves no pair.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    bnd = _norm_bounds(bounds)
    pairs: dict[tuple[int, int], float] = {}
    for key, v in pair_values.items():
        i, j = key
        if i == j:
            raise ValueError(f"a pair needs two different seeds, got {key!r}")
        k = (min(i, j), max(i, j))
        if k in pairs:
            raise ValueError(f"duplicate pair {k!r}")
        pairs[k] = float(v)
    if not pairs:
        raise ValueError("pair_values is empty: need at least one pair")
    keys = sorted(pairs)
    x = np.array([pairs[k] for k in keys])
    if not np.all(np.isfinite(x)):
        raise ValueError(f"pair values must be finite, got {x.tolist()}")
    _check_in_bounds(x, bnd)
    seeds = sorted({s for k in keys for s in k})
    if len(seeds) == 2 * len(keys):  # no run in two pairs: independent samples
        iv = mean_interval(x, level, bounds=bnd)
        note = f"{len(keys)} disjoint pair{'s' if len(keys) > 1 else ''}" + (f"; {iv.note}" if iv.note else "")
        return dataclasses.replace(iv, method=SINGLE_PAIR if len(keys) == 1 else iv.method, note=note)
    n = len(seeds)
    theta = float(x.mean())
    note = f"{len(keys)} pairs of {n} seeds"
    if len(keys) == 1:
        return Interval(theta, theta, theta, n, level, SINGLE_PAIR, tuple(x), bnd, False, note)
    loo = []
    for s in seeds:
        keep = np.array([s not in k for k in keys])
        if not keep.any():
            raise ValueError(f"leaving out seed {s} leaves no pair: the jackknife needs more pairs")
        loo.append(x[keep].mean())
    loo = np.array(loo)
    var = (n - 1) / n * float(((loo - loo.mean()) ** 2).sum())
    half = float(_sps.t.ppf(0.5 + level / 2.0, df=n - 1)) * math.sqrt(var)
    low, high, clipped = _clip(theta - half, theta + half, bnd)
    name = f"{JACKKNIFE}, clipped to {range_text(bnd)}" if clipped else JACKKNIFE
    return Interval(theta, low, high, n, level, name, tuple(map(float, x)), bnd, clipped, note)


# --------------------------------------------------------------------------- seeds needed


def seeds_needed(sd: float, target_half_width: float, level: float = 0.95, n_max: int = 1000) -> int | None:
    """Smallest number of seeds ``n >= 2`` with ``t_{n-1} · sd / sqrt(n) <= target_half_width``.

    Precision, not post-hoc power: ``sd`` is the observed per-seed standard deviation (of the
    quantity, or of the per-seed differences for a paired claim) and ``target_half_width`` the
    smallest effect of interest, e.g. 10% of the quantity's mean.

    Returns:
        The number of seeds, 2 at least (``sd == 0`` gives 2), or ``None`` if more than ``n_max``.

    Raises:
        ValueError: ``sd`` negative or not finite, ``target_half_width <= 0``, ``n_max < 2``, or a
            level outside (0, 1).
    """
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be finite and >= 0, got {sd!r}")
    if not (math.isfinite(target_half_width) and target_half_width > 0):
        raise ValueError(f"target_half_width must be finite and > 0, got {target_half_width!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_max < 2:
        raise ValueError(f"n_max must be >= 2, got {n_max!r}")
    n = np.arange(2, int(n_max) + 1)
    half = _sps.t.ppf(0.5 + level / 2.0, df=n - 1) * sd / np.sqrt(n)
    ok = np.nonzero(half <= target_half_width)[0]
    return int(n[ok[0]]) if ok.size else None
