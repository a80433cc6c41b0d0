"""Shared fixtures: tiny float64 models and data for exact-reference tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape_utils.study.runtime import keep_freed_memory

# One math thread: on a shared 2-core machine a second thread under contention makes tiny
# tensor ops many times slower, and no test measures speed. Freed memory kept, as in the jobs.
torch.set_num_threads(1)
keep_freed_memory()

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


# --------------------------------------------------------------------------- the smoke study

SNAKEMAKE_LOCAL = ["--profile", "workflow/profiles/default", "--cores", "2"]


def snakemake(args: list[str], outputs: Path, cwd: Path = REPO, env: dict | None = None,
              timeout: int = 1200, base_env: dict | None = None):
    """Run the workflow as `make` does (this interpreter's snakemake), its outputs under ``outputs``
    (runs and unit caches too, unless ``env`` says otherwise)."""
    import subprocess
    import sys

    full_env = dict(base_env or os.environ)
    for var in ("LANDSCAPE_RUNS", "LANDSCAPE_CACHE"):
        full_env.pop(var, None)
    full_env.update({"LANDSCAPE_OUTPUTS": str(outputs), "LANDSCAPE_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1",
                     **(env or {})})
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="session")
def landscape_outputs_dir(tmp_path_factory) -> Path:
    """One outputs folder for the session: the smoke study, its run and unit caches."""
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="session")
def smoke_study(landscape_outputs_dir):
    """The smoke study run once through the workflow, locally: (study folder, its full output)."""
    import time

    started = time.time()
    proc = snakemake([*SNAKEMAKE_LOCAL, "--config", "profile=smoke"], landscape_outputs_dir)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return landscape_outputs_dir / "smoke", proc.stdout + proc.stderr, time.time() - started
