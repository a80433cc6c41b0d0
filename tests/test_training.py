"""Training runs: real learning, seeds, cache reuse and invalidation, atomicity, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from landscape_utils.study import training as T
from landscape_utils.study.config import TrainConfig
from tests.conftest import REPO, SHARED_DATA

# A few seconds of real MNIST training.
TINY = dict(arch="mlp", epochs=1, train_size=2048, batch_size=64)


def run(config: TrainConfig, runs_dir, **kw) -> T.Run:
    return T.train_or_load(config, data_dir=SHARED_DATA, runs_dir=runs_dir, progress=False,
                           download=False, **kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> T.Run:
    return run(TrainConfig(**TINY), tmp_path_factory.mktemp("runs"))


def test_loss_falls_on_real_mnist(tiny_run):
    h = tiny_run.history
    assert h["total_steps"] == 32 and len(h["step_loss"]) == 32
    first, last = h["epochs"][0], h["epochs"][-1]
    assert first["train_loss"] > 2.0 and last["train_loss"] < 0.8 * first["train_loss"]
    assert last["test_acc"] > 0.75 > first["test_acc"]
    assert sum(h["step_loss"][-5:]) < sum(h["step_loss"][:5])


def test_run_directory_holds_plain_files(tiny_run):
    names = {p.name for p in tiny_run.path.iterdir()}
    assert names == {"config.json", "init.pt", "final.pt", "history.json", "run.json"}
    assert json.loads((tiny_run.path / "config.json").read_text()) == tiny_run.config.to_dict()
    state = torch.load(tiny_run.path / "final.pt", weights_only=True)
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert not torch.equal(state["fc1.weight"], tiny_run.init_state["fc1.weight"])
    assert tiny_run.path.name == tiny_run.config.run_name()


def test_second_request_reuses_the_run(tiny_run, monkeypatch):
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained again"))
    again = run(tiny_run.config, tiny_run.path.parent)
    assert again.reused and not tiny_run.reused and again.path == tiny_run.path
    assert torch.equal(again.final_state["fc2.bias"], tiny_run.final_state["fc2.bias"])


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"data_seed": 1}, {"max_steps": 5}])
def test_changed_configuration_trains_a_new_run(tiny_run, change):
    other = run(TrainConfig(**{**TINY, **change}), tiny_run.path.parent)
    assert not other.reused and other.path != tiny_run.path


@pytest.mark.parametrize("change, same_init, same_final", [
    ({}, True, True),                      # fully deterministic on CPU
    ({"data_seed": 1}, True, False),       # same initialisation, other data order
    ({"init_seed": 1}, False, False),
])
def test_named_seeds(tmp_path, tiny_run, change, same_init, same_final):
    other = run(TrainConfig(**{**TINY, **change}), tmp_path)
    assert torch.equal(other.init_state["fc1.weight"], tiny_run.init_state["fc1.weight"]) == same_init
    assert torch.equal(other.final_state["fc1.weight"], tiny_run.final_state["fc1.weight"]) == same_final


def test_divergence_stops_with_a_clear_error_and_caches_nothing(tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1e6, "momentum": 0.0})
    with pytest.raises(T.TrainingDiverged, match=r"training loss became (nan|inf).*lower the learning rate"):
        run(cfg, tmp_path)
    assert not T.run_path(cfg, tmp_path).exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_failure_while_writing_leaves_no_trusted_run(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "max_steps": 3})
    real_save = torch.save

    def crash_on_final(obj, path, *a, **k):
        if str(path).endswith("final.pt"):
            open(path, "wb").write(b"partial")  # half-written, then the process "dies"
            raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", crash_on_final)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    assert not T.run_path(cfg, tmp_path).exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert not run(cfg, tmp_path).reused


def test_process_killed_mid_run_is_not_reused(tmp_path):
    cfg = TrainConfig(**{**TINY, "train_size": 8192, "epochs": 3})
    cmd = [sys.executable, "-m", "landscape_utils", "train", "--arch", "mlp", "--epochs", "3",
           "--train-size", "8192", "--data-dir", str(SHARED_DATA), "--runs-dir", str(tmp_path),
           "--no-download", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".tmp-*")), "the run never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not T.run_path(cfg, tmp_path).exists()
    assert list(tmp_path.glob(".tmp-*"))  # debris of the killed run...
    fresh = run(TrainConfig(**{**TINY, "train_size": 8192, "epochs": 3, "max_steps": None}), tmp_path)
    assert not fresh.reused and fresh.path == T.run_path(cfg, tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))  # ...is cleaned, never trusted


def test_tampered_run_is_moved_aside_and_retrained(tmp_path):
    cfg = TrainConfig(**{**TINY, "max_steps": 3})
    first = run(cfg, tmp_path)
    (first.path / "final.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = run(cfg, tmp_path)
    assert not again.reused and list(tmp_path.glob(".corrupt-*"))
    assert torch.equal(again.final_state["fc1.weight"], first.final_state["fc1.weight"])


def test_cuda_request_without_cuda_fails_early(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        run(TrainConfig(**{**TINY, "device": "cuda"}), tmp_path)


def test_cli_prints_the_run_directory(tiny_run):
    out = subprocess.run(
        [sys.executable, "-m", "landscape_utils", "train", "--arch", "mlp", "--epochs", "1",
         "--train-size", "2048", "--data-dir", str(SHARED_DATA), "--runs-dir", str(tiny_run.path.parent),
         "--no-download", "--quiet"], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tiny_run.path)
    assert "reused mlp" in out.stderr
