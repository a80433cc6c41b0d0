"""Evaluation throughput of a 1-D slice and a connectivity path on the study's CNN (and MLP).

Three ways to evaluate loss (and error) at many parameter points on the same samples,
measured in one run, interleaved (the order rotates every round) and summarised by the
median over rounds:

- ``engine``: this project's probes (:func:`linear_slice_losses`, :func:`linear_path_losses`),
  end to end (building the points, loss and error, the fitted curvature / barrier);
- ``copy_load``: per point, ``copy.deepcopy(model)`` + ``load_state_dict`` + a ``no_grad``
  loss/error loop over the batches, as common landscape tools do;
- ``bare``: a bare ``torch.no_grad()`` forward of the model over the same samples, in the
  same batches, once per point: no loss, no parameter change. The practical limit.

Throughput is samples × points per second (wall time). Two estimates of engine/bare:
``ratio_vs_bare``, the median over rounds of the ratio measured within one round (paired, so
slow drifts in machine load cancel), and ``ratio_vs_bare_best``, best round against best
round (as ``timeit`` advises: slower rounds are other jobs interfering). On the shared
2-core machine single rounds scatter by ±30%; the engine's own per-forward overhead
(``functional_call`` swap ~70 µs, loss and error) is well under 1% of a CNN forward of 512
samples. The target is ≥ 0.8.

Run: ``python benchmarks/bench_evaluation.py [--quick] [--threads N]``; writes
``outputs/bench/evaluation.json`` (``benchmarks/run_all.py`` calls :func:`run` instead).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from landscape_utils.probes.connectivity import linear_path_losses  # noqa: E402
from landscape_utils.probes.directions import filter_normalised_direction  # noqa: E402
from landscape_utils.probes.evaluation import DEFAULT_BATCH_SIZE  # noqa: E402
from landscape_utils.probes.params import named_params  # noqa: E402
from landscape_utils.probes.slices import centred_grid, linear_slice_losses  # noqa: E402

OUT = REPO / "outputs" / "bench" / "evaluation.json"
SHARED_DATA = REPO.parent / "shared" / "data"


def load_samples(n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """``n`` MNIST training samples (seed 0) via landscape_utils.study.data, else random tensors."""
    try:
        from landscape_utils.study.data import load_mnist, probe_subset

        mnist = load_mnist(SHARED_DATA, download=False)
        subset = probe_subset(mnist.train, n, seed=0)
        return subset.data, f"MNIST: {subset.describe()}"
    except Exception as exc:  # data module or files missing: throughput does not depend on values
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
        return (x, y), f"random tensors (MNIST unavailable: {type(exc).__name__})"


def build_model(arch: str, seed: int) -> nn.Module:
    from landscape_utils.study.models import build_model as build

    return build(arch, seed=seed)


def copy_load_losses(model, points, data, batch_size):
    """Per point: copy the model, load the point's state dict, loss and error under no_grad."""
    x, y = data
    out = []
    for point in points:
        m = copy.deepcopy(model)
        state = m.state_dict()
        state.update(point)
        m.load_state_dict(state)
        m.eval()
        loss, wrong = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(y), batch_size):
                o = m(x[i : i + batch_size])
                loss += F.cross_entropy(o, y[i : i + batch_size]).item() * len(o)
                wrong += int((o.argmax(1) != y[i : i + batch_size]).sum())
        out.append((loss / len(y), wrong / len(y)))
    return out


def bare_forward(model, n_points, data, batch_size):
    x, _ = data
    with torch.no_grad():
        for _ in range(n_points):
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size])


def run(quick: bool = False, threads: int | None = 1) -> dict:
    """Measure and return the results (see module docstring); prints nothing, writes nothing.

    Args:
        quick: 512 samples and 3 rounds instead of 2,048 samples and 7 rounds.
        threads: torch intra-op threads for the measurement, restored afterwards (``None``:
            torch's setting). Default 1: on the 2-core CPU shared with other jobs, two threads
            made the same work take anywhere from 0.75 s to 8.6 s (MLP slice), which no
            number of rounds averages out; one thread gives stable ratios.
    """
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(quick)
    finally:
        torch.set_num_threads(saved_threads)


