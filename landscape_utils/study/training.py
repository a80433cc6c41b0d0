"""Training runs, cached on disk under a key of their full configuration.

A run directory ``<runs_dir>/<arch>-i<init>-d<data>-<key>/`` holds plain files:
``config.json``, ``init.pt`` and ``final.pt`` (state dicts), ``history.json`` and a
manifest ``run.json`` with each file's checksum. It is built in a temporary folder and
renamed into place in one step, so an interrupted run never leaves a directory that a
later call trusts; a per-run lock makes concurrent requests (``make -j``) train once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import TrainingDiverged, RunCacheError  # noqa: F401  (raised here, defined without imports)
from .config import ADAM_BETAS, ADAM_EPS, CACHE_VERSION, TrainConfig
from .data import MNIST, Split, load_mnist, probe_subset
from .models import build_model
from .paths import outputs_root

ENV_RUNS_DIR = "LANDSCAPE_RUNS"
# Train loss/accuracy at each epoch end are measured on this fixed training subset
# (eval mode, no gradient), next to the running mean of the step losses.
EVAL_TRAIN_SIZE = 10_000
EVAL_TRAIN_SEED = 0
EVAL_BATCH = 2_000
# A run that trains to a target loss checks it on this many examples of that fixed subset.
TARGET_EVAL_SIZE = 2_048
RUN_FILES = ("config.json", "init.pt", "final.pt", "history.json")
CHECKPOINT_FILE = "checkpoints.pt"


@dataclass(frozen=True)
class Run:
    """A finished training run, loaded from its directory.

    Attributes:
        config: the configuration it was trained with.
        path: its directory.
        history: ``step_loss`` (one per optimiser step) and ``epochs`` (per-epoch
            train/test loss and accuracy, epoch 0 being the initialisation).
        init_state / final_state: state dicts (CPU tensors) at initialisation and end.
        reused: True when it was loaded from the cache rather than trained now.
    """

    config: TrainConfig
    path: Path
    history: dict[str, Any]
    init_state: dict[str, Tensor]
    final_state: dict[str, Tensor]
    reused: bool

    def model(self, which: str = "final") -> nn.Module:
        """A new model holding the ``"final"`` or ``"init"`` parameters (eval mode)."""
        if which not in ("final", "init"):
            raise ValueError(f"which must be 'final' or 'init', got {which!r}")
        model = build_model(self.config.arch)
        model.load_state_dict(self.final_state if which == "final" else self.init_state)
        return model.eval()

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.history["epochs"][-1]

    def checkpoints(self) -> dict[str, list]:
        """The run's snapshots: ``steps``, ``params`` (state dicts), ``lr`` (the learning rate in
        force) and ``adam`` (Adam's ``exp_avg_sq`` by parameter name, ``step``, ``betas``, ``eps``;
        None for other optimisers and at step 0), one entry per checkpoint step.

        Raises:
            RunCacheError: the run was trained without checkpoints.
        """
        path = self.path / CHECKPOINT_FILE
        if not path.is_file():
            raise RunCacheError(f"{self.path}: trained without checkpoints (config.checkpoints = "
                                f"{self.config.checkpoints})")
        return torch.load(path, map_location="cpu", weights_only=True)


def resolve_runs_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """The runs folder: the argument, else ``$LANDSCAPE_RUNS``, else ``<outputs>/runs``."""
    if runs_dir is None:
        runs_dir = os.environ.get(ENV_RUNS_DIR) or outputs_root() / "runs"
    return Path(runs_dir).expanduser().resolve()


def run_path(config: TrainConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """Where the run of ``config`` lives (whether or not it exists yet)."""
    return resolve_runs_dir(runs_dir) / config.run_name()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_run(path: str | os.PathLike) -> Run:
    """Load a finished run directory, checking it against its manifest.

    Raises:
        RunCacheError: missing manifest or file, checksum mismatch, or another cache version.
    """
    path = Path(path)
    manifest_path = path / "run.json"
    if not manifest_path.is_file():
        raise RunCacheError(f"{path}: no run.json manifest; not a finished run")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("cache_version") != CACHE_VERSION:
        raise RunCacheError(f"{path}: cache version {manifest.get('cache_version')}, "
                            f"expected {CACHE_VERSION}")
    for name, digest in manifest["files"].items():
        if not (path / name).is_file() or _sha256(path / name) != digest:
            raise RunCacheError(f"{path}: {name} is missing or does not match its checksum")
    config = TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
    return Run(
        config=config,
        path=path,
        history=json.loads((path / "history.json").read_text()),
        init_state=torch.load(path / "init.pt", map_location="cpu", weights_only=True),
        final_state=torch.load(path / "final.pt", map_location="cpu", weights_only=True),
        reused=True,
    )


@contextmanager
def _run_lock(runs_dir: Path, name: str) -> Iterator[None]:
    # An advisory lock per run: a second process asking for the same run waits, then
    # finds it finished. The OS releases it if the holder is killed.
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def train_or_load(config: TrainConfig, *, data_dir: str | os.PathLike | None = None,
                  runs_dir: str | os.PathLike | None = None, progress: bool = True,
                  download: bool = True) -> Run:
    """Return the run of ``config``: loaded from the cache if finished, else trained now.

    Args:
        config: the run's full configuration (validated when it was built).
        data_dir: MNIST folder (see :func:`landscape_utils.study.data.load_mnist`).
        runs_dir: cache folder (default ``$LANDSCAPE_RUNS`` or ``<repo>/outputs/runs``).
        progress: show a progress bar over the steps.
        download: allow torchvision to download missing MNIST files.

    Raises:
        TrainingDiverged: the loss became non-finite (nothing is cached).
        RuntimeError: CUDA asked for but not available.
        landscape_utils.study.errors.MNISTFileError: missing or corrupted data.
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but CUDA is not available here")
    runs_dir = resolve_runs_dir(runs_dir)
    final = runs_dir / config.run_name()
    with _run_lock(runs_dir, config.run_name()):
        if final.exists():
            try:
                return load_run(final)
            except RunCacheError as exc:
                aside = runs_dir / f".corrupt-{config.run_name()}-{int(time.time())}"
                warnings.warn(f"{exc}; moved to {aside} and training again", stacklevel=2)
                final.rename(aside)
        # Left-overs of an interrupted attempt at this run are never trusted.
        for stale in runs_dir.glob(f".tmp-{config.run_name()}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        mnist = load_mnist(data_dir, download=download)
        tmp = runs_dir / f".tmp-{config.run_name()}-{os.getpid()}"
        tmp.mkdir()
        try:
            started = time.time()
            init_state, final_state, history = train(config, mnist, progress=progress)
            _write_run(tmp, config, init_state, final_state, history, time.time() - started)
            tmp.rename(final)  # atomic on one filesystem: the run appears whole or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    run = load_run(final)
    return Run(run.config, run.path, run.history, run.init_state, run.final_state, reused=False)


def _write_run(folder: Path, config: TrainConfig, init_state: dict, final_state: dict,
               history: dict, seconds: float) -> None:
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    torch.save(init_state, folder / "init.pt")
    torch.save(final_state, folder / "final.pt")
    history = dict(history)
    files = list(RUN_FILES)
    if "checkpoints" in history:  # tensors: a plain torch file of lists and state dicts beside the history
        torch.save(history.pop("checkpoints"), folder / CHECKPOINT_FILE)
        files.append(CHECKPOINT_FILE)
    (folder / "history.json").write_text(json.dumps(history))
    manifest = {
        "cache_version": CACHE_VERSION,
        "key": config.key(),
        "config": config.to_dict(),
        "files": {name: _sha256(folder / name) for name in files},
        "train_seconds": round(seconds, 2),
        "torch": torch.__version__,
    }
    # The manifest is written last: a folder without it is never loaded.
    (folder / "run.json").write_text(json.dumps(manifest, indent=1))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), EVAL_BATCH):
        x = split.x[start:start + EVAL_BATCH].to(device)
        y = split.y[start:start + EVAL_BATCH].to(device)
        out = model(x)  # (B, 10) logits
        total_loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return total_loss / len(split), correct / len(split)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser ``config`` names, over ``params`` (see ``config.OPTIMIZERS``)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=config.weight_decay)


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """``count`` distinct steps from 0 (the initialisation) to ``total_steps``, log-spaced in between
    (fewer when there are fewer than ``count`` steps in all); empty for ``count = 0``."""
    if count == 0:
        return []
    if total_steps + 1 <= count:
        return list(range(total_steps + 1))
    # Rounding log-spaced points repeats small steps; widen the grid until count - 1 distinct steps ≥ 1 remain.
    for m in range(count - 1, 10 * count + total_steps):
        inner = np.unique(np.rint(np.geomspace(1, total_steps, m)).astype(int))
        if len(inner) >= count - 1:
            break
    return [0, *sorted(int(v) for v in inner[np.linspace(0, len(inner) - 1, count - 1).round().astype(int)])]


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _adam_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Adam's second moments by parameter name and its step count (what its preconditioner needs);
    ``None`` for other optimisers and before the first step."""
    if not isinstance(optimizer, torch.optim.Adam):
        return None
    named = dict(model.named_parameters())
    if not all(optimizer.state.get(p) for p in named.values()):
        return None
    first = optimizer.state[next(iter(named.values()))]
    return {"exp_avg_sq": {k: optimizer.state[p]["exp_avg_sq"].detach().to("cpu", copy=True).contiguous()
                           for k, p in named.items()},
            "step": int(first["step"]), "betas": list(ADAM_BETAS), "eps": ADAM_EPS}


class _Snapshots:
    """The checkpoint recorder: parameters, learning rate and Adam's state at each checkpoint step."""

    def __init__(self) -> None:
        self.record: dict[str, list] = {"steps": [], "params": [], "lr": [], "adam": []}

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.record["steps"].append(step)
        self.record["params"].append(_cpu_state(model))
        self.record["lr"].append(float(optimizer.param_groups[0]["lr"]))
        self.record["adam"].append(_adam_state(model, optimizer))


