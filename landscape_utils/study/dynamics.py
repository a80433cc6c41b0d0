"""The optimisation-dynamics jobs: one per architecture and cell (:class:`~landscape_utils.study.units.Cell`).

* ``opt`` cells: a run trained with one optimiser recipe. Its sharpness along training (λmax,
  tr(H), the mini-batch sharpness and, for Adam, the preconditioned sharpness at the run's saved
  log-spaced snapshots), the protocol measurements at its end (Hessian sample × method) and the
  sharpness measures the generalisation analysis ranks.
* ``sizes``: λmax of the first seed's trained model against the size of the Hessian's sample.
* ``sweep``: a batch-size / learning-rate cell trained to a target loss (a divergence is a result),
  then the same sharpness measures.
* ``eos``: full-batch gradient descent with the squared loss on a fixed subset, λmax every few steps.

Random draws: one generator per purpose, each seeded by ``dynamics_seed`` (or ``eos_seed``), the
same for every cell of an architecture, so recipes and sweep cells are measured on the same
batches and samples (common random numbers: their differences are not sampling noise).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..probes.lanczos import EigResult, KrylovBasis, lanczos_top_eigs
from ..probes.power import power_iteration_top_eig
from ..probes.flatness import perturbation_loss_changes
from ..probes.spectrum import hutchpp_lanczos_trace
from .config import ADAM_BETAS
from .data import load_mnist, probe_subset
from .errors import TrainingDiverged
from .jobs import LOSS, _generator, _on_device, for_hvps, probe_data, training_images
from .models import build_model
from .recipes import check_recipe
from .training import Run, train_or_load
from .units import Cell, parse_sweep_setting

# Generator offsets: each purpose draws from its own stream of dynamics_seed.
_LANCZOS, _TRACE, _BATCHES, _POWER, _SAMPLES, _FLAT, _ADAPTIVE = range(7)
# λmax of a Hessian sample larger than this is computed in slices of this many examples.
HESSIAN_CHUNK = 4096
# Warm start at the next snapshot: v₁ + WARM_SECOND·v₂ of this one's top two Ritz vectors. The
# gap rule also waits for the second Ritz pair, about which v₁ alone carries nothing; on the
# study's CNN and MLP (seed 1, 20 snapshots) this cut the mean from 11.2–11.8 to 10.6–10.8 HVPs
# (weights 0.1, 0.3, 1 and three-vector mixes were tried; 0.3 was best on both).
WARM_SECOND = 0.3


def _gen(cfg, purpose: int) -> torch.Generator:
    return _generator(1_000 * cfg.dynamics_seed + purpose)


def dynamics_job(arch: str, cell: Cell, cfg, upstream: dict[str, Any]) -> dict[str, Any]:
    """One cell's results (see the module docstring); plain data for JSON."""
    started = time.time()
    if cell.part == "opt":
        out = recipe_job(arch, cell, cfg)
    elif cell.part == "sizes":
        out = sample_sizes_job(arch, cell, cfg)
    elif cell.part == "sweep":
        out = sweep_job(arch, cell, cfg)
    elif cell.part == "eos":
        out = eos_job(arch, cell, cfg)
    else:
        raise ValueError(f"unknown dynamics part {cell.part!r}")
    return {"part": cell.part, "setting": cell.setting, "seed": cell.seed, "seconds": time.time() - started, **out}


# ------------------------------------------------------------------------------ shared pieces


def _train_images(cfg, arch: str) -> tuple[Tensor, Tensor]:
    """The study's training images (those of its runs of ``arch``), on the device."""
    return training_images(cfg, cfg.train_config(arch, cfg.seeds[0]))


def _batches(cfg, arch: str) -> list[tuple[Tensor, Tensor]]:
    """The training batches the mini-batch sharpness averages over (the same for every cell)."""
    from ..probes.sharpness import training_batches

    x, y = _train_images(cfg, arch)
    return training_batches(x, y, cfg.batch_size, cfg.minibatch_batches, _gen(cfg, _BATCHES))