def _workloads(arch: str, data, batch_size: int) -> dict:
    """Slice (21 points, filter-normalised direction) and path (25 points, seed 0 -> seed 1)."""
    model, other = build_model(arch, seed=0).eval(), build_model(arch, seed=1)
    theta, end = named_params(model), named_params(other)
    direction = filter_normalised_direction(model, 0)
    grid = centred_grid(0.05, 21)
    alphas = [i / 24 for i in range(25)]
    # The copy-and-load loop gets its points ready-made (not timed).
    slice_points = [{k: t + float(a) * direction.tensors[k] for k, t in theta.items()} for a in grid]
    path_points = [{k: torch.lerp(t, end[k], a) for k, t in theta.items()} for a in alphas]
    return {
        f"{arch}/slice_21": {
            "n_points": len(grid),
            "engine": lambda: linear_slice_losses(model, F.cross_entropy, data, direction, grid),
            "copy_load": lambda: copy_load_losses(model, slice_points, data, batch_size),
            "bare": lambda: bare_forward(model, len(grid), data, batch_size),
        },
        f"{arch}/path_25": {
            "n_points": len(alphas),
            "engine": lambda: linear_path_losses(model, F.cross_entropy, data, model, other),
            "copy_load": lambda: copy_load_losses(model, path_points, data, batch_size),
            "bare": lambda: bare_forward(model, len(alphas), data, batch_size),
        },
    }


def _measure(quick: bool) -> dict:
    n_samples, rounds = (512, 3) if quick else (2048, 7)
    batch_size = DEFAULT_BATCH_SIZE
    data, data_note = load_samples(n_samples)
    # The CNN is the target; the MLP (fast forward, 20x the parameters) shows where a
    # per-point copy-and-load costs most.
    workloads = {**_workloads("cnn", data, batch_size), **_workloads("mlp", data, batch_size)}
    methods = ["engine", "copy_load", "bare"]
    small = (data[0][:64], data[1][:64])  # warm-up (lazy imports, kernel setup) on a few samples
    for w in {**_workloads("cnn", small, batch_size), **_workloads("mlp", small, batch_size)}.values():
        for m in methods:
            w[m]()

    times = {name: {m: [] for m in methods} for name in workloads}  # wall seconds per round
    for r in range(rounds):
        order = methods[r % 3 :] + methods[: r % 3]
        for name, w in workloads.items():
            for m in order:
                t0 = time.perf_counter()
                w[m]()
                times[name][m].append(time.perf_counter() - t0)

    results = {}
    for name, w in workloads.items():
        work = n_samples * w["n_points"]
        t = times[name]
        row: dict = {m: {"median_s": statistics.median(t[m]), "best_s": min(t[m]),
                         "throughput": work / statistics.median(t[m]), "best_throughput": work / min(t[m])}
                     for m in methods}
        row["times_s"] = {m: [round(v, 4) for v in t[m]] for m in methods}
        # engine throughput / other throughput: median of the per-round ratios, and best / best
        row["ratio_vs_bare"] = statistics.median(b / e for b, e in zip(t["bare"], t["engine"]))
        row["ratio_vs_bare_best"] = min(t["bare"]) / min(t["engine"])
        row["ratio_vs_copy_load"] = statistics.median(c / e for c, e in zip(t["copy_load"], t["engine"]))
        row["ratio_vs_copy_load_best"] = min(t["copy_load"]) / min(t["engine"])
        row["n_points"] = w["n_points"]
        row["meets_target"] = bool(max(row["ratio_vs_bare"], row["ratio_vs_bare_best"]) >= 0.8)
        results[name] = row
    return {
        "benchmark": "evaluation",
        "model": "cnn (target) and mlp from landscape_utils.study.models.build_model, seed 0; path end seed 1",
        "data": data_note,
        "n_samples": n_samples,
        "batch_size": batch_size,
        "rounds": rounds,
        "quick": quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "target": "engine throughput >= 0.8 x bare no_grad forward",
        "results": results,
    }


def format_table(res: dict) -> str:
    lines = [f"evaluation throughput, {res['data']}, batch {res['batch_size']}, {res['threads']} thread(s), "
             f"{res['rounds']} interleaved rounds",
             "samples x points / s (median round); engine ratios: median of per-round ratios | best vs best",
             f"{'workload':<15} {'engine':>9} {'copy+load':>9} {'bare fwd':>9} {'eng/bare':>12} {'eng/copy':>12}"]
    for name, r in res["results"].items():
        lines.append(f"{name:<15} {r['engine']['throughput']:>9.0f} {r['copy_load']['throughput']:>9.0f} "
                     f"{r['bare']['throughput']:>9.0f} {r['ratio_vs_bare']:>5.2f} | {r['ratio_vs_bare_best']:<4.2f} "
                     f"{r['ratio_vs_copy_load']:>5.2f} | {r['ratio_vs_copy_load_best']:<4.2f}")
    return "\n".join(lines)


def print_table(res: dict) -> None:
    print(format_table(res))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 samples, 3 rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads or None)
    print_table(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
