"""Optimisation dynamics: snapshots that never change the trajectory, recipes and sweep cells,
warm starts across an eigenvalue crossing, settings refused before any training, and the
protocol study's verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape_utils.probes.lanczos import lanczos_top_eigs
from landscape_utils.probes.spectrum import hutchinson_trace
from landscape_utils.probes.stability import adam_preconditioner, adam_preconditioner_of
from landscape_utils.report import dynamics as D
from landscape_utils.study import training as T
from landscape_utils.study import units
from landscape_utils.study.config import TrainConfig
from landscape_utils.study.data import load_mnist
from landscape_utils.study.settings import StudyConfig, load_study
from landscape_utils.study.stats import mean_interval
from landscape_utils.study.units import Cell
from tests.conftest import SHARED_DATA

SMALL = dict(arch="mlp", epochs=2, train_size=512, batch_size=64, checkpoints=6)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(SHARED_DATA, download=False)


# --------------------------------------------------------------------------- snapshot steps


@pytest.mark.parametrize("total, count, expected", [
    (10, 0, []),
    (3, 6, [0, 1, 2, 3]),
    (5, 6, [0, 1, 2, 3, 4, 5]),
    (2814, 5, [0, 1, 14, 199, 2814]),  # geomspace(1, 2814, 4) rounded
])
def test_checkpoint_steps_table(total, count, expected):
    assert T.checkpoint_steps(total, count) == expected


@pytest.mark.parametrize("total, count", [(40, 24), (2814, 20), (100_000, 30), (7, 7)])
def test_checkpoint_steps_are_distinct_log_spaced_and_end_at_both_ends(total, count):
    steps = T.checkpoint_steps(total, count)
    assert len(steps) == min(count, total + 1) and steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == total
    if total > 10 * count:  # log spacing: the ratios of consecutive steps stay bounded, unlike a linear grid
        ratios = np.array(steps[2:]) / np.array(steps[1:-1])
        assert ratios.max() < 3 * (total ** (1 / (count - 2)))


# --------------------------------------------------------------------------- recording never changes training


def _recorder(generator: torch.Generator):
    """Measures λmax (random start from ``generator``) and tr(H) at every snapshot, inside the loop."""
    seen = []

    def record(step, model, optimizer):
        x, y = record.data
        top = lanczos_top_eigs(model, nn.functional.cross_entropy, (x, y), generator, tol=1e-2, max_iter=20)
        trace = hutchinson_trace(model, nn.functional.cross_entropy, (x, y), generator, n_probes=2)
        seen.append((step, top.eigenvalues[0], trace.estimate, model.training))

    record.seen = seen
    return record


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 1e-3), ("adadelta", 1.0)])
def test_recording_inside_the_loop_leaves_weights_bitwise_identical(mnist, optimizer, lr):
    plain = TrainConfig(**{**SMALL, "checkpoints": 0, "optimizer": optimizer, "lr": lr})
    torch.manual_seed(123)
    _, final_plain, _ = T.train(plain, mnist, progress=False)
    rng_plain = torch.get_rng_state()

    recorded = TrainConfig(**{**SMALL, "optimizer": optimizer, "lr": lr})
    record = _recorder(torch.Generator().manual_seed(7))
    record.data = (mnist.train.x[:128], mnist.train.y[:128])
    torch.manual_seed(123)
    _, final_rec, history = T.train(recorded, mnist, progress=False, on_checkpoint=record)
    assert torch.equal(torch.get_rng_state(), rng_plain), "recording touched the global random state"
    for name, value in final_plain.items():
        assert torch.equal(value, final_rec[name]), f"{name} differs: recording changed the trajectory"
    steps = [s for s, *_ in record.seen]
    assert steps == history["checkpoint_steps"] == T.checkpoint_steps(history["total_steps"], 6)
    assert all(training for *_, training in record.seen), "the probe must hand the model back in train mode"
    assert all(math.isfinite(v) for _, v, t, _ in record.seen)


def test_a_recorder_that_draws_from_the_global_rng_is_caught(mnist):
    # The check above must be able to fail: a recorder drawing from the global RNG changes its state.
    torch.manual_seed(123)
    T.train(TrainConfig(**{**SMALL, "checkpoints": 0}), mnist, progress=False)
    reference = torch.get_rng_state()
    torch.manual_seed(123)
    T.train(TrainConfig(**SMALL), mnist, progress=False, on_checkpoint=lambda step, m, o: torch.randn(1))
    assert not torch.equal(torch.get_rng_state(), reference)


def test_snapshots_hold_the_parameters_lr_and_adams_state(mnist):
    cfg = TrainConfig(**{**SMALL, "optimizer": "adam", "lr": 1e-3})
    _, final, history = T.train(cfg, mnist, progress=False)
    snaps = history["checkpoints"]
    assert snaps["steps"] == history["checkpoint_steps"]
    assert snaps["adam"][0] is None and all(a["step"] == s for a, s in zip(snaps["adam"][1:], snaps["steps"][1:]))
    for name, value in final.items():
        assert torch.equal(snaps["params"][-1][name], value)
    # The saved second moments rebuild Adam's denominator: P from the snapshot equals P from the live optimiser.
    model = T.build_model("mlp")
    model.load_state_dict(final)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    last = snaps["adam"][-1]
    for p, name in zip(model.parameters(), [n for n, _ in model.named_parameters()]):
        opt.state[p] = {"step": torch.tensor(float(last["step"])), "exp_avg": torch.zeros_like(p),
                        "exp_avg_sq": last["exp_avg_sq"][name].clone()}
    names = [n for n, _ in model.named_parameters()]
    assert torch.equal(adam_preconditioner([last["exp_avg_sq"][n] for n in names], last["step"]),
                       adam_preconditioner_of(opt, model.parameters()))


def test_checkpointed_runs_are_cached_and_reloaded(mnist, tmp_path):
    cfg = TrainConfig(**SMALL)
    run = T.train_or_load(cfg, data_dir=SHARED_DATA, runs_dir=tmp_path, progress=False, download=False)
    again = T.train_or_load(cfg, data_dir=SHARED_DATA, runs_dir=tmp_path, progress=False, download=False)
    assert again.reused and again.checkpoints()["steps"] == run.checkpoints()["steps"]
    plain = T.train_or_load(TrainConfig(**{**SMALL, "checkpoints": 0}), data_dir=SHARED_DATA, runs_dir=tmp_path,
                            progress=False, download=False)
    assert all(torch.equal(v, plain.final_state[k]) for k, v in run.final_state.items())
    with pytest.raises(T.RunCacheError, match="trained without checkpoints"):
        plain.checkpoints()


def test_on_checkpoint_without_checkpoint_steps_is_refused(mnist):
    with pytest.raises(ValueError, match="on_checkpoint needs checkpoint steps"):
        T.train(TrainConfig(**{**SMALL, "checkpoints": 0}), mnist, progress=False, on_checkpoint=lambda *a: None)


# --------------------------------------------------------------------------- target loss, schedules, divergence


def test_training_stops_at_the_target_loss(mnist):
    cfg = TrainConfig(arch="mlp", epochs=20, train_size=2048, batch_size=64, lr=0.05, target_loss=0.6, target_every=8)
    _, _, h = T.train(cfg, mnist, progress=False)
    assert h["stopped"]["reason"] == "target"
    step, loss = h["target_checks"][-1]
    assert loss <= 0.6 and all(l > 0.6 for _, l in h["target_checks"][:-1]) and step == h["stopped"]["step"]
    assert step % 8 == 0 and step < 20 * 32


def test_a_missed_target_says_so(mnist):
    cfg = TrainConfig(arch="mlp", epochs=1, max_steps=10, train_size=2048, lr=1e-4, target_loss=0.01, target_every=5)
    _, _, h = T.train(cfg, mnist, progress=False)
    assert h["stopped"] == {"reason": "steps", "step": 10} and len(h["target_checks"]) == 2


def test_steplr_decays_the_learning_rate_per_epoch(mnist):
    cfg = TrainConfig(arch="mlp", epochs=3, train_size=512, batch_size=64, optimizer="adadelta", lr=1.0, lr_gamma=0.7,
                      checkpoints=24)
    _, _, h = T.train(cfg, mnist, progress=False)
    snaps = h["checkpoints"]
    for step, lr in zip(snaps["steps"], snaps["lr"]):
        epoch = max(0, math.ceil(step / 8) - 1)  # the epoch whose update ended at this step
        assert lr == pytest.approx(0.7 ** epoch)


def test_divergence_names_the_step(mnist):
    with pytest.raises(T.TrainingDiverged) as err:
        T.train(TrainConfig(arch="mlp", epochs=1, train_size=512, lr=1e4, momentum=0.0), mnist, progress=False)
    assert isinstance(err.value.step, int) and err.value.step >= 1


# --------------------------------------------------------------------------- warm start across a crossing


class Quadratic(nn.Module):
    """L(w) = ½ wᵀAw through the probe interface: the model returns w, the loss reads A."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(a.shape[0], dtype=torch.float64))
        self.register_buffer("a", a)

    def forward(self, x):
        return self.w


