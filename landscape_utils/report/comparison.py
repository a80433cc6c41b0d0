"""Cross-architecture comparison: the report's analysis, computed from the typed section summaries.

Every sentence that states a result is built here from intervals over seeds: an ordering is
stated only where the intervals separate, otherwise the text says the difference is not
resolved. Nothing is hard-coded but the original write-up's own reported values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy import stats as _sps

from ..study.registry import ARCHITECTURES, label
from ..study.stats import (NO_TEST, SMALL_N_NOTE, Claim, ClaimVerdict, Interval, PairedDifference, compare_to_reported,
                           judge_claims, ordering_statement, pair_interval, paired_difference, relation_to_value,
                           seeds_needed)
from .tables import markdown_table

# What the original write-up reported (single runs, no error bars).
REPORTED_LAMBDA_MAX = {"cnn": 33.0, "rescnn": 17.0, "mlp": 4.0}
REPORTED_FLATNESS_ORDER = ("cnn", "mlp", "rescnn")       # sharpest first
REPORTED_BARRIER_ORDER = ("cnn", "rescnn", "mlp")        # largest barrier first
REPORTED_SLICE_SHAPES = {"mlp": "near-linear", "cnn": "rising, asymmetric", "rescnn": "parabola-like"}
VERDICT_TEXT = {"holds": "holds", "contradicted": "is contradicted", "unresolved": "is not resolved"}

Summaries = Mapping[str, Mapping[str, Any]]  # section -> arch -> typed summary


def _labels() -> dict[str, str]:
    return {k: a.label for k, a in ARCHITECTURES.items()}


def _ordering(ivs: Mapping[str, Interval], quantity: str, higher_is: str, fmt: str = "{:.3g}") -> str:
    # ordering_statement needs two names; with one architecture, state its value alone.
    if len(ivs) < 2:
        return "; ".join(f"{quantity}: {label(a)} {iv.format(fmt)} (one architecture, nothing to order)."
                         for a, iv in ivs.items())
    return ordering_statement(ivs, quantity, higher_is=higher_is, fmt=fmt, labels=_labels())


def _claims_sentence(comparison, what: str) -> str:
    parts = [f"{label(c.higher)} > {label(c.lower)} {VERDICT_TEXT[c.verdict]}" for c in comparison.claims]
    return f"Against our intervals, the write-up's {what}: " + "; ".join(parts) + "."


def methods_table(res: Mapping[str, Mapping[str, Any]]) -> str:
    """Which interval method each reported quantity uses (read from the intervals themselves)."""
    arch = next(iter(res["training"]))
    t, c, f, sl, cn = (res[k][arch] for k in ("training", "curvature", "flatness", "slices", "connectivity"))
    rows = [("test accuracy (in [0, 1])", t.test_acc), ("test loss (≥ 0)", t.test_loss),
            ("λmax (≥ 0 at these minima)", c.lambda_max), ("λmin, tr(H) (unbounded)", c.trace),
            ("E[ΔL] (unbounded)", f.mean_change["filter"][-1]), ("E|ΔL| (≥ 0)", f.mean_abs_change["filter"][-1]),
            ("slice curvature (unbounded)", sl.local_curvature["filter-normalised"]),
            ("slice asymmetry (in [−1, 1])", sl.asymmetry["raw"]), ("barriers, per seed pair (≥ 0)", cn.loss_barrier_train)]
    return markdown_table(["quantity", "95% interval for the mean over seeds", "n"],
                          [[q, iv.method, iv.n] for q, iv in rows])


def accuracy_statement(training: Mapping[str, Any]) -> str:
    """Ordering of test accuracy across architectures (where the intervals resolve it)."""
    return _ordering({a: s.test_acc for a, s in training.items()}, "Test accuracy", "more accurate", fmt="{:.4f}")


def models_table(training: Mapping[str, Any]) -> str:
    return markdown_table(["model", "architecture", "parameters", "test accuracy after training, mean [95% interval]"],
                          [[label(a), ARCHITECTURES[a].description if a in ARCHITECTURES else "—",
                            f"{ARCHITECTURES[a].params:,}" if a in ARCHITECTURES else "—",
                            s.test_acc.format("{:.4f}")] for a, s in training.items()])


def curvature_analysis(curvature: Mapping[str, Any]) -> tuple[dict[str, Interval], str, str]:
    """λmax intervals, a table beside the write-up's values, and the analysis text."""
    ivs = {a: s.lambda_max for a, s in curvature.items()}
    reported = {a: v for a, v in REPORTED_LAMBDA_MAX.items() if a in ivs}
    rows = [[label(a), f"{REPORTED_LAMBDA_MAX[a]:.0f}" if a in REPORTED_LAMBDA_MAX else "—", iv.format("{:.3g}"),
             curvature[a].trace.format("{:.3g}"), curvature[a].lambda_min.format("{:.3g}")] for a, iv in ivs.items()]
    table = markdown_table(["model", "λmax, write-up (one run)", "λmax, this study", "tr(H), this study",
                            "λmin, this study"], rows)
    text = _ordering(ivs, "λmax", "sharper")
    if len(reported) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, reported, labels=_labels()), "ordering of λmax")
    return ivs, table, text


