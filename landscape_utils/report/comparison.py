"""Cross-architecture comparison: the report's analysis, computed from the typed section summaries.

Every sentence that states a result is built here from intervals over seeds: an ordering is
stated only where the intervals separate, otherwise the text says the difference is not
resolved. Nothing is hard-coded but the original write-up's own reported values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..study.registry import ARCHITECTURES, label
from ..study.stats import (SMALL_N_NOTE, Claim, ClaimVerdict, Interval, PairedDifference, compare_to_reported,
                           judge_claims, ordering_statement, paired_difference, relation_to_value,
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
            ("slice asymmetry (in [−1, 1])", sl.asymmetry["raw"]),
            ("barriers, over disjoint pairs of runs (≥ 0)", cn.barriers[next(iter(cn.barriers))]["loss_train"])]
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
    """Straight-line loss-barrier intervals between independent runs per architecture, whether each
    is above zero, and the ordering."""
    ivs = {a: s.barrier("independent", "straight", f"loss_{split}") for a, s in connectivity.items()
           if "independent/straight" in s.barriers}
    if not ivs:
        return ivs, "No pair of independent runs was measured (the study has one seed)."
    present = []
    for arch, iv in ivs.items():
        rel = relation_to_value(iv, 0.0)
        present.append(f"{label(arch)} {'shows a barrier' if rel == '>' else 'shows no barrier resolved above zero'}"
                       f" ({iv.format()} nats over {iv.n} pairs)")
    text = "On the straight line between independently trained runs, " + "; ".join(present) + ". "
    text += _ordering(ivs, f"Loss barrier ({split})", "less connected").replace(" seeds)", " pairs)")
    order = [a for a in REPORTED_BARRIER_ORDER if a in ivs]
    if len(order) >= 2:
        text += " " + _claims_sentence(compare_to_reported(ivs, order, labels=_labels()),
                                       "barrier ordering (CNN largest, MLP smallest)")
    return ivs, text


#: Test-error barrier below which two solutions count as connected along a path: the 2% that
#: Frankle et al. (2020) allow for noise when they call a pair linearly connected.
CONNECTED_ERROR_BARRIER = 0.02
#: The three ways the claim "independent minima lie in different basins" is judged.
BASIN_WAYS = (("straight", "on the straight line"), ("aligned", "after weight matching"), ("curve", "along a trained curve"))


def _connected(iv: Interval, threshold: float = CONNECTED_ERROR_BARRIER) -> str:
    """"connected" if the interval lies below the threshold, "barrier" if above, else "not resolved"."""
    rel = relation_to_value(iv, threshold)
    return {"<": "connected", ">": "barrier"}.get(rel, "not resolved")


def _pairs_needed(iv: Interval, threshold: float) -> int | None:
    """Pairs for a t-interval on the mean to clear the threshold, from the observed spread."""
    sd = float(np.std(iv.values, ddof=1)) if len(iv.values) > 1 else 0.0
    gap = abs(iv.mean - threshold)
    return seeds_needed(sd, gap) if sd > 0 and gap > 0 else None


def basin_rows(connectivity: Mapping[str, Any], quantity: str = "error_test") -> list[dict[str, Any]]:
    """Per architecture and way (straight, aligned, curve) for independent pairs, plus the
    same-initialisation control: the barrier interval, its verdict against
    :data:`CONNECTED_ERROR_BARRIER` and, where unresolved, the pairs that would resolve it."""
    rows = []
    for arch, s in connectivity.items():
        ways = [("independent", path, what) for path, what in BASIN_WAYS]
        ways.append(("same-init", "straight", "same initialisation, straight line (positive control)"))
        for kind, path, what in ways:
            key = f"{kind}/{path}"
            if key not in s.barriers:
                rows.append({"arch": arch, "kind": kind, "path": path, "way": what, "interval": None,
                             "verdict": "not available", "loss": None, "pairs needed": None})
                continue
            iv = s.barriers[key][quantity]
            verdict = _connected(iv)
            rows.append({"arch": arch, "kind": kind, "path": path, "way": what, "interval": iv, "verdict": verdict,
                         "loss": s.barriers[key]["loss_test"],
                         "pairs needed": _pairs_needed(iv, CONNECTED_ERROR_BARRIER) if verdict == "not resolved" else None})
    return rows


def basin_verdict(rows: Sequence[Mapping[str, Any]], arch: str) -> str:
    """The claim "independent minima lie in different basins" for one architecture: contradicted if
    weight matching or a curve connects them, supported if every way resolves a barrier, else not resolved."""
    v = {r["path"]: r["verdict"] for r in rows if r["arch"] == arch and r["kind"] == "independent"}
    if v.get("aligned") == "connected" or v.get("curve") == "connected":
        return "contradicted"
    if all(v.get(p) == "barrier" for p, _ in BASIN_WAYS):
        return "holds"
    return "not resolved"


def basin_conclusion(connectivity: Mapping[str, Any]) -> str:
    """The conclusion table for the write-up's "different basins", judged three ways, with the
    same-initialisation control beside it, and one sentence per architecture."""
    rows = basin_rows(connectivity)
    if not rows:
        return "No connectivity results."
    table = markdown_table(
        ["model", "pairs", "path", "test error barrier, mean [95% interval]", "test loss barrier (nats)", "verdict",
         "pairs to resolve"],
        [[label(r["arch"]), r["kind"], r["way"], "—" if r["interval"] is None else
          f"{100 * r['interval'].mean:.2f}% [{100 * r['interval'].low:.2f}, {100 * r['interval'].high:.2f}] (n = {r['interval'].n})",
          "—" if r["loss"] is None else r["loss"].format(), r["verdict"],
          "—" if r["pairs needed"] is None else f"{r['pairs needed']:,}"] for r in rows])
    sentences = []
    for arch in connectivity:
        verdict = basin_verdict(rows, arch)
        control = next(r["verdict"] for r in rows if r["arch"] == arch and r["kind"] == "same-init")
        ways = "; ".join(f"{r['way']}: {r['verdict']}" for r in rows if r["arch"] == arch and r["kind"] == "independent")
        sentences.append(f"**{label(arch)}**: the write-up's \"different basins\" {VERDICT_TEXT.get(verdict, verdict)} "
                         f"({ways}); the same-initialisation control is {control}.")
    return (table + f"\n\nA pair counts as *connected* along a path when the 95% interval of its test-error barrier "
            f"lies below {100 * CONNECTED_ERROR_BARRIER:g}% (the noise allowance of Frankle et al. 2020), and as separated by a "
            "*barrier* when it lies above; otherwise *not resolved* (with the number of pairs a t-interval would need "
            "at the observed spread). The claim holds only if every way shows a barrier, and is contradicted if "
            "weight matching or a trained curve connects the runs. Pairs of one kind share no run, so they are "
            "independent samples.\n\n" + " ".join(sentences))


def alignment_effects(connectivity: Mapping[str, Any], quantity: str = "loss_test") -> dict[str, dict[str, PairedDifference]]:
    """Per architecture, paired differences over the independent pairs: straight − aligned and
    straight − curve (positive: the other path is lower). Missing paths are left out."""
    out: dict[str, dict[str, PairedDifference]] = {}
    for arch, s in connectivity.items():
        base = s.pair_values.get("independent/straight", {}).get(quantity)
        if not base:
            continue
        out[arch] = {}
        for path in ("aligned", "curve", "aligned curve"):
            other = s.pair_values.get(f"independent/{path}", {}).get(quantity)
            if other:
                pairs = [p for p in base if p in other]
                out[arch][path] = paired_difference([base[p] for p in pairs], [other[p] for p in pairs])
    return out


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
    return ("loss barrier (train), straight line, per pair of independent runs",
            dict(s.pair_values.get("independent/straight", {}).get("loss_train", {})))


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
        if not shared:  # e.g. no pair of independent runs with one seed
            continue
        # Pairs of independent runs are disjoint, so they are paired across architectures like seeds.
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
            "per pair of independent runs, disjoint pairs s0–s1, s2–s3, …, the same for every architecture). A claim is *supported* (or "
            f"*contradicted*) only where its Holm-adjusted p-value is at most {alpha:g} across the {len(rows)} claims "
            "and the interval lies on that side of zero; otherwise it is *not resolved*. Tests: "
            + "; ".join(tests) + (f". {SMALL_N_NOTE}" if min(n) < 6 else "") + ". *Seeds needed*: how many seeds "
            f"would bring the paired interval's half-width below {100 * PRECISION:.0f}% of the quantity's mean, "
            "from the observed spread of the differences (precision, not post-hoc power).")


# --------------------------------------------------------------------------- connectivity section

PATH_LABELS = {"straight": "straight line", "aligned": "straight line after weight matching",
               "curve": "trained Bézier curve", "aligned curve": "Bézier curve after weight matching"}
KIND_LABELS = {"independent": "independent runs", "same-init": "same initialisation, different data order",
               "same-data": "same data order, different initialisation"}


def barrier_table(summary: Any) -> str:
    """One row per pair kind and path: loss and error barriers, train and test, each the mean over
    the pairs with its 95% interval and n."""
    rows = []
    for kind in summary.kinds:
        for path in summary.paths[kind]:
            b = summary.barriers[f"{kind}/{path}"]
            rows.append([KIND_LABELS.get(kind, kind), PATH_LABELS.get(path, path), b["loss_train"].n,
                         b["loss_train"].format(), b["loss_test"].format(),
                         _percent(b["error_train"]), _percent(b["error_test"])])
    return markdown_table(["pairs", "path", "n pairs", "loss barrier, train (nats)", "loss barrier, test (nats)",
                           "error barrier, train", "error barrier, test"], rows)


def _percent(iv: Interval) -> str:
    if iv.single_run:
        return f"{100 * iv.mean:.2f}% (one pair)"
    return f"{100 * iv.mean:.2f}% [{100 * iv.low:.2f}, {100 * iv.high:.2f}]"


def path_curves(summary: Any, quantity: str = "losses", split: str = "test") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(α or t, {"<kind>: <path>": (pairs, points) array}) for plotting every path of every kind."""
    curves: dict[str, np.ndarray] = {}
    alphas = None
    for kind in summary.kinds:
        runs = [r for r in summary.runs if r["kind"] == kind]
        for path in summary.paths[kind]:
            alphas = np.asarray(runs[0]["paths"][path][split]["alphas"])
            curves[f"{KIND_LABELS.get(kind, kind)}: {PATH_LABELS.get(path, path)}"] = np.array(
                [r["paths"][path][split][quantity] for r in runs], dtype=float)
    return alphas, curves


