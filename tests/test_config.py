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
    ("optimizer", "rmsprop", "optimizer must be one of ('sgd', 'adam', 'adadelta')"),
    ("lr_gamma", 0.0, "lr_gamma must be in (0, 1]"),
    ("lr_gamma", 1.5, "lr_gamma must be in (0, 1]"),
    ("target_loss", -0.1, "target_loss must be a positive finite number or None"),
    ("target_loss", float("inf"), "target_loss must be a positive finite number or None"),
    ("target_every", 0, "target_every must be a positive integer"),
    ("checkpoints", 1, "checkpoints must be 0 or at least 2"),
    ("checkpoints", -3, "checkpoints must be 0 or at least 2"),
    ("batch_size", 60001, "batch_size (60001) is larger than the training set (60000)"),
])
def test_bad_values_are_rejected_at_construction(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**{field: value})


def test_batch_larger_than_the_training_subset_is_refused():
    with pytest.raises(ValueError, match=r"batch_size \(512\) is larger than the training subset \(train_size=256\)"):
        TrainConfig(batch_size=512, train_size=256)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        TrainConfig(arch="x", lr=-1, epochs=0)
    assert all(s in str(err.value) for s in ("architecture", "lr", "epochs"))


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


CHANGED = {"arch": "mlp", "epochs": 2, "max_steps": 10, "train_size": 100, "subset_seed": 1,
           "batch_size": 32, "optimizer": "adam", "lr": 0.02, "momentum": 0.5, "weight_decay": 1e-4,
           "init_seed": 1, "data_seed": 1, "device": "cuda", "lr_gamma": 0.7, "target_loss": 0.1,
           "target_every": 10, "checkpoints": 5}


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
