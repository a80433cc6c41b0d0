"""Figures, tables and sentences of the optimisation-dynamics section and of the protocol study.

Plot functions take the summary's plain lists (never models). Every sentence is computed from
intervals: a claim is made only where the interval resolves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..study.recipes import RECIPES
from ..study.registry import colour, label
from ..study.stats import Interval, mean_interval
from .plots import log_axis, seed_band
from .tables import fmt, markdown_table

RECIPE_COLOURS = {"study": "#4C72B0", "sgd-m0.5": "#DD8452", "sgd": "#55A868", "adam": "#C44E52", "adadelta": "#8172B3"}
SAMPLE_LABELS = {"batch": "one training batch", "probe": "probe set", "large": "large sample"}
METHOD_LABELS = {"power": "power iteration (random start)", "lanczos": "Lanczos"}
MEASURE_LABELS = {"lambda_max": "λmax", "trace": "tr(H)", "filter_flatness": "filter-normalised flatness E[ΔL]",
                  "adaptive_sharpness": "adaptive sharpness (worst case, ℓ2)"}
GAP_LABELS = {"gap_loss": "test − train loss", "gap_error": "test − train error"}


def _x(steps: Sequence[int]) -> np.ndarray:
    # Step 0 on a log axis: plotted at 0.5 (labelled in the caption).
    return np.maximum(np.asarray(steps, dtype=float), 0.5)


def _rows(values: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


# The trajectory figure's axes are logarithmic: its bands are intervals of the geometric mean (a
# t-interval on log values), which stay positive where an arithmetic band over 3 runs reached 0.
LOG_BAND_NOTE = "band: 95% t-interval of the geometric mean over runs"


def _band(ax, x, values: np.ndarray, color: str, name: str, ls: str = "-") -> tuple[int, float]:
    """Geometric mean over runs (rows) with its band; a point where any run lacks a value, or is
    not positive, is left out. Returns the number of runs drawn and the largest mean."""
    if values.size == 0:
        return 0, 0.0
    with np.errstate(invalid="ignore"):
        values = values[:, ~(np.isnan(values) | (values <= 0)).any(axis=0)]
    if values.shape[1] == 0:
        return 0, 0.0
    if values.shape[0] >= 2:
        mean, low, high = np.exp(seed_band(np.log(values)))
        ax.fill_between(x[: values.shape[1]], low, high, color=color, alpha=0.2, lw=0)
    else:
        mean = values[0]
    ax.plot(x[: values.shape[1]], mean, color=color, ls=ls, lw=2, label=name)
    return values.shape[0], float(np.max(mean))


def plot_trajectories(trajectories: Mapping[str, Mapping[str, Any]], arch: str) -> Figure:
    """Per recipe: λmax (probe set), the mini-batch λmax and (Adam) λmax(P⁻¹H) against the optimiser's
    stability threshold along training (top), and the train loss and tr(H) (bottom); log axes
    except tr(H)'s. Each panel's title names its threshold and the runs averaged; one legend."""
    recipes = [r for r, t in trajectories.items() if "steps" in t]
    fig, axes = plt.subplots(2, len(recipes), figsize=(3.6 * len(recipes), 7.0), squeeze=False, sharex="col")
    legend: dict[str, Any] = {}
    for j, recipe in enumerate(recipes):
        t = trajectories[recipe]
        x = _x(t["steps"])
        ax = axes[0, j]
        n, top = _band(ax, x, _rows(t["lambda_max"]), "#4C72B0", "λmax, probe set")
        n_batch, top_batch = _band(ax, x, _rows(t["minibatch_mean"]), "#DD8452",
                                   "λmax of one training batch (mean over batches)", ls="--")
        top = max(top, top_batch)
        name = "no threshold derived"
        if t.get("threshold") and t["threshold"][-1] is not None:
            thr = np.array([np.nan if v is None else v for v in t["threshold"]], dtype=float)
            top = max(top, float(np.nanmax(thr)))
            name = ("threshold (2+2β₁)/((1−β₁)η)" if RECIPES[recipe].optimizer == "adam" else
                    "threshold 2/η" if RECIPES[recipe].momentum == 0 else "threshold (2+2β)/η")
            ax.plot(x, thr, color="black", ls=":", lw=1.5, label="the optimiser's stability threshold")
        if "preconditioned" in t:
            top = max(top, _band(ax, x, _rows(t["preconditioned"]), "#C44E52",
                                 "λmax(P⁻¹H), Adam's preconditioned sharpness")[1])
        log_axis(ax, "x")
        log_axis(ax, "y")
        # A band over 3 runs can span decades (Adam's first steps, where some coordinates have seen
        # almost no gradient): the axis stops at 10x the largest line, and the band is cut there.
        if top > 0 and ax.get_ylim()[1] > 10 * top:
            ax.set_ylim(top=10 * top)
        runs = f"{n} run{'s' if n != 1 else ''}" + (f" ({n_batch} with batch λmax)" if n_batch and n_batch != n else "")
        ax.set_title(f"{t['label']}\n{name}; {runs}", fontsize=9)
        if j == 0:
            ax.set_ylabel("eigenvalue")
        bx = axes[1, j]
        _band(bx, x, _rows(t["train_loss"]), "#55A868", "train loss (probe set, left axis)")
        log_axis(bx, "x")
        log_axis(bx, "y")
        bx.set_xlabel("optimiser step (step 0 drawn at 0.5)")
        tx = bx.twinx()
        _band(tx, x, _rows(t["trace"]), "#8172B3", "tr(H) (right axis)", ls="--")
        tx.grid(False)
        tx.set_ylabel("tr(H)", color="#8172B3")
        if j == 0:
            bx.set_ylabel("cross-entropy")
        for a in (ax, bx, tx):
            for handle, text in zip(*a.get_legend_handles_labels()):
                legend.setdefault(text, handle)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{label(arch)}: sharpness along training against the stability threshold (lines: geometric mean "
                 f"over runs; {LOG_BAND_NOTE})", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def trajectory_table(trajectories: Mapping[str, Mapping[str, Any]]) -> str:
    """Per recipe at the end of training: λmax, the mini-batch λmax, the threshold, their ratios."""
    rows = []
    for recipe, t in trajectories.items():
        if "steps" not in t:
            rows.append([t["label"], "diverged on every seed", "", "", "", ""])
            continue
        top = mean_interval(_rows(t["lambda_max"])[:, -1], bounds=(0.0, None))
        mini = mean_interval(_rows(t["minibatch_mean"])[:, -1], bounds=(0.0, None)) if t["minibatch_mean"] else None
        thr = t["threshold"][-1]
        pre = mean_interval(_rows(t["preconditioned"])[:, -1], bounds=(0.0, None)) if "preconditioned" in t else None
        ratio = (f"{(mini or top).mean / thr:.2g} ({'batch' if mini else 'probe'}), {top.mean / thr:.2g} (probe)" if thr and pre is None else
                 f"{pre.mean / thr:.2g} (λmax(P⁻¹H))" if thr and pre is not None else "no threshold derived")
        rows.append([t["label"], top.format("{:.3g}"), mini.format("{:.3g}") if mini else "—", pre.format("{:.3g}") if pre else "—",
                     fmt(thr, ".4g"), ratio])
    return markdown_table(["optimiser", "λmax, probe set", "λmax, one batch (mean of batches)", "λmax(P⁻¹H)",
                           "stability threshold", "sharpness / threshold"], rows)


def warm_start_text(warm: Mapping[str, Any]) -> str:
    """HVPs per snapshot, warm against cold, and their agreement."""
    if not warm["warm"]:
        return "No warm-started snapshots."
    text = (f"Warm-started Lanczos needed **{np.mean(warm['warm']):.1f}** HVPs per snapshot on average "
            f"(median {np.median(warm['warm']):.0f}, over {len(warm['warm'])} snapshots of every run)")
    if warm["cold_paired"]:
        text += (f"; on the study's first seed, where every snapshot was also computed from a random start, "
                 f"{np.mean(warm['warm_paired']):.1f} warm against {np.mean(warm['cold_paired']):.1f} cold "
                 f"({np.mean(warm['cold_paired']) / max(np.mean(warm['warm_paired']), 1e-9):.1f}× fewer), and the two "
                 f"eigenvalues differ by at most {warm['max_rel_diff']:.1e} relative (tolerance {warm['tol']:g})")
    return text + "."


def plot_eos(eos: Sequence[Mapping[str, Any]], arch: str) -> Figure:
    """λmax against 2/η (left) and the full-batch loss (right) along gradient descent, per step size."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for i, row in enumerate(eos):
        c = cmap(i / max(1, len(eos) - 1) * 0.85)
        ax.plot(row["steps"], row["sharpness"], color=c, lw=1.8, label=f"η = {row['lr']:.3g} (2/η = {row['multiple']:g} λ0)")
        ax.axhline(row["threshold"], color=c, ls=":", lw=1.2)
        loss = np.array([np.nan if v is None else v for v in row["loss"]], dtype=float)
        bx.plot(np.arange(len(loss)), loss, color=c, lw=1.2, label=f"η = {row['lr']:.3g}"
                + (f" (diverged at step {row['diverged_at']})" if row["diverged"] else ""))
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("λmax of the training loss")
    ax.set_title("sharpness; dotted: 2/η for each step size", fontsize=10)
    ax.legend(fontsize=8)
    bx.set_xlabel("gradient-descent step")
    bx.set_ylabel("squared loss (full batch)")
    log_axis(bx, "y")
    bx.set_title("training loss", fontsize=10)
    bx.legend(fontsize=8)
    size = eos[0]["size"] if eos else 0
    fig.suptitle(f"{label(arch)}: full-batch gradient descent on {size:,} images, squared loss (one run per step size)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def eos_table(eos: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"{r['multiple']:g}", f"{r['lr']:.4g}", f"{r['threshold']:.4g}", fmt(r["sharpness"][0], ".3g"), fmt(max(r["sharpness"]), ".3g"),
             "never" if r["first_reach_step"] is None else r["first_reach_step"],
             fmt(r["plateau_ratio"], ".3f"), fmt(r["loss_increases"], "d") if r["loss_increases"] is not None else "—",
             f"diverged at step {r['diverged_at']}" if r["diverged"] else "no"] for r in eos]
    return markdown_table(["2/η in units of λ0", "η", "2/η", "λmax at step 0 (λ0)", "largest λmax", "first step at 90% of 2/η (after a rise)",
                           "plateau λmax / (2/η), median", "loss increases after", "diverged"], rows)