def _model_at(arch: str, state: dict[str, Tensor], cfg) -> nn.Module:
    """The model at ``state``, for Hessian-vector products (see :func:`~.jobs.for_hvps`)."""
    model = build_model(arch)
    model.load_state_dict(state)
    return for_hvps(_on_device(model, cfg).eval())


def top_and_trace(model: nn.Module, data, cfg, g_lanczos: torch.Generator, g_trace: torch.Generator,
                  start: Tensor | None = None, loss_fn=LOSS) -> tuple[EigResult, Any, Tensor]:
    """λmax by Lanczos (gap rule, ``lanczos_tol``; warm from ``start``) and tr(H) by Hutch++ with
    that run's Krylov basis as the sketch (``trajectory_trace_probes`` Rademacher probes from
    ``g_trace``, independent of the basis), and the warm start for a nearby θ (v₁ + 0.3·v₂).

    Returns:
        ``(top, trace, next_start)``: the :class:`EigResult`, the deflated
        :class:`~landscape_utils.probes.spectrum.TraceResult` and a flat vector.
    """
    top = lanczos_top_eigs(model, loss_fn, data, g_lanczos, tol=cfg.lanczos_tol, criterion="gap", start=start,
                           keep_basis=True)
    trace, _ = hutchpp_lanczos_trace(model, loss_fn, data, g_trace, top.basis, n_probes=cfg.trajectory_trace_probes)
    return top, trace, warm_start_vector(top.basis)


def warm_start_vector(basis: KrylovBasis, second: float = WARM_SECOND) -> Tensor:
    """v₁ + ``second``·v₂ from a stopped Lanczos run's top two Ritz vectors (v₁ alone when the basis
    has one vector or ``second`` is 0): the start for the next, nearby θ."""
    # T's eigenvectors mapped through Q (T is block diagonal after a restart; eigh takes it as it is).
    _, S = np.linalg.eigh(basis.tridiagonal())  # ascending; columns (m,)
    Q = basis.vectors  # (m, P)
    v = torch.as_tensor(S[:, ::-1][:, :2].copy(), dtype=Q.dtype).T @ Q  # (≤2, P)
    return v[0] + second * v[1] if v.shape[0] > 1 and second else v[0]


def _threshold(config, lr: float) -> float | None:
    """The optimiser's stability threshold at step size ``lr`` (None: none is derived, Adadelta)."""
    from ..probes.stability import adam_stability_threshold, heavy_ball_stability_threshold

    if config.optimizer == "sgd":
        return heavy_ball_stability_threshold(lr, config.momentum)
    if config.optimizer == "adam":
        return adam_stability_threshold(lr, ADAM_BETAS[0])
    return None


def _eig(res) -> dict[str, Any]:
    return {"value": res.eigenvalues[0], "n_hvp": res.n_hvp, "converged": res.converged,
            "error_bound": res.error_bounds[0] if hasattr(res, "error_bounds") else None}


def sharpness_measures(model: nn.Module, cfg, probe, top: float | None = None,
                       trace: dict | None = None) -> dict[str, Any]:
    """The sharpness measures the generalisation analysis ranks, at the model's parameters: λmax and
    tr(H) on the probe set (:func:`top_and_trace`; reused when given), the filter-normalised
    flatness (mean loss change under filter-relative noise σ = sweep_sigma) and the adaptive
    sharpness (radius adaptive_rho)."""
    from ..probes.sharpness import adaptive_sharpness

    data = probe.train.data
    if top is None or trace is None:
        res, t, _ = top_and_trace(for_hvps(model), data, cfg, _gen(cfg, _LANCZOS), _gen(cfg, _TRACE))
        top, trace = res.eigenvalues[0], {"estimate": t.estimate, "stderr": t.stderr}
    flat = perturbation_loss_changes(model, LOSS, data, [cfg.sweep_sigma], _gen(cfg, _FLAT), noise="filter",
                                     n_draws=cfg.sweep_draws)
    adaptive = adaptive_sharpness(model, LOSS, data, cfg.adaptive_rho, _gen(cfg, _ADAPTIVE), steps=cfg.adaptive_steps)
    return {"lambda_max": top, "trace": trace["estimate"], "trace_stderr": trace["stderr"],
            "filter_flatness": float(flat.mean[0]), "filter_flatness_stderr": float(flat.stderr[0]),
            "adaptive_sharpness": adaptive.value}


