"""How much of each reported quantity's spread comes from the seed and how much from the estimator.

Every per-seed quantity (λmax, λmin, tr(H), E[ΔL] and E|ΔL| per noise kind and σ, slice
curvatures and asymmetries, straight-line barriers) is an estimate with two kinds of estimator
noise besides the seed:

* ``"random vectors"``: Lanczos start vectors, trace probes, noise draws and slice directions.
  Each seed draws them from the same seeded generators, but on different parameters they act as
  (mostly) independent draws, so this noise is *inside* the observed between-seed spread and
  inflates it. (Mostly: the same draws on every seed leave a part of it shared, e.g. the output
  layer is not permuted between seeds; on the MLP that part was 0–50% of its variance.)
* ``"probe set"``: the fixed sample S (``probe_train_size`` / ``probe_test_size`` examples, seeded
  by ``probe_seed``) every seed is evaluated on. Its sampling error is *common* to all seeds: an
  offset that more seeds never average away. That is harmless if the estimand is "on S", not if
  it is "on the data distribution".

:func:`estimator_noise` repeats the study's own per-seed estimators (:mod:`.jobs`) on one trained
run with fresh randomness of one source at a time; :func:`between_seed_values` reads the same named
quantities from the study's per-seed results; :func:`decomposition` sets one against the other
under the rule *estimator s.e. ≤ ¼ × between-seed s.d.*
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .provenance import provenance
from .results import read_json, write_json
from .summaries import slice_asymmetry
from .units import cache_root, noise_key, pair_kind, run_name

# The estimators (jobs, training: torch) are imported where they run, so the report's notebooks can
# use the light functions here (quantities_of, between_seed_values, decomposition) without torch.

SOURCES = ("random vectors", "probe set")
NOISE_KINDS = ("isotropic", "filter", "magnitude")  # as landscape_utils.study.jobs.NOISE_KINDS (checked by a test)
RULE = 0.25  # estimator s.e. must be at most this fraction of the between-seed s.d.
SOURCE_TEXT = {
    "random vectors": "fresh curvature_seed, flatness_seed and direction_seed (Lanczos start vectors, trace "
                      "probes, noise draws, slice directions) on the study's probe set",
    "probe set": "fresh probe_seed (a new seeded probe sample of the same size), every random seed fixed",
}
BARRIER_NAMES = {f"{q} barrier ({split}), straight": (q, split)
                 for q in ("loss", "error") for split in ("train", "test")}


def _sd(values: Sequence[float]) -> float | None:
    return float(np.std(np.asarray(values, dtype=float), ddof=1)) if len(values) > 1 else None


def quantities_of(curv: Mapping[str, Any] | None = None, flat: Mapping[str, Any] | None = None,
                  slices: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The report's named quantities from ONE seed's per-unit results (what :func:`~.jobs.curvature_of`,
    :func:`~.jobs.flatness_of` and :func:`~.jobs.slices_of` return, or a cached unit's ``result``),
    reduced exactly as :mod:`.summaries` reduces them (slices: the mean over a kind's directions).
    A section passed as None is left out."""
    q: dict[str, float] = {}
    if curv is not None:
        q["λmax"] = float(curv["lambda_max"])
        q["λmin"] = float(curv["lambda_min"])
        q["tr(H)"] = float(curv["trace"]["estimate"])
    if flat is not None:
        for kind in (k for k in NOISE_KINDS if k in flat):
            for s, m in zip(flat[kind]["sigmas"], flat[kind]["mean"]):
                q[f"E[ΔL] {kind} σ={s:g}"] = float(m)
        for kind in (k for k in NOISE_KINDS if k in flat):
            for s, m in zip(flat[kind]["sigmas"], flat[kind]["mean_abs"]):
                q[f"E|ΔL| {kind} σ={s:g}"] = float(m)
        second = flat.get("isotropic", {}).get("second_order")
        if second is not None:  # the report quotes the ratio at the smallest σ only
            q[f"E[ΔL] / ½σ²tr(H), isotropic σ={second['sigmas'][0]:g}"] = float(second["ratio"][0])
    if slices is not None:
        for kind, res in slices["kinds"].items():
            q[f"slice curvature vᵀHv, {kind}"] = float(np.mean(res["train"]["local_curvatures"]))
            q[f"slice curvature (fitted), {kind}"] = float(np.mean(res["train"]["fitted_curvatures"]))
        for kind, res in slices["kinds"].items():
            q[f"slice asymmetry, {kind}"] = float(np.mean(slice_asymmetry(res["train"])))
    return q


def barriers_of(straight: Mapping[str, Any]) -> dict[str, float]:
    """Loss and error barriers on the train and test probe sets from one straight path
    (``{"train": PathResult dict, "test": ...}``, as in a connectivity result's ``paths["straight"]``)."""
    return {name: float(straight[split][f"{q}_barrier"]["barrier"]) for name, (q, split) in BARRIER_NAMES.items()}


