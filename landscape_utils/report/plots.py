"""Figures of the study. Plot functions take arrays (never models) and return a Figure.

Bands and error bars are 95% Student-t intervals of the mean over seeds (or over seed
pairs for connectivity); each figure's title or caption says which. ``save_figure`` writes
a PNG under ``<study folder>/figures/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
import seaborn as sns
from matplotlib.figure import Figure

from ..study.registry import colour, label
from ..study.stats import Interval, mean_interval

BAND_NOTE = "band: 95% t-interval of the mean over seeds"

sns.set_theme(style="whitegrid", context="notebook", rc={"figure.dpi": 100, "savefig.dpi": 120})


def save_figure(fig: Figure, out_dir: str | Path, group: str, name: str) -> Path:
    """Write ``fig`` to ``<out_dir>/figures/<group>/<name>.png`` and return the path."""
    path = Path(out_dir) / "figures" / group / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def seed_band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t-interval bounds over the first axis of ``values`` (runs x points)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    ivs = [mean_interval(values[:, j], level) for j in range(values.shape[1])]
    return (np.array([i.mean for i in ivs]), np.array([i.low for i in ivs]),
            np.array([i.high for i in ivs]))


def log_axis(ax, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.5, 1, 2 rather than 5×10⁻¹)."""
    getattr(ax, f"set_{axis}scale")("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(plain)
    target.set_minor_formatter(ticker.NullFormatter())


def _band(ax, x, values, color, name, lines: bool = True) -> None:
    values = np.atleast_2d(values)
    mean, low, high = seed_band(values)
    if lines and len(values) > 1:
        for row in values:
            ax.plot(x, row, color=color, lw=0.6, alpha=0.35)
    marker = "o" if len(np.atleast_1d(x)) <= 6 else None  # few points: show them
    ax.plot(x, mean, color=color, lw=2, marker=marker, label=f"{name} (mean of {len(values)})")
    if len(values) > 1:
        ax.fill_between(x, low, high, color=color, alpha=0.2)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(x)))
    return np.convolve(x, np.ones(window) / window, mode="valid")


def plot_training_curves(step_losses: Sequence[np.ndarray], epochs: np.ndarray,
                         test_acc: np.ndarray, train_loss: np.ndarray, test_loss: np.ndarray,
                         arch: str, train_examples: int, seeds: Sequence[int], window: int = 50) -> Figure:
    """Step losses (moving average, one line per seed) and per-epoch metrics with bands.

    Args:
        step_losses: per seed, the training loss of every step.
        epochs: epoch numbers (0 = initialisation), shape (E,).
        test_acc, train_loss, test_loss: arrays (seeds, E).
        train_examples: size of the fixed training subset the train metrics use.
        seeds: the seed of each run (for the legend).
        window: moving-average width (shrunk for short runs).
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    color = colour(arch)
    window = max(1, min(window, min(len(s) for s in step_losses) // 5))
    for i, losses in enumerate(step_losses):
        smooth = _moving_average(np.asarray(losses), window)
        axes[0].plot(np.arange(len(smooth)) + window, smooth, lw=1, color=color, alpha=0.4 + 0.6 / (i + 1),
                     label=f"seed {seeds[i]}")
    axes[0].set(xlabel="optimiser step", ylabel="cross-entropy (nats)",
                title=f"Training loss, {window}-step moving average")
    log_axis(axes[0])
    axes[0].legend(fontsize=8)
    _band(axes[1], epochs, train_loss, "C0", f"train ({train_examples:,} fixed examples)")
    _band(axes[1], epochs, test_loss, "C3", "test")
    axes[1].set(xlabel="epoch (0 = initialisation)", ylabel="cross-entropy (nats)", title="Loss per epoch")
    log_axis(axes[1])
    axes[1].legend(fontsize=8)
    _band(axes[2], epochs, 100 * np.asarray(test_acc), color, "test accuracy")
    axes[2].set(xlabel="epoch (0 = initialisation)", ylabel="accuracy (%)", title="Test accuracy per epoch")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{label(arch)}: training ({BAND_NOTE})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_paths(alphas: np.ndarray, curves: Mapping[str, np.ndarray], ylabel: str, title: str,
               xlabel: str = "interpolation coefficient α", ax=None, colors=None) -> Figure:
    """Curves along a path (each (runs, points)), mean with a band over runs."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 3.8))
    ax = ax or fig.add_subplot()
    for i, (name, values) in enumerate(curves.items()):
        _band(ax, alphas, values, (colors or {}).get(name, f"C{i}"), name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(curves) > 4:  # many curves: the legend goes beside the axes instead of over the data
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize=8)
    return fig