def _generalisation(run: Run) -> dict[str, float]:
    """Train (fixed evaluation subset) and test (all 10,000) loss and error at the run's end, and the gaps."""
    m = run.final_metrics
    return {"train_loss": m["train_loss"], "test_loss": m["test_loss"], "train_error": 1 - m["train_acc"],
            "test_error": 1 - m["test_acc"], "gap_loss": m["test_loss"] - m["train_loss"],
            "gap_error": m["train_acc"] - m["test_acc"]}


# ------------------------------------------------------------------------------ optimiser recipes


def trajectory_of(run: Run, cfg, probe, batches, cold: bool = False, minibatch: bool = True,
                  progress: bool = False) -> dict[str, Any]:
    """Sharpness at each of the run's snapshots (see the module docstring): λmax and tr(H) by
    :func:`top_and_trace`, Lanczos warm-started from the previous snapshot's top two Ritz vectors;
    with ``cold``, also a cold start at every snapshot (the HVPs a warm start saves, and a check
    that both find the same eigenvalue); with ``minibatch``, the mini-batch sharpness too."""
    from tqdm.std import tqdm

    from ..probes.sharpness import minibatch_top_eigs
    from ..probes.stability import adam_preconditioner, preconditioned_top_eig

    snaps = run.checkpoints()
    names = [n for n, _ in build_model(run.config.arch).named_parameters()]
    rows, start, prev_pre = [], None, None
    g_lanczos, g_trace, g_batch = _gen(cfg, _LANCZOS), _gen(cfg, _TRACE), _gen(cfg, _BATCHES + 100)
    for i in tqdm(range(len(snaps["steps"])), disable=not progress, desc="snapshots", unit="snapshot"):
        model = _model_at(run.config.arch, snaps["params"][i], cfg)
        data = probe.train.data
        res, trace, start = top_and_trace(model, data, cfg, g_lanczos, g_trace, start=start)
        prev = res.eigenvectors[0]
        mini = minibatch_top_eigs(model, LOSS, batches, g_batch, tol=cfg.minibatch_tol, start=prev) if minibatch else None
        with torch.no_grad():
            out = model(data[0])
            loss = float(LOSS(out, data[1]))
            error = float((out.argmax(1) != data[1]).float().mean())
        lr = snaps["lr"][i]
        row = {"step": snaps["steps"][i], "lr": lr, "train_loss": loss, "train_error": error,
               "lambda_max": res.eigenvalues[0], "lambda_error_bound": res.error_bounds[0],
               "n_hvp": res.n_hvp, "converged": res.converged, "warm": res.warm_start,
               "trace": trace.estimate, "trace_stderr": trace.stderr,
               "threshold": _threshold(run.config, lr)}
        if mini is not None:
            row.update(minibatch=list(mini.values), minibatch_mean=mini.mean, minibatch_stderr=mini.stderr,
                       minibatch_n_hvp=mini.n_hvp)
        if cold:
            c = lanczos_top_eigs(model, LOSS, data, _generator(10_000 + i), tol=cfg.lanczos_tol, criterion="gap")
            row.update(cold_lambda_max=c.eigenvalues[0], cold_n_hvp=c.n_hvp)
        adam = snaps["adam"][i]
        if adam is not None:
            p = adam_preconditioner([adam["exp_avg_sq"][n] for n in names], adam["step"], adam["betas"][1], adam["eps"])
            pre = preconditioned_top_eig(model, LOSS, data, p.to(cfg.device), g_lanczos, tol=cfg.lanczos_tol,
                                         start=prev_pre)
            prev_pre = pre.eigenvectors[0]
            row.update(preconditioned_lambda_max=pre.eigenvalues[0], preconditioned_n_hvp=pre.n_hvp)
        rows.append(row)
    return {"rows": rows, "top_vector": prev}