def eos_text(eos: Sequence[Mapping[str, Any]], arch: str) -> str:
    reached = [r for r in eos if r["plateau_ratio"] is not None]
    if not eos:
        return ""
    if not reached:
        return (f"On the {label(arch)}, λmax did not rise to 90% of 2/η within {eos[0]['n_steps']:,} steps at any step "
                f"size: no edge of stability is seen at these settings.")
    parts = [f"η = {r['lr']:.3g}: {r['plateau_ratio']:.2f}" for r in reached]
    return (f"On the {label(arch)}, λmax rose to 2/η and stayed there at {len(reached)} of {len(eos)} step sizes; the "
            f"median ratio λmax/(2/η) after it first got there: " + "; ".join(parts) + ".")


def plot_sizes(sizes: Sequence[Mapping[str, Any]], probe: float | None, arch: str, probe_size: int) -> Figure:
    """λmax against the size of the Hessian's sample: every sample, their mean, the probe set."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["size"] for r in sizes]
    for r in sizes:
        ax.scatter([r["size"]] * len(r["values"]), r["values"], color=colour(arch), alpha=0.6, s=18)
    ax.plot(xs, [np.mean(r["values"]) for r in sizes], color=colour(arch), lw=2, label="mean of the samples")
    if probe is not None:
        ax.scatter([probe_size], [probe], marker="*", s=120, color="black", label="the fixed probe set", zorder=3)
    log_axis(ax, "x")
    ax.set_xlabel("examples in the Hessian's sample")
    ax.set_ylabel("λmax")
    ax.set_title(f"{label(arch)}: λmax against sample size (one trained model; dots: independent samples)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sizes_table(sizes: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"{r['size']:,}", len(r["values"]), fmt(float(np.mean(r["values"])), ".3g"),
             f"{min(r['values']):.3g} – {max(r['values']):.3g}",
             fmt(float(np.std(r["values"], ddof=1)), ".2g") if len(r["values"]) > 1 else "—",
             fmt(float(np.mean(r["n_hvp"])), ".0f")] for r in sizes]
    return markdown_table(["examples", "samples", "mean λmax", "range", "s.d.", "HVPs (warm)"], rows)


def protocol_table(protocol: Mapping[str, Mapping[str, Mapping[str, Interval]]], sizes: Mapping[str, int],
                   single: Mapping[str, Sequence[float]]) -> str:
    """One row per optimiser recipe; a column per Hessian sample × method (mean [95% interval] over seeds)."""
    cols = [(s, m) for s in ("batch", "probe", "large") for m in ("power", "lanczos")]
    head = ["optimiser"] + [f"{SAMPLE_LABELS[s]} ({sizes.get(s, 0):,}), {m}" for s, m in cols] + ["one batch, one seed: range"]
    rows = []
    for recipe, by_sample in protocol.items():
        rows.append([RECIPES[recipe].label] + [by_sample[s][m].format("{:.3g}") for s, m in cols]
                    + [f"{single[recipe][0]:.3g} – {single[recipe][1]:.3g}" if recipe in single else "—"])
    return markdown_table(head, rows)


def plot_sweep(sweep: Sequence[Mapping[str, Any]], arch: str, target: float) -> Figure:
    """Final λmax and filter-normalised flatness against batch size, one line per base learning rate and
    scaling; runs that missed the target are hollow, divergences marked at the top."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    lrs = sorted({r["base_lr"] for r in sweep})
    cmap = plt.get_cmap("plasma")
    for k, key in enumerate(("lambda_max", "filter_flatness")):
        ax = axes[k]
        for i, lr in enumerate(lrs):
            for scaling, ls in (("none", "-"), ("linear", "--")):
                rows = sorted([r for r in sweep if r["base_lr"] == lr and r["scaling"] == scaling], key=lambda r: r["batch_size"])
                if not rows:
                    continue
                c = cmap(0.1 + 0.7 * i / max(1, len(lrs) - 1))
                xs, means, lows, highs = [], [], [], []
                for r in rows:
                    vals = [v for v, ok in zip(r[key], r["reached"]) if ok and v is not None]
                    missed = [v for v, ok, d in zip(r[key], r["reached"], r["diverged"]) if not ok and not d and v is not None]
                    if missed:
                        ax.scatter([r["batch_size"]] * len(missed), missed, facecolors="none", edgecolors=c, s=30)
                    if any(r["diverged"]):
                        ax.scatter([r["batch_size"]], [1.0], transform=ax.get_xaxis_transform(), marker="x", color=c, s=50,
                                   clip_on=False)
                    if vals:
                        iv = mean_interval(np.array(vals), bounds=(0.0, None) if key == "lambda_max" else (None, None))
                        xs.append(r["batch_size"]), means.append(iv.mean), lows.append(iv.low), highs.append(iv.high)
                if xs:
                    ax.errorbar(xs, means, yerr=[np.subtract(means, lows), np.subtract(highs, means)], color=c, ls=ls,
                                marker="o", capsize=3, label=f"lr {lr:g}, {'scaled by batch/64' if scaling == 'linear' else 'unscaled'}")
        log_axis(ax, "x")
        shown = [v for r in sweep for v, d in zip(r[key], r["diverged"]) if not d and v is not None]
        if shown and min(shown) > 0:  # runs that missed the target sit orders of magnitude above the rest
            log_axis(ax, "y")
        ax.set_xlabel("batch size")
        ax.set_ylabel("λmax (probe set)" if key == "lambda_max" else "E[ΔL], filter noise")
        ax.set_title("λmax at the target loss" if key == "lambda_max" else "filter-normalised flatness at the target loss",
                     fontsize=10)
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{label(arch)}: batch size and learning rate at train loss ≤ {target:g} (error bars: 95% t-interval over "
                 f"the seeds that reached it; hollow: missed the target; x: diverged)", fontsize=10)
    fig.tight_layout()
    return fig