def alignment_text(summary: Any) -> str:
    """What weight matching did for this architecture's pairs (or that it is not available)."""
    if summary.alignment == "not available":
        return ("Permutation alignment is **not available** for this architecture: its registry entry has no "
                "permutation specification.")
    runs = [r for r in summary.runs if r.get("alignment")]
    gain = [r["alignment"]["objective"] / r["alignment"]["identity_objective"] for r in runs
            if r["alignment"]["identity_objective"] > 0]
    moved: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for g, f in r["alignment"]["units_moved"].items():
            moved.setdefault(r["kind"], {}).setdefault(g, []).append(f)
    moved_text = "; ".join(f"{KIND_LABELS.get(k, k)}: " + ", ".join(f"{g} {100 * np.mean(v):.0f}%" for g, v in gs.items())
                           for k, gs in moved.items())
    sweeps = [r["alignment"]["sweeps"] for r in runs]
    return (f"Weight matching (Ainsworth et al. 2023) raised the matching objective ⟨θA, π(θB)⟩ to "
            f"{min(gain):.3g}–{max(gain):.3g}× its value without permutation, in {min(sweeps)}–{max(sweeps)} sweeps over "
            f"the groups; share of units moved, mean over pairs: {moved_text}. Permuting B changed its logits on the "
            f"test probe images by at most {summary.max_logit_change:.2g} (float32 round-off: the permuted network "
            "computes the same function).")


def barrier_groups(connectivity: Mapping[str, Any], quantity: str = "error_test") -> dict[str, dict[str, Interval]]:
    """{"<kind>\\n<path>": {arch: interval}} for every kind and path measured, in the report's order."""
    groups: dict[str, dict[str, Interval]] = {}
    short = {"independent": "independent", "same-init": "same init", "same-data": "same data"}
    for kind in ("independent", "same-init", "same-data"):
        for path in ("straight", "aligned", "curve", "aligned curve"):
            found = {a: s.barriers[f"{kind}/{path}"][quantity] for a, s in connectivity.items()
                     if f"{kind}/{path}" in s.barriers}
            if found:
                groups[f"{short[kind]}\n{path}"] = found
    return groups
