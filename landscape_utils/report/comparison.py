"""Cross-architecture comparison: the report's analysis, computed from the typed section summaries.

Every sentence that states a result is built here from intervals over seeds: an ordering is
stated only where the intervals separate, otherwise the text says the difference is not
resolved. Nothing is hard-coded but the original write-up's own reported values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..study.registry import ARCHITECTURES, label
from ..study.stats import Interval, compare_to_reported, ordering_statement, relation_to_value
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
    """Mean loss change at one noise scale (``index`` into the σ list) per architecture."""
    ivs = flatness_intervals(flatness, kind, index)
    sigma = next(iter(flatness.values())).sigmas[kind][index]
    text = _ordering(ivs, f"mean loss change under {kind} noise at σ = {sigma:g}", "sharper")
    order = [a for a in REPORTED_FLATNESS_ORDER if a in ivs]
    if len(order) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=_labels()),
                                       "flatness ordering (CNN sharpest, MLP middle, residual CNN flattest)")
    return ivs, text


def trace_agreement(flatness: Mapping[str, Any]) -> str:
    """How the isotropic-noise mean compares with ½σ²·tr(H), per architecture (smallest σ)."""
    parts = []
    for arch, s in flatness.items():
        measured, predicted = s.mean_change["isotropic"][0], s.predicted_change[0]
        ratio = measured.mean / predicted.mean if predicted.mean else float("nan")
        parts.append(f"{label(arch)}: measured {measured.format()} against predicted {predicted.format()} "
                     f"(ratio {ratio:.2f})")
    sigma = next(iter(flatness.values())).sigmas["isotropic"][0]
    return f"At the smallest isotropic σ ({sigma:g}), " + "; ".join(parts) + "."


def slices_analysis(slices: Mapping[str, Any]) -> tuple[dict[str, Interval], dict[str, Interval], str]:
    """Filter-normalised slice curvature and raw-slice asymmetry per architecture."""
    curv = {a: s.curvature["filter-normalised"] for a, s in slices.items()}
    asym = {a: s.asymmetry["raw"] for a, s in slices.items()}
    text = _ordering(curv, "fitted curvature d²L/dα² of filter-normalised slices", "sharper")
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


def _claim(ivs: Mapping[str, Interval], higher: str, lower: str) -> str:
    if higher not in ivs or lower not in ivs:
        return "not tested (architecture not run)"
    a, b = ivs[higher], ivs[lower]
    if a.separated_above(b):
        return "supported"
    if b.separated_above(a):
        return "contradicted"
    return "not resolved by the intervals"


def conclusions(curvature: Mapping[str, Any], flatness: Mapping[str, Any], flat_kind: str = "filter",
                flat_index: int = -1) -> str:
    """The write-up's two conclusions, each judged on curvature and on scale-aware flatness."""
    lam = {a: s.lambda_max for a, s in curvature.items()}
    flat = flatness_intervals(flatness, flat_kind, flat_index)
    sigma = next(iter(flatness.values())).sigmas[flat_kind][flat_index]
    n = min(iv.n for iv in lam.values())
    rows = [
        ["skip connections lower curvature (CNN > residual CNN)", _claim(lam, "cnn", "rescnn"),
         _claim(flat, "cnn", "rescnn")],
        ["the CNN finds sharper minima than the MLP", _claim(lam, "cnn", "mlp"), _claim(flat, "cnn", "mlp")],
        ["the residual CNN finds sharper minima than the MLP", _claim(lam, "rescnn", "mlp"),
         _claim(flat, "rescnn", "mlp")],
    ]
    table = markdown_table(["write-up's conclusion", "by λmax", f"by {flat_kind}-scaled flatness (σ = {sigma:g})"], rows)
    return (table + f"\n\nEach verdict compares 95% t-intervals over {n} seeds: *supported* or *contradicted* only "
            "when the intervals separate.")
