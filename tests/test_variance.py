"""Estimator noise against the seed: named quantities read as the summaries read them, the
decomposition's ratios and verdicts, the report's table and estimand, and the repeats on a trained
smoke MLP (fresh random vectors share the probe set; fresh probe sets do not)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from landscape_utils.report.budget import estimand_text, variance_table
from landscape_utils.study import summaries as S
from landscape_utils.study.units import RunId
from landscape_utils.study.variance import VERDICTS, between_seed_values, decomposition, quantities_of
from tests.conftest import SHARED_DATA

# ----------------------------------------------------------------- per-seed results made by hand


def _curv(seed: int) -> dict:
    return {"seed": seed, "probe_data": {"description": "S"}, "lambda_max": 4.0 + seed, "lambda_min": -0.1 * seed,
            "trace": {"estimate": 60.0 + 3 * seed, "stderr": 1.0}, "trace_hutchinson": {"estimate": 61.0},
            "power": {"eigenvalue": 4.0, "n_hvp": 9}, "power_relative_error": 0.01, "top": {"n_hvp": 19}}


def _noise(kind: str, seed: int) -> dict:
    return {"sigmas": [0.01, 0.1], "mean": [1e-4 * (seed + 1), 2e-3 * (seed + 1)], "mean_abs": [5e-3, 7e-2 + seed],
            "n_evaluations": 16, "antithetic": True}


def _flat(seed: int) -> dict:
    out = {"seed": seed, "probe_data": {"description": "S"}, **{k: _noise(k, seed) for k in ("isotropic", "filter")}}
    out["isotropic"]["prediction"] = {"prediction": [1e-4, 1e-2]}
    out["isotropic"]["second_order"] = {"sigmas": [0.01, 0.1], "ratio": [1.1 + seed, 1.5]}
    return out


def _slice(local: list[float], fitted: list[float], ends: tuple[float, float]) -> dict:
    losses = [[ends[0], 0.0, ends[1]] for _ in local]
    return {"train": {"local_curvatures": local, "fitted_curvatures": fitted, "losses": losses, "loss": 0.0,
                      "fit_radius": 0.0125}}


def _slices(seed: int) -> dict:
    return {"seed": seed, "probe_data": {"description": "S"},
            "kinds": {"raw": _slice([2.0 + seed], [3.0], (1.0, 3.0)),
                      "filter-normalised": _slice([0.1, 0.3 + seed], [0.2, 0.4], (2.0, 2.0 + seed))}}


def _path(loss: float, error: float) -> dict:
    return {split: {"loss_barrier": {"barrier": loss * k}, "error_barrier": {"barrier": error * k}}
            for split, k in (("train", 1.0), ("test", 2.0))}


SEEDS = (0, 1, 2)
PAIRS = {(RunId(0, 0), RunId(1, 1)): (0.3, 0.02), (RunId(2, 2), RunId(3, 3)): (0.5, 0.05)}


@pytest.fixture(scope="module")
def summaries() -> dict:
    per_seed = {"curvature": _curv, "flatness": _flat, "slices": _slices}
    out = {sec: S.summarise(sec, "mlp", {s: {"result": f(s)} for s in SEEDS}, None) for sec, f in per_seed.items()}
    conn = {pair: {"result": {"kind": "independent", "runs": [f"s{pair[0].init}", f"s{pair[1].init}"],
                              "paths": {"straight": _path(*v)}, "alignment": None, "probe_data": {"description": "S"}}}
            for pair, v in PAIRS.items()}
    out["connectivity"] = S.summarise("connectivity", "mlp", conn, None)
    return out


READS = [  # quantity -> the summary Interval the report shows for it
    ("λmax", lambda s: s["curvature"].lambda_max),
    ("λmin", lambda s: s["curvature"].lambda_min),
    ("tr(H)", lambda s: s["curvature"].trace),
    ("E[ΔL] isotropic σ=0.01", lambda s: s["flatness"].mean_change["isotropic"][0]),
    ("E[ΔL] filter σ=0.1", lambda s: s["flatness"].mean_change["filter"][1]),
    ("E|ΔL| filter σ=0.1", lambda s: s["flatness"].mean_abs_change["filter"][1]),
    ("E[ΔL] / ½σ²tr(H), isotropic σ=0.01", lambda s: s["flatness"].second_order_ratio[0]),
    ("slice curvature vᵀHv, filter-normalised", lambda s: s["slices"].local_curvature["filter-normalised"]),
    ("slice curvature (fitted), filter-normalised", lambda s: s["slices"].fitted_curvature["filter-normalised"]),
    ("slice curvature vᵀHv, raw", lambda s: s["slices"].local_curvature["raw"]),
    ("slice asymmetry, raw", lambda s: s["slices"].asymmetry["raw"]),
    ("slice asymmetry, filter-normalised", lambda s: s["slices"].asymmetry["filter-normalised"]),
    ("loss barrier (train), straight", lambda s: s["connectivity"].barrier("independent", "straight", "loss_train")),
    ("error barrier (test), straight", lambda s: s["connectivity"].barrier("independent", "straight", "error_test")),
]


@pytest.mark.parametrize("name,read", READS, ids=[r[0] for r in READS])
def test_between_seed_values_are_what_the_summaries_report(summaries, name, read):
    between = between_seed_values(summaries)
    assert sorted(between[name]) == pytest.approx(sorted(read(summaries).values))


@pytest.mark.parametrize("name,expected", [
    ("λmax", 5.0), ("tr(H)", 63.0), ("E[ΔL] filter σ=0.01", 2e-4),
    ("slice curvature vᵀHv, filter-normalised", (0.1 + 1.3) / 2),  # the mean over a seed's directions
    ("slice asymmetry, raw", 0.5), ("slice asymmetry, filter-normalised", 0.2),
])
def test_quantities_of_one_seed(name, expected):
    assert quantities_of(_curv(1), _flat(1), _slices(1))[name] == pytest.approx(expected)


def test_quantities_of_leaves_out_missing_sections():
    q = quantities_of(curv=_curv(0))
    assert set(q) == {"λmax", "λmin", "tr(H)"}


# ----------------------------------------------------------------- the decomposition

BETWEEN = [0.0, 2.0, 4.0]  # s.d. 2


@pytest.mark.parametrize("rv,probe,rule,ratios,verdict_has,verdict_lacks", [
    (0.1, 0.2, 0.25, (0.05, 0.1), [VERDICTS["ok"]], ["not negligible"]),
    (0.5, 0.5, 0.25, (0.25, 0.25), [VERDICTS["ok"]], ["not negligible"]),          # the rule's boundary holds
    (1.0, 0.2, 0.25, (0.5, 0.1), ["random-vector noise not negligible"], ["probe-set"]),
    (0.1, 0.6, 0.25, (0.05, 0.3), ["probe-set noise not negligible", "more seeds cannot remove"], ["random-vector"]),
    (1.0, 0.6, 0.25, (0.5, 0.3), ["probe-set noise not", "random-vector noise not"], [VERDICTS["ok"]]),
    (1.0, 0.6, 0.5, (0.5, 0.3), [VERDICTS["ok"]], ["not negligible"]),              # a looser rule
    (0.1, None, 0.25, (0.05, None), [VERDICTS["ok"]], ["not negligible"]),         # probe set not measured
])
def test_decomposition_ratios_and_verdicts(rv, probe, rule, ratios, verdict_has, verdict_lacks):
    sources = {"random vectors": {"sd": {"q": rv}}, "probe set": {"sd": {} if probe is None else {"q": probe}}}
    (row,) = decomposition({"sources": sources}, {"q": BETWEEN}, rule=rule)
    assert row["between_sd"] == pytest.approx(2.0) and row["n"] == 3
    for src, want in zip(("random vectors", "probe set"), ratios):
        assert row["ratio"][src] == (None if want is None else pytest.approx(want))
        assert row["passes"][src] == (None if want is None else want <= rule)
    assert row["seed_share"] == pytest.approx(1 - (rv / 2.0) ** 2)
    assert row["seed_sd"] == pytest.approx((4.0 - rv ** 2) ** 0.5)  # the spread left to the seed
    assert all(s in row["verdict"] for s in verdict_has) and not any(s in row["verdict"] for s in verdict_lacks)


@pytest.mark.parametrize("between", [[1.0], [3.0, 3.0], []])
def test_decomposition_without_a_between_seed_spread(between):
    (row,) = decomposition({"sources": {"random vectors": {"sd": {"q": 0.1}}}}, {"q": between})
    assert row["ratio"]["random vectors"] is None and row["passes"]["random vectors"] is None
    assert row["verdict"] == VERDICTS["no spread"]


def test_table_and_estimand_name_what_fails_and_nothing_else():
    from landscape_utils.study.settings import open_study

    cfg = open_study("smoke").config
    sources = {"random vectors": {"sd": {"λmax": 0.01, "tr(H)": 1.5}},
               "probe set": {"sd": {"λmax": 0.9, "tr(H)": 0.1}}}
    rows = decomposition({"sources": sources}, {"λmax": BETWEEN, "tr(H)": BETWEEN})
    table = variance_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "0.45 ✗" in table and "0.05 ✓" in table
    text = estimand_text(rows, cfg)
    assert f"{cfg.probe_train_size:,} training examples" in text and f"probe_seed = {cfg.probe_seed}" in text
    probe_part = text.split("Probe-set noise exceeds the rule for ")[1].split(":")[0]
    rv_part = text.split("Random-vector noise exceeds the rule for ")[1].split(":")[0]
    assert "λmax (0.45)" in probe_part and "tr(H)" not in probe_part
    assert "tr(H) (0.75)" in rv_part and "λmax" not in rv_part
    ok = decomposition({"sources": {"random vectors": {"sd": {"λmax": 0.01}}, "probe set": {"sd": {"λmax": 0.01}}}},
                       {"λmax": BETWEEN})
    assert "exceeds" not in estimand_text({"mlp": ok}, cfg) and "MLP" in estimand_text({"mlp": ok}, cfg)


# ----------------------------------------------------------------- repeats on a trained smoke MLP


@pytest.fixture(scope="module")
def smoke_noise(tmp_path_factory):
    if not (SHARED_DATA / "MNIST" / "raw").exists() and not (SHARED_DATA / "raw").exists():
        pytest.skip(f"no MNIST under {SHARED_DATA}")
    from landscape_utils.study.settings import open_study
    from landscape_utils.study.variance import estimator_noise

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCAPE_RUNS", str(tmp_path_factory.mktemp("runs")))
        mp.setenv("LANDSCAPE_DATA", str(SHARED_DATA))
        cfg = dataclasses.replace(open_study("smoke").config, variance_repeats=2)
        yield cfg, estimator_noise("mlp", cfg)


def test_estimator_noise_structure(smoke_noise):
    cfg, noise = smoke_noise
    json.dumps(noise)  # plain data
    assert noise["seed"] == cfg.seeds[0] and noise["pair"] == "s0-s1" and noise["settings"]["repeats"] == 2
    assert set(noise["sources"]) == set(noise["seconds"]) == {"random vectors", "probe set"}
    assert noise["provenance"]["schema_version"]
    rv, ps = noise["sources"]["random vectors"], noise["sources"]["probe set"]
    assert "loss barrier (train), straight" in ps["values"] and not any("barrier" in k for k in rv["values"])
    assert set(ps["values"]) - set(rv["values"]) == {k for k in ps["values"] if "barrier" in k}
    for src in (rv, ps):
        for k, v in src["values"].items():
            assert len(v) == 2 and np.all(np.isfinite(v))
            assert src["sd"][k] == pytest.approx(float(np.std(v, ddof=1)))


def test_random_vector_repeats_share_the_probe_set_and_probe_set_repeats_do_not(smoke_noise):
    from landscape_utils.study.jobs import probe_data

    cfg, noise = smoke_noise
    study = probe_data(cfg).to_dict()
    rv = noise["sources"]["random vectors"]["probe_data"]
    ps = noise["sources"]["probe set"]["probe_data"]
    assert all(p == study for p in rv)
    for split in ("train", "test"):
        hashes = [p[split]["indices_sha256"] for p in ps]
        assert len(set(hashes + [study[split]["indices_sha256"]])) == 3
        assert all(p[split]["size"] == study[split]["size"] for p in ps)


def test_lambda_max_moves_with_the_probe_set_only(smoke_noise):
    from landscape_utils.study import jobs
    from landscape_utils.study.training import train_or_load
    from landscape_utils.study.variance import _repeat_config

    cfg, noise = smoke_noise
    tol = cfg.lanczos_tol
    rv = noise["sources"]["random vectors"]["values"]["λmax"]
    ps = noise["sources"]["probe set"]["values"]["λmax"]
    assert abs(rv[0] - rv[1]) <= tol * abs(rv[0])        # other start vectors, same S: the same eigenvalue
    assert abs(ps[0] - ps[1]) > 100 * tol * abs(ps[0])   # another S: another Hessian
    c = _repeat_config(cfg, "probe set", 0)              # the same seeds again: the same number
    model = train_or_load(cfg.train_config("mlp", cfg.seeds[0]), progress=False).model()  # the fixture's runs
    again = jobs.curvature_of(model, jobs.probe_data(c), c)["lambda_max"]
    assert again == pytest.approx(ps[0], rel=tol)


def test_noise_kinds_match_the_jobs():
    from landscape_utils.study import jobs, variance
    assert variance.NOISE_KINDS == jobs.NOISE_KINDS


def _row(name, between, rv, s, rule=0.25):
    ratio = {"random vectors": rv / between, "probe set": s / between}
    return {"quantity": name, "between_sd": between, "n": 10, "rule": rule, "ratio": ratio,
            "passes": {k: v <= rule for k, v in ratio.items()}, "estimator_sd": {}, "seed_share": None, "verdict": ""}


def test_compact_table_shows_headline_quantities_and_the_budget_growth():
    from landscape_utils.report import budget
    names = ["E[ΔL] filter σ=0.01", "E[ΔL] filter σ=0.1", "λmax", "slice asymmetry, raw", "tr(H)"]
    assert budget.headline_quantities(names) == ["λmax", "tr(H)", "E[ΔL] filter σ=0.1"]
    rows = {"mlp": [_row("λmax", 1.0, 0.1, 0.5), _row("tr(H)", 1.0, 0.5, 0.1), _row("E[ΔL] filter σ=0.1", 1.0, 0.25, 0.1)],
            "cnn": [_row("λmax", 1.0, 0.05, 0.1), _row("tr(H)", 2.0, 0.5, 0.1)]}
    assert budget.needed_multiplier(rows["mlp"][1]) == pytest.approx(4.0)   # ratio 0.5 against 0.25: 4x the probes
    assert budget.needed_multiplier(rows["mlp"][2]) == 1.0                  # exactly at the rule
    table = budget.compact_table(rows)
    lines = table.splitlines()
    assert "| λmax | 0.10 / 0.50✗ | 0.05 / 0.10 | within the rule |" in lines
    assert "| tr(H) | 0.50✗ / 0.10 | 0.25 / 0.05 | ×4 |" in lines
    assert "| E[ΔL] filter σ=0.1 | 0.25 / 0.10 | — | within the rule |" in lines
