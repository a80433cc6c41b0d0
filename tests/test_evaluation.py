"""Evaluation engine: exact against a copy-and-load loop; every probe leaves the model as found."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape_utils.probes.connectivity import linear_path_losses
from landscape_utils.probes.directions import (
    filter_normalised_direction,
    layer_normalised_direction,
    random_direction,
)
from landscape_utils.probes.evaluation import (
    affine_points,
    as_param_dict,
    functional_loss,
    functional_losses,
)
from landscape_utils.probes.flatness import perturbation_loss_changes
from landscape_utils.probes.params import named_params
from landscape_utils.probes.slices import centred_grid, linear_slice_losses, linear_surface_losses


MODEL_DATA = [("tiny_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")]


def perturbed_points(model: nn.Module, n: int, seed: int, scale: float = 0.1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    theta = named_params(model)
    return [{k: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in theta.items()}
            for _ in range(n)]


def copy_and_load_losses(model: nn.Module, loss_fn, data, points) -> tuple[np.ndarray, np.ndarray]:
    """The plain reference: copy the model, load each point's state dict, one full-batch forward."""
    x, y = data
    losses, errors = [], []
    for point in points:
        m = copy.deepcopy(model)
        state = m.state_dict()
        state.update(point)
        m.load_state_dict(state)
        m.eval()
        with torch.no_grad():
            out = m(x)
        losses.append(float(loss_fn(out, y)))
        errors.append(float((out.argmax(1) != y).double().mean()))
    return np.array(losses), np.array(errors)


@pytest.mark.parametrize("model_name,data_name", MODEL_DATA)
@pytest.mark.parametrize("batch_size,points_per_chunk", [(64, 1), (16, 3), (10, 2), (7, 5), (1000, 4)])
def test_engine_equals_copy_and_load_loop(request, model_name, data_name, batch_size, points_per_chunk):
    model = request.getfixturevalue(model_name)
    data = request.getfixturevalue(data_name)
    points = perturbed_points(model, 5, seed=3)
    ref_loss, ref_err = copy_and_load_losses(model, F.cross_entropy, data, points)
    res = functional_losses(model, F.cross_entropy, data, iter(points), batch_size=batch_size,
                            points_per_chunk=points_per_chunk)
    np.testing.assert_allclose(res.losses, ref_loss, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(res.errors, ref_err)
    assert res.n_samples == data[0].shape[0]
    assert len(set(res.losses.tolist())) == 5  # the points really differ


@pytest.mark.parametrize("model_name,data_name", MODEL_DATA)
def test_single_batch_is_bitwise_the_plain_loss(request, model_name, data_name):
    model = request.getfixturevalue(model_name).eval()
    x, y = request.getfixturevalue(data_name)
    with torch.no_grad():
        plain = F.cross_entropy(model(x), y).item()
    assert functional_loss(model, F.cross_entropy, (x, y), batch_size=len(y)).loss == plain


def test_points_take_the_models_memory_layout(tiny_cnn, tiny_image_data):
    model = tiny_cnn.to(memory_format=torch.channels_last)
    seen = []
    model[2].register_forward_pre_hook(
        lambda mod, args: seen.append(mod.weight.is_contiguous(memory_format=torch.channels_last)))
    points = [{k: t.contiguous() for k, t in p.items()} for p in perturbed_points(model, 3, seed=1)]
    assert not points[0]["2.weight"].is_contiguous(memory_format=torch.channels_last)
    res = functional_losses(model, F.cross_entropy, tiny_image_data, points, batch_size=10)
    assert seen and all(seen)  # the fast (channels_last) kernels run at every point
    np.testing.assert_allclose(res.losses, copy_and_load_losses(model, F.cross_entropy, tiny_image_data, points)[0],
                               rtol=1e-12, atol=0)


def test_regression_targets_have_no_error(tiny_data):
    model = nn.Linear(8, 2).double()
    x = tiny_data[0]
    y = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    res = functional_loss(model, F.mse_loss, (x, y), batch_size=10)
    assert res.error is None
    with torch.no_grad():
        assert res.loss == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-13)


def test_affine_points_zero_row_is_base_and_others_exact(tiny_mlp):
    theta = named_params(tiny_mlp)
    d = {k: torch.ones_like(t) for k, t in theta.items()}
    pts = list(affine_points(theta, [d], np.array([[0.0], [0.5]])))
    assert all(pts[0][k] is theta[k] for k in theta)
    assert all(torch.equal(pts[1][k], theta[k] + 0.5) for k in theta)