def protocol_of(arch: str, model: nn.Module, cfg, probe, batches, top: float, top_vec: Tensor) -> dict[str, Any]:
    """λmax at the end of training for each Hessian sample (one training batch, the probe set,
    ``protocol_large_size`` training images) by power iteration from a random start (the write-up's
    method, pyhessian's rule) and by Lanczos (warm-started from the probe set's top eigenvector: the
    start changes its cost, not its answer)."""
    x, y = _train_images(cfg, arch)
    idx = torch.randperm(len(y), generator=_gen(cfg, _SAMPLES))[:cfg.protocol_large_size]
    samples = {"batch": batches[0], "probe": probe.train.data, "large": (x[idx], y[idx])}
    out: dict[str, Any] = {}
    for name, data in samples.items():
        chunk = HESSIAN_CHUNK if len(data[1]) > HESSIAN_CHUNK else None
        power = power_iteration_top_eig(model, LOSS, data, _gen(cfg, _POWER), tol=cfg.power_tol,
                                        max_iter=cfg.power_max_iter, batch_size=chunk)
        if name == "probe":
            lanczos = {"value": top, "n_hvp": 0, "converged": True, "error_bound": None}
        else:
            lanczos = _eig(lanczos_top_eigs(model, LOSS, data, _gen(cfg, _LANCZOS), tol=cfg.lanczos_tol,
                                            criterion="gap", start=top_vec, batch_size=chunk))
        out[name] = {"size": len(data[1]), "power": {"value": power.eigenvalue, "n_hvp": power.n_hvp,
                                                      "converged": power.converged},
                     "lanczos": lanczos}
    return out


def recipe_job(arch: str, cell: Cell, cfg) -> dict[str, Any]:
    """A recipe's run: trajectory, protocol, and the measures at its end."""
    recipe = check_recipe(cell.setting)
    config = cfg.recipe_config(arch, recipe.key, cell.seed)
    try:
        run = train_or_load(config, progress=False)
    except TrainingDiverged as exc:
        return {"diverged": True, "diverged_at": exc.step, "message": str(exc), "config": config.to_dict()}
    probe, batches = probe_data(cfg), _batches(cfg, arch)
    cold = recipe.key == "study" and cell.seed == cfg.seeds[0]
    # The mini-batch sharpness and the protocol: on protocol_seeds (the same for every recipe).
    measured = cell.seed in cfg.protocol_seeds
    traj = trajectory_of(run, cfg, probe, batches, cold=cold, minibatch=measured)
    end = traj["rows"][-1]
    model = _on_device(run.model(), cfg)
    protocol = (protocol_of(arch, for_hvps(model), cfg, probe, batches, end["lambda_max"], traj["top_vector"])
                if measured else None)
    measures = sharpness_measures(model, cfg, probe, top=end["lambda_max"],
                                  trace={"estimate": end["trace"], "stderr": end["trace_stderr"]})
    return {"diverged": False, "config": config.to_dict(), "trajectory": traj["rows"], "protocol": protocol,
            "measures": measures, "generalisation": _generalisation(run), "probe_data": probe.to_dict(),
            "train_steps": run.history["stopped"]["step"]}


# ------------------------------------------------------------------------------ sample size