def _quad_loss(model):
    return lambda out, y: 0.5 * out @ model.a @ out


def _crossing(angle: float) -> tuple[Quadratic, Quadratic, torch.Tensor]:
    """Snapshot 1: λ1 = 5 along e0, λ2 = 4.9 along e1. Snapshot 2: the two have crossed (and rotated
    by ``angle``), so the old top eigenvector is now (close to) the *second* one. Returns both
    models and snapshot 2's eigenvalues."""
    n = 12
    base = torch.linspace(0.1, 3.0, n, dtype=torch.float64)
    d1, d2 = base.clone(), base.clone()
    d1[0], d1[1] = 5.0, 4.9
    d2[0], d2[1] = 4.9, 5.0
    c, s = math.cos(angle), math.sin(angle)
    r = torch.eye(n, dtype=torch.float64)
    r[0, 0], r[0, 1], r[1, 0], r[1, 1] = c, -s, s, c
    return Quadratic(torch.diag(d1)), Quadratic(r @ torch.diag(d2) @ r.T), d2


@pytest.mark.parametrize("angle", [0.0, 0.05, 0.3])
def test_warm_start_across_an_eigenvalue_crossing_finds_the_new_top(angle):
    # A warm start from snapshot 1's top eigenvector must still return the new λmax, as a cold start does.
    m1, m2, _ = _crossing(angle)
    data = (torch.zeros(1), torch.zeros(1))
    first = lanczos_top_eigs(m1, _quad_loss(m1), data, torch.Generator().manual_seed(0), tol=1e-8, criterion="gap")
    assert first.eigenvalues[0] == pytest.approx(5.0, rel=1e-8)
    warm = lanczos_top_eigs(m2, _quad_loss(m2), data, torch.Generator().manual_seed(1), tol=1e-8, criterion="gap",
                            start=first.eigenvectors[0])
    cold = lanczos_top_eigs(m2, _quad_loss(m2), data, torch.Generator().manual_seed(2), tol=1e-8, criterion="gap")
    assert warm.eigenvalues[0] == pytest.approx(5.0, rel=1e-7) == cold.eigenvalues[0]


