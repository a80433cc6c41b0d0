"""Study settings: profiles list only differences; bad settings fail before any work."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from landscape_utils.study import PROFILES_DIR, StudyConfig, check_arch, load_study


def test_full_profile_is_the_defaults():
    assert load_study("full") == StudyConfig()
    cfg = StudyConfig()
    assert cfg.epochs == 3 and cfg.train_size is None and len(cfg.seeds) == 3


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_profile_files_list_only_real_differences(name):
    values = tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())
    defaults = StudyConfig().to_dict()
    for key, value in values.items():
        assert value != defaults[key], f"{name}.toml repeats the default of {key}"


def test_smoke_is_small_but_exercises_pairs():
    smoke = load_study("smoke")
    assert smoke.max_steps <= 100 and smoke.probe_train_size <= 512
    assert len(smoke.seed_pairs) >= 1


def test_overrides_apply_on_top_of_the_profile():
    cfg = load_study("smoke", {"seeds": [3, 4, 5], "lr": 0.02})
    assert cfg.seeds == (3, 4, 5) and cfg.lr == 0.02 and cfg.max_steps == load_study("smoke").max_steps
    assert cfg.seed_pairs == [(3, 4), (3, 5), (4, 5)]
    tc = cfg.train_config("mlp", 4)
    assert (tc.arch, tc.init_seed, tc.data_seed, tc.lr) == ("mlp", 4, 4, 0.02)


@pytest.mark.parametrize("profile, overrides, message", [
    ("huge", {}, "unknown profile 'huge'; valid: full, smoke"),
    ("full", {"sigma": 1}, r"unknown setting\(s\) \['sigma'\]"),
    ("full", {"seeds": []}, "seeds must be a non-empty list"),
    ("full", {"seeds": [1, 1]}, "seeds must be distinct"),
    ("full", {"epochs": "3"}, "epochs must be int"),
    ("full", {"lr": -1.0}, "lr must be a positive finite number"),
    ("full", {"slice_points": 20}, "slice_points must be odd"),
    ("full", {"probe_test_size": 20000}, r"probe_test_size must be in \[1, 10000\]"),
    ("full", {"flatness_draws": 1}, "flatness_draws must be at least 2"),
    ("full", {"isotropic_sigmas": [0.1, -0.1]}, "isotropic_sigmas must all be positive"),
    ("full", {"lanczos_tol": 0.0}, "lanczos_tol must be a positive finite number"),
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
        with pytest.raises(ValueError, match="valid: cnn, mlp, rescnn"):
            check_arch(arch)
