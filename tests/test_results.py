"""Results files: plain JSON, one key per notebook, safe under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest
import torch

from landscape_utils.results import SECTIONS, load_results, save_results, to_plain


@pytest.mark.parametrize("value, plain", [
    (np.float32(1.5), 1.5),
    (np.arange(3), [0, 1, 2]),
    (torch.tensor([[1.0, 2.0]]), [[1.0, 2.0]]),
    ({"a": (np.int64(2), [np.float64(0.5)])}, {"a": [2, [0.5]]}),
])
def test_to_plain(value, plain):
    assert to_plain(value) == plain
    json.dumps(to_plain(value))


@pytest.mark.parametrize("bad", [float("nan"), [1.0, float("inf")], {"x": np.array([np.nan])}])
def test_non_finite_numbers_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="non-finite"):
        save_results("p", "cnn", "curvature", {"value": bad}, path=tmp_path / "cnn.json")
    assert not (tmp_path / "cnn.json").exists()


def test_sections_are_kept_side_by_side(tmp_path):
    path = tmp_path / "cnn.json"
    save_results("p", "cnn", "training", {"acc": 0.9}, path=path)
    save_results("p", "cnn", "curvature", {"lmax": 3.0}, path=path)
    save_results("p", "cnn", "training", {"acc": 0.95}, path=path)
    assert load_results("p", "cnn", path=path) == {"training": {"acc": 0.95}, "curvature": {"lmax": 3.0}}


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: training, curvature"):
        save_results("p", "cnn", "curvatur", {}, path=tmp_path / "x.json")


def _writer(args):
    path, section = args
    for i in range(20):
        save_results("p", "cnn", section, {"i": i}, path=path)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "cnn.json"
    with mp.get_context("fork").Pool(len(SECTIONS)) as pool:
        pool.map(_writer, [(path, s) for s in SECTIONS])
    assert load_results("p", "cnn", path=path) == {s: {"i": 19} for s in SECTIONS}
