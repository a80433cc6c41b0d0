"""The study's three architectures (registered in :mod:`landscape_utils.study.registry`).

No BatchNorm and no dropout: every probe's loss is one deterministic function of the
parameters, whatever the module's mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import ARCHITECTURES, check_arch


class MLP(nn.Module):
    """784 -> 256 (ReLU) -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> Tensor:
        # (N, 1, 28, 28) -> (N, 784) -> (N, 256) -> (N, 10)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class CNN(nn.Module):
    """Conv 3x3 1->16, ReLU, max-pool 2; conv 3x3 16->16, ReLU, max-pool 2; linear head to 10.

    Convolutions are padded (padding 1) so the maps go 28 -> 14 -> 7 and the head sees
    16 * 7 * 7 = 784 features.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def block2(self, h: Tensor) -> Tensor:
        return torch.relu(self.conv2(h))

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, 16, 14, 14)
        h = nn.functional.max_pool2d(self.block2(h), 2)  # (N, 16, 7, 7)
        return self.fc(h.flatten(1))


class ResidualCNN(CNN):
    """:class:`CNN` plus a 1x1 convolution skip around the second convolution.

    The second block computes ReLU(conv2(h) + skip(h)) before its max-pool.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skip = nn.Conv2d(16, 16, 1)

    def block2(self, h: Tensor) -> Tensor:
        return torch.relu(self.conv2(h) + self.skip(h))


def build_model(name: str, seed: int | None = None) -> nn.Module:
    """A freshly initialised model of the registered architecture ``name``.

    Args:
        name: a key of :data:`landscape_utils.study.registry.ARCHITECTURES`.
        seed: initialise with this seed without touching the global random state
            (``None``: use the global state, as plain PyTorch does).

    Raises:
        ValueError: unknown architecture (the message lists the valid ones).
    """
    cls = ARCHITECTURES[check_arch(name)].model_class
    if seed is None:
        return cls()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls()