def flatness_intervals(flatness: Mapping[str, Any], kind: str, index: int) -> dict[str, Interval]:
    return {a: s.mean_change[kind][index] for a, s in flatness.items()}


def flatness_analysis(flatness: Mapping[str, Any], kind: str, index: int) -> tuple[dict[str, Interval], str]:
    """At one noise scale (``index`` into the σ list): the ordering of the mean change E[ΔL] (a
    curvature measure) and of the mean absolute change E|ΔL| (the write-up's metric, a gradient-norm
    measure), each against the write-up's flatness ordering."""
    ivs = flatness_intervals(flatness, kind, index)
    sigma = next(iter(flatness.values())).sigmas[kind][index]
    text = _ordering(ivs, f"Mean loss change E[ΔL] under {kind} noise at σ = {sigma:g}", "sharper")
    abs_ivs = {a: s.mean_abs_change[kind][index] for a, s in flatness.items()}
    text += " " + _ordering(abs_ivs, f"Mean absolute change E|ΔL| (the write-up's metric, mostly |gᵀδ|) at σ = {sigma:g}",
                            "larger")
    order = [a for a in REPORTED_FLATNESS_ORDER if a in ivs]
    if len(order) >= 2:
        what = "flatness ordering (CNN sharpest, MLP middle, residual CNN flattest)"
        text += " " + _claims_sentence(compare_to_reported(abs_ivs, order, labels=_labels()), what + " by its own E|ΔL|")
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=_labels()), what + " by E[ΔL]")
    return ivs, text


def trace_agreement(flatness: Mapping[str, Any]) -> str:
    """The isotropic mean change against the second-order prediction ½σ²·tr(H), as a ratio with its
    interval over seeds, per architecture (smallest σ), and what a ratio above 1 means."""
    parts = []
    for arch, s in flatness.items():
        parts.append(f"{label(arch)}: measured {s.mean_change['isotropic'][0].format()} against predicted "
                     f"{s.predicted_change[0].format()}, ratio {s.second_order_ratio[0].format('{:.2f}')}")
    sigma = next(iter(flatness.values())).sigmas["isotropic"][0]
    return (f"Second-order prediction at the smallest isotropic σ ({sigma:g}): " + "; ".join(parts) + ". "
            "A ratio above 1 is what the ReLU and max-pool kinks add to the loss change at this σ (a smooth loss "
            "would give 1 up to higher-order terms); it is a measurement, not a failed check.")


def slices_analysis(slices: Mapping[str, Any]) -> tuple[dict[str, Interval], dict[str, Interval], str]:
    """Filter-normalised slice curvature (local vᵀHv at α = 0, and the fitted finite-scale one) and
    raw-slice asymmetry per architecture."""
    curv = {a: s.local_curvature["filter-normalised"] for a, s in slices.items()}
    fitted = {a: s.fitted_curvature["filter-normalised"] for a, s in slices.items()}
    asym = {a: s.asymmetry["raw"] for a, s in slices.items()}
    radius = next(iter(slices.values())).fit_radius
    text = _ordering(curv, "Local curvature vᵀHv at α = 0 along filter-normalised directions", "sharper")
    text += " " + _ordering(fitted, f"Fitted (finite-scale, |α| ≤ {radius:g}) curvature along the same directions",
                            "sharper")
    shapes = []
    for arch, iv in asym.items():
        rel = relation_to_value(iv, 0.0)
        shape = ("symmetric within the interval (parabola-like)" if rel == "≈" else
                 f"asymmetric, rising towards {'+' if rel == '>' else '−'}α")
        shapes.append(f"{label(arch)} raw slices are {shape}, asymmetry {iv.format('{:.2f}')} "
                      f"(write-up: {REPORTED_SLICE_SHAPES.get(arch, 'not reported')})")
    return curv, asym, text + " " + "; ".join(shapes) + "."


