"""Intervals over seeds and orderings that are stated only where the intervals separate.

The summary notebook writes every sentence of analysis from these functions, so that no
conclusion is hard-coded: an ordering is stated as an ordering only where the intervals of
the quantities do not overlap, and otherwise the text says that the difference is not resolved.

Conventions
-----------
* :func:`mean_interval` gives a two-sided Student-t interval for the mean over seeds.
* A single run (n = 1) has no interval: ``low == high == mean`` and ``method`` says
  ``"single run, no interval"``. Such an interval never resolves an ordering: two single runs
  that differ are reported as *not resolved*, because nothing measures the run-to-run spread.
* Two intervals *separate* when one's ``low`` is strictly above the other's ``high``;
  touching or overlapping intervals (ties included) do not.

Pure numpy/scipy; no torch, no notebook tooling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _sps

from .registry import label as _registry_label

SINGLE_RUN = "single run, no interval"


def display_name(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The label for ``name``: ``labels[name]``, else the registered architecture's label, else ``name``."""
    if labels and name in labels:
        return labels[name]
    return _registry_label(name)


def _fmt_number(fmt: str | Callable[[float], str], x: float) -> str:
    return fmt(x) if callable(fmt) else fmt.format(x)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` runs with a two-sided interval at confidence ``level``.

    ``method`` is ``"student-t"`` or :data:`SINGLE_RUN` (then ``low == high == mean``).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str
    values: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """Plain values: ``mean``, ``low``, ``high``, ``n``, ``level``, ``method``, ``values``."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "level": self.level,
                "method": self.method, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Interval:
        return cls(float(d["mean"]), float(d["low"]), float(d["high"]), int(d["n"]), float(d["level"]),
                   str(d["method"]), tuple(float(v) for v in d.get("values", ())))

    @property
    def single_run(self) -> bool:
        """True when there is no interval (one run)."""
        return self.method == SINGLE_RUN

    def separated_above(self, other: Interval) -> bool:
        """True when this interval lies strictly above ``other`` and both are real intervals."""
        if self.single_run or other.single_run:
            return False
        return self.low > other.high

    def format(self, fmt: str | Callable[[float], str] = "{:.3g}") -> str:
        """``"mean [low, high]"``, or ``"mean (single run, no interval)"``."""
        m = _fmt_number(fmt, self.mean)
        if self.single_run:
            return f"{m} ({SINGLE_RUN})"
        return f"{m} [{_fmt_number(fmt, self.low)}, {_fmt_number(fmt, self.high)}]"


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Mean over seeds with a two-sided Student-t confidence interval.

    Args:
        values: one finite number per run (seed).
        level: confidence level in (0, 1).

    Returns:
        An :class:`Interval`. For one value, ``low == high == mean`` and
        ``method == SINGLE_RUN``: there is no interval, and orderings involving it stay unresolved.
        For identical values (zero spread), the interval is the point itself.

    Raises:
        ValueError: empty input, a NaN or infinite value, non-1-D input, or a level outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional (one number per run), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("values is empty: need at least one run")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values must be finite (no NaN or inf), got {x.tolist()}")
    mean = float(x.mean())
    n = int(x.size)
    if n == 1:
        return Interval(mean, mean, mean, 1, level, SINGLE_RUN, (mean,))
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(_sps.t.ppf(0.5 + level / 2.0, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, level, "student-t", tuple(map(float, x)))


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
        basis = f"{_join([f'{100 * lv:g}%' for lv in levels])} Student-t intervals over {n_txt} seeds"
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
