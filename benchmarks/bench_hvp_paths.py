"""Cost and accuracy of the HVP paths, the zoo coverage table, and peak memory on resnet18.

In one process, one thread (ratios are what count; absolute times are noise on a shared machine):

1. ``cost``: one HVP per path in units of one gradient (forward + backward over the same samples,
   timed interleaved with the HVPs, median over repeats): autograd re-using a first-order graph
   built once (in-memory), autograd rebuilding it (``batch_size`` = all samples), central
   differences in float64 (the default) and in float32. On the study's CNN (``build_model("cnn",
   seed=0)``, 2,048 MNIST training samples from ``probe_subset``) and on torchvision resnet18
   (random weights, 16 images 32x32).
2. ``lanczos``: λmax of the study CNN by ``lanczos_top_eigs`` at the study's tolerance (1e-4
   relative residual) on autograd and on finite-difference HVPs, each against a tight reference
   (Lanczos on autograd HVPs at 1e-9).
3. ``zoo``: the coverage table of tests/test_zoo.py (model, parameters, path, λmax, agreement with
   the exact-rebuild reference, seconds).
4. ``memory``: peak resident memory above the set-up for Lanczos on resnet18 (11.2M parameters,
   128 random images 32x32, ``max_iter=8``) with ``batch_size=32`` (autograd and finite
   differences) and in memory, each in a fresh subprocess (``VmHWM`` after resetting it at the end
   of set-up, minus ``VmRSS`` then; ``ru_maxrss`` would be inherited from this process).

Usage: LANDSCAPE_DATA=/work/shared/data python benchmarks/bench_hvp_paths.py [--quick]
       -> outputs/bench/hvp_paths.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"
sys.path.insert(0, str(ROOT))

from landscape_utils.probes.hessian import HessianOperator  # noqa: E402
from landscape_utils.probes.lanczos import lanczos_top_eigs  # noqa: E402


def _grad_seconds(model, x, y) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    torch.autograd.grad(F.cross_entropy(model(x), y), params)
    return time.perf_counter() - start


def hvp_costs(model, x, y, repeats: int) -> dict:
    """Median seconds per HVP / median seconds per gradient, for each path."""
    model.eval()
    n = x.shape[0]
    ops = {
        "autograd, graph re-used (in-memory)": HessianOperator(model, F.cross_entropy, (x, y), hvp="autograd"),
        "autograd, graph rebuilt (batch_size=n)": HessianOperator(model, F.cross_entropy, (x, y), batch_size=n,
                                                                  hvp="autograd"),
        "finite differences, float64": HessianOperator(model, F.cross_entropy, (x, y), hvp="finite-difference"),
        "finite differences, float32": HessianOperator(model, F.cross_entropy, (x, y), hvp="finite-difference",
                                                       fd_float64=False),
    }
    g = torch.Generator().manual_seed(0)
    v = torch.randn(ops["finite differences, float64"].dim, generator=g)
    for op in ops.values():
        op.matvec(v)  # path selection, error estimate, warm-up
    times: dict[str, list[float]] = {k: [] for k in ops}
    grads: list[float] = []
    for _ in range(repeats):
        grads.append(_grad_seconds(model, x, y))
        for name, op in ops.items():
            start = time.perf_counter()
            op.matvec(v)
            times[name].append(time.perf_counter() - start)
    unit = statistics.median(grads)
    out = {"gradient_seconds": unit}
    for name, op in ops.items():
        out[name] = {"gradients_per_hvp": statistics.median(times[name]) / unit, "hvp_rel_error": op.hvp_rel_error}
    return out


def lanczos_errors(model, x, y) -> dict:
    ref = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(5), tol=1e-9,
                           hvp="autograd").eigenvalues[0]
    out = {"reference_lambda_max": ref}
    for path in ("autograd", "finite-difference"):
        for seed in (1, 2, 3):
            start = time.perf_counter()
            r = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(seed), tol=1e-4, hvp=path)
            out.setdefault(path, []).append({"lambda_max": r.eigenvalues[0], "rel_error": abs(r.eigenvalues[0] - ref) / ref,
                                             "n_hvp": r.n_hvp, "tolerance_used": r.tolerance_used,
                                             "hvp_rel_error": r.hvp_rel_error, "seconds": time.perf_counter() - start})
    return out


MEMORY_CHILD = """
import json, resource, sys, torch, torchvision
from torch.nn import functional as F
torch.set_num_threads(1)
from landscape_utils.probes.lanczos import lanczos_top_eigs
bs = None if sys.argv[1] == "none" else int(sys.argv[1])
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None, num_classes=10)
g = torch.Generator().manual_seed(0)
x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
with torch.no_grad():
    model.eval()(x[:2])