def sample_sizes_job(arch: str, cell: Cell, cfg) -> dict[str, Any]:
    """λmax of the study's trained model of ``cell.seed`` on random training samples of each size in
    ``sample_sizes`` (``sample_draws`` samples per size, one for the whole training set), Lanczos
    warm-started from the probe set's top eigenvector."""
    run = train_or_load(cfg.train_config(arch, cell.seed), progress=False)
    model, probe = for_hvps(_on_device(run.model(), cfg)), probe_data(cfg)
    top = lanczos_top_eigs(model, LOSS, probe.train.data, _gen(cfg, _LANCZOS), tol=cfg.lanczos_tol, criterion="gap")
    x, y = _train_images(cfg, arch)
    g = _gen(cfg, _SAMPLES + 100)
    sizes = []
    for size in cfg.sample_sizes:
        size = min(size, len(y))
        draws = 1 if size == len(y) else cfg.sample_draws
        values, hvps = [], []
        for _ in range(draws):
            idx = torch.randperm(len(y), generator=g)[:size]
            chunk = HESSIAN_CHUNK if size > HESSIAN_CHUNK else None
            res = lanczos_top_eigs(model, LOSS, (x[idx], y[idx]), _gen(cfg, _LANCZOS), tol=cfg.lanczos_tol,
                                   criterion="gap", start=top.eigenvectors[0], batch_size=chunk)
            values.append(res.eigenvalues[0])
            hvps.append(res.n_hvp)
        sizes.append({"size": size, "values": values, "n_hvp": hvps})
    return {"sizes": sizes, "probe_lambda_max": top.eigenvalues[0], "probe_data": probe.to_dict()}


# ------------------------------------------------------------------------------ batch-size sweep


def sweep_job(arch: str, cell: Cell, cfg) -> dict[str, Any]:
    """A sweep cell: train to the target loss; a divergence or a missed target is the result."""
    batch, lr, scaling = parse_sweep_setting(cell.setting)
    config = cfg.sweep_config(arch, batch, lr, scaling, cell.seed)
    base = {"batch_size": batch, "base_lr": lr, "scaling": scaling, "lr": config.lr, "config": config.to_dict()}
    try:
        run = train_or_load(config, progress=False)
    except TrainingDiverged as exc:
        return {**base, "diverged": True, "diverged_at": exc.step, "message": str(exc)}
    stopped = run.history["stopped"]
    checks = run.history.get("target_checks") or [[0, None]]
    model, probe = _on_device(run.model(), cfg), probe_data(cfg)
    return {**base, "diverged": False, "reached_target": stopped["reason"] == "target", "steps": stopped["step"],
            "epochs": stopped["step"] / run.history["steps_per_epoch"], "last_check_loss": checks[-1][1],
            "measures": sharpness_measures(model, cfg, probe), "generalisation": _generalisation(run),
            "probe_data": probe.to_dict()}


# ------------------------------------------------------------------------------ edge of stability


def eos_job(arch: str, cell: Cell, cfg) -> dict[str, Any]:
    """Full-batch gradient descent with the squared loss on ``eos_size`` training images from the
    initialisation of ``eos_seed``, at η = 2 / (m · λ0) (λ0: λmax of that loss at initialisation),
    λmax every ``eos_every`` steps."""
    from ..probes.edge_of_stability import full_batch_gd_sharpness, mse_loss

    multiple = float(cell.setting.removeprefix("m"))
    split = probe_subset(load_mnist().train, cfg.eos_size, cfg.eos_seed)
    model = _on_device(build_model(arch, seed=cfg.eos_seed), cfg)
    data = (split.x.to(cfg.device), split.y.to(cfg.device))
    start = lanczos_top_eigs(model, mse_loss, data, _generator(cfg.eos_seed), tol=cfg.lanczos_tol, criterion="gap")
    lam0 = start.eigenvalues[0]
    lr = 2.0 / (multiple * lam0)
    res = full_batch_gd_sharpness(model, mse_loss, data, lr, cfg.eos_steps, cfg.eos_every,
                                  _generator(cfg.eos_seed), tol=cfg.lanczos_tol)
    return {"lr": lr, "multiple": multiple, "lambda0": lam0, "size": cfg.eos_size, "run": res.to_dict()}
