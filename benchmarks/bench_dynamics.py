"""What the optimisation-dynamics section's speed rests on, each against its baseline in the same run.

1. ``allocator``: Hessian-vector products of the study's CNN (trained for 300 steps; 4,096 and 512
   training images) in two fresh processes, one with glibc's default allocator settings and one
   after :func:`landscape_utils.study.runtime.keep_freed_memory` (what every workflow job calls).
   Reported per sample size: wall, user and system seconds per HVP (median over repeats) and the
   ratio default / kept (> 1: keeping freed memory is faster).
2. ``layout``: one HVP over the 512-image probe set on a channels_last model against a contiguous
   copy (:func:`landscape_utils.study.jobs.for_hvps`), CNN and residual CNN, interleaved, median
   over repeats, in units of one gradient on the channels_last model; ratio channels_last /
   contiguous. This and ``warm_start`` run under the jobs' settings (one thread, freed memory kept).
3. ``warm_start``: λmax at the 20 log-spaced snapshots of one CNN training run (1 epoch on 16,384
   images, batch 64, SGD momentum 0.9, lr 0.01) at the study's tolerance (1e-4, gap rule): HVPs
   per snapshot from a random start (cold), from the previous snapshot's top eigenvector (v₁), and
   from v₁ + 0.3·v₂ of its top two Ritz vectors (the section's rule), with the largest relative
   difference of the warm values from the cold ones.

Usage: LANDSCAPE_DATA=/work/shared/data python benchmarks/bench_dynamics.py [--quick]
       -> outputs/bench/dynamics.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"
sys.path.insert(0, str(ROOT))

# Run in a fresh interpreter (glibc's settings are per process): N HVPs of the CNN over SIZE images.
ALLOCATOR_WORK = """
import json, resource, sys, time, torch
from torch.nn import functional as F
from landscape_utils.study.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
torch.set_num_threads(1)
from landscape_utils.probes.hessian import HessianOperator
from landscape_utils.study.data import load_mnist, probe_subset
from landscape_utils.study.models import build_model
size, n = int(sys.argv[2]), int(sys.argv[3])
sub = probe_subset(load_mnist().train, size, seed=0)
model = build_model("cnn", seed=0)
v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
op = HessianOperator(model, F.cross_entropy, (sub.x, sub.y))
op.matvec(v)  # first product: kernels and the first-order graph
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(n):
    op.matvec(v)
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(json.dumps({"kept": kept, "wall": (t1 - t0) / n, "user": (r1.ru_utime - r0.ru_utime) / n,
                  "sys": (r1.ru_stime - r0.ru_stime) / n}))
