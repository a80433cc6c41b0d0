"""Use every core: two independent jobs with one math thread each, against one job at a time with two.

The study's heavy work is independent per-seed jobs (training runs, probe blocks). On a 2-core
machine they can run as 2 jobs × 1 thread (Snakemake's ``--cores 2`` with ``threads: 1`` per rule,
what the workflow does) or 1 job × 2 threads, one after another. This times both on the same two
pieces of work, in the same run, alternating the order over repeats:

* ``training``: 300 SGD steps of the study's CNN (batch 64) for two seeds;
* ``curvature``: the top Hessian eigenvalue (Lanczos, k = 1) and a 12-probe Hutchinson trace of the
  CNN at initialisation on 512 training images, for two seeds.

Each piece runs in a fresh Python process (as a workflow job does), so process start-up is included.
Reported: wall seconds per layout (median over repeats) and the ratio sequential / parallel (> 1: the
parallel layout is faster).

Usage: python benchmarks/bench_threads.py [--quick]  -> outputs/bench/threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"

WORK = {
    "training": """
import torch
from landscape_utils.study.config import TrainConfig
from landscape_utils.study.data import load_mnist, probe_subset
from landscape_utils.study.models import build_model
from torch.nn import functional as F
sub = probe_subset(load_mnist().train, 300 * 64, seed=SEED)
model = build_model("cnn", seed=SEED).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
for i in range(300):
    xb, yb = sub.x[64 * i:64 * (i + 1)], sub.y[64 * i:64 * (i + 1)]
    opt.zero_grad(); F.cross_entropy(model(xb), yb).backward(); opt.step()
""",
    "curvature": """
import torch
from torch.nn import functional as F
from landscape_utils.study.data import load_mnist, probe_subset
from landscape_utils.study.models import build_model
from landscape_utils.probes import lanczos_top_eigs, hutchinson_trace
data = probe_subset(load_mnist().train, 512, seed=0).data
model = build_model("cnn", seed=SEED)
lanczos_top_eigs(model, F.cross_entropy, data, torch.Generator().manual_seed(SEED), k=1, tol=1e-4)
hutchinson_trace(model, F.cross_entropy, data, torch.Generator().manual_seed(SEED), n_probes=12)
""",
}


def _launch(code: str, seed: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    prog = f"import torch; torch.set_num_threads({threads})\n" + code.replace("SEED", str(seed))
    return subprocess.Popen([sys.executable, "-c", prog], env=env, cwd=ROOT)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"benchmark job failed with exit code {p.returncode}")


def parallel(code: str) -> float:
    """Two jobs at once, one thread each."""
    start = time.perf_counter()
    _wait([_launch(code, seed, 1) for seed in (0, 1)])
    return time.perf_counter() - start


def sequential(code: str) -> float:
    """Two jobs one after the other, two threads each."""
    start = time.perf_counter()
    for seed in (0, 1):
        _wait([_launch(code, seed, 2)])
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    repeats = 1 if quick else 3
    result = {"cpus": os.cpu_count(), "repeats": repeats, "work": {}}
    for name, code in WORK.items():
        times = {"2 jobs x 1 thread": [], "1 job x 2 threads": []}
        for r in range(repeats):
            order = [("2 jobs x 1 thread", parallel), ("1 job x 2 threads", sequential)]
            for label, fn in (order if r % 2 == 0 else order[::-1]):
                times[label].append(fn(code))
        med = {k: statistics.median(v) for k, v in times.items()}
        result["work"][name] = {"seconds": times, "median": med,
                                "sequential_over_parallel": med["1 job x 2 threads"] / med["2 jobs x 1 thread"]}
    return result


def print_table(r: dict) -> None:
    print(f"two independent jobs on {r['cpus']} CPUs, {r['repeats']} repeat(s), wall seconds (median)")
    for name, w in r["work"].items():
        m = w["median"]
        print(f"  {name:10s} 2 jobs x 1 thread {m['2 jobs x 1 thread']:6.1f} s   1 job x 2 threads "
              f"{m['1 job x 2 threads']:6.1f} s   ratio {w['sequential_over_parallel']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    r = run(args.quick)
    print_table(r)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "threads.json").write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
