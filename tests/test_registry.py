"""The registries: exact architectures, parameter counts, seeded initialisation; sections whose
notebooks, jobs, summaries and settings exist."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from landscape_utils.probes.params import num_params
from landscape_utils.study import registry
from landscape_utils.study.models import build_model
from landscape_utils.study.paths import NOTEBOOKS_DIR
from landscape_utils.study.settings import StudyConfig

MODELS = registry.ARCHITECTURES
PARAM_COUNTS = {k: a.params for k, a in registry.ARCHITECTURES.items()}


@pytest.mark.parametrize("name, count", sorted(PARAM_COUNTS.items()))
def test_output_shape_and_parameter_count(name, count):
    model = build_model(name, seed=0)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert num_params(model) == count
    # No BatchNorm or dropout: the output does not depend on the mode.
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model.train()(x), model.eval()(x))


def test_counts_match_the_architectures_by_hand():
    assert PARAM_COUNTS["mlp"] == (784 * 256 + 256) + (256 * 10 + 10)
    assert PARAM_COUNTS["cnn"] == (16 * 9 + 16) + (16 * 16 * 9 + 16) + (16 * 7 * 7 * 10 + 10)
    assert PARAM_COUNTS["rescnn"] == PARAM_COUNTS["cnn"] + 16 * 16 + 16


def test_residual_skip_is_the_only_difference():
    cnn, res = build_model("cnn", seed=3), build_model("rescnn", seed=3)
    res.load_state_dict({**cnn.state_dict(), "skip.weight": torch.zeros(16, 16, 1, 1),
                         "skip.bias": torch.zeros(16)})
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(cnn(x), res(x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_initialisation_is_reproducible_and_leaves_global_rng(name):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = build_model(name, seed=0), build_model(name, seed=0), build_model(name, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
        assert not torch.equal(va, vc), k


@pytest.mark.parametrize("bad", ["resnet", "CNN", ""])
def test_unknown_architecture_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match="valid: mlp, cnn, rescnn"):
        build_model(bad)


def test_architecture_entries_are_distinct():
    archs = list(registry.ARCHITECTURES.values())
    assert len({a.label for a in archs}) == len(archs) and len({a.colour for a in archs}) == len(archs)
    assert all(k == a.key for k, a in registry.ARCHITECTURES.items())


@pytest.mark.parametrize("section", list(registry.SECTIONS.values()), ids=list(registry.SECTIONS))
def test_section_entries_resolve(section):
    assert (NOTEBOOKS_DIR / f"{section.notebook}.ipynb").is_file()
    fields = {f.name for f in dataclasses.fields(StudyConfig)}
    assert set(section.settings) <= fields, set(section.settings) - fields
    unit = {"pair": "pair", "seed": "seed", "cell": "cell"}[section.per]
    assert list(inspect.signature(section.job_function()).parameters) == ["arch", unit, "cfg", "upstream"]
    assert callable(section.summarise_function())
    order = list(registry.SECTIONS)
    assert all(order.index(r) < order.index(section.key) for r in section.reads), "a section reads earlier sections only"
    assert section.per in ("seed", "pair", "cell")


def test_comparison_notebook_exists():
    assert (NOTEBOOKS_DIR / f"{registry.COMPARISON_NOTEBOOK}.ipynb").is_file()


@pytest.mark.parametrize("target, message", [("nomodule", "expected 'module:attribute'"),
                                             ("landscape_utils.study.nothing:x", "cannot resolve"),
                                             ("landscape_utils.study.models:Nothing", "cannot resolve")])
def test_resolve_names_what_is_wrong(target, message):
    with pytest.raises(ValueError, match=message):
        registry.resolve(target)


def test_check_section_lists_the_sections():
    with pytest.raises(ValueError, match="valid: training, dynamics, curvature"):
        registry.check_section("sharpness")