def status(key):  # kB; VmHWM is per process image (ru_maxrss would be inherited from the parent)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
r = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(1), max_iter=8, batch_size=bs,
                     hvp=sys.argv[2])
peak = status("VmHWM")
P = sum(p.numel() for p in model.parameters())
print(json.dumps({"setup_MiB": base / 1024, "peak_above_setup_MiB": (peak - base) / 1024, "n_hvp": r.n_hvp,
                  "hvp_path": r.hvp_path, "P": P, "one_param_vector_MiB": P * 4 / 2**20,
                  "lanczos_basis_MiB": r.n_hvp * P * 4 / 2**20}))
"""


def memory(configs) -> list[dict]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for bs, path in configs:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(bs).lower(), path], capture_output=True,
                              text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            rows.append({"batch_size": bs, "hvp": path, "error": proc.stderr[-2000:]})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"batch_size": bs, "hvp": path, "seconds": time.perf_counter() - start, **row})
    return rows


def zoo_table() -> list[dict]:
    spec = importlib.util.spec_from_file_location("test_zoo", ROOT / "tests" / "test_zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    rows = []
    for name in zoo.ZOO:
        row = zoo.run_zoo_entry(name)
        row.pop("result")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no memory runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 7
    out: dict = {"threads": 1, "torch": torch.__version__}

    from landscape_utils.study.data import load_mnist, probe_subset
    from landscape_utils.study.models import build_model

    x, y = probe_subset(load_mnist(download=False).train, 2048, seed=0).data
    cnn = build_model("cnn", seed=0)
    out["cnn_parameters"] = sum(p.numel() for p in cnn.parameters())
    out["cost_cnn"] = hvp_costs(cnn, x, y, repeats)
    out["lanczos_cnn"] = lanczos_errors(cnn, x, y)

    import torchvision

    torch.manual_seed(0)
    rn = torchvision.models.resnet18(weights=None, num_classes=10)
    g = torch.Generator().manual_seed(0)
    xr, yr = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    out["cost_resnet18"] = hvp_costs(rn, xr, yr, max(2, repeats // 2))
    out["zoo"] = zoo_table()
    if not args.quick:
        out["memory_resnet18_128"] = memory([(32, "autograd"), (32, "finite-difference"), (None, "autograd")])
    out["max_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\nHVP cost in gradients (median of repeats, one thread)")
    for key in ("cost_cnn", "cost_resnet18"):
        for name, val in out[key].items():
            if isinstance(val, dict):
                err = val["hvp_rel_error"]
                print(f"  {key[5:]:9s} {name:42s} {val['gradients_per_hvp']:5.2f}"
                      + (f"   HVP rel. error {err:.1e}" if err is not None else ""))
    lc = out["lanczos_cnn"]
    print(f"\nStudy CNN lambda_max (ref {lc['reference_lambda_max']:.6g}) at tol 1e-4:")
    for path in ("autograd", "finite-difference"):
        for r in lc[path]:
            print(f"  {path:18s} rel.err {r['rel_error']:.1e}  HVPs {r['n_hvp']:3d}  tol used {r['tolerance_used']:.0e}"
                  f"  {r['seconds']:.1f}s")
    print("\nZoo coverage")
    print(f"  {'model':38s} {'params':>10s} {'HVP path':27s} {'lambda_max':>10s} {'rel.diff':>8s} {'HVPs':>4s} {'s':>5s}")
    for r in out["zoo"]:
        print(f"  {r['model']:38s} {r['parameters']:10d} {r['hvp_path']:27s} {r['lambda_max']:10.5g} "
              f"{r['rel_diff']:8.1e} {r['n_hvp']:4d} {r['seconds']:5.1f}")
    for r in out.get("memory_resnet18_128", []):
        print("memory", r)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hvp_paths.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {OUT / 'hvp_paths.json'}")


if __name__ == "__main__":
    main()
