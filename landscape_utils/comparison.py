"""Cross-architecture comparison: the report's analysis, computed from the results files.

Every sentence that states a result is built here from intervals over seeds: an ordering is
stated only where the intervals separate, otherwise the text says the difference is not
resolved. Nothing is hard-coded but the original write-up's own reported values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .models import LABELS
from .stats import Interval, compare_to_reported, mean_interval, ordering_statement, relation_to_value

from .tables import markdown_table

# What the original write-up reported (single runs, no error bars).
REPORTED_LAMBDA_MAX = {"cnn": 33.0, "rescnn": 17.0, "mlp": 4.0}
REPORTED_FLATNESS_ORDER = ("cnn", "mlp", "rescnn")       # sharpest first
REPORTED_BARRIER_ORDER = ("cnn", "rescnn", "mlp")        # largest barrier first
REPORTED_SLICE_SHAPES = {"mlp": "near-linear", "cnn": "rising, asymmetric", "rescnn": "parabola-like"}
VERDICT_TEXT = {"holds": "holds", "contradicted": "is contradicted", "unresolved": "is not resolved"}

Results = Mapping[str, Mapping[str, Any]]  # arch -> results file


def interval_of(d: Mapping[str, Any]) -> Interval:
    """An :class:`Interval` from the values stored by ``experiments.interval_dict``."""
    return mean_interval(d["values"])


def intervals(results: Results, getter) -> dict[str, Interval]:
    """arch -> Interval of ``getter(results[arch])`` (an interval dict)."""
    return {arch: interval_of(getter(r)) for arch, r in results.items()}


def _ordering(ivs: Mapping[str, Interval], quantity: str, higher_is: str, fmt: str = "{:.3g}") -> str:
    # ordering_statement needs two names; with one architecture, state its value alone.
    if len(ivs) < 2:
        return "; ".join(f"{quantity}: {LABELS[a]} {iv.format(fmt)} (one architecture, nothing to order)."
                         for a, iv in ivs.items())
    return ordering_statement(ivs, quantity, higher_is=higher_is, fmt=fmt, labels=LABELS)


def _claims_sentence(comparison, what: str) -> str:
    parts = [f"{LABELS[c.higher]} > {LABELS[c.lower]} {VERDICT_TEXT[c.verdict]}" for c in comparison.claims]
    return f"Against our intervals, the write-up's {what}: " + "; ".join(parts) + "."


def accuracy_statement(results: Results) -> str:
    """Ordering of test accuracy across architectures (where the intervals resolve it)."""
    return _ordering(intervals(results, lambda r: r["training"]["test_acc"]), "test accuracy",
                     "more accurate", fmt="{:.4f}")


def models_table(results: Results) -> str:
    from .models import PARAM_COUNTS

    return markdown_table(["model", "parameters", "test accuracy after training, mean [95% interval]"],
                          [[LABELS[a], f"{PARAM_COUNTS[a]:,}", interval_of(r["training"]["test_acc"]).format("{:.4f}")]
                           for a, r in results.items()])


def curvature_analysis(results: Results) -> tuple[dict[str, Interval], str, str]:
    """λmax intervals, a table beside the write-up's values, and the analysis text."""
    ivs = intervals(results, lambda r: r["curvature"]["lambda_max"])
    reported = {a: v for a, v in REPORTED_LAMBDA_MAX.items() if a in ivs}
    rows = [[LABELS[a], f"{REPORTED_LAMBDA_MAX.get(a, float('nan')):.0f}", iv.format("{:.3g}"),
             interval_of(results[a]["curvature"]["trace"]).format("{:.3g}"),
             interval_of(results[a]["curvature"]["lambda_min"]).format("{:.3g}")] for a, iv in ivs.items()]
    table = markdown_table(["model", "λmax, write-up (one run)", "λmax, this study", "tr(H), this study",
                            "λmin, this study"], rows)
    text = _ordering(ivs, "λmax", "sharper")
    if len(reported) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, reported, labels=LABELS), "ordering of λmax")
    return ivs, table, text


def flatness_analysis(results: Results, kind: str, index: int) -> tuple[dict[str, Interval], str]:
    """Mean loss change at one noise scale (``index`` into the σ list) per architecture."""
    ivs = intervals(results, lambda r: r["flatness"]["mean_change"][kind][index])
    sigma = next(iter(results.values()))["flatness"]["runs"][0][kind]["sigmas"][index]
    text = _ordering(ivs, f"mean loss change under {kind} noise at σ = {sigma:g}", "sharper")
    order = [a for a in REPORTED_FLATNESS_ORDER if a in ivs]
    if len(order) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=LABELS),
                                       "flatness ordering (CNN sharpest, MLP middle, residual CNN flattest)")
    return ivs, text