def test_as_param_dict_accepts_state_dict_and_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    from_state = as_param_dict(model, other.state_dict())
    from_module = as_param_dict(model, other)
    assert list(from_state) == list(named_params(model))  # buffers dropped, order of the model
    assert all(torch.equal(from_state[k], from_module[k]) for k in from_state)
    assert all(torch.equal(from_state[k], p.detach()) for k, p in other.named_parameters())
    # a float32 state dict is cast like load_state_dict would
    assert as_param_dict(model, other.float().state_dict())["0.weight"].dtype == torch.float64


def bad_loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("case,kwargs,match", [
    ("data not a pair", {"data": "x"}, "tuple"),
    ("length mismatch", {"data": (torch.zeros(3, 8, dtype=torch.float64), torch.zeros(4, dtype=torch.long))}, "first"),
    ("empty data", {"data": (torch.zeros(0, 8, dtype=torch.float64), torch.zeros(0, dtype=torch.long))}, "no samples"),
    ("batch 0", {"batch_size": 0}, "batch_size"),
    ("batch float", {"batch_size": 2.5}, "batch_size"),
    ("batch bool", {"batch_size": True}, "batch_size"),
    ("chunk 0", {"points_per_chunk": 0}, "points_per_chunk"),
    ("no points", {"points": []}, "no parameter points"),
    ("missing key", {"points": [{"0.weight": torch.zeros(14, 8, dtype=torch.float64)}]}, "missing"),
    ("wrong dtype", {"points": "float32"}, "expected"),
    ("vector loss", {"loss_fn": bad_loss}, "scalar"),
])
def test_engine_rejects_bad_arguments(tiny_mlp, tiny_data, case, kwargs, match):
    args = {"data": tiny_data, "points": [named_params(tiny_mlp)], "loss_fn": F.cross_entropy}
    args.update(kwargs)
    if args["points"] == "float32":
        args["points"] = [{k: t.float() for k, t in named_params(tiny_mlp).items()}]
    with pytest.raises(ValueError, match=match):
        functional_losses(tiny_mlp, args["loss_fn"], args["data"], args["points"],
                          **{k: v for k, v in args.items() if k in ("batch_size", "points_per_chunk")})


# --------------------------------------------------------------------------- every probe


def mixed_mode_model() -> nn.Module:
    """BatchNorm + dropout, outer module in train mode, one submodule in eval: mixed modes."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 4)).double()
    model.train()
    model[3].eval()
    return model


def _other_end(model):
    return {k: t + 0.3 for k, t in named_params(model).items()}


PROBES = {
    "functional_losses": lambda m, d: functional_losses(m, F.cross_entropy, d, [_other_end(m)], batch_size=16),
    "functional_loss": lambda m, d: functional_loss(m, F.cross_entropy, d, batch_size=16),
    "random_direction": lambda m, d: random_direction(m, 0),
    "filter_direction": lambda m, d: filter_normalised_direction(m, 0),
    "layer_direction": lambda m, d: layer_normalised_direction(m, 0),
    "slice": lambda m, d: linear_slice_losses(m, F.cross_entropy, d, [random_direction(m, 1)],
                                              centred_grid(0.1, 5), batch_size=16),
    "surface": lambda m, d: linear_surface_losses(m, F.cross_entropy, d, random_direction(m, 1),
                                                  random_direction(m, 2), centred_grid(0.1, 3)),
    "flatness_isotropic": lambda m, d: perturbation_loss_changes(m, F.cross_entropy, d, [0.01], 0, n_draws=4),
    "flatness_filter": lambda m, d: perturbation_loss_changes(m, F.cross_entropy, d, [0.01], 0, noise="filter",
                                                              n_draws=4),
    "flatness_magnitude": lambda m, d: perturbation_loss_changes(m, F.cross_entropy, d, [0.01], 0,
                                                                 noise="magnitude", n_draws=4),
    "path": lambda m, d: linear_path_losses(m, F.cross_entropy, d, m.state_dict(), _other_end(m), n_points=5),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_every_probe_leaves_model_unchanged(tiny_data, probe):
    model = mixed_mode_model()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}  # params and BN buffers
    before_modes = [m.training for m in model.modules()]
    result = PROBES[probe](model, tiny_data)
    assert [m.training for m in model.modules()] == before_modes
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before_state.items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    json.dumps(result.to_dict())  # plain, JSON-serialisable values


def test_engine_evaluates_in_eval_mode(tiny_data):
    # dropout off, BN uses running statistics: two calls agree and match an eval-mode copy.
    model = mixed_mode_model()
    a = functional_loss(model, F.cross_entropy, tiny_data, batch_size=64).loss
    b = functional_loss(model, F.cross_entropy, tiny_data, batch_size=64).loss
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        assert a == b == F.cross_entropy(ref(tiny_data[0]), tiny_data[1]).item()