@pytest.mark.parametrize("angle", [0.0, 0.05, 0.3])
def test_the_trajectorys_two_vector_warm_start_and_trace_across_a_crossing(angle):
    # The same crossing through the study's snapshot step (v₁ + 0.3·v₂ start, Hutch++ on the basis).
    from types import SimpleNamespace

    from landscape_utils.study.dynamics import top_and_trace, warm_start_vector

    m1, m2, d2 = _crossing(angle)
    data, cfg = (torch.zeros(1), torch.zeros(1)), SimpleNamespace(lanczos_tol=1e-8, trajectory_trace_probes=4)
    gl, gt = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    first, _, start = top_and_trace(m1, data, cfg, gl, gt, loss_fn=_quad_loss(m1))
    # The start holds both top directions: e0 (λ 5) with weight 1, e1 (λ 4.9) with weight 0.3.
    torch.testing.assert_close(start.abs()[:2], torch.tensor([1.0, 0.3], dtype=torch.float64), atol=1e-6, rtol=0)
    alone = warm_start_vector(first.basis, second=0.0)  # v₁ only: e0
    torch.testing.assert_close(alone.abs(), torch.eye(12, dtype=torch.float64)[0], atol=1e-6, rtol=0)
    top, trace, _ = top_and_trace(m2, data, cfg, gl, gt, start=start, loss_fn=_quad_loss(m2))
    assert first.eigenvalues[0] == pytest.approx(5.0, rel=1e-8) and top.eigenvalues[0] == pytest.approx(5.0, rel=1e-7)
    assert trace.method == "hutch++ (lanczos basis)"
    assert abs(trace.estimate - float(d2.sum())) <= 4 * trace.stderr + 1e-9


