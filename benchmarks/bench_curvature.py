"""Top Hessian eigenvalue of the study's CNN: this project's Lanczos against pyhessian and power iteration.

For the CNN at initialisation and after training, on a fixed, seeded set of MNIST training
samples (float32, eval mode, mean cross-entropy), in one process:

* ``lanczos``  — ``lanczos_top_eigs`` with its defaults (k=1, relative Ritz residual 1e-4);
* ``lanczos_gap`` — the same with ``criterion="gap"`` (gap-refined error estimate 1e-4 for the
  wanted pair and the next one, the guard);
* ``lanczos_gap_lin`` — ``lanczos_gap`` on ``hvp="linearize"`` HVPs (forward-over-reverse, traced
  once by ``torch.func.linearize``; its tracing is part of its time);
* ``pyhessian`` — ``pyhessian.hessian(model, criterion, data=(x, y), cuda=False).eigenvalues()``,
  the package's default call (power iteration, tol 1e-3, at most 100 iterations), its
  construction included (it builds the gradient graph, as ours does);
* ``power``    — ``power_iteration_top_eig`` with its defaults (pyhessian's rule) on our HVP.

Reported per method: HVP count, wall time in multiples of one gradient (forward + backward over the
same samples, timed in the same run, 3 times per repeat, interleaved with the methods; ratio of
medians over repeats, each repeat with its own start-vector seed; the methods' times include
building their gradient graph) and the relative error against a float64 ``scipy.sparse.linalg.eigsh``
reference (``which="LA"``, tol 1e-10). Also: the HVPs each method's iterates needed to first come
within 1e-4 of the reference (from the per-iteration history), and λ2/λ1, which sets how slow
power iteration is. Also the cost of one HVP in gradients, for double backward on the cached
first-order graph (``hvp_in_gradients``) and for the linearized path (``hvp_linearized_in_gradients``),
each the median of its products timed interleaved with the gradients. Absolute times are noise on a
shared 2-core machine; ratios are what count.

Usage: python benchmarks/bench_curvature.py [--quick]  -> outputs/bench/curvature.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from torch.nn import functional as F

from landscape_utils.study.config import TrainConfig
from landscape_utils.study.data import load_mnist, probe_subset
from landscape_utils.probes.hessian import HessianOperator
from landscape_utils.probes.lanczos import lanczos_top_eigs
from landscape_utils.probes.params import probe_mode
from landscape_utils.probes.power import power_iteration_top_eig
from landscape_utils.study.training import train_or_load

OUT = Path(__file__).resolve().parents[1] / "outputs" / "bench"
TARGET_ERR, TARGET_GRADS = 1e-4, 25.0


def gradient_seconds(model, x, y) -> float:
    """One forward + backward of the mean loss over (x, y): the time unit."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    torch.autograd.grad(F.cross_entropy(model(x), y), params)
    return time.perf_counter() - start


def reference(model, x, y, tol: float = 1e-10) -> dict:
    """λ1, λ2 by eigsh on float64 HVPs of a float64 copy (the model itself is not touched)."""
    model64 = copy.deepcopy(model).double().eval()
    op = HessianOperator(model64, F.cross_entropy, (x.double(), y))
    v0 = np.random.default_rng(0).standard_normal(op.dim)
    vals = np.sort(eigsh(op.as_linear_operator(), k=2, which="LA", tol=tol, v0=v0)[0])[::-1]
    return {"lambda1": float(vals[0]), "lambda2": float(vals[1]), "ratio": float(vals[1] / vals[0]),
            "n_hvp": op.n_hvp, "tol": tol}


def first_within(history, ref: float, err: float = TARGET_ERR) -> int | None:
    """1-based count of HVPs after which the iterate first came within ``err`` of ``ref``."""
    for i, value in enumerate(history):
        if abs(value - ref) <= err * abs(ref):
            return i + 1
    return None


def run_lanczos(model, x, y, seed: int) -> dict:
    r = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(seed))
    return {"value": r.eigenvalues[0], "n_hvp": r.n_hvp, "history": list(r.history)}


def run_lanczos_gap(model, x, y, seed: int) -> dict:
    r = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(seed), criterion="gap")
    return {"value": r.eigenvalues[0], "n_hvp": r.n_hvp, "history": list(r.history)}


def run_lanczos_gap_lin(model, x, y, seed: int) -> dict:
    r = lanczos_top_eigs(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(seed), criterion="gap",
                         hvp="linearize")
    assert r.hvp_path == "forward-over-reverse (linearized)", r.hvp_note
    return {"value": r.eigenvalues[0], "n_hvp": r.n_hvp, "history": list(r.history)}


def run_power(model, x, y, seed: int) -> dict:
    r = power_iteration_top_eig(model, F.cross_entropy, (x, y), torch.Generator().manual_seed(seed))
    return {"value": r.eigenvalue, "n_hvp": r.n_hvp, "history": list(r.history)}


def run_pyhessian(model, x, y, seed: int) -> dict:
    """pyhessian's default call, with its HVPs counted and the caller's model state restored."""
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class)

    real_hvp, history = ph.hessian_vector_product, []

    def counted(gradsH, params, v):
        hv = real_hvp(gradsH, params, v)
        history.append(float(sum((a * b).sum() for a, b in zip(hv, v))))  # its Rayleigh quotient
        return hv

    ph.hessian_vector_product = counted
    try:
        # pyhessian draws its start vector from the global RNG: seed a forked copy of it.
        with torch.random.fork_rng(devices=[]), probe_mode(model):  # it also calls model.eval()
            torch.manual_seed(seed)
            values, _ = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False).eigenvalues()
    finally:
        ph.hessian_vector_product = real_hvp
        for p in model.parameters():  # it ran .backward(create_graph=True): drop those grads
            p.grad = None
    return {"value": float(values[0]), "n_hvp": len(history), "history": history}


