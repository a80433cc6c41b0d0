"""The connectivity verdicts: 'different basins' judged three ways, with the same-init control."""

from __future__ import annotations

import pytest

from landscape_utils.report import comparison as C
from landscape_utils.study import summaries as S
from landscape_utils.study.units import RunId as R


def _path(loss: float, error: float) -> dict:
    return {"loss_barrier": {"barrier": loss}, "error_barrier": {"barrier": error}}


def _records(errors: dict[tuple[str, str], list[float]]) -> dict:
    """Five disjoint pairs per kind; errors[(kind, path)] lists each pair's test (and train) error barrier."""
    out = {}
    for (kind, path), values in errors.items():
        for k, e in enumerate(values):
            a, b = ((R(2 * k, 2 * k), R(2 * k + 1, 2 * k + 1)) if kind == "independent" else
                    (R(k, k), R(k, k + 1000)) if kind == "same-init" else (R(k, k), R(k + 1000, k)))
            rec = out.setdefault((a, b), {"result": {"runs": [f"{a}", f"{b}"], "kind": kind, "probe_data": {"description": "S"},
                                                     "paths": {}, "alignment": None}})
            rec["result"]["paths"][path] = {"train": _path(10 * e, e), "test": _path(10 * e, e)}
    return out


HIGH, LOW, MIXED = [0.10, 0.12, 0.11, 0.09, 0.10], [0.001, 0.0, 0.002, 0.0, 0.001], [0.0, 0.10, 0.0, 0.15, 0.01]


@pytest.mark.parametrize("straight, aligned, curve, verdicts, claim", [
    (HIGH, HIGH, HIGH, ("barrier", "barrier", "barrier"), "holds"),
    (HIGH, LOW, HIGH, ("barrier", "connected", "barrier"), "contradicted"),     # alignment connects them
    (HIGH, HIGH, LOW, ("barrier", "barrier", "connected"), "contradicted"),     # a curve connects them
    (HIGH, MIXED, HIGH, ("barrier", "not resolved", "barrier"), "not resolved"),
    (LOW, LOW, LOW, ("connected", "connected", "connected"), "contradicted"),
])
def test_different_basins_judged_three_ways(straight, aligned, curve, verdicts, claim):
    records = _records({("independent", "straight"): straight, ("independent", "aligned"): aligned,
                        ("independent", "curve"): curve, ("same-init", "straight"): LOW})
    summary = S.summarise_connectivity("cnn", records, None)
    rows = C.basin_rows({"cnn": summary})
    got = {r["path"]: r["verdict"] for r in rows if r["kind"] == "independent"}
    assert (got["straight"], got["aligned"], got["curve"]) == verdicts
    assert C.basin_verdict(rows, "cnn") == claim
    control = [r for r in rows if r["kind"] == "same-init"]
    assert len(control) == 1 and control[0]["verdict"] == "connected"
    unresolved = [r for r in rows if r["verdict"] == "not resolved"]
    assert all(r["pairs needed"] is None or r["pairs needed"] > 5 for r in unresolved)
    text = C.basin_conclusion({"cnn": summary})
    assert f"\"different basins\" {C.VERDICT_TEXT.get(claim, claim)}" in text


def test_missing_alignment_is_shown_as_not_available():
    records = _records({("independent", "straight"): HIGH, ("same-init", "straight"): LOW})
    rows = C.basin_rows({"mlp": S.summarise_connectivity("mlp", records, None)})
    assert [r["verdict"] for r in rows if r["path"] in ("aligned", "curve")] == ["not available", "not available"]


def test_alignment_effects_are_paired_over_the_same_pairs():
    records = _records({("independent", "straight"): HIGH, ("independent", "aligned"): LOW})
    eff = C.alignment_effects({"cnn": S.summarise_connectivity("cnn", records, None)}, "error_test")["cnn"]
    assert set(eff) == {"aligned"} and eff["aligned"].n == 5
    assert eff["aligned"].mean == pytest.approx(sum(HIGH) / 5 - sum(LOW) / 5)
    assert eff["aligned"].interval.low > 0  # alignment lowers every pair's barrier here