def connectivity_analysis(connectivity: Mapping[str, Any], split: str = "train") -> tuple[dict[str, Interval], str]:
    """Loss-barrier intervals per architecture, whether each is above zero, and the ordering."""
    ivs = {a: getattr(s, f"loss_barrier_{split}") for a, s in connectivity.items()}
    present = []
    for arch, iv in ivs.items():
        rel = relation_to_value(iv, 0.0)
        present.append(f"{label(arch)} {'shows a barrier' if rel == '>' else 'shows no barrier resolved above zero'}"
                       f" ({iv.format()} nats over {iv.n} seed pairs)")
    text = "Between independently trained runs, " + "; ".join(present) + ". "
    text += _ordering(ivs, f"Loss barrier ({split})", "less connected").replace(" seeds)", " seed pairs)")
    order = [a for a in REPORTED_BARRIER_ORDER if a in ivs]
    if len(order) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=_labels()),
                                       "barrier ordering (CNN largest, MLP smallest)")
    return ivs, text


# The write-up's orderings, each a claim "higher > lower" judged by a paired comparison over seeds
# (or over seed pairs for barriers), with a Holm correction across all of them.
WRITEUP_CLAIMS = (
    ("skip connections lower curvature", "lambda_max", "cnn", "rescnn"),
    ("CNNs find sharper minima than the MLP", "lambda_max", "cnn", "mlp"),
    ("CNNs find sharper minima than the MLP", "lambda_max", "rescnn", "mlp"),
    ("skip connections lower curvature", "flatness_filter", "cnn", "rescnn"),
    ("CNNs find sharper minima than the MLP", "flatness_filter", "cnn", "mlp"),
    ("CNNs find sharper minima than the MLP", "flatness_filter", "rescnn", "mlp"),
    ("flatness: CNN sharpest, MLP middle, residual CNN flattest", "abs_change", "cnn", "mlp"),
    ("flatness: CNN sharpest, MLP middle, residual CNN flattest", "abs_change", "mlp", "rescnn"),
    ("barriers: CNN largest, MLP smallest", "barrier", "cnn", "rescnn"),
    ("barriers: CNN largest, MLP smallest", "barrier", "rescnn", "mlp"),
)
#: Smallest effect of interest for "seeds needed": this fraction of the quantity's mean.
PRECISION = 0.10


def _per_unit(res: Mapping[str, Mapping[str, Any]], quantity: str, arch: str) -> tuple[str, dict]:
    """(what it is, unit -> value) for one quantity of one architecture."""
    if quantity == "lambda_max":
        s = res["curvature"][arch]
        return "λmax", dict(zip(s.seeds, s.lambda_max.values))
    if quantity == "flatness_filter":
        s = res["flatness"][arch]
        return (f"E[ΔL], filter noise σ = {s.sigmas['filter'][-1]:g}",
                dict(zip(s.seeds, s.mean_change["filter"][-1].values)))
    if quantity == "abs_change":
        s = res["flatness"][arch]
        return (f"E|ΔL| (the write-up's metric), isotropic σ = {s.sigmas['isotropic'][-1]:g}",
                dict(zip(s.seeds, s.mean_abs_change["isotropic"][-1].values)))
    s = res["connectivity"][arch]
    return "loss barrier (train), per seed pair", dict(zip(s.pairs, s.loss_barrier_train.values))