def trace_agreement(results: Results) -> str:
    """How the isotropic-noise mean compares with ½σ²·tr(H), per architecture (smallest σ)."""
    parts = []
    for arch, r in results.items():
        measured = interval_of(r["flatness"]["mean_change"]["isotropic"][0])
        predicted = interval_of(r["flatness"]["predicted_change"][0])
        ratio = measured.mean / predicted.mean if predicted.mean else float("nan")
        parts.append(f"{LABELS[arch]}: measured {measured.format()} against predicted {predicted.format()} "
                     f"(ratio {ratio:.2f})")
    return "At the smallest isotropic σ, " + "; ".join(parts) + "."


def slices_analysis(results: Results) -> tuple[dict[str, Interval], dict[str, Interval], str]:
    """Filter-normalised slice curvature and raw-slice asymmetry per architecture."""
    curv = intervals(results, lambda r: r["slices"]["curvature"]["filter-normalised"])
    asym = intervals(results, lambda r: r["slices"]["asymmetry"]["raw"])
    text = _ordering(curv, "fitted curvature d²L/dα² of filter-normalised slices", "sharper")
    shapes = []
    for arch, iv in asym.items():
        rel = relation_to_value(iv, 0.0)
        shape = ("symmetric within the interval (parabola-like)" if rel == "≈" else
                 f"asymmetric, rising towards {'+' if rel == '>' else '−'}α")
        shapes.append(f"{LABELS[arch]} raw slices are {shape}, asymmetry {iv.format('{:.2f}')} "
                      f"(write-up: {REPORTED_SLICE_SHAPES.get(arch, 'not reported')})")
    return curv, asym, text + " " + "; ".join(shapes) + "."


def connectivity_analysis(results: Results, split: str = "train") -> tuple[dict[str, Interval], str]:
    """Loss-barrier intervals per architecture, whether each is above zero, and the ordering."""
    ivs = intervals(results, lambda r: r["connectivity"][f"loss_barrier_{split}"])
    present = []
    for arch, iv in ivs.items():
        rel = relation_to_value(iv, 0.0)
        present.append(f"{LABELS[arch]} {'shows a barrier' if rel == '>' else 'shows no barrier resolved above zero'}"
                       f" ({iv.format()} nats)")
    text = "Between independently trained runs, " + "; ".join(present) + ". "
    text += _ordering(ivs, f"loss barrier ({split})", "less connected")
    order = [a for a in REPORTED_BARRIER_ORDER if a in ivs]
    if len(order) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=LABELS),
                                       "barrier ordering (CNN largest, MLP smallest)")
    return ivs, text


def _claim(ivs: Mapping[str, Interval], higher: str, lower: str) -> str:
    if higher not in ivs or lower not in ivs:
        return "not tested (architecture not run)"
    a, b = ivs[higher], ivs[lower]
    if a.separated_above(b):
        return "supported"
    if b.separated_above(a):
        return "contradicted"
    return "not resolved by the intervals"


def conclusions(results: Results, flat_kind: str = "filter", flat_index: int = -1) -> str:
    """The write-up's two conclusions, each judged on curvature and on scale-aware flatness."""
    lam = intervals(results, lambda r: r["curvature"]["lambda_max"])
    flat = intervals(results, lambda r: r["flatness"]["mean_change"][flat_kind][flat_index])
    n = min(iv.n for iv in lam.values())
    rows = [
        ["skip connections lower curvature (CNN > residual CNN)", _claim(lam, "cnn", "rescnn"),
         _claim(flat, "cnn", "rescnn")],
        ["the CNN finds sharper minima than the MLP", _claim(lam, "cnn", "mlp"), _claim(flat, "cnn", "mlp")],
        ["the residual CNN finds sharper minima than the MLP", _claim(lam, "rescnn", "mlp"),
         _claim(flat, "rescnn", "mlp")],
    ]
    table = markdown_table(["write-up's conclusion", "by λmax", f"by {flat_kind}-scaled flatness"], rows)
    return (table + f"\n\nEach verdict compares 95% t-intervals over {n} seeds: *supported* or *contradicted* only "
            "when the intervals separate.")


def per_arch_values(results: Results, getter) -> dict[str, Sequence[float]]:
    """arch -> per-run values stored in an interval dict (for plotting)."""
    return {arch: getter(r)["values"] for arch, r in results.items()}