def plot_spectral_density(densities: Mapping[int, tuple[np.ndarray, np.ndarray]], top: Mapping[int, float],
                          arch: str) -> Figure:
    """Smoothed Hessian spectral density (log scale), one line per seed, each seed's Lanczos λmax marked.

    Args:
        densities: seed -> (grid, density) from stochastic Lanczos quadrature.
        top: seed -> λmax from Lanczos.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, (seed, (grid, density)) in enumerate(densities.items()):
        line, = ax.plot(grid, np.maximum(density, 1e-12), color=colour(arch), alpha=0.4 + 0.6 / (i + 1),
                        lw=1.5 if i == 0 else 1, label=f"seed {seed}")
        if seed in top:
            ax.axvline(top[seed], color=line.get_color(), ls=":", lw=1, alpha=line.get_alpha())
    ax.plot([], [], color="k", ls=":", lw=1, label="λmax (Lanczos), per seed")
    ax.set(ylim=(1e-6, None), xlabel="eigenvalue λ of the Hessian", ylabel="density (Gaussian-smoothed)",
           title=f"{label(arch)}: Hessian spectrum by stochastic Lanczos quadrature ({len(densities)} seeds)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_flatness(sigmas: Mapping[str, np.ndarray], changes: Mapping[str, np.ndarray],
                  arch: str, prediction: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Mean loss change under noise against its scale, one panel per noise kind.

    Args:
        sigmas: noise kind -> σ values (S,).
        changes: noise kind -> per-seed mean loss change, (seeds, S).
        prediction: (σ grid, ½σ²·tr(H)) for the isotropic panel.
    """
    kinds = list(changes)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        _band(ax, sigmas[kind], changes[kind], colour(arch), "measured E[ΔL]")
        if kind == "isotropic" and prediction is not None:
            ax.plot(prediction[0], prediction[1], "k--", lw=1.2, label="½σ²·tr(H) (Hutch++ on the Lanczos basis)")
        ax.axhline(0, color="grey", lw=0.8)
        log_axis(ax, "x")
        ax.set(xlabel="noise scale σ" + (" (absolute)" if kind == "isotropic" else " (relative)"),
               ylabel="L(θ+δ) − L(θ) (nats)", title=f"{kind} noise")
        ax.legend(fontsize=8)
    fig.suptitle(f"{label(arch)}: loss change under random perturbations ({BAND_NOTE})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_slices(alphas: Mapping[str, np.ndarray], losses: Mapping[str, np.ndarray],
                arch: str, ylabel: str = "training loss (nats)") -> Figure:
    """1-D slices L(θ+αv), one panel per direction kind; each row of ``losses`` is one slice."""
    kinds = list(losses)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = np.atleast_2d(losses[kind])
        for i, row in enumerate(rows):
            ax.plot(alphas[kind], row, color=colour(arch), alpha=0.4 + 0.6 / (i + 1),
                    lw=1.2, label="one slice per direction" if i == 0 else None)
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="step α along the direction", ylabel=ylabel, title=kind)
        ax.legend(fontsize=8)
    fig.suptitle(f"{label(arch)}: 1-D loss slices (all seeds, all directions)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_surface(alphas: np.ndarray, betas: np.ndarray, losses: np.ndarray, arch: str, seed: int) -> Figure:
    """Contours of L(θ+αu+βv) over two filter-normalised directions (losses (A, B))."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    z = np.log10(np.asarray(losses).T)
    cs = ax.contourf(alphas, betas, z, levels=20, cmap="viridis")
    ax.contour(alphas, betas, z, levels=10, colors="w", linewidths=0.4)
    ax.plot([0], [0], "r*", ms=10, label="trained parameters θ")
    fig.colorbar(cs, ax=ax, label="log10 training loss (nats)")
    ax.set(xlabel="α (direction u, filter-normalised)", ylabel="β (direction v, filter-normalised)",
           title=f"{label(arch)}: 2-D loss surface (seed {seed})")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_intervals(intervals: Mapping[str, Interval], ylabel: str, title: str,
                   reported: Mapping[str, float] | None = None, log: bool = False, ax=None,
                   over: str = "seeds") -> Figure:
    """Means with 95% intervals per architecture (over ``over``); reported values as crosses."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.2, 3.6))
    ax = ax or fig.add_subplot()
    names = list(intervals)
    for i, name in enumerate(names):
        iv = intervals[name]
        ax.errorbar([i], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="o",
                    color=colour(name), capsize=6, ms=7,
                    label=f"this study: mean, 95% interval over {over}" if i == 0 else None)
        if reported and name in reported:
            ax.plot([i], [reported[name]], "kx", ms=9, mew=2,
                    label="original write-up (single run)" if i == 0 else None)
    ax.set_xticks(range(len(names)), [label(n) for n in names])
    ax.set(ylabel=ylabel, title=title)
    if log:
        log_axis(ax)
    ax.legend(fontsize=8)
    return fig


def plot_arch_curves(x: Mapping[str, np.ndarray], curves: Mapping[str, np.ndarray], xlabel: str,
                     ylabel: str, title: str, logx: bool = False, ax=None) -> Figure:
    """One band per architecture (curves[arch]: (runs, points)) on shared axes."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 3.8))
    ax = ax or fig.add_subplot()
    for arch, values in curves.items():
        _band(ax, x[arch], values, colour(arch), label(arch), lines=False)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        log_axis(ax, "x")
    ax.legend(fontsize=8)
    return fig


def plot_convergence(histories: Mapping[str, np.ndarray], reference: float, arch: str, seed: int) -> Figure:
    """Relative error of each method's eigenvalue estimate against the HVPs it has used."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, history in histories.items():
        err = np.abs(np.asarray(history) - reference) / abs(reference)
        ax.plot(np.arange(1, len(err) + 1), np.maximum(err, 1e-16), marker=".", label=name)
    ax.set(xlabel="Hessian-vector products used",
           ylabel="|λ estimate − λmax| / λmax",
           title=f"{label(arch)}: convergence to λmax (seed {seed}; reference: converged Lanczos)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_interval_groups(groups: Mapping[str, Mapping[str, Interval]], ylabel: str, title: str,
                         threshold: float | None = None, threshold_label: str = "", over: str = "pairs") -> Figure:
    """Means with 95% intervals, one cluster per group (e.g. a kind of pair and path), one marker
    per architecture inside it; an optional horizontal threshold line."""
    fig, ax = plt.subplots(figsize=(8.5, 3.9))
    names = list(groups)
    archs = list(dict.fromkeys(a for g in groups.values() for a in g))
    width = 0.7 / max(1, len(archs))
    for j, arch in enumerate(archs):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(names):
            iv = groups[name].get(arch)
            if iv is None:
                continue
            xs.append(i + (j - (len(archs) - 1) / 2) * width)
            ys.append(iv.mean)
            lo.append(iv.mean - iv.low)
            hi.append(iv.high - iv.mean)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=colour(arch), capsize=4, ms=6, label=label(arch))
    if threshold is not None:
        ax.axhline(threshold, color="k", ls=":", lw=1, label=threshold_label or None)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8, title=f"mean, 95% interval over {over}", title_fontsize=8)
    fig.tight_layout()
    return fig
