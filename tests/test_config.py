"""Training configuration: validation before any work, and a key that sees every field."""

from __future__ import annotations

import dataclasses

import pytest

from landscape_utils.__main__ import main
from landscape_utils.study.config import CACHE_VERSION, TrainConfig


@pytest.mark.parametrize("field, value, message", [
    ("arch", "resnet", "unknown architecture 'resnet' (valid: mlp, cnn, rescnn)"),
    ("epochs", 0, "epochs must be a positive integer"),
    ("epochs", 1.5, "epochs must be a positive integer"),
    ("batch_size", -8, "batch_size must be a positive integer"),
    ("max_steps", 0, "max_steps must be a positive integer or None"),
    ("train_size", 70000, "train_size must be at most 60000"),
    ("init_seed", -1, "init_seed must be a non-negative integer"),
    ("data_seed", "0", "data_seed must be a non-negative integer"),
    ("optimizer", "lbfgs", "optimizer must be one of"),
    ("lr", 0.0, "lr must be a positive finite number"),
    ("lr", float("nan"), "lr must be a positive finite number"),
    ("momentum", 1.0, "momentum must be in [0, 1)"),
    ("weight_decay", -1e-4, "weight_decay must be a non-negative finite number"),
    ("device", "tpu", "device must be one of"),
])
def test_bad_values_are_rejected_at_construction(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**{field: value})


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        TrainConfig(arch="x", lr=-1, epochs=0)
    assert all(s in str(err.value) for s in ("architecture", "lr", "epochs"))


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


CHANGED = {"arch": "mlp", "epochs": 2, "max_steps": 10, "train_size": 100, "subset_seed": 1,
           "batch_size": 32, "optimizer": "adam", "lr": 0.02, "momentum": 0.5, "weight_decay": 1e-4,
           "init_seed": 1, "data_seed": 1, "device": "cuda"}


def test_changed_values_cover_every_field():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_key_changes_with_every_field(field):
    base = TrainConfig()
    assert TrainConfig(**{field: CHANGED[field]}).key() != base.key()
    assert TrainConfig().key() == base.key()


def test_key_includes_cache_version(monkeypatch):
    from landscape_utils.study import config

    before = TrainConfig().key()
    monkeypatch.setattr(config, "CACHE_VERSION", CACHE_VERSION + 1)
    assert TrainConfig().key() != before


def test_key_includes_the_training_code_digest(monkeypatch):
    from landscape_utils.study import config

    before = TrainConfig().key()
    monkeypatch.setattr(config, "training_source_digest", lambda arch: "another digest")
    assert TrainConfig().key() != before


def test_training_code_digest_covers_the_model_module_and_ignores_comments():
    from landscape_utils.study import config
    from landscape_utils.study.provenance import normalised_source

    digest = config.training_source_digest("cnn")
    assert digest == config.training_source_digest("rescnn")  # both classes live in models.py
    assert "#" not in normalised_source(config.__file__)


def test_cli_rejects_bad_values_before_training(capsys):
    assert main(["train", "--arch", "nope", "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'nope'" in err and "lr must be" in err
