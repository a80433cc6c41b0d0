"""Training-loop throughput: ``landscape_utils.study.training.train`` against a bare PyTorch loop.

Both run the same recipe (the study's CNN, SGD lr 0.01 momentum 0.9, batch 64, the same
samples in the same order) in the same process, interleaved, several times; the ratio of
medians is what counts (absolute times are noise on a shared 2-core machine).
``train`` also evaluates train/test loss at the start and after each epoch; that time is
measured separately and reported both excluded (loop overhead) and included.

Usage: python benchmarks/bench_training.py [--quick]  -> outputs/bench/training.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from landscape_utils.study import training as T
from landscape_utils.study.config import TrainConfig
from landscape_utils.study.data import load_mnist, probe_subset
from landscape_utils.study.models import build_model

OUT = Path(__file__).resolve().parents[1] / "outputs" / "bench"


def bare_loop(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, channels_last: bool = False) -> float:
    """The recipe with nothing else: seconds for all steps (optionally with NHWC kernels)."""
    model = build_model(cfg.arch, seed=cfg.init_seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    order = torch.Generator().manual_seed(cfg.data_seed)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=order)
        for s in range(0, len(y), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start


def ours(cfg: TrainConfig, mnist) -> tuple[float, float]:
    """Seconds for ``train`` in all, and the part of it spent evaluating."""
    spent = [0.0]
    real_evaluate = T.evaluate

    def timed_evaluate(*a, **k):
        t = time.perf_counter()
        try:
            return real_evaluate(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    T.evaluate = timed_evaluate
    try:
        start = time.perf_counter()
        T.train(cfg, mnist, progress=False)
        return time.perf_counter() - start, spent[0]
    finally:
        T.evaluate = real_evaluate


def run(quick: bool = False) -> dict:
    mnist = load_mnist()
    size = 3200 if quick else 60000  # one full epoch: evaluation's share as in the study
    cfg = TrainConfig(arch="cnn", epochs=1, train_size=size)
    sub = probe_subset(mnist.train, size, cfg.subset_seed)
    repeats = 2 if quick else 3
    bare_loop(TrainConfig(arch="cnn", epochs=1, train_size=640), sub.x[:640], sub.y[:640])  # warm-up
    bare, bare_nhwc, total, evals = [], [], [], []
    for _ in range(repeats):
        bare.append(bare_loop(cfg, sub.x, sub.y))
        bare_nhwc.append(bare_loop(cfg, sub.x, sub.y, channels_last=True))
        t, e = ours(cfg, mnist)
        total.append(t)
        evals.append(e)
    loop = [t - e for t, e in zip(total, evals)]
    steps = math.ceil(size / cfg.batch_size)
    result = {
        "recipe": {**cfg.to_dict(), "steps": steps},
        "repeats": repeats,
        "bare_seconds": bare, "bare_channels_last_seconds": bare_nhwc, "ours_seconds": total,
        "ours_eval_seconds": evals,
        "bare_steps_per_s": steps / statistics.median(bare),
        "bare_channels_last_steps_per_s": steps / statistics.median(bare_nhwc),
        "ours_loop_steps_per_s": steps / statistics.median(loop),
        # Against the plain loop a user would write, and against the same loop on the same
        # NHWC kernels ours uses (the bookkeeping's own cost).
        "loop_overhead": statistics.median(loop) / statistics.median(bare) - 1,
        "loop_overhead_same_kernels": statistics.median(loop) / statistics.median(bare_nhwc) - 1,
        "overhead_with_evaluation": statistics.median(total) / statistics.median(bare) - 1,
        "torch_threads": torch.get_num_threads(),
    }
    return result


def print_table(r: dict) -> None:
    print(f"training loop, {r['recipe']['arch']}, {r['recipe']['steps']} steps x {r['repeats']} repeats")
    print(f"  bare loop        {r['bare_steps_per_s']:8.1f} steps/s")
    print(f"  bare loop, NHWC  {r['bare_channels_last_steps_per_s']:8.1f} steps/s")
    print(f"  ours (loop)      {r['ours_loop_steps_per_s']:8.1f} steps/s   vs bare {r['loop_overhead']:+.1%}, "
          f"vs bare NHWC {r['loop_overhead_same_kernels']:+.1%}")
    print(f"  ours (with evaluation at start and epoch end)      overhead {r['overhead_with_evaluation']:+.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    r = run(args.quick)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "training.json").write_text(json.dumps(r, indent=1))
    print_table(r)