# --------------------------------------------------------------------------- settings, cells, keys


@pytest.mark.parametrize("overrides, message", [
    ({"optimizers": ("study", "rmsprop")}, "optimizers must be distinct names from study, sgd-m0.5, sgd, adam, adadelta"),
    ({"optimizers": ("adam",)}, "including 'study'"),
    ({"sweep_lrs": (0.01, -0.1)}, "sweep_lrs must all be positive and finite"),
    ({"sweep_lrs": (0.0,)}, "sweep_lrs must all be positive and finite"),
    ({"eos_multiples": (0.0,)}, "eos_multiples must all be positive and finite"),
    ({"sweep_batch_sizes": (32, 70000)}, "sweep batch size 70000 is larger than the training set (60000 examples)"),
    ({"train_size": 4096, "sweep_batch_sizes": (32, 8192)}, "sweep batch size 8192 is larger than the training set (4096"),
    ({"train_size": 256, "protocol_large_size": 512}, "protocol_large_size (512) is larger than the training set (256)"),
    ({"train_size": 256}, "eos_size must be in [2, 256]"),
    ({"sweep_archs": ("vit",)}, "sweep_archs must be distinct architectures from mlp, cnn, rescnn"),
    ({"eos_every": 900}, "eos_every (900) must not exceed eos_steps (800)"),
    ({"minibatch_batches": 1}, "minibatch_batches must be at least 2"),
    ({"trajectory_points": 1}, "trajectory_points must be at least 2"),
    ({"sweep_draws": 5}, "sweep_draws must be even"),
    ({"sample_sizes": (64, 70000)}, "sample sizes must be at most 60000"),
])
def test_bad_dynamics_settings_are_refused_before_anything_runs(overrides, message):
    with pytest.raises(ValueError) as err:
        StudyConfig(**overrides)
    assert message in str(err.value)


def test_cells_name_and_parse_round_trip():
    cfg = StudyConfig()
    for arch in ("mlp", "cnn"):
        cells = cfg.dynamics_cells(arch)
        assert [units.parse_unit(units.unit_name(c)) for c in cells] == cells
        assert len(set(map(units.unit_name, cells))) == len(cells)
    mlp, cnn = cfg.dynamics_cells("mlp"), cfg.dynamics_cells("cnn")
    n_opt = len(cfg.seeds) + (len(cfg.optimizers) - 1) * len(cfg.protocol_seeds)
    n_sweep = len(cfg.sweep_batch_sizes) * len(cfg.sweep_lrs) * 2 * len(cfg.sweep_seeds)
    assert len(mlp) == n_opt + 1 + n_sweep + len(cfg.eos_multiples)
    assert len(cnn) == n_opt + 1 + len(cfg.eos_multiples)  # no sweep on the CNN in the full profile
    assert units.unit_name(Cell("sweep", "b4096-lr0.01-linear", 2)) == "sweep-b4096-lr0.01-linear-s2"
    assert units.parse_sweep_setting("b4096-lr0.01-linear") == (4096, 0.01, "linear")
    with pytest.raises(ValueError, match="a sweep setting is"):
        units.parse_sweep_setting("b64-lr0.1-sqrt")


def test_cell_units_need_an_architecture():
    with pytest.raises(ValueError, match="pass arch"):
        units.section_units("dynamics", StudyConfig())


@pytest.mark.parametrize("cell, study_runs, own_runs", [
    (Cell("opt", "study", 3), [units.RunId(3, 3)], 0),
    (Cell("opt", "adam", 1), [], 1),
    (Cell("sizes", "", 0), [units.RunId(0, 0)], 0),
    (Cell("sweep", "b512-lr0.01-none", 2), [], 1),
    (Cell("eos", "m1.06", 0), [], 0),
])
def test_cells_read_the_runs_they_use(cell, study_runs, own_runs):
    cfg = StudyConfig()
    assert list(units.unit_runs(cell)) == study_runs
    assert len(units.unit_train_configs("mlp", cell, cfg)) == len(study_runs) + own_runs