"""


def _allocator(quick: bool) -> dict:
    out = {}
    repeats, n = (1, 3) if quick else (3, 5)
    for size in (4096, 512):
        runs = {"default": [], "kept": []}
        for r in range(repeats):
            for mode in (("default", "kept") if r % 2 == 0 else ("kept", "default")):
                res = subprocess.run([sys.executable, "-c", ALLOCATOR_WORK, mode, str(size), str(n)], cwd=ROOT,
                                     capture_output=True, text=True, check=True)
                runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
        med = {m: {k: statistics.median(x[k] for x in v) for k in ("wall", "user", "sys")} for m, v in runs.items()}
        out[str(size)] = {**med, "applied": runs["kept"][0]["kept"],
                          "ratio_default_over_kept": med["default"]["wall"] / med["kept"]["wall"]}
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _layout(quick: bool) -> dict:
    from landscape_utils.probes.hessian import HessianOperator
    from landscape_utils.study.data import load_mnist, probe_subset
    from landscape_utils.study.jobs import for_hvps
    from landscape_utils.study.models import build_model

    sub = probe_subset(load_mnist().train, 512, seed=0)
    data = (sub.x, sub.y)
    repeats = 5 if quick else 15
    out = {}
    for arch in ("cnn", "rescnn"):
        last = build_model(arch, seed=0).to(memory_format=torch.channels_last)
        plain = for_hvps(last)
        v = torch.randn(sum(p.numel() for p in last.parameters()), generator=torch.Generator().manual_seed(0))
        ops = {"channels_last": HessianOperator(last, F.cross_entropy, data),
               "contiguous": HessianOperator(plain, F.cross_entropy, data)}
        for op in ops.values():
            op.matvec(v)

        def grad():
            last.zero_grad()
            F.cross_entropy(last(data[0]), data[1]).backward()

        grad()
        t = {"gradient": [], "channels_last": [], "contiguous": []}
        for _ in range(repeats):  # interleaved: drift on a shared machine hits all three alike
            t["gradient"].append(_median_time(grad, 1))
            for name, op in ops.items():
                t[name].append(_median_time(lambda op=op: op.matvec(v), 1))
        med = {k: statistics.median(x) for k, x in t.items()}
        out[arch] = {"seconds": med,
                     "in_gradients": {k: med[k] / med["gradient"] for k in ("channels_last", "contiguous")},
                     "ratio_channels_last_over_contiguous": med["channels_last"] / med["contiguous"]}
    return out


def _warm_start(quick: bool) -> dict:
    from landscape_utils.probes.lanczos import lanczos_top_eigs
    from landscape_utils.study.data import load_mnist, probe_subset
    from landscape_utils.study.dynamics import WARM_SECOND, warm_start_vector
    from landscape_utils.study.jobs import for_hvps
    from landscape_utils.study.models import build_model
    from landscape_utils.study.training import checkpoint_steps

    mnist = load_mnist()
    train = probe_subset(mnist.train, 4096 if quick else 16384, seed=0)
    probe = probe_subset(mnist.train, 512, seed=1)
    data = (probe.x, probe.y)
    model = build_model("cnn", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = len(train.y) // 64
    wanted = set(checkpoint_steps(steps, 20))
    snaps = [model.state_dict()] if 0 in wanted else []
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train.y), generator=g)
    for i in range(steps):
        idx = order[64 * i: 64 * (i + 1)]
        opt.zero_grad()
        F.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
        opt.step()
        if i + 1 in wanted:
            snaps.append({k: v.clone() for k, v in model.state_dict().items()})
    starts = {"v1": None, "v1+0.3v2": None}
    hvps = {"cold": [], "v1": [], "v1+0.3v2": []}
    worst = {"v1": 0.0, "v1+0.3v2": 0.0}
    for i, state in enumerate(snaps):
        m = build_model("cnn")
        m.load_state_dict(state)
        m = for_hvps(m.eval())
        cold = lanczos_top_eigs(m, F.cross_entropy, data, torch.Generator().manual_seed(100 + i), tol=1e-4,
                                criterion="gap")
        hvps["cold"].append(cold.n_hvp)
        for name in starts:
            res = lanczos_top_eigs(m, F.cross_entropy, data, torch.Generator().manual_seed(200 + i), tol=1e-4,
                                   criterion="gap", start=starts[name], keep_basis=True)
            hvps[name].append(res.n_hvp)
            worst[name] = max(worst[name], abs(res.eigenvalues[0] - cold.eigenvalues[0]) / cold.eigenvalues[0])
            starts[name] = warm_start_vector(res.basis, second=0.0 if name == "v1" else WARM_SECOND)
    # Snapshot 0 starts cold in every scheme: the means are over the later ones.
    return {"snapshots": len(snaps), "train_steps": steps, "hvps": hvps,
            "mean_hvps_after_first": {k: float(np.mean(v[1:])) for k, v in hvps.items()},
            "max_relative_difference_from_cold": worst}


def run(quick: bool = False) -> dict:
    from landscape_utils.study.runtime import configure_job_runtime

    configure_job_runtime()  # layout and warm start under the jobs' settings (the allocator runs its own processes)
    return {"allocator": _allocator(quick), "layout": _layout(quick), "warm_start": _warm_start(quick)}


def print_table(r: dict) -> None:
    print("allocator (HVPs of the CNN; seconds per HVP, median):")
    for size, a in r["allocator"].items():
        d, k = a["default"], a["kept"]
        print(f"  {size:>5} images: default wall {d['wall']:.3f} (sys {d['sys']:.3f}), kept wall {k['wall']:.3f} "
              f"(sys {k['sys']:.3f}): default/kept {a['ratio_default_over_kept']:.2f}")
    print("layout (one HVP over 512 images, in gradients of the channels_last model):")
    for arch, a in r["layout"].items():
        g = a["in_gradients"]
        print(f"  {arch:7s} channels_last {g['channels_last']:.2f}, contiguous {g['contiguous']:.2f}: "
              f"channels_last/contiguous {a['ratio_channels_last_over_contiguous']:.2f}")
    w = r["warm_start"]
    means = ", ".join(f"{k} {v:.1f}" for k, v in w["mean_hvps_after_first"].items())
    worst = ", ".join(f"{k} {v:.1e}" for k, v in w["max_relative_difference_from_cold"].items())
    print(f"warm start ({w['snapshots']} snapshots of a {w['train_steps']}-step CNN run): mean HVPs per snapshot "
          f"{means}; largest relative difference from cold {worst}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a shorter run")
    args = parser.parse_args()
    r = run(quick=args.quick)
    print_table(r)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "dynamics.json.tmp"
    tmp.write_text(json.dumps(r, indent=1))
    tmp.replace(OUT / "dynamics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
