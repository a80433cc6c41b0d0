"""Typed section summaries: built from per-unit records, saved with their type, read back equal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landscape_utils.study import summaries as S
from landscape_utils.study.stats import JACKKNIFE, pair_interval

PROBE = {"description": "256 training examples (seed 0); 256 test examples (seed 0)"}


def _path(barrier: float, error: float) -> dict:
    return {"loss_barrier": {"barrier": barrier}, "error_barrier": {"barrier": error}}


def _pair(runs, kind, straight, aligned=None):
    paths = {"straight": {"train": _path(*straight), "test": _path(straight[0] + 0.1, straight[1] + 0.01)}}
    if aligned is not None:
        paths["aligned"] = {"train": _path(*aligned), "test": _path(*aligned)}
    return {"result": {"runs": runs, "kind": kind, "probe_data": PROBE, "paths": paths,
                       "alignment": {"max_logit_change": 1e-6} if aligned is not None else None}}


def connectivity_records():
    from landscape_utils.study.units import RunId as R
    return {(R(0, 0), R(1, 1)): _pair(["s0", "s1"], "independent", (0.3, 0.02), (0.05, 0.0)),
            (R(2, 2), R(3, 3)): _pair(["s2", "s3"], "independent", (0.5, 0.04), (0.07, 0.01)),
            (R(4, 4), R(5, 5)): _pair(["s4", "s5"], "independent", (0.1, 0.00), (0.0, 0.0)),
            (R(0, 0), R(0, 1000)): _pair(["s0", "i0d1000"], "same-init", (0.0, 0.0), (0.0, 0.0)),
            (R(1, 1), R(1, 1001)): _pair(["s1", "i1d1001"], "same-init", (0.01, 0.0), (0.01, 0.0))}


def slice_records():
    def one(seed, curv, losses):
        kind = {"train": {"local_curvatures": [c + 0.5 for c in curv], "fitted_curvatures": curv, "fit_radius": 0.05,
                          "losses": losses, "loss": 1.0}}
        return {"result": {"seed": seed, "probe_data": PROBE, "kinds": {"raw": kind, "filter-normalised": kind}}}
    return {0: one(0, [1.0, 3.0], [[1.2, 1.0, 1.2]]), 1: one(1, [2.0, 2.0], [[1.0, 1.0, 1.4]])}


def test_connectivity_summary_holds_intervals_over_disjoint_pairs_per_kind_and_path():
    summary = S.summarise_connectivity("cnn", connectivity_records(), None)
    assert summary.units == ("s0-s1", "s2-s3", "s4-s5", "s0-i0d1000", "s1-i1d1001")
    assert summary.kinds == ("independent", "same-init") and summary.pairs["same-init"] == ("s0-i0d1000", "s1-i1d1001")
    assert summary.paths["independent"] == ("straight", "aligned") and summary.alignment == "weight matching"
    # Pairs of one kind share no run: the ordinary interval over pairs, kept at or above 0.
    iv = summary.barrier("independent", "straight")
    assert iv == pair_interval({("s0", "s1"): 0.3, ("s2", "s3"): 0.5, ("s4", "s5"): 0.1}, bounds=(0.0, None))
    assert not iv.method.startswith(JACKKNIFE) and iv.n == 3 and iv.low >= 0 and "3 disjoint pairs" in iv.note
    assert summary.barrier("independent", "aligned", "error_train").values == (0.0, 0.01, 0.0)
    assert summary.barrier("same-init", "straight", "loss_test").values == pytest.approx((0.1, 0.11))
    assert summary.pair_values["independent/straight"]["loss_train"] == {"s0-s1": 0.3, "s2-s3": 0.5, "s4-s5": 0.1}
    assert summary.probe_data == PROBE["description"] and summary.max_logit_change == 1e-6
    with pytest.raises(KeyError):
        summary.barrier("same-data", "straight")


def test_slices_summary_curvature_and_asymmetry():
    summary = S.summarise_slices("mlp", slice_records(), None)
    assert summary.kinds == ("raw", "filter-normalised")
    assert summary.fitted_curvature["raw"].values == (2.0, 2.0) and summary.local_curvature["raw"].values == (2.5, 2.5)
    assert summary.fit_radius == 0.05
    assert summary.asymmetry["raw"].low >= -1 and summary.asymmetry["raw"].high <= 1  # bounded to [-1, 1]
    # seed 0 is symmetric (0), seed 1 rises to +α only (+1)
    assert summary.asymmetry["raw"].values == (0.0, 1.0)


@pytest.mark.parametrize("build, section", [(lambda: S.summarise_connectivity("cnn", connectivity_records(), None), "connectivity"),
                                            (lambda: S.summarise_slices("mlp", slice_records(), None), "slices")])
def test_summaries_round_trip_through_their_file(tmp_path, build, section):
    summary = build()
    path = S.save_summary(section, summary, tmp_path)
    record = json.loads(path.read_text())
    assert record["type"].endswith(type(summary).__qualname__) and record["provenance"]["schema_version"] == 1
    loaded = S.load_summary(section, tmp_path, summary.arch)
    assert type(loaded) is type(summary) and loaded == summary


def test_load_summary_explains_what_is_missing_or_stale(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the section's notebook first"):
        S.load_summary("slices", tmp_path, "mlp")
    path = S.save_summary("slices", S.summarise_slices("mlp", slice_records(), None), tmp_path)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "schema_version": 0}))
    with pytest.raises(ValueError, match="schema version 0"):
        S.load_summary("slices", tmp_path, "mlp")


@pytest.mark.parametrize("losses, expected", [([[2.0, 1.0, 2.0]], 0.0), ([[1.0, 1.0, 3.0]], 1.0),
                                              ([[3.0, 1.0, 1.0]], -1.0), ([[1.0, 1.0, 1.0]], 0.0)])
def test_slice_asymmetry(losses, expected):
    assert np.allclose(S.slice_asymmetry({"losses": losses, "loss": 1.0}), [expected])
