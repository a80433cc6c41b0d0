"""The optimisation-dynamics section's summary: per-cell results reduced to what the report shows.

Intervals over seeds are :class:`~landscape_utils.study.stats.Interval` (95%, positive quantities
kept positive); everything else is plain lists, so the comparison notebook and other programs
read it back from JSON.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .recipes import RECIPES
from .stats import Interval, mean_interval
from .summaries import Records, Summary
from .units import Cell, unit_name

POSITIVE = (0.0, None)
# The sharpness measures the generalisation analysis ranks, and the gaps they are ranked against.
MEASURES = ("lambda_max", "trace", "filter_flatness", "adaptive_sharpness")
GAPS = ("gap_loss", "gap_error")
PROTOCOL_SAMPLES = ("batch", "probe", "large")
PROTOCOL_METHODS = ("power", "lanczos")


def _iv(values, bounds=POSITIVE) -> Interval:
    return mean_interval(np.asarray(list(values), dtype=float), bounds=bounds)


@dataclass(frozen=True)
class DynamicsSummary(Summary):
    """What the dynamics section shows for one architecture.

    Attributes:
        trajectories: recipe -> ``steps``, ``lr``, ``threshold`` (per snapshot; None where no threshold
            is derived), per-seed lists (seeds × snapshots) of ``lambda_max``, ``trace``,
            ``minibatch_mean``, ``minibatch_stderr``, ``train_loss`` and (Adam) ``preconditioned``,
            ``seeds``; diverged seeds are listed in ``diverged``.
        warm_start: HVPs per snapshot: ``warm`` (every warm-started snapshot of every run), ``cold``
            and ``warm_paired`` (the study's first seed, both at each snapshot), ``max_rel_diff``
            (largest |warm − cold| / cold there) and ``tol``.
        protocol: recipe -> sample -> method -> Interval of λmax over seeds; ``protocol_sizes``:
            sample -> examples; ``protocol_hvps``: sample -> method -> mean HVPs.
        single_batch: recipe -> [min, max] of one-batch λmax at the end over seeds and batches.
        sizes: the sample-size study: [{size, values, n_hvp}] (one seed), ``sizes_probe``: probe λmax.
        sweep: one row per cell: batch_size, base_lr, scaling, lr, seeds, diverged (per seed), reached,
            steps, epochs, and Interval-able lists of the measures and gaps (per seed; None where diverged).
        runs: one row per trained run measured (recipes and sweep cells): source, setting, seed,
            the measures and the gaps (what the rank correlations read).
        eos: one row per step size: lr, threshold, steps, sharpness, loss, plateau_ratio,
            first_reach, loss_increases, diverged, diverged_at, size.
        seconds: part -> total job seconds.
    """

    trajectories: dict[str, Any]
    warm_start: dict[str, Any]
    protocol: dict[str, dict[str, dict[str, Interval]]]
    protocol_sizes: dict[str, int]
    protocol_hvps: dict[str, Any]
    single_batch: dict[str, list]
    sizes: list
    sizes_probe: float | None
    sweep: list
    runs: list
    eos: list
    seconds: dict[str, float]


def _by_part(records: Records) -> dict[str, list[tuple[Cell, dict]]]:
    out: dict[str, list] = defaultdict(list)
    for unit, record in records.items():
        out[unit.part].append((unit, record["result"]))
    return out


def _trajectories(opt: list[tuple[Cell, dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for recipe in dict.fromkeys(c.setting for c, _ in opt):
        cells = [(c, r) for c, r in opt if c.setting == recipe]
        ok = [(c, r) for c, r in cells if not r["diverged"]]
        entry: dict[str, Any] = {"label": RECIPES[recipe].label, "seeds": [c.seed for c, _ in ok],
                                 "diverged": [c.seed for c, r in cells if r["diverged"]]}
        if ok:
            rows0 = ok[0][1]["trajectory"]
            mini = [(c, r) for c, r in ok if "minibatch_mean" in r["trajectory"][-1]]
            entry.update(steps=[r["step"] for r in rows0], lr=[r["lr"] for r in rows0],
                         threshold=[r["threshold"] for r in rows0])
            for key, name in (("lambda_max", "lambda_max"), ("trace", "trace"), ("train_loss", "train_loss"),
                              ("preconditioned_lambda_max", "preconditioned")):
                if key in rows0[-1]:
                    entry[name] = [[row.get(key) for row in r["trajectory"]] for _, r in ok]
            for key in ("minibatch_mean", "minibatch_stderr"):  # measured on the protocol seeds
                entry[key] = [[row.get(key) for row in r["trajectory"]] for _, r in mini]
            entry["minibatch_seeds"] = [c.seed for c, _ in mini]
        out[recipe] = entry
    return out


def _warm_start(opt: list[tuple[Cell, dict]], tol: float | None) -> dict[str, Any]:
    warm = [row["n_hvp"] for _, r in opt if not r["diverged"] for row in r["trajectory"] if row["warm"]]
    paired = [row for _, r in opt if not r["diverged"] for row in r["trajectory"] if "cold_n_hvp" in row]
    diffs = [abs(row["lambda_max"] - row["cold_lambda_max"]) / abs(row["cold_lambda_max"]) for row in paired]
    return {"warm": warm, "cold": [row["cold_n_hvp"] for row in paired],
            "warm_paired": [row["n_hvp"] for row in paired if row["warm"]],
            "cold_paired": [row["cold_n_hvp"] for row in paired if row["warm"]],
            "max_rel_diff": max(diffs) if diffs else None, "tol": tol}


def _protocol(opt: list[tuple[Cell, dict]]) -> tuple[dict, dict, dict, dict]:
    protocol: dict[str, dict] = {}
    hvps: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    sizes: dict[str, int] = {}
    single: dict[str, list] = {}
    for recipe in dict.fromkeys(c.setting for c, _ in opt):
        ok = [r for c, r in opt if c.setting == recipe and not r["diverged"] and r.get("protocol")]
        if not ok:
            continue
        protocol[recipe] = {}
        for sample in PROTOCOL_SAMPLES:
            protocol[recipe][sample] = {}
            for method in PROTOCOL_METHODS:
                values = [r["protocol"][sample][method]["value"] for r in ok]
                protocol[recipe][sample][method] = _iv(values)
                hvps[sample][method] += [r["protocol"][sample][method]["n_hvp"] for r in ok]
            sizes[sample] = ok[0]["protocol"][sample]["size"]
        batch_values = [v for r in ok for v in r["trajectory"][-1]["minibatch"]]
        single[recipe] = [min(batch_values), max(batch_values)]
    mean_hvps = {s: {m: float(np.mean(v)) for m, v in ms.items()} for s, ms in hvps.items()}
    return protocol, sizes, mean_hvps, single


def _run_row(source: str, cell: Cell, r: dict) -> dict[str, Any]:
    return {"source": source, "setting": cell.setting, "seed": cell.seed, **r["measures"], **r["generalisation"]}


def _sweep(cells: list[tuple[Cell, dict]]) -> list[dict[str, Any]]:
    rows = []
    for setting in dict.fromkeys(c.setting for c, _ in cells):
        results = [(c, r) for c, r in cells if c.setting == setting]
        r0 = results[0][1]
        row = {"setting": setting, "batch_size": r0["batch_size"], "base_lr": r0["base_lr"], "scaling": r0["scaling"],
               "lr": r0["lr"], "seeds": [c.seed for c, _ in results],
               "diverged": [bool(r["diverged"]) for _, r in results],
               "diverged_at": [r.get("diverged_at") for _, r in results],
               "reached": [bool(not r["diverged"] and r["reached_target"]) for _, r in results],
               "steps": [r.get("steps") for _, r in results], "epochs": [r.get("epochs") for _, r in results]}
        for key in MEASURES:
            row[key] = [None if r["diverged"] else r["measures"][key] for _, r in results]
        for key in GAPS + ("train_loss", "test_loss", "test_error"):
            row[key] = [None if r["diverged"] else r["generalisation"][key] for _, r in results]
        rows.append(row)
    return rows


def summarise_dynamics(arch: str, records: Records, cfg) -> DynamicsSummary:
    """The dynamics summary of ``arch`` from its per-cell records (``{Cell: record}``)."""
    parts = _by_part(records)
    opt, sweep = parts.get("opt", []), parts.get("sweep", [])
    protocol, sizes, hvps, single = _protocol(opt)
    runs = [_run_row("optimiser", c, r) for c, r in opt if not r["diverged"]]
    runs += [_run_row("sweep", c, r) for c, r in sweep if not r["diverged"]]
    size_rows, probe_top, probe_desc = [], None, ""
    for _, r in parts.get("sizes", []):
        size_rows, probe_top = r["sizes"], r["probe_lambda_max"]
    eos = [{"lr": r["lr"], "multiple": r["multiple"], "lambda0": r["lambda0"], "size": r["size"], **r["run"]}
           for _, r in sorted(parts.get("eos", []), key=lambda cr: cr[1]["lr"])]
    seconds: dict[str, float] = defaultdict(float)
    for unit, record in records.items():
        seconds[unit.part] += float(record.get("seconds", 0.0))
    for _, r in opt:
        if "probe_data" in r:
            probe_desc = r["probe_data"]["description"]
            break
    return DynamicsSummary(
        arch=arch, units=tuple(unit_name(u) for u in records), probe_data=probe_desc,
        trajectories=_trajectories(opt), warm_start=_warm_start(opt, getattr(cfg, "lanczos_tol", None)),
        protocol=protocol, protocol_sizes=sizes, protocol_hvps=hvps, single_batch=single,
        sizes=size_rows, sizes_probe=probe_top, sweep=_sweep(sweep), runs=runs, eos=eos, seconds=dict(seconds))