def straight_path(arch: str, run_a, run_b, probe, cfg) -> dict[str, Any]:
    """The straight line θA → θB on both probe sets, as :func:`~.jobs.connectivity_of` measures it."""
    from . import jobs

    model = run_a.model().to(cfg.device)
    return {split: jobs.linear_path_losses(model, jobs.LOSS, getattr(probe, split).data, run_a.final_state,
                                           run_b.final_state, n_points=cfg.path_points).to_dict()
            for split in ("train", "test")}


def _repeat_config(cfg, source: str, r: int):
    # Offsets 1 + r never meet the study's own seeds (offset 0); flatness's per-kind offsets are
    # multiples of 1000, so repeats below 1000 never reuse another kind's stream either.
    if source == "random vectors":
        return dataclasses.replace(cfg, curvature_seed=cfg.curvature_seed + 1 + r,
                                   flatness_seed=cfg.flatness_seed + 1 + r, direction_seed=cfg.direction_seed + 1 + r)
    return dataclasses.replace(cfg, probe_seed=cfg.probe_seed + 1 + r)


def estimator_noise(arch: str, cfg, progress: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Repeat the study's per-seed estimators ``cfg.variance_repeats`` times on the run of ``seed``
    (default ``cfg.seeds[0]``), once per noise source in :data:`SOURCES`, everything else fixed.

    The noise is a property of the run's landscape as well as of the budget (a seed whose spectrum
    has a few dominant eigenvalues gives noisier random-direction quantities), so one run's repeats
    size the budget only roughly; a few repeats on each of two or three seeds are safer.

    Barriers (a pair of runs, no randomness on the straight line but S) are measured under the
    ``"probe set"`` source only, for ``cfg.connectivity_pairs[0]`` when it is an independent pair.

    Returns plain JSON data: ``arch``, ``seed``, ``pair`` (its name or None), ``settings`` (repeats,
    rule, sources and what each changes, the budgets in force), ``sources`` (per source: ``values``
    {quantity: [one per repeat]}, ``sd`` {quantity: s.d. over repeats, ddof=1}, ``probe_data`` per
    repeat, ``seconds``), ``seconds`` per source and ``provenance``.
    """
    from tqdm.std import tqdm

    from . import jobs
    from .training import train_or_load

    seed = cfg.seeds[0] if seed is None else seed
    model = jobs._on_device(train_or_load(cfg.train_config(arch, seed), progress=progress).model(), cfg)
    pairs = [p for p in cfg.connectivity_pairs[:1] if pair_kind(p) == "independent"]
    pair_runs = [train_or_load(cfg.run_config(arch, r), progress=progress) for r in pairs[0]] if pairs else None
    out_sources: dict[str, Any] = {}
    bar = tqdm(total=len(SOURCES) * cfg.variance_repeats, disable=not progress, unit="repeat",
               desc=f"estimator noise [{arch}]")
    for source in SOURCES:
        started = time.perf_counter()
        values: dict[str, list[float]] = {}
        probes = []
        for r in range(cfg.variance_repeats):
            c = _repeat_config(cfg, source, r)
            probe = jobs.probe_data(c)
            curv = jobs.curvature_of(model, probe, c, density=False)
            trace = curv["trace"]
            flat = jobs.flatness_of(model, probe, c, trace=trace["estimate"], trace_stderr=trace["stderr"])
            q = quantities_of(curv, flat, jobs.slices_of(model, probe, c, surface=False))
            if source == "probe set" and pair_runs:
                q.update(barriers_of(straight_path(arch, *pair_runs, probe, c)))
            for k, v in q.items():
                values.setdefault(k, []).append(v)
            probes.append(probe.to_dict())
            bar.update(1)
        out_sources[source] = {"values": values, "sd": {k: _sd(v) for k, v in values.items()},
                               "probe_data": probes, "seconds": round(time.perf_counter() - started, 3)}
    bar.close()
    budgets = ("probe_train_size", "probe_test_size", "probe_seed", "trace_probes", "lanczos_tol", "flatness_draws",
               "slice_directions", "curvature_seed", "flatness_seed", "direction_seed")
    return {"arch": arch, "seed": seed, "pair": "-".join(map(run_name, pairs[0])) if pairs else None,
            "settings": {"repeats": cfg.variance_repeats, "seed": seed, "rule": RULE, "sources": dict(SOURCE_TEXT),
                         **{k: getattr(cfg, k) for k in budgets}},
            "sources": out_sources, "seconds": {s: out_sources[s]["seconds"] for s in SOURCES},
            "provenance": provenance(cfg.device)}


def cached_estimator_noise(arch: str, cfg, progress: bool = False) -> dict[str, Any]:
    """:func:`estimator_noise` for the first seed, from the cache when present (keyed by
    :func:`~.units.noise_key`: the repeats, the repeated sections' settings, the runs and the code),
    else computed now and cached atomically. The record adds ``key`` and ``seconds`` (total)."""
    key = noise_key(arch, cfg)
    path = cache_root() / "variance" / arch / f"{key}.json"
    if path.is_file():
        return read_json(path)
    started = time.perf_counter()
    record = {"key": key, **estimator_noise(arch, cfg, progress=progress)}
    record["seconds_total"] = record["seconds"]
    record["seconds"] = round(time.perf_counter() - started, 3)
    write_json(path, record)
    return record


def load_or_estimate(arch: str, cfg, out_dir) -> dict[str, Any]:
    """The study's estimator-noise record for ``arch`` under ``out_dir`` (what the workflow wrote), else
    from the cache or computed now (with a progress bar) and written there — what a notebook opened by
    hand relies on."""
    from .units import noise_path

    path = noise_path(out_dir, arch)
    if path.is_file():
        record = read_json(path)
        if record.get("key") == noise_key(arch, cfg):
            return record
    record = cached_estimator_noise(arch, cfg, progress=True)
    write_json(path, record)
    return record


def between_seed_values(summaries_for_arch: Mapping[str, Any]) -> dict[str, list[float]]:
    """{quantity: one value per seed} from one architecture's section summaries (``{section: summary}``;
    only their ``runs`` are read, so anything with a ``runs`` tuple of per-unit results will do).

    Seeds present in every given per-seed section are used, in order. Barriers come from the
    connectivity summary's independent pairs (one value per pair: pairs are disjoint)."""
    sections = [s for s in ("curvature", "flatness", "slices") if s in summaries_for_arch]
    by_seed = {s: {r["seed"]: r for r in summaries_for_arch[s].runs} for s in sections}
    seeds = [s for s in (by_seed[sections[0]] if sections else []) if all(s in by_seed[x] for x in sections)]
    out: dict[str, list[float]] = {}
    for seed in seeds:
        q = quantities_of(*(by_seed[s][seed] if s in by_seed else None for s in ("curvature", "flatness", "slices")))
        for k, v in q.items():
            out.setdefault(k, []).append(v)
    if "connectivity" in summaries_for_arch:
        for r in summaries_for_arch["connectivity"].runs:
            if r["kind"] == "independent" and "straight" in r["paths"]:
                for k, v in barriers_of(r["paths"]["straight"]).items():
                    out.setdefault(k, []).append(v)
    return out


