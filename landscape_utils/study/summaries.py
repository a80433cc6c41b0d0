"""Typed section summaries: each section's per-unit results reduced to what the report shows.

One function per section builds its summary from the per-unit results (``{unit: record}``, as
:func:`landscape_utils.study.jobs.section_results` returns them); notebooks call it, save it with
:func:`save_summary`, and the comparison reads the typed fields back with :func:`load_summary`.
Every quantity over seeds is an :class:`~landscape_utils.study.stats.Interval` (mean, 95%
interval, per-seed ``values``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .provenance import SCHEMA_VERSION, provenance
from .registry import check_section, resolve
from .results import read_json, write_json
from .stats import Interval, mean_interval, pair_interval
from .units import summary_path, unit_name

Records = Mapping[Any, Mapping[str, Any]]  # unit -> unit record (with "result")
# The range of each bounded quantity: its interval over seeds never leaves it (the estimand stays
# the arithmetic mean; see landscape_utils.study.stats). Unbounded ones (tr(H), λmin, E[ΔL]) have none.
BOUNDS = {"test_acc": (0.0, 1.0), "train_acc": (0.0, 1.0), "test_loss": (0.0, None), "train_loss": (0.0, None)}


def _results(records: Records) -> list[dict[str, Any]]:
    return [records[u]["result"] for u in records]


def _iv(values, bounds: tuple[float | None, float | None] | None = None) -> Interval:
    """The mean over seeds with its 95% interval; ``bounds`` keep a bounded quantity's interval in
    its range (see :func:`~landscape_utils.study.stats.mean_interval`)."""
    return mean_interval(np.asarray(list(values), dtype=float), bounds=bounds)


@dataclass(frozen=True)
class Summary:
    """Fields every summary has: the architecture, its units and the probe samples used."""

    arch: str
    units: tuple[str, ...]
    probe_data: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _decode(hints[f.name], d[f.name]) for f in dataclasses.fields(cls)})


def _encode(value: Any) -> Any:
    if isinstance(value, Interval):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Interval:
        return Interval.from_dict(value)
    if origin in (dict, Mapping, typing.Mapping) and args:
        return {k: _decode(args[1], v) for k, v in value.items()}
    if origin in (tuple, list) and args:
        return tuple(_decode(args[0], v) for v in value)
    return value


@dataclass(frozen=True)
class TrainingSummary(Summary):
    """Final metrics over seeds and, per seed, the history and the init → final path."""

    seeds: tuple[int, ...]
    eval_train_examples: int
    steps: int
    test_acc: Interval
    test_loss: Interval
    train_acc: Interval
    train_loss: Interval
    init_to_final_barrier_train: Interval
    runs: tuple[dict, ...]


def summarise_training(arch: str, records: Records, settings) -> TrainingSummary:
    res = _results(records)
    finals = [r["final"] for r in res]
    return TrainingSummary(
        arch=arch, units=tuple(map(unit_name, records)), probe_data=res[0]["probe_data"]["description"],
        seeds=tuple(r["seed"] for r in res), eval_train_examples=res[0]["history"]["eval_train_examples"],
        steps=res[0]["final"]["step"],
        **{m: _iv((f[m] for f in finals), bounds=BOUNDS[m]) for m in ("test_acc", "test_loss", "train_acc", "train_loss")},
        init_to_final_barrier_train=_iv((r["init_to_final"]["train"]["loss_barrier"]["barrier"] for r in res),
                                        bounds=(0.0, None)),
        runs=tuple(res))


@dataclass(frozen=True)
class CurvatureSummary(Summary):
    """Eigenvalues, traces and the cost of each method, over seeds; per-seed results in ``runs``."""

    seeds: tuple[int, ...]
    lambda_max: Interval
    lambda_min: Interval
    trace: Interval
    trace_hutchinson: Interval
    power_lambda: Interval
    power_relative_error: Interval
    lanczos_hvps: Interval
    power_hvps: Interval
    runs: tuple[dict, ...]


def summarise_curvature(arch: str, records: Records, settings) -> CurvatureSummary:
    res = _results(records)
    return CurvatureSummary(
        arch=arch, units=tuple(map(unit_name, records)), probe_data=res[0]["probe_data"]["description"],
        seeds=tuple(r["seed"] for r in res),
        lambda_max=_iv((r["lambda_max"] for r in res), bounds=(0.0, None)), lambda_min=_iv(r["lambda_min"] for r in res),
        trace=_iv(r["trace"]["estimate"] for r in res), trace_hutchinson=_iv(r["trace_hutchinson"]["estimate"] for r in res),
        power_lambda=_iv(r["power"]["eigenvalue"] for r in res),
        power_relative_error=_iv((r["power_relative_error"] for r in res), bounds=(0.0, None)),
        lanczos_hvps=_iv(r["top"]["n_hvp"] for r in res), power_hvps=_iv(r["power"]["n_hvp"] for r in res),
        runs=tuple(res))


@dataclass(frozen=True)
class FlatnessSummary(Summary):
    """Per noise kind and σ, intervals over seeds of: the mean change E[ΔL] (antithetic pairs; a
    curvature measure), the mean absolute change E|ΔL| (the write-up's metric; dominated by |gᵀδ|, a
    gradient-norm measure); for isotropic noise the second-order prediction ½σ²·tr(H) and the ratio
    measured / predicted."""

    seeds: tuple[int, ...]
    draws: int
    antithetic: bool
    sigmas: dict[str, tuple[float, ...]]
    mean_change: dict[str, tuple[Interval, ...]]
    mean_abs_change: dict[str, tuple[Interval, ...]]
    predicted_change: tuple[Interval, ...]
    second_order_ratio: tuple[Interval, ...]
    runs: tuple[dict, ...]


def summarise_flatness(arch: str, records: Records, settings) -> FlatnessSummary:
    res = _results(records)
    kinds = [k for k in res[0] if isinstance(res[0][k], dict) and "sigmas" in res[0][k]]
    return FlatnessSummary(
        arch=arch, units=tuple(map(unit_name, records)), probe_data=res[0]["probe_data"]["description"],
        seeds=tuple(r["seed"] for r in res), draws=res[0][kinds[0]]["n_evaluations"],
        antithetic=bool(res[0][kinds[0]]["antithetic"]),
        sigmas={k: tuple(res[0][k]["sigmas"]) for k in kinds},
        mean_change={k: tuple(_iv(r[k]["mean"][i] for r in res) for i in range(len(res[0][k]["sigmas"])))
                     for k in kinds},
        mean_abs_change={k: tuple(_iv((r[k]["mean_abs"][i] for r in res), bounds=(0.0, None))
                                  for i in range(len(res[0][k]["sigmas"]))) for k in kinds},
        predicted_change=tuple(_iv(r["isotropic"]["prediction"]["prediction"][i] for r in res)
                               for i in range(len(res[0]["isotropic"]["sigmas"]))),
        second_order_ratio=tuple(_iv(r["isotropic"]["second_order"]["ratio"][i] for r in res)
                                 for i in range(len(res[0]["isotropic"]["sigmas"]))),
        runs=tuple(res))


def slice_asymmetry(slice_result: Mapping[str, Any]) -> np.ndarray:
    """Per slice, (L(+r) − L(−r)) / (|L(+r) − L(0)| + |L(−r) − L(0)|) at the grid's ends ±r.

    0 for a symmetric (parabola-like) slice, ±1 for a monotone (linear-looking) one; bounded
    in [−1, 1], so a flat slice cannot blow it up. (0 when the slice is exactly flat.)
    """
    losses = np.asarray(slice_result["losses"], dtype=float)  # (D, A)
    centre = float(slice_result["loss"])
    left, right = losses[:, 0], losses[:, -1]
    scale = np.abs(right - centre) + np.abs(left - centre)
    return np.divide(right - left, scale, out=np.zeros_like(scale), where=scale > 0)


@dataclass(frozen=True)
class SlicesSummary(Summary):
    """Per direction kind, intervals over seeds (each seed's value averaged over its directions) of:
    the local curvature dᵀHd at α = 0 (exact, one HVP per direction), the finite-scale curvature of
    a parabola fitted over [−fit_radius, fit_radius], and the asymmetry of the slice's ends."""

    seeds: tuple[int, ...]
    kinds: tuple[str, ...]
    fit_radius: float
    local_curvature: dict[str, Interval]
    fitted_curvature: dict[str, Interval]
    asymmetry: dict[str, Interval]
    runs: tuple[dict, ...]


def summarise_slices(arch: str, records: Records, settings) -> SlicesSummary:
    res = _results(records)
    kinds = tuple(res[0]["kinds"])
    return SlicesSummary(
        arch=arch, units=tuple(map(unit_name, records)), probe_data=res[0]["probe_data"]["description"],
        seeds=tuple(r["seed"] for r in res), kinds=kinds, fit_radius=float(res[0]["kinds"][kinds[0]]["train"]["fit_radius"]),
        local_curvature={k: _iv(np.mean(r["kinds"][k]["train"]["local_curvatures"]) for r in res) for k in kinds},
        fitted_curvature={k: _iv(np.mean(r["kinds"][k]["train"]["fitted_curvatures"]) for r in res) for k in kinds},
        asymmetry={k: _iv((np.mean(slice_asymmetry(r["kinds"][k]["train"])) for r in res), bounds=(-1.0, 1.0))
                   for k in kinds},
        runs=tuple(res))


# Pair kinds, in the order the report shows them (see landscape_utils.study.units.pair_kind).
PAIR_KINDS = ("independent", "same-init", "same-data")
# Paths between a pair, in the order the report shows them (see landscape_utils.study.jobs.connectivity_of).
PATH_ORDER = ("straight", "aligned", "curve", "aligned curve")
# Barrier quantities per path: loss or error, on the train or test probe set.
BARRIER_QUANTITIES = ("loss_train", "loss_test", "error_train", "error_test")


@dataclass(frozen=True)
class ConnectivitySummary(Summary):
    """Loss and error barriers between pairs of runs, per pair kind and path.

    ``barriers["<kind>/<path>"][<quantity>]`` is the interval over the pairs of that kind, for
    paths ``straight``, ``aligned`` (after weight matching), ``curve`` and ``aligned curve`` (trained
    Bézier curves, independent pairs only) and quantities :data:`BARRIER_QUANTITIES`. Pairs of one
    kind share no run, so they are independent samples and the interval is the ordinary one for a
    mean of non-negative values (no log transform: barriers can be exactly 0); see
    :func:`~landscape_utils.study.stats.pair_interval`. ``pair_values`` holds the same numbers per
    pair (unit name → value) for paired comparisons.
    """

    kinds: tuple[str, ...]
    pairs: dict[str, tuple[str, ...]]
    paths: dict[str, tuple[str, ...]]
    alignment: str
    barriers: dict[str, dict[str, Interval]]
    pair_values: dict[str, dict[str, dict[str, float]]]
    max_logit_change: float | None
    runs: tuple[dict, ...]

    def barrier(self, kind: str, path: str, quantity: str = "loss_train") -> Interval:
        """The interval for one kind, path and quantity.

        Raises:
            KeyError: that combination was not measured (e.g. no alignment for this architecture).
        """
        return self.barriers[f"{kind}/{path}"][quantity]


def _barrier_value(path: Mapping[str, Any], quantity: str) -> float:
    q, split = quantity.split("_")
    return float(path[split][f"{q}_barrier"]["barrier"])


def summarise_connectivity(arch: str, records: Records, settings) -> ConnectivitySummary:
    res = _results(records)
    names = [unit_name(u) for u in records]
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(res):
        by_kind.setdefault(r["kind"], []).append(i)
    kinds = tuple(k for k in PAIR_KINDS if k in by_kind)
    barriers: dict[str, dict[str, Interval]] = {}
    values: dict[str, dict[str, dict[str, float]]] = {}
    paths: dict[str, tuple[str, ...]] = {}
    for kind in kinds:
        idx = by_kind[kind]
        measured = res[idx[0]]["paths"]
        paths[kind] = tuple(sorted(measured, key=lambda p: (PATH_ORDER + (p,)).index(p)))
        for path in paths[kind]:
            key = f"{kind}/{path}"
            values[key] = {q: {names[i]: _barrier_value(res[i]["paths"][path], q) for i in idx}
                           for q in BARRIER_QUANTITIES}
            barriers[key] = {q: pair_interval({tuple(res[i]["runs"]): v for i, v in zip(idx, values[key][q].values())},
                                              bounds=(0.0, None))
                             for q in BARRIER_QUANTITIES}
    changes = [r["alignment"]["max_logit_change"] for r in res if r.get("alignment")]
    return ConnectivitySummary(
        arch=arch, units=tuple(names), probe_data=res[0]["probe_data"]["description"], kinds=kinds,
        pairs={k: tuple(names[i] for i in by_kind[k]) for k in kinds}, paths=paths,
        alignment="weight matching" if changes else "not available", barriers=barriers, pair_values=values,
        max_logit_change=max(changes) if changes else None, runs=tuple(res))


# ------------------------------------------------------------------------ files


def summarise(section: str, arch: str, records: Records, settings) -> Summary:
    """The section's registered summary function applied to ``records``."""
    return check_section(section).summarise_function()(arch, records, settings)


def save_summary(section: str, summary: Summary, out_dir: str | Path, device: str = "cpu") -> Path:
    """Write ``<out_dir>/summaries/<section>/<arch>.json`` with its type, schema and provenance."""
    cls = type(summary)
    return write_json(summary_path(out_dir, section, summary.arch),
                      {"type": f"{cls.__module__}:{cls.__qualname__}", "schema_version": SCHEMA_VERSION,
                       "provenance": provenance(device), "summary": summary.to_dict()})


def load_summary(section: str, study_dir: str | Path, arch: str) -> Summary:
    """The typed summary of ``section`` for ``arch`` saved under ``study_dir``.

    Raises:
        FileNotFoundError: not written yet (run the section's notebook first).
        ValueError: written with another schema version.
    """
    path = summary_path(study_dir, section, arch)
    if not path.is_file():
        raise FileNotFoundError(f"no {section} summary for {arch} at {path}; run the section's notebook first")
    record = read_json(path)
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {record.get('schema_version')}, expected {SCHEMA_VERSION}")
    return resolve(record["type"]).from_dict(record["summary"])


def section_records(section: str, arch: str, cfg, study_dir: str | Path | None = None) -> dict[Any, dict[str, Any]]:
    """Every unit's record for one section and architecture: read from the study's block files
    (what the workflow's probe jobs wrote) when they hold every unit with the expected key, else
    from the shared cache, computing what is missing (with a progress bar)."""
    from .units import parse_unit, section_units, unit_key

    wanted = {u: unit_key(section, arch, u, cfg) for u in section_units(section, cfg, arch)}
    found: dict[Any, dict[str, Any]] = {}
    if study_dir is not None:
        for path in sorted((Path(study_dir) / "units" / section / arch).glob("part*.json")):
            for record in read_json(path)["units"]:
                unit = parse_unit(record["unit"])
                if wanted.get(unit) == record["key"]:
                    found[unit] = record
    if set(found) == set(wanted):
        return {u: found[u] for u in wanted}
    from .jobs import section_results  # torch, only when something must be loaded from the cache or computed

    return section_results(section, arch, cfg)


def load_or_summarise(section: str, arch: str, cfg, out_dir: str | Path) -> Summary:
    """The saved summary under ``out_dir``, else built from the per-unit results (cached units,
    computed when missing) and saved there — what a notebook opened by hand relies on."""
    try:
        return load_summary(section, out_dir, arch)
    except (FileNotFoundError, ValueError):
        summary = summarise(section, arch, section_records(section, arch, cfg, out_dir), cfg)
        save_summary(section, summary, out_dir, cfg.device)
        return summary
