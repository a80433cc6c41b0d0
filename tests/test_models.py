"""The registry: exact architectures, parameter counts, seeded initialisation."""

from __future__ import annotations

import pytest
import torch

from landscape_utils.models import MODELS, PARAM_COUNTS, build_model
from landscape_utils.params import num_params


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
    with pytest.raises(ValueError, match="valid: cnn, mlp, rescnn"):
        build_model(bad)