VERDICTS = {
    "ok": "estimator noise negligible",
    "probe set": "probe-set noise not negligible: enlarge S or state the estimand is on S (S's error is an offset "
                 "shared by every seed: more seeds cannot remove it)",
    "random vectors": "random-vector noise not negligible: more probes/draws (drawn per seed, it inflates the "
                      "between-seed spread)",
    "no spread": "no between-seed spread to judge against (fewer than two seeds, or none varies)",
}


def decomposition(noise: Mapping[str, Any], between: Mapping[str, Sequence[float]], rule: float = RULE) -> list[dict]:
    """One row per quantity measured by :func:`estimator_noise`: ``between_sd`` (s.d. over seeds, or
    over independent pairs for barriers, ddof=1) and ``n``; per source ``estimator_sd``, ``ratio``
    (estimator s.d. / between-seed s.d.) and ``passes`` (ratio ≤ ``rule``; None where not measured);
    ``seed_share``: the share of the between-seed variance that is not random-vector noise,
    1 − sd_rv² / sd_between² (floored at 0), and ``seed_sd``, the s.d. left to the seed,
    sd_between · √seed_share; and a ``verdict`` (one of :data:`VERDICTS`, joined).

    The ratios are against the *observed* between-seed s.d., which holds the random-vector noise
    (drawn afresh per seed); ``seed_sd`` is what a budget must be sized against."""
    names: list[str] = []
    for src in SOURCES:
        names += [k for k in noise["sources"].get(src, {}).get("sd", {}) if k not in names]
    rows = []
    for name in names:
        vals = list(between.get(name, []))
        b_sd = _sd(vals)
        est = {src: noise["sources"].get(src, {}).get("sd", {}).get(name) for src in SOURCES}
        usable = b_sd is not None and b_sd > 0
        ratio = {src: (e / b_sd if usable and e is not None else None) for src, e in est.items()}
        passes = {src: (r <= rule if r is not None else None) for src, r in ratio.items()}
        rv = est["random vectors"]
        share = max(0.0, 1.0 - rv ** 2 / b_sd ** 2) if usable and rv is not None else None
        if not usable:
            verdict = VERDICTS["no spread"]
        else:
            failed = [src for src in ("probe set", "random vectors") if passes[src] is False]
            verdict = "; ".join(VERDICTS[src] for src in failed) if failed else VERDICTS["ok"]
        rows.append({"quantity": name, "n": len(vals), "between_sd": b_sd, "estimator_sd": est, "ratio": ratio,
                     "passes": passes, "seed_share": share, "seed_sd": None if share is None else b_sd * share ** 0.5,
                     "rule": rule, "verdict": verdict})
    return rows