def test_recipes_and_sweep_cells_change_only_what_they_name():
    cfg = StudyConfig()
    assert cfg.recipe_config("cnn", "study", 2) == cfg.train_config("cnn", 2)
    adam = cfg.recipe_config("cnn", "adam", 2)
    assert (adam.optimizer, adam.lr, adam.momentum, adam.epochs, adam.init_seed) == ("adam", 1e-3, 0.0, 3, 2)
    ada = cfg.recipe_config("mlp", "adadelta", 0)
    assert (ada.optimizer, ada.lr, ada.lr_gamma) == ("adadelta", 1.0, 0.7)
    assert cfg.recipe_config("mlp", "sgd-m0.5", 0).momentum == 0.5
    scaled = cfg.sweep_config("mlp", 4096, 0.01, "linear", 1)
    assert scaled.lr == pytest.approx(0.01 * 4096 / 64) and scaled.target_loss == cfg.sweep_target_loss
    assert cfg.sweep_config("mlp", 4096, 0.01, "none", 1).lr == 0.01
    with pytest.raises(ValueError, match="unknown optimiser recipe 'lbfgs'"):
        cfg.recipe_config("mlp", "lbfgs", 0)


def test_a_cells_key_sees_its_settings_and_not_others():
    cfg = load_study("smoke")
    cell = Cell("opt", "adam", 0)
    key = units.unit_key("dynamics", "mlp", cell, cfg)
    assert units.unit_key("dynamics", "mlp", cell, load_study("smoke", {"minibatch_batches": 3})) != key
    assert units.unit_key("dynamics", "mlp", cell, load_study("smoke", {"curve_steps": 7})) == key


# --------------------------------------------------------------------------- the protocol verdicts


def _iv(values):
    return mean_interval(np.asarray(values, dtype=float), bounds=(0.0, None))


def test_protocol_analysis_finds_the_reproducing_cell_and_ranks_by_distance():
    reported = {"cnn": 33.0, "rescnn": 17.0, "mlp": 4.0}
    near = {"cnn": _iv([30, 34, 36]), "rescnn": _iv([15, 17, 19]), "mlp": _iv([3.5, 4, 4.5])}
    far = {"cnn": _iv([5, 5.1, 4.9]), "rescnn": _iv([5, 5.2, 4.8]), "mlp": _iv([4.6, 4.7, 4.8])}
    wrong_order = {"cnn": _iv([16, 17, 18]), "rescnn": _iv([32, 33, 34]), "mlp": _iv([3.9, 4, 4.1])}
    protocols = {a: {"study": {"batch": {"power": near[a], "lanczos": wrong_order[a]}, "probe": {"power": far[a]}}}
                 for a in reported}
    single = {a: {"study": [1.0, 40.0]} for a in reported}
    rows, text = D.protocol_analysis(protocols, single, reported)
    assert [(r["sample"], r["method"], r["reproduces"]) for r in rows][0] == ("batch", "power", True)
    assert {(r["sample"], r["method"]): r["reproduces"] for r in rows} == {
        ("batch", "power"): True, ("batch", "lanczos"): False, ("probe", "power"): False}
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    assert "1 of 3 protocols reproduce" in text and "contains 33" in text
    rows, text = D.protocol_analysis({a: {"study": {"probe": {"power": far[a]}}} for a in reported}, single, reported)
    assert "No protocol of the 1 reproduces" in text and "closest" in text


def test_kendall_results_see_a_monotone_relation():
    runs = [{"lambda_max": float(i), "trace": float(i), "filter_flatness": float(-i), "adaptive_sharpness": float(i % 3),
             "gap_loss": 0.1 * i, "gap_error": 0.01 * i} for i in range(12)]
    res = D.kendall_results(runs)
    assert res["lambda_max"]["gap_loss"]["tau"] == pytest.approx(1.0)
    assert res["filter_flatness"]["gap_error"]["tau"] == pytest.approx(-1.0)
    text = D.kendall_text(res, "runs")
    assert "sharper runs had larger gaps" in text and "the other pairs are not resolved" in text  # adaptive: not
    every = {m: {g: {**r, "low": 0.1, "high": 0.9} for g, r in bg.items()} for m, bg in res.items()}
    assert D.kendall_text(every, "runs").endswith("exclude 0); every pair is resolved.")
