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


def connectivity_records():
    return {(0, 1): {"result": {"seeds": [0, 1], "probe_data": PROBE, "train": _path(0.3, 0.02), "test": _path(0.4, 0.03)}},
            (0, 2): {"result": {"seeds": [0, 2], "probe_data": PROBE, "train": _path(0.5, 0.04), "test": _path(0.6, 0.05)}},
            (1, 2): {"result": {"seeds": [1, 2], "probe_data": PROBE, "train": _path(0.1, 0.00), "test": _path(0.2, 0.01)}}}


def slice_records():
    def one(seed, curv, losses):
        kind = {"train": {"local_curvatures": [c + 0.5 for c in curv], "fitted_curvatures": curv, "fit_radius": 0.05,
                          "losses": losses, "loss": 1.0}}
        return {"result": {"seed": seed, "probe_data": PROBE, "kinds": {"raw": kind, "filter-normalised": kind}}}
    return {0: one(0, [1.0, 3.0], [[1.2, 1.0, 1.2]]), 1: one(1, [2.0, 2.0], [[1.0, 1.0, 1.4]])}


def test_connectivity_summary_holds_intervals_over_pairs():
    summary = S.summarise_connectivity("cnn", connectivity_records(), None)
    assert summary.units == ("s0-s1", "s0-s2", "s1-s2") and summary.pairs == ((0, 1), (0, 2), (1, 2))
    # Pairs share runs: a jackknife over seeds, kept at or above 0 (barriers cannot be negative).
    assert summary.loss_barrier_train == pair_interval({(0, 1): 0.3, (0, 2): 0.5, (1, 2): 0.1}, bounds=(0.0, None))
    assert summary.loss_barrier_train.method.startswith(JACKKNIFE) and summary.loss_barrier_train.low >= 0
    assert summary.error_barrier_test.values == (0.03, 0.05, 0.01)
    assert summary.probe_data == PROBE["description"]


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