METHODS = {"lanczos": run_lanczos, "lanczos_gap": run_lanczos_gap, "lanczos_gap_lin": run_lanczos_gap_lin,
           "pyhessian": run_pyhessian, "power": run_power}


def bench_model(model, x, y, repeats: int, ref_tol: float) -> dict:
    model.eval()
    ref = reference(model, x, y, ref_tol)
    lam = ref["lambda1"]
    gradient_seconds(model, x, y)  # warm-up
    grad_t: list[float] = []
    hvp_t: list[float] = []
    lin_t: list[float] = []
    rows: dict[str, dict[str, list]] = {m: {"seconds": [], "n_hvp": [], "rel_err": [], "hvp_to_1e-4": []}
                                        for m in METHODS}
    for rep in range(repeats):  # interleaved, so load changes hit every method alike
        op = HessianOperator(model, F.cross_entropy, (x, y))
        lin = HessianOperator(model, F.cross_entropy, (x, y), hvp="linearize")
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(rep))
        op.matvec(v)  # warm-up
        lin.matvec(v)
        for _ in range(3):
            grad_t.append(gradient_seconds(model, x, y))
            for times, o in ((hvp_t, op), (lin_t, lin)):
                start = time.perf_counter()
                o.matvec(v)
                times.append(time.perf_counter() - start)
        del op, lin
        for name, fn in METHODS.items():
            start = time.perf_counter()
            out = fn(model, x, y, seed=rep)
            rows[name]["seconds"].append(time.perf_counter() - start)
            rows[name]["n_hvp"].append(out["n_hvp"])
            rows[name]["rel_err"].append(abs(out["value"] - lam) / abs(lam))
            rows[name]["hvp_to_1e-4"].append(first_within(out["history"], lam))
    grad = statistics.median(grad_t)
    result = {"reference": ref, "gradient_seconds": grad_t, "hvp_seconds": hvp_t, "hvp_linearized_seconds": lin_t,
              "hvp_in_gradients": statistics.median(hvp_t) / grad,
              "hvp_linearized_in_gradients": statistics.median(lin_t) / grad, "methods": {}}
    for name, r in rows.items():
        grads = statistics.median(r["seconds"]) / grad
        result["methods"][name] = {
            **r,
            "gradients": grads,
            "rel_err_median": statistics.median(r["rel_err"]),
            "rel_err_max": max(r["rel_err"]),
            "meets_target": max(r["rel_err"]) <= TARGET_ERR and grads <= TARGET_GRADS,
        }
    return result


def run(quick: bool = False) -> dict:
    """Benchmark at initialisation and after training; returns plain values (see module doc)."""
    size, repeats = (512, 2) if quick else (2048, 3)
    ref_tol = 1e-8 if quick else 1e-10
    # The study's recipe; quick mode uses a short (smoke) run instead of 3 epochs.
    cfg = TrainConfig(arch="cnn", epochs=1, max_steps=40, train_size=4096) if quick else TrainConfig(arch="cnn")
    train_run = train_or_load(cfg, progress=False)
    mnist = load_mnist()
    subset = probe_subset(mnist.train, size, seed=0)
    x, y = subset.data
    result = {"samples": subset.describe(), "subset": subset.to_dict(), "repeats": repeats,
              "train_config": cfg.to_dict(), "dtype": "float32", "mode": "eval",
              "torch_threads": torch.get_num_threads(),
              "target": {"rel_err": TARGET_ERR, "gradients": TARGET_GRADS}, "models": {}}
    for which in ("init", "final"):
        result["models"][which] = bench_model(train_run.model(which), x, y, repeats, ref_tol)
    return result


def _fmt_hvps(values) -> str:
    vals = [v for v in values if v is not None]
    missing = len(values) - len(vals)
    if not vals:
        return "never"
    text = f"{int(statistics.median(vals))}" + (f"-{max(vals)}" if max(vals) != min(vals) else "")
    return text + (f" ({missing} never)" if missing else "")


def print_table(r: dict) -> None:
    print(f"top Hessian eigenvalue, CNN, {r['samples']}, {r['dtype']}, {r['repeats']} repeats, "
          f"{r['torch_threads']} torch thread(s)")
    for which, m in r["models"].items():
        ref = m["reference"]
        print(f"  {which:5s}: λ1 = {ref['lambda1']:.6g}  λ2/λ1 = {ref['ratio']:.3f}  "
              f"(eigsh tol {ref['tol']:g}, {ref['n_hvp']} HVPs); one HVP = {m['hvp_in_gradients']:.2f} gradients "
              f"(double backward), {m['hvp_linearized_in_gradients']:.2f} (linearized)")
        print(f"    {'method':15s} {'HVPs':>9s} {'gradients':>10s} {'rel.err median':>15s} {'max':>9s}"
              f" {'HVPs to 1e-4':>14s}  target")
        for name, row in m["methods"].items():
            print(f"    {name:15s} {_fmt_hvps(row['n_hvp']):>9s} {row['gradients']:10.1f} "
                  f"{row['rel_err_median']:15.2e} {row['rel_err_max']:9.2e} {_fmt_hvps(row['hvp_to_1e-4']):>14s}"
                  f"  {'yes' if row['meets_target'] else 'no'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 samples, 2 repeats, a smoke-trained model")
    args = parser.parse_args()
    r = run(args.quick)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "curvature.json.tmp"
    tmp.write_text(json.dumps(r, indent=1))
    tmp.replace(OUT / "curvature.json")
    print_table(r)
