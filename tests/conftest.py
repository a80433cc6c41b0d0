"""Shared fixtures: tiny float64 models and data for exact-reference tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn

# One math thread: on a shared 2-core machine a second thread under contention makes tiny
# tensor ops many times slower, and no test measures speed.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# The read-only MNIST copy the tests and CI use (the folder holding MNIST/raw/).
SHARED_DATA = Path(os.environ.get("LANDSCAPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def tiny_mlp() -> nn.Module:
    """8 -> 14 (tanh) -> 4, float64, 186 parameters: small enough for an exact Hessian."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 14), nn.Tanh(), nn.Linear(14, 4)).double()


@pytest.fixture
def tiny_relu_mlp() -> nn.Module:
    """8 -> 14 (ReLU) -> 4, float64, 186 parameters: positively homogeneous layer by layer."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 14), nn.ReLU(), nn.Linear(14, 4)).double()


@pytest.fixture
def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    """64 samples of 8 float64 features with 4 classes (seed 0)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    return x, y


@pytest.fixture
def tiny_cnn() -> nn.Module:
    """Conv 1->3 (3x3), ReLU, conv 3->4 (3x3), ReLU, linear 64->3 on 8x8 inputs; float64, 337 parameters."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ).double()


@pytest.fixture
def tiny_image_data() -> tuple[torch.Tensor, torch.Tensor]:
    """32 single-channel 8x8 float64 images with 3 classes (seed 0)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)


def rescaled_relu(model: nn.Sequential, c: float) -> nn.Sequential:
    """Layer 1 weights and biases × c, layer 2 weights × 1/c: the same function for c > 0."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[0].weight.mul_(c)
        out[0].bias.mul_(c)
        out[2].weight.div_(c)
    return out