def _pair_difference(diffs: Mapping[tuple[int, int], float]) -> PairedDifference:
    """A paired comparison on seed-pair quantities: the jackknife interval over seeds and its t-test."""
    iv = pair_interval(dict(diffs))
    n = iv.n
    if iv.single_run or n < 2:
        return PairedDifference(iv.mean, iv, n, None, None, None, None, NO_TEST, "one pair: no test")
    tq = float(_sps.t.ppf(0.5 + iv.level / 2, n - 1))
    se = (iv.high - iv.low) / (2 * tq)
    p = 1.0 if se == 0 and iv.mean == 0 else (0.0 if se == 0 else float(2 * _sps.t.sf(abs(iv.mean) / se, n - 1)))
    sd = se * math.sqrt(n)
    return PairedDifference(iv.mean, iv, n, sd, iv.mean / sd if sd else None, None, p,
                            "jackknife t-test over seeds", f"{len(diffs)} seed pairs of {n} seeds",
                            tuple(diffs.values()))


def paired_claims(res: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> tuple[list[dict], list[ClaimVerdict]]:
    """Judge the write-up's orderings (:data:`WRITEUP_CLAIMS`) by paired differences over the seeds
    (or seed pairs) both architectures share, Holm-corrected across all claims; with each, the
    effect size and the seeds needed for a paired interval of half-width ``PRECISION`` × the
    quantity's mean. Claims whose architectures were not run are left out."""
    rows, claims = [], []
    for text, quantity, hi, lo in WRITEUP_CLAIMS:
        if not all(a in res["curvature"] for a in (hi, lo)):
            continue
        what, a = _per_unit(res, quantity, hi)
        _, b = _per_unit(res, quantity, lo)
        shared = [u for u in a if u in b]
        if quantity == "barrier":
            diff = _pair_difference({u: a[u] - b[u] for u in shared})
        else:
            diff = paired_difference([a[u] for u in shared], [b[u] for u in shared])
        scale = PRECISION * abs((sum(a.values()) / len(a) + sum(b.values()) / len(b)) / 2)
        needed = seeds_needed(diff.sd, scale) if diff.sd and scale > 0 else None
        claims.append(Claim(f"{label(hi)} > {label(lo)} by {what}", diff, ">"))
        rows.append({"claim": text, "ordering": f"{label(hi)} > {label(lo)}", "measured by": what, "difference": diff,
                     "seeds needed": needed})
    return rows, list(judge_claims(claims, alpha=alpha)) if claims else []


def conclusions(res: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> str:
    """The conclusion table: every ordering the write-up claimed, judged by a paired comparison
    with a Holm correction across the table, with effect sizes and the seeds each claim would need."""
    rows, verdicts = paired_claims(res, alpha)
    if not rows:
        return "The write-up's claims compare the MLP, CNN and residual CNN; not all of them were run."
    table = markdown_table(
        ["write-up's claim", "ordering", "measured by", "difference, mean [95% paired interval]", "effect size d_z",
         f"p (Holm over {len(rows)} claims)", "verdict", f"seeds for ±{100 * PRECISION:.0f}% precision"],
        [[r["claim"], r["ordering"], r["measured by"], r["difference"].interval.format(),
          "—" if r["difference"].effect_size is None else f"{r['difference'].effect_size:.2f}",
          "—" if v.p_adjusted is None else f"{v.p_adjusted:.3g}", v.verdict,
          "—" if r["seeds needed"] is None else f"{r['seeds needed']:,}"]
         for r, v in zip(rows, verdicts)])
    n = sorted({r["difference"].n for r in rows})
    tests = sorted({r["difference"].test for r in rows})
    return (table + "\n\nEach row compares the two architectures on the seeds they share (seed s gives both the same "
            f"data order): the interval is on the per-seed differences ({', '.join(map(str, n))} seeds; barriers: "
            "per seed pair, with a jackknife over seeds because pairs share runs). A claim is *supported* (or "
            f"*contradicted*) only where its Holm-adjusted p-value is at most {alpha:g} across the {len(rows)} claims "
            "and the interval lies on that side of zero; otherwise it is *not resolved*. Tests: "
            + "; ".join(tests) + (f". {SMALL_N_NOTE}" if min(n) < 6 else "") + ". *Seeds needed*: how many seeds "
            f"would bring the paired interval's half-width below {100 * PRECISION:.0f}% of the quantity's mean, "
            "from the observed spread of the differences (precision, not post-hoc power).")
