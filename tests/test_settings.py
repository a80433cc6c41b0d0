"""Study settings: profiles list only differences; bad settings fail before any work; every
override gives a study folder of its own."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from landscape_utils.study import settings as S
from landscape_utils.study import units
from landscape_utils.study.paths import PROFILES_DIR
from landscape_utils.study.registry import check_arch
from landscape_utils.study.settings import StudyConfig, load_study, open_study


def test_full_profile_is_the_defaults():
    assert load_study("full") == StudyConfig()
    cfg = StudyConfig()
    assert cfg.epochs == 3 and cfg.train_size is None and len(cfg.seeds) == 10 and cfg.pairs_per_kind == 5


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_profile_files_list_only_real_differences(name):
    values = tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())
    defaults = StudyConfig().to_dict()
    for key, value in values.items():
        assert value != defaults[key], f"{name}.toml repeats the default of {key}"


def test_smoke_is_small_but_exercises_pairs():
    smoke = load_study("smoke")
    assert smoke.max_steps <= 100 and smoke.probe_train_size <= 512
    kinds = [units.pair_kind(p) for p in smoke.connectivity_pairs]
    assert sorted(kinds) == ["independent", "same-data", "same-init"]


def test_overrides_apply_on_top_of_the_profile():
    cfg = load_study("smoke", {"seeds": [3, 4, 5], "lr": 0.02})
    assert cfg.seeds == (3, 4, 5) and cfg.lr == 0.02 and cfg.max_steps == load_study("smoke").max_steps
    assert [tuple(map(units.run_name, p)) for p in cfg.connectivity_pairs] == [
        ("s3", "s4"), ("s3", "i3d1003"), ("s3", "i1003d3")]
    # pairs_per_kind is an upper bound: one seed has no independent pair, still its controls
    one = load_study("full", {"seeds": [7]}).connectivity_pairs
    assert [units.pair_kind(p) for p in one] == ["same-init", "same-data"]
    tc = cfg.train_config("mlp", 4)
    assert (tc.arch, tc.init_seed, tc.data_seed, tc.lr) == ("mlp", 4, 4, 0.02)


@pytest.mark.parametrize("profile, overrides, message", [
    ("huge", {}, "unknown profile 'huge'; valid: full, large, smoke"),
    ("full", {"sigma": 1}, r"unknown setting\(s\) \['sigma'\]"),
    ("full", {"seeds": []}, "seeds must be a non-empty list"),
    ("full", {"seeds": [1, 1]}, "seeds must be distinct"),
    ("full", {"epochs": "3"}, "epochs must be int"),
    ("full", {"lr": -1.0}, "lr must be a positive finite number"),
    ("full", {"slice_points": 20}, "slice_points must be odd"),
    ("full", {"probe_test_size": 20000}, r"probe_test_size must be in \[1, 10000\]"),
    ("full", {"flatness_draws": 1}, "flatness_draws must be even and at least 4"),
    ("full", {"flatness_draws": 7}, "flatness_draws must be even and at least 4"),
    ("full", {"isotropic_sigmas": [0.1, -0.1]}, "isotropic_sigmas must all be positive"),
    ("full", {"lanczos_tol": 0.0}, "lanczos_tol must be a positive finite number"),
    ("smoke", {"pairs_per_kind": 0}, "pairs_per_kind must be at least 1"),
    ("smoke", {"control_seed_offset": 1}, "control_seed_offset must exceed the spread of the seeds"),
    ("smoke", {"curve_steps": 0}, "curve_steps must be at least 1"),
    ("smoke", {"curve_lr": 0.0}, "curve_lr must be a positive finite number"),
])
def test_bad_settings_are_named(profile, overrides, message):
    with pytest.raises(ValueError, match=message):
        load_study(profile, overrides)


def test_every_field_is_checked_for_type():
    for field in dataclasses.fields(StudyConfig):
        with pytest.raises(ValueError, match=field.name):
            StudyConfig(**{field.name: "not a number"})


@pytest.mark.parametrize("arch, ok", [("mlp", True), ("rescnn", True), ("vit", False), (3, False)])
def test_check_arch(arch, ok):
    if ok:
        assert check_arch(arch) == arch
    else:
        with pytest.raises(ValueError, match="valid: mlp, cnn, rescnn"):
            check_arch(arch)


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_OUTPUTS", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("profile, overrides, name", [
    ("full", {}, "full"),
    ("smoke", {}, "smoke"),
    ("full", {"lr": 0.01}, "full"),             # equal to the profile's value: no variant
    ("smoke", {"epochs": 1}, "smoke"),
])
def test_the_profile_as_written_keeps_its_name(outputs, profile, overrides, name):
    study = open_study(profile, overrides)
    assert study.name == name and study.dir == outputs / name and study.overrides == {}


def test_an_override_gives_a_folder_of_its_own(outputs):
    a, b = open_study("full", {"lr": 0.02}), open_study("full", {"lr": 0.03})
    assert a.name.startswith("full-") and a.name != b.name and a.dir.parent == outputs
    assert a.overrides == {"lr": 0.02} and a.differences() == {"lr": 0.02}
    # The same study however it is spelled: int for a float, list for a tuple, key order.
    assert open_study("full", {"lr": 0.02, "momentum": 0.9}).name == a.name
    assert open_study("full", {"seeds": [0, 1]}).name == open_study("full", {"seeds": (0, 1)}).name
    assert open_study("full", {"lr": 1}).name == open_study("full", {"lr": 1.0}).name


def test_differences_are_against_the_study_defaults(outputs):
    smoke = open_study("smoke", {"lr": 0.02})
    diff = smoke.differences()
    assert diff["lr"] == 0.02 and diff["max_steps"] == 40 and "momentum" not in diff
    record = smoke.record()
    assert record["profile"] == "smoke" and record["overrides"] == {"lr": 0.02} and record["differs_from_defaults"] == diff


def test_settings_file_round_trips_and_variants_are_listed(outputs):
    full, variant = open_study("full"), open_study("smoke", {"seeds": [4, 5]})
    for study in (full, variant):
        S.write_settings(study)
    assert S.study_from_dir(variant.dir) == variant
    assert [v.name for v in S.list_variants()] == [variant.name]
    mtime = (variant.dir / "settings.json").stat().st_mtime_ns
    S.write_settings(variant)  # unchanged: the file is left alone
    assert (variant.dir / "settings.json").stat().st_mtime_ns == mtime


def test_a_notebook_run_by_hand_writes_under_lab(outputs):
    study, out = S.notebook_settings("cnn", "full", {}, "")
    assert out == outputs / "lab" / "full" and study.name == "full"
    _, out = S.notebook_settings("cnn", "smoke", {"lr": 0.5}, "")
    assert out.parent == outputs / "lab" and out.name.startswith("smoke-")
    _, out = S.notebook_settings("cnn", "full", {}, str(outputs / "full"))
    assert out == outputs / "full"


@pytest.mark.parametrize("args, message", [
    (("vit", "full", {}, ""), "unknown architecture 'vit'"),
    (("cnn", 3, {}, ""), "profile must be a string"),
    (("cnn", "full", [], ""), "overrides must be a dict"),
    (("cnn", "full", {}, None), "study_dir must be a folder name"),
    (("cnn", "full", {"lr": "fast"}, ""), "lr must be float"),
])
def test_notebook_parameters_are_checked(outputs, args, message):
    with pytest.raises(ValueError, match=message):
        S.notebook_settings(*args)


@pytest.mark.parametrize("items, expected", [
    (["lr=0.02", "seeds=[0,1]"], {"lr": 0.02, "seeds": [0, 1]}),
    ("lr=0.02 device=cpu", {"lr": 0.02, "device": "cpu"}),
    ("", {}),
])
def test_parse_assignments(items, expected):
    assert S.parse_assignments(items) == expected


def test_parse_assignments_refuses_a_bare_word():
    with pytest.raises(ValueError, match="key=value"):
        S.parse_assignments(["lr"])