def sweep_table(sweep: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in sorted(sweep, key=lambda r: (r["scaling"], r["base_lr"], r["batch_size"])):
        n = len(r["seeds"])
        reached = [v for v, ok in zip(r["lambda_max"], r["reached"]) if ok and v is not None]
        status = (f"diverged ({sum(r['diverged'])}/{n}, at step {', '.join(str(s) for s in r['diverged_at'] if s is not None)})"
                  if any(r["diverged"]) else "")
        missed = sum(1 for ok, d in zip(r["reached"], r["diverged"]) if not ok and not d)
        status = "; ".join(s for s in (status, f"missed target ({missed}/{n})" if missed else "") if s) or "all reached"
        steps = [s for s, ok in zip(r["steps"], r["reached"]) if ok]
        rows.append([r["batch_size"], f"{r['base_lr']:g}", r["scaling"], f"{r['lr']:.3g}", status,
                     f"{np.mean(steps):.0f}" if steps else "—",
                     mean_interval(np.array(reached), bounds=(0.0, None)).format("{:.3g}") if reached else "—"])
    return markdown_table(["batch", "base lr", "scaling", "lr used", "outcome", "steps to target (mean)",
                           "λmax at target"], rows)


def _reached_interval(r: Mapping[str, Any]) -> Interval | None:
    vals = [v for v, ok in zip(r["lambda_max"], r["reached"]) if ok and v is not None]
    return mean_interval(np.array(vals), bounds=(0.0, None)) if len(vals) >= 2 else None


def _judge(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, int]:
    """For each (expected flatter, expected sharper) pair of cells: is the second sharper, flatter,
    not resolved, or not comparable (a side has fewer than two seeds at the target)?"""
    verdicts = {"sharper": 0, "flatter": 0, "unresolved": 0, "not comparable": 0}
    for a, b in pairs:
        ia, ib = _reached_interval(a), _reached_interval(b)
        if ia is None or ib is None:
            verdicts["not comparable"] += 1
        elif ib.separated_above(ia):
            verdicts["sharper"] += 1
        elif ia.separated_above(ib):
            verdicts["flatter"] += 1
        else:
            verdicts["unresolved"] += 1
    return verdicts


def sweep_text(sweep: Sequence[Mapping[str, Any]], arch: str) -> str:
    """The Keskar/Jastrzebski expectations judged by the intervals of λmax at the target loss: at a fixed
    base learning rate and scaling, is the largest batch sharper than the smallest? At a fixed batch and
    scaling, is the smallest learning rate sharper than the largest?"""
    def cells(**fixed):
        return sorted([r for r in sweep if all(r[k] == v for k, v in fixed.items())],
                      key=lambda r: (r["batch_size"], r["lr"]))

    batch_pairs, lr_pairs = [], []
    for scaling in ("none", "linear"):
        for lr in sorted({r["base_lr"] for r in sweep}):
            rows = cells(base_lr=lr, scaling=scaling)
            if len(rows) >= 2:
                batch_pairs.append((rows[0], rows[-1]))
        for b in sorted({r["batch_size"] for r in sweep}):
            rows = sorted(cells(batch_size=b, scaling=scaling), key=lambda r: -r["lr"])
            if len(rows) >= 2:
                lr_pairs.append((rows[0], rows[-1]))
    out = []
    for pairs, what in ((batch_pairs, "the largest batch against the smallest (same base learning rate and scaling)"),
                        (lr_pairs, "the smallest learning rate against the largest (same batch and scaling)")):
        if not pairs:
            continue
        v = _judge(pairs)
        out.append(f"{what}, {len(pairs)} comparisons: sharper (intervals of λmax at the target separated) in "
                   f"{v['sharper']}, flatter in {v['flatter']}, not resolved in {v['unresolved']}, not comparable (a "
                   f"side diverged or missed the target on all but one seed) in {v['not comparable']}")
    if not out:
        return ""
    return (f"Keskar et al. and Jastrzebski et al. expect larger batches and smaller steps to end sharper. On the "
            f"{label(arch)}: " + "; ".join(out) + ".")


def plot_kendall(results: Mapping[str, Mapping[str, Any]], title: str) -> Figure:
    """Kendall τ (with its bootstrap interval) of each sharpness measure against each gap."""
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(results) * 2))
    y, ticks = 0, []
    for measure, by_gap in results.items():
        for gap, r in by_gap.items():
            ax.errorbar([r["tau"]], [y], xerr=[[r["tau"] - r["low"]], [r["high"] - r["tau"]]], fmt="o",
                        color="#4C72B0" if gap == "gap_loss" else "#DD8452", capsize=3)
            ticks.append((y, f"{MEASURE_LABELS[measure]} vs {GAP_LABELS[gap]}"))
            y -= 1
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=8)
    ax.set_xlabel("Kendall τ (95% bootstrap interval over runs)")
    ax.set_xlim(-1, 1)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def kendall_results(runs: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """Kendall τ-b with a bootstrap interval of every measure against every gap over ``runs``."""
    from ..study.rank_correlation import kendall_tau_interval

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for measure in MEASURE_LABELS:
        out[measure] = {}
        for gap in GAP_LABELS:
            pairs = [(r[measure], r[gap]) for r in runs if r.get(measure) is not None and r.get(gap) is not None]
            x, y = (np.array([p[i] for p in pairs], dtype=float) for i in (0, 1))
            out[measure][gap] = kendall_tau_interval(x, y, seed=seed).to_dict()
    return out


def kendall_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rows = [[MEASURE_LABELS[m], GAP_LABELS[g], f"{r['tau']:.2f} [{r['low']:.2f}, {r['high']:.2f}]", r["n"],
             _tau_verdict(r)] for m, by_gap in results.items() for g, r in by_gap.items()]
    return markdown_table(["measure", "gap", "Kendall τ [95% interval]", "runs", "reading"], rows)


def _tau_verdict(r: Mapping[str, Any]) -> str:
    if r["low"] > 0:
        return "positive: sharper runs generalise worse"
    if r["high"] < 0:
        return "negative: sharper runs generalise better"
    return "not resolved (interval contains 0)"


def kendall_text(results: Mapping[str, Mapping[str, Mapping[str, Any]]], what: str) -> str:
    """One sentence from the intervals."""
    pos = [f"{MEASURE_LABELS[m]} ({GAP_LABELS[g]})" for m, bg in results.items() for g, r in bg.items() if r["low"] > 0]
    neg = [f"{MEASURE_LABELS[m]} ({GAP_LABELS[g]})" for m, bg in results.items() for g, r in bg.items() if r["high"] < 0]
    n = next(iter(next(iter(results.values())).values()))["n"] if results else 0
    if not pos and not neg:
        return (f"Over {n} {what}, no sharpness measure's rank correlation with either generalisation gap is resolved: "
                f"every 95% interval of Kendall τ contains 0.")
    parts = []
    if pos:
        parts.append("sharper runs had larger gaps for " + ", ".join(pos))
    if neg:
        parts.append("sharper runs had *smaller* gaps for " + ", ".join(neg))
    total = sum(len(bg) for bg in results.values())
    rest = ("; the other pairs are not resolved" if len(pos) + len(neg) < total else
            "; every pair is resolved")
    return f"Over {n} {what}, " + "; ".join(parts) + f" (95% intervals of Kendall τ exclude 0){rest}."


# ------------------------------------------------------------------------------ the write-up's protocol


def protocol_analysis(protocols: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Interval]]]],
                      single: Mapping[str, Mapping[str, Sequence[float]]], reported: Mapping[str, float]
                      ) -> tuple[list[dict[str, Any]], str]:
    """Every (recipe, sample, method) cell judged against the write-up's values.

    ``protocols``: arch -> recipe -> sample -> method -> Interval. A cell *reproduces* the write-up when,
    for every architecture the write-up reports, its interval contains the write-up's value and the
    means are ordered as the write-up's values are; cells are ranked by the mean over architectures of
    |log(mean / reported)|. Returns the rows (best first) and the conclusion.
    """
    archs = [a for a in reported if a in protocols]
    order = sorted(archs, key=lambda a: -reported[a])
    rows = []
    if not archs:
        return rows, "No architecture of the write-up is in this study."
    first = protocols[archs[0]]
    for recipe in first:
        for sample in first[recipe]:
            for method in first[recipe][sample]:
                cells = {a: protocols[a].get(recipe, {}).get(sample, {}).get(method) for a in archs}
                if any(c is None for c in cells.values()):
                    continue
                contains = {a: c.low <= reported[a] <= c.high for a, c in cells.items()}
                means = [cells[a].mean for a in order]
                ordered = all(x > y for x, y in zip(means, means[1:]))
                distance = float(np.mean([abs(math.log(cells[a].mean / reported[a])) for a in archs]))
                rows.append({"recipe": recipe, "sample": sample, "method": method, "cells": cells, "contains": contains,
                             "ordered": ordered, "reproduces": all(contains.values()) and ordered, "distance": distance})
    rows.sort(key=lambda r: r["distance"])
    good = [r for r in rows if r["reproduces"]]
    best = rows[0]
    name = lambda r: f"{RECIPES[r['recipe']].label}, {SAMPLE_LABELS[r['sample']]}, {METHOD_LABELS[r['method']]}"  # noqa: E731
    values = " / ".join(f"{reported[a]:g}" for a in order)
    if good:
        text = (f"**{len(good)} of {len(rows)} protocols reproduce the write-up's λmax ({values} for "
                f"{' / '.join(label(a) for a in order)})**: " + "; ".join(name(r) for r in good) + ".")
    else:
        text = (f"**No protocol of the {len(rows)} reproduces the write-up's λmax ({values} for "
                f"{' / '.join(label(a) for a in order)})**: no cell has all three intervals containing them with the same "
                f"ordering.")
    best_vals = ", ".join(f"{label(a)} {best['cells'][a].format('{:.3g}')}" for a in order)
    text += (f" The closest (mean |log ratio| {best['distance']:.2f}, i.e. a typical factor of {math.exp(best['distance']):.2g}) "
             f"is {name(best)}: {best_vals}.")
    ranges = []
    for a in order:
        lo = min(v[0] for v in single.get(a, {}).values()) if single.get(a) else None
        hi = max(v[1] for v in single.get(a, {}).values()) if single.get(a) else None
        if lo is not None:
            inside = "contains" if lo <= reported[a] <= hi else "does not contain"
            ranges.append(f"{label(a)} {lo:.3g}–{hi:.3g} ({inside} {reported[a]:g})")
    if ranges:
        text += (" What the write-up measured — one training batch of one run — ranges, over every recipe, seed and "
                 "batch here, over: " + "; ".join(ranges) + ".")
    return rows, text