Callback = Callable[[int, nn.Module, torch.optim.Optimizer], None]


def train(config: TrainConfig, mnist: MNIST, progress: bool = True, on_checkpoint: Callback | None = None
          ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """Train one model as ``config`` says; no caching (see :func:`train_or_load`).

    Args:
        config: the run.
        mnist: the data.
        progress: show a progress bar.
        on_checkpoint: called as ``on_checkpoint(step, model, optimizer)`` at each of the run's
            checkpoint steps (:func:`checkpoint_steps`; step 0 before the first update, then right
            after the update that ends the step). It may measure the model but must not change
            it or the optimiser; the loop never lets it see a half-done step.

    Returns:
        (initial state dict, final state dict, history). With ``config.checkpoints`` the history
        also holds ``checkpoints``: the snapshots (parameters, lr, Adam state) at those steps.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    from tqdm.std import tqdm  # text bar: stays readable in executed notebooks and HTML

    device = torch.device(config.device)
    model = build_model(config.arch, seed=config.init_seed).to(device)
    init_state = _cpu_state(model)
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        # NHWC convolutions: about 1.3x faster steps on CPU for the study's CNNs.
        model = model.to(memory_format=torch.channels_last)
    train_split = mnist.train
    if config.train_size is not None:
        sub = probe_subset(mnist.train, config.train_size, config.subset_seed)
        train_split = Split(sub.x, sub.y)
    eval_split = probe_subset(train_split, min(EVAL_TRAIN_SIZE, len(train_split)), EVAL_TRAIN_SEED)
    eval_train = Split(eval_split.x, eval_split.y)
    # The target check reads the first TARGET_EVAL_SIZE examples of that fixed subset (a random
    # sample of it, since the subset is in random order).
    target_split = Split(eval_train.x[:TARGET_EVAL_SIZE], eval_train.y[:TARGET_EVAL_SIZE])
    x_all, y_all = train_split.x.to(device), train_split.y.to(device)
    n = len(train_split)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    order = torch.Generator().manual_seed(config.data_seed)
    optimizer = make_optimizer(config, model.parameters())
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.lr_gamma)
                 if config.lr_gamma != 1.0 else None)
    snapshots = _Snapshots() if config.checkpoints else None
    callbacks = [c for c in (snapshots, on_checkpoint) if c is not None]
    if on_checkpoint is not None and not config.checkpoints:
        raise ValueError("on_checkpoint needs checkpoint steps: set the configuration's checkpoints (>= 2)")
    marks = set(checkpoint_steps(total_steps, config.checkpoints))
    marked: list[int] = []

    def checkpoint(step: int) -> None:
        if step in marked:
            return
        marked.append(step)
        for callback in callbacks:
            callback(step, model, optimizer)

    def epoch_record(epoch: int, step: int, running: float | None) -> dict[str, Any]:
        train_loss, train_acc = evaluate(model, eval_train, device)
        test_loss, test_acc = evaluate(model, mnist.test, device)
        return {"epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": train_acc,
                "test_loss": test_loss, "test_acc": test_acc, "running_train_loss": running}

    history: dict[str, Any] = {
        "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "train_examples": n,
        "eval_train_examples": len(eval_train), "step_loss": [], "epochs": [epoch_record(0, 0, None)],
    }
    if config.target_loss is not None:
        history.update(target_examples=len(target_split), target_checks=[])
    step_loss: list[float] = history["step_loss"]
    bar = tqdm(total=total_steps, disable=not progress, unit="step", mininterval=1.0,
               desc=f"{config.arch} epoch 1/{config.epochs}")
    model.train()
    if 0 in marks:
        checkpoint(0)
    step, epoch, stopped = 0, 0, "steps"
    for epoch in range(1, config.epochs + 1):
        if step >= total_steps or stopped == "target":
            break
        bar.set_description(f"{config.arch} epoch {epoch}/{config.epochs}")
        perm = torch.randperm(n, generator=order).to(device)
        epoch_start = step
        for start in range(0, n, config.batch_size):
            if step >= total_steps:
                break
            idx = perm[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                bar.close()
                raise TrainingDiverged(
                    f"{config.arch}: training loss became {value} at step {step + 1} (epoch "
                    f"{epoch}); lower the learning rate (lr={config.lr}) and try again. "
                    "Nothing was saved.", step=step + 1)
            step_loss.append(value)
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if step in marks:
                checkpoint(step)
            if config.target_loss is not None and step % config.target_every == 0:
                target = evaluate(model, target_split, device)[0]
                history["target_checks"].append([step, target])
                if not math.isfinite(target):
                    bar.close()
                    raise TrainingDiverged(f"{config.arch}: the training loss became {target} at step {step}",
                                           step=step)
                if target <= config.target_loss:
                    stopped = "target"
                    break
        if scheduler is not None:
            scheduler.step()
        if config.target_loss is None:
            running = sum(step_loss[epoch_start:]) / max(1, step - epoch_start)
            history["epochs"].append(epoch_record(epoch, step, running))
    bar.close()
    if config.target_loss is not None:  # one final record instead of one per epoch
        history["epochs"].append(epoch_record(epoch, step, None))
    if callbacks:
        checkpoint(step)  # the last step is always a checkpoint (also after an early stop)
    history["stopped"] = {"reason": stopped, "step": step}
    if snapshots is not None:
        history["checkpoint_steps"] = list(snapshots.record["steps"])
        history["checkpoints"] = snapshots.record
    return init_state, _cpu_state(model), history
