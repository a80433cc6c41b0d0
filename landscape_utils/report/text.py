"""Prose that states the settings actually used, rendered from the study's configuration.

No sentence of the report hard-codes a setting: notebooks display these instead, so the smoke
profile and every override read true.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..study.registry import SECTIONS


def _list(values: Sequence[Any]) -> str:
    values = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def training_recipe(cfg) -> str:
    """One sentence: how every architecture is trained."""
    size = "all 60,000 training images" if cfg.train_size is None else f"a seeded subset of {cfg.train_size:,} training images"
    cap = f", stopped after {_plural(cfg.max_steps, 'step')}" if cfg.max_steps is not None else ""
    momentum = f" with momentum {cfg.momentum:g}" if cfg.momentum else ""
    return (f"{_plural(cfg.epochs, 'epoch')} of SGD{momentum} on {size}{cap}, learning rate {cfg.lr:g}, batch "
            f"size {cfg.batch_size}, cross-entropy loss, on the {cfg.device.upper() if cfg.device == 'cuda' else 'CPU'}")


def probe_sets(cfg) -> str:
    return (f"{cfg.probe_train_size:,} training and {cfg.probe_test_size:,} test examples "
            f"(seeded subsets, seed {cfg.probe_seed}, the same for every run and probe)")


def _section_sentence(section: str, cfg) -> str:
    if section == "training":
        return (f"Training: {training_recipe(cfg)}; one run per seed ({_list(cfg.seeds)}), initialisation and data "
                f"order both seeded by the seed. The path from initialisation to the trained parameters is evaluated at "
                f"{cfg.path_points} points on the probe sets.")
    if section == "curvature":
        return (f"Curvature on {cfg.probe_train_size:,} training examples: one Lanczos run gives the top "
                f"{cfg.lanczos_k} eigenvalues, stopped when the gap-refined error estimate r²/gap of each (and of the "
                f"next Ritz value) is ≤ {cfg.lanczos_tol:g}·|θ|, and, continued, λmin to a relative residual "
                f"{cfg.smallest_tol:g}; power iteration stopped at a relative change < {cfg.power_tol:g} (at most "
                f"{cfg.power_max_iter} steps); the trace by Hutch++ with that Lanczos basis as its sketch and "
                f"{cfg.trace_probes} Rademacher probes (plain Hutchinson from the same products beside it), the first "
                f"{cfg.slq_vectors} of which start the SLQ density ({cfg.slq_steps} Lanczos steps each).")
    if section == "flatness":
        return (f"Flatness on {cfg.probe_train_size:,} training examples: {cfg.flatness_draws} loss evaluations per "
                f"noise scale, as {cfg.flatness_draws // 2} antithetic ±δ pairs; "
                f"isotropic σ ∈ {{{_list(cfg.isotropic_sigmas)}}} (absolute), filter and magnitude σ ∈ "
                f"{{{_list(cfg.relative_sigmas)}}} (relative).")
    if section == "slices":
        return (f"Slices: α ∈ [−{cfg.slice_radius:g}, {cfg.slice_radius:g}] at {cfg.slice_points} points (α = 0 "
                f"included); one raw direction, {_plural(cfg.slice_directions, 'filter-normalised direction')} and the "
                f"top eigenvector per run; for seed(s) {_list(cfg.surface_seeds)} a 2-D surface over "
                f"[−{cfg.surface_radius:g}, {cfg.surface_radius:g}]² at {cfg.surface_points}×{cfg.surface_points} points.")
    if section == "connectivity":
        from ..study.units import run_name  # light: no torch

        groups: dict[str, list[str]] = {}
        for a, b in cfg.connectivity_pairs:
            kind = "same initialisation" if a[0] == b[0] else "same data order" if a[1] == b[1] else "independent"
            groups.setdefault(kind, []).append(f"{run_name(a)}–{run_name(b)}")
        pairs = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in groups.items())
        return (f"Connectivity: {cfg.pairs_per_kind} pair(s) of runs per kind ({pairs}; run iXdY = initialisation "
                f"seed X, data-order seed Y; sX = the study's run of seed X). {cfg.path_points} points along each path, "
                f"both end points included. Weight matching visits the permutation groups in an order drawn from "
                f"seed {cfg.alignment_seed}. Bézier curves (independent pairs): control point trained for "
                f"{cfg.curve_steps:,} SGD steps (learning rate {cfg.curve_lr:g}, momentum {cfg.momentum:g}, batch "
                f"{cfg.batch_size}, one t ~ U(0, 1) per step; seed {cfg.curve_seed}) on the "
                f"{'training images' if cfg.train_size is None else f'{cfg.train_size:,} training images the runs used'}.")
    if section == "dynamics":
        return dynamics_sentence(cfg)
    declared = SECTIONS[section].settings if section in SECTIONS else ()
    plain = cfg.to_dict()
    return f"{section}: " + ", ".join(f"{k} = {plain[k]}" for k in declared) + "."


def settings_note(study, section: str | None = None) -> str:
    """Markdown naming the study, the settings that differ from the defaults, and (for a
    section) the settings its method uses."""
    diff = study.differences()
    differs = ("the study's defaults" if not diff else
               "the study's defaults except " + ", ".join(f"`{k}` = {v}" for k, v in diff.items()))
    head = f"**Settings**: profile **{study.profile}** (study `{study.name}`): {differs}."
    if section is None:
        return head + f" Probe sets: {probe_sets(study.config)}."
    return head + " " + _section_sentence(section, study.config)


def dynamics_sentence(cfg) -> str:
    """The optimisation-dynamics settings, as used."""
    from ..study.recipes import RECIPES  # light: no torch

    others = [RECIPES[r].label for r in cfg.optimizers if r != "study"]
    sizes = ", ".join(f"{s:,}" for s in cfg.sample_sizes)
    sweep = (f"Batch-size sweep ({_list(list(cfg.sweep_archs))}): batch sizes {_list(cfg.sweep_batch_sizes)} × base learning "
             f"rates {_list(cfg.sweep_lrs)}, each unscaled and scaled by batch/{cfg.batch_size}, seeds {_list(cfg.sweep_seeds)}, "
             f"SGD momentum {cfg.momentum:g}, trained until the train loss on a fixed subset is ≤ {cfg.sweep_target_loss:g} "
             f"(at most {_plural(cfg.sweep_max_epochs, 'epoch')}); then λmax, tr(H), the filter-normalised flatness "
             f"(mean loss change at filter-relative σ = {cfg.sweep_sigma:g}, {cfg.sweep_draws} evaluations) and the "
             f"adaptive sharpness (ρ = {cfg.adaptive_rho:g}, {cfg.adaptive_steps} ascent steps)." if cfg.sweep_archs else
             "No batch-size sweep in this profile.")
    eos = (f"Edge of stability ({_list(list(cfg.eos_archs))}): full-batch gradient descent with the squared loss on "
           f"{cfg.eos_size:,} training images (seed {cfg.eos_seed}) from the initialisation of seed {cfg.eos_seed}, at step "
           f"sizes η with 2/η = {_list(cfg.eos_multiples)} × λ0 (λ0: λmax at initialisation), {cfg.eos_steps:,} steps, "
           f"λmax every {cfg.eos_every} steps." if cfg.eos_archs else "No edge-of-stability runs in this profile.")
    return (f"Dynamics: every training run saves {cfg.trajectory_points} snapshots at log-spaced steps; at each, λmax on "
            f"the {cfg.probe_train_size:,} probe images (Lanczos warm-started from the previous snapshot's top two Ritz "
            f"vectors, tolerance {cfg.lanczos_tol:g}), tr(H) (Hutch++ with that Lanczos basis as sketch, "
            f"{cfg.trajectory_trace_probes} probes), the mini-batch "
            f"sharpness (mean λmax over {cfg.minibatch_batches} training batches of {cfg.batch_size}, tolerance "
            f"{cfg.minibatch_tol:g}) and, for Adam, λmax(P⁻¹H). Protocol study: the study's optimiser on seeds "
            f"{_list(cfg.seeds)}; {_list(others) if others else 'no other recipe'} on seeds {_list(cfg.protocol_seeds)}; λmax "
            f"at the end on one training batch, the probe set and {cfg.protocol_large_size:,} training images, by power "
            f"iteration (relative change < {cfg.power_tol:g}, at most {cfg.power_max_iter} steps, random start) and "
            f"Lanczos. Sample sizes {sizes} ({cfg.sample_draws} samples each, seed {cfg.seeds[0]}'s run). {sweep} {eos} "
            f"Random draws from seed {cfg.dynamics_seed}, the same for every run of an architecture.")
