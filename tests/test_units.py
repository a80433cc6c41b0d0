"""Units of work and their cache keys: a key changes with exactly what determines the unit."""

from __future__ import annotations

import pytest

from landscape_utils.study import units
from landscape_utils.study.registry import SECTIONS
from landscape_utils.study.settings import open_study

CFG = open_study("smoke").config


R = units.RunId


@pytest.mark.parametrize("unit, name", [(0, "s0"), (12, "s12"), ((R(0, 0), R(1, 1)), "s0-s1"), ((R(3, 3), R(10, 10)), "s3-s10"),
                                        ((R(0, 0), R(0, 1000)), "s0-i0d1000"), ((R(2, 2), R(1002, 2)), "s2-i1002d2")])
def test_unit_names_round_trip(unit, name):
    assert units.unit_name(unit) == name and units.parse_unit(name) == unit


@pytest.mark.parametrize("pair, kind", [((R(0, 0), R(1, 1)), "independent"), ((R(0, 0), R(0, 1000)), "same-init"),
                                        ((R(0, 0), R(1000, 0)), "same-data"), ((0, 1), "independent")])
def test_pair_kinds(pair, kind):
    assert units.pair_kind(pair) == kind


def test_a_pair_of_one_run_is_refused():
    with pytest.raises(ValueError, match="two different runs"):
        units.pair_kind((R(1, 1), 1))


@pytest.mark.parametrize("bad", ["0", "s", "sx", "s1-s2-s3", "s1-2", "", "i1d", "i1d2", "s1-i2"])
def test_bad_unit_names_are_refused(bad):
    with pytest.raises(ValueError, match="a unit is"):
        units.parse_unit(bad)


def test_units_per_section():
    assert units.section_units("curvature", CFG) == [0, 1]
    assert units.section_units("connectivity", CFG) == [(R(0, 0), R(1, 1)), (R(0, 0), R(0, 1000)), (R(0, 0), R(1000, 0))]
    assert units.study_runs(CFG) == [R(0, 0), R(0, 1000), R(1, 1), R(1000, 0)]


def test_a_job_cannot_read_a_setting_it_does_not_declare():
    view = units.SectionSettings(CFG, SECTIONS["flatness"])
    assert view.flatness_draws == CFG.flatness_draws and view.lr == CFG.lr  # declared, and training's
    with pytest.raises(AttributeError, match="reads setting 'lanczos_tol', which its registry entry does not declare"):
        view.lanczos_tol


@pytest.mark.parametrize("section, change, changes_key", [
    ("flatness", {"flatness_draws": 8}, True),          # its own setting
    ("flatness", {"slice_points": 11}, False),          # another section's setting
    ("flatness", {"trace_probes": 13}, True),           # upstream (curvature) setting: the trace it reads
    ("curvature", {"flatness_draws": 8}, False),
    ("curvature", {"lr": 0.02}, True),                  # training changes the run
    ("slices", {"surface_points": 7}, True),
    ("connectivity", {"path_points": 11}, True),
    ("connectivity", {"slice_points": 11}, False),
    ("training", {"seeds": [0, 1, 2]}, False),          # another seed does not change seed 0's unit
])
def test_unit_key_depends_on_exactly_what_determines_it(section, change, changes_key):
    unit = units.section_units(section, CFG)[0]
    other = open_study("smoke", change).config
    assert (units.unit_key(section, "cnn", unit, other) != units.unit_key(section, "cnn", unit, CFG)) == changes_key


def test_unit_key_differs_by_architecture_and_unit():
    keys = {units.unit_key("curvature", a, s, CFG) for a in ("mlp", "cnn") for s in (0, 1)}
    assert len(keys) == 4


def test_unit_key_follows_the_probe_code(monkeypatch):
    before = units.unit_key("curvature", "cnn", 0, CFG)
    monkeypatch.setattr(units, "probes_source_digest", lambda section: "edited")
    assert units.unit_key("curvature", "cnn", 0, CFG) != before