def protocol_ranking_table(rows: Sequence[Mapping[str, Any]], reported: Mapping[str, float], top: int = 10) -> str:
    order = sorted([a for a in reported if a in rows[0]["cells"]], key=lambda a: -reported[a]) if rows else []
    head = ["rank", "optimiser", "Hessian sample", "method"] + [f"{label(a)} (write-up {reported[a]:g})" for a in order] + [
        "ordering as the write-up", "mean abs log ratio", "reproduces"]
    body = [[i + 1, RECIPES[r["recipe"]].label, SAMPLE_LABELS[r["sample"]], METHOD_LABELS[r["method"]]]
            + [r["cells"][a].format("{:.3g}") + ("" if r["contains"][a] else " ✗") for a in order]
            + ["yes" if r["ordered"] else "no", f"{r['distance']:.2f}", "**yes**" if r["reproduces"] else "no"]
            for i, r in enumerate(rows[:top])]
    return markdown_table(head, body)


def overview_table(summaries: Mapping[str, Any]) -> str:
    """Per architecture: the study optimiser's λmax at the end against its threshold, the one-batch / probe-set
    ratio, the edge-of-stability plateau ratios, HVPs per snapshot (warm, cold) and the section's cost."""
    rows = []
    for arch, s in summaries.items():
        t = s.trajectories.get("study", {})
        if "steps" in t:
            top = float(np.nanmean(_rows(t["lambda_max"])[:, -1]))
            mini = float(np.nanmean(_rows(t["minibatch_mean"])[:, -1])) if t["minibatch_mean"] else float("nan")
            thr = t["threshold"][-1]
            end = f"{top:.3g} (probe) / {mini:.3g} (batch) vs {thr:.4g}"
            ratio = f"{mini / top:.2f}"
        else:
            end, ratio = "—", "—"
        eos = ", ".join(f"η {r['lr']:.3g}: {fmt(r['plateau_ratio'], '.2f')}" for r in s.eos) or "not run"
        ws = s.warm_start
        hv = (f"{np.mean(ws['warm']):.1f}" if ws["warm"] else "—") + (f" (cold {np.mean(ws['cold_paired']):.1f})"
                                                                     if ws["cold_paired"] else "")
        rows.append([label(arch), end, ratio, eos, hv, f"{sum(s.seconds.values()):,.0f}"])
    return markdown_table(["model", "study's optimiser at the end: λmax vs threshold (2+2β)/η", "one batch / probe set",
                           "EoS: plateau λmax/(2/η)", "HVPs per snapshot, warm", "CPU-seconds"], rows)
