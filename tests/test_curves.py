"""Bézier curve connectivity: exact endpoints, the midpoint curve is the line, a known zero-loss arc
is found, the model and caller's tensors and the global RNG are untouched, bad arguments refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape_utils.probes.connectivity import linear_path_losses
from landscape_utils.probes.curves import (
    CurveFit,
    bezier_path_losses,
    bezier_point,
    midpoint_control,
    train_bezier_control,
)
from landscape_utils.probes.evaluation import functional_loss
from landscape_utils.probes.params import named_params


def shifted(model: nn.Module, seed: int, scale: float = 0.5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in named_params(model).items()}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int64)  # float64 -> its bit pattern (tells −0.0 from +0.0)


class Arc(nn.Module):
    """One parameter w = (w0, w1); output w1 − (1 − w0²) per sample, so MSE to 0 is (w1 − 1 + w0²)².

    Zero loss exactly on the parabola w1 = 1 − w0², which the Bézier curve from (−1, 0) to (1, 0)
    with control (0, 2) traces: φ(t) = (2t − 1, 4t(1 − t)). The straight line crosses (0, 0), loss 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[1] - 1 + self.w[0] ** 2).expand(len(x))  # (N,)


ARC_DATA = (torch.zeros(8, 1, dtype=torch.float64), torch.zeros(8, dtype=torch.float64))
ARC_A = {"w": torch.tensor([-1.0, 0.0], dtype=torch.float64)}
ARC_B = {"w": torch.tensor([1.0, 0.0], dtype=torch.float64)}


def train_arc(seed: int = 0, **kwargs) -> CurveFit:
    settings = {"steps": 300, "batch_size": 4, "lr": 0.3, **kwargs}
    return train_bezier_control(Arc(), F.mse_loss, ARC_DATA, ARC_A, ARC_B, torch.Generator().manual_seed(seed),
                                **settings)


# --------------------------------------------------------------------------- the curve


@pytest.mark.parametrize("t,expected", [(0.0, "start"), (1.0, "end"), (0, "start"), (1, "end")])
def test_bezier_point_is_exact_at_the_endpoints(t, expected):
    g = torch.Generator().manual_seed(0)
    start = {"a": torch.tensor([-0.0, 1e-300, 3.0], dtype=torch.float64), "b": torch.randn(3, 2, generator=g,
                                                                                         dtype=torch.float64)}
    end = {"a": torch.tensor([1.0, -0.0, 1e300], dtype=torch.float64), "b": torch.randn(3, 2, generator=g,
                                                                                       dtype=torch.float64)}
    control = {"a": torch.tensor([np.inf, 2.0, -1e300], dtype=torch.float64), "b": torch.randn(3, 2, generator=g,
                                                                                              dtype=torch.float64)}
    point = bezier_point(start, control, end, t)
    want = start if expected == "start" else end
    for k in want:
        assert torch.equal(bits(point[k]), bits(want[k])) and point[k] is not want[k]


def test_bezier_point_formula_and_midpoint_line():
    a, b, c = (torch.tensor([x], dtype=torch.float64) for x in (1.0, 5.0, -2.0))
    t = 0.3
    assert bezier_point({"p": a}, {"p": c}, {"p": b}, t)["p"].item() == pytest.approx(
        0.49 * 1.0 + 0.42 * -2.0 + 0.09 * 5.0, rel=1e-15)
    mid = midpoint_control({"p": a}, {"p": b})
    assert mid["p"].item() == 3.0
    for t in np.linspace(0, 1, 11):  # C = (A+B)/2: φ(t) = (1−t)A + tB
        assert bezier_point({"p": a}, mid, {"p": b}, float(t))["p"].item() == pytest.approx(1 + 4 * t, rel=1e-14)


@pytest.mark.parametrize("model_name,data_name", [("tiny_mlp", "tiny_data"), ("tiny_cnn", "tiny_image_data")])
@pytest.mark.parametrize("n_points,batch_size", [(25, None), (7, 5)])
def test_curve_endpoints_and_midpoint_curve_is_the_line(request, model_name, data_name, n_points, batch_size):
    model, data = request.getfixturevalue(model_name), request.getfixturevalue(data_name)
    theta_a, theta_b, theta_c = shifted(model, 0), shifted(model, 1), shifted(model, 2, scale=2.0)
    res = bezier_path_losses(model, F.cross_entropy, data, theta_a, theta_c, theta_b, n_points=n_points,
                             batch_size=batch_size)
    la = functional_loss(model, F.cross_entropy, data, theta_a, batch_size=batch_size)
    lb = functional_loss(model, F.cross_entropy, data, theta_b, batch_size=batch_size)
    assert (res.losses[0], res.losses[-1], res.start_loss, res.end_loss) == (la.loss, lb.loss, la.loss, lb.loss)
    assert (res.errors[0], res.errors[-1]) == (la.error, lb.error)
    assert res.loss_barrier.barrier >= 0 and res.error_barrier.barrier >= 0 and res.n_samples == len(data[0])
    json.dumps(res.to_dict())

    line = linear_path_losses(model, F.cross_entropy, data, theta_a, theta_b, n_points=n_points, batch_size=batch_size)
    curve = bezier_path_losses(model, F.cross_entropy, data, theta_a, midpoint_control(theta_a, theta_b), theta_b,
                               alphas=line.alphas, batch_size=batch_size)
    np.testing.assert_allclose(curve.losses, line.losses, rtol=1e-6)
    np.testing.assert_array_equal(curve.errors, line.errors)
    assert curve.loss_barrier.barrier == pytest.approx(line.loss_barrier.barrier, rel=1e-6, abs=1e-9)
    assert not np.allclose(res.losses, line.losses)  # a far control really bends the path


# --------------------------------------------------------------------------- training


def test_training_finds_the_zero_loss_arc():
    fit = train_arc()
    c = fit.control["w"]
    assert abs(c[0].item()) < 0.05 and abs(c[1].item() - 2.0) < 0.05
    assert fit.losses.shape == (300,) and fit.losses[-10:].max() < 1e-6 < fit.losses[0]
    curve = bezier_path_losses(Arc(), F.mse_loss, ARC_DATA, ARC_A, fit.control, ARC_B)
    line = linear_path_losses(Arc(), F.mse_loss, ARC_DATA, ARC_A, ARC_B)
    assert curve.loss_barrier.barrier < 1e-3 and curve.errors is None
    assert line.loss_barrier.barrier == pytest.approx(1.0) and line.loss_barrier.alpha == 0.5
    exact = bezier_path_losses(Arc(), F.mse_loss, ARC_DATA, ARC_A, {"w": torch.tensor([0.0, 2.0],
                                                                                     dtype=torch.float64)}, ARC_B)
    assert exact.losses.max() < 1e-28
    out = fit.to_dict()
    assert set(out) == {"steps", "losses", "seconds", "settings"} and out["settings"]["init"] == "midpoint"
    json.dumps(out)


def test_training_changes_nothing_and_is_reproducible(tiny_mlp, tiny_data):
    tiny_mlp.train()
    tiny_mlp[1].eval()  # a mixed-mode model must get its mixture back
    tiny_mlp[2].bias.requires_grad_(False)  # frozen: stays frozen, the model's own value is used
    before = {k: v.detach().clone() for k, v in tiny_mlp.state_dict().items()}
    flags = [p.requires_grad for p in tiny_mlp.parameters()]
    modes = [m.training for m in tiny_mlp.modules()]
    start, end, control = shifted(tiny_mlp, 0), shifted(tiny_mlp, 1), shifted(tiny_mlp, 2)
    copies = [{k: v.clone() for k, v in d.items()} for d in (start, end, control)]
    rng = torch.get_rng_state()
    seen: list[bool] = []  # the mode each forward ran in (eval, like every probe)
    hook = tiny_mlp[0].register_forward_hook(lambda m, i, o: seen.append(m.training))

    fits = [train_bezier_control(tiny_mlp, F.cross_entropy, tiny_data, start, end, torch.Generator().manual_seed(s),
                                 steps=12, batch_size=16, lr=0.05, control=control) for s in (5, 5, 6)]
    hook.remove()

    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in tiny_mlp.state_dict().items():
        assert torch.equal(bits(v), bits(before[k]))
    assert [p.requires_grad for p in tiny_mlp.parameters()] == flags and all(p.grad is None for p in tiny_mlp.parameters())
    assert [m.training for m in tiny_mlp.modules()] == modes and len(seen) == 36 and not any(seen)
    for d, copy in zip((start, end, control), copies):
        assert all(torch.equal(bits(d[k]), bits(copy[k])) for k in copy) and not any(v.requires_grad for v in d.values())
    assert list(fits[0].control) == list(named_params(tiny_mlp))  # trainable parameters only
    for k in fits[0].control:
        assert torch.equal(bits(fits[0].control[k]), bits(fits[1].control[k])) and not fits[0].control[k].requires_grad
    assert not torch.equal(fits[0].control["0.weight"], fits[2].control["0.weight"])  # other seed, other draws
    np.testing.assert_array_equal(fits[0].losses, fits[1].losses)
    assert not torch.equal(fits[0].control["0.weight"], control["0.weight"])  # it trained
    assert fits[0].settings == {"batch_size": 16, "lr": 0.05, "momentum": 0.9, "init": "given", "n_samples": 64,
                                "batches_per_pass": 4}


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 0}, "steps must be positive"),
    ({"steps": 2.0}, "steps must be an int"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"momentum": 1.0}, "momentum"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"batch_size": 65}, r"batch_size \(65\) is larger than the data \(64 samples\)"),
    ({"end": {"0.weight": torch.zeros(14, 8, dtype=torch.float64)}}, "end lacks"),
    ({"start": "wrong shape"}, r"start\['0.weight'\] has shape"),
    ({"control": "wrong shape"}, r"control\['0.weight'\] has shape"),
    ({"generator": None}, "torch.Generator"),
])
def test_training_rejects_bad_arguments(tiny_mlp, tiny_data, kwargs, match):
    args = {"start": named_params(tiny_mlp), "end": shifted(tiny_mlp, 1), "generator": torch.Generator(),
            "steps": 3, **kwargs}
    for key in ("start", "control"):
        if args.get(key) == "wrong shape":
            args[key] = {k: t[..., :1] for k, t in named_params(tiny_mlp).items()}
    with pytest.raises(ValueError, match=match):
        train_bezier_control(tiny_mlp, F.cross_entropy, tiny_data, args.pop("start"), args.pop("end"),
                             args.pop("generator"), **args)


def test_curve_helpers_reject_bad_arguments(tiny_mlp, tiny_data):
    a, b = named_params(tiny_mlp), shifted(tiny_mlp, 1)
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
        bezier_point(a, b, b, 1.5)
    with pytest.raises(ValueError, match="end does not match"):
        midpoint_control(a, {"0.weight": b["0.weight"]})
    with pytest.raises(ValueError, match="end at 1"):
        bezier_path_losses(tiny_mlp, F.cross_entropy, tiny_data, a, b, b, alphas=[0.0, 0.5, 0.9])
    with pytest.raises(ValueError, match="control lacks"):
        bezier_path_losses(tiny_mlp, F.cross_entropy, tiny_data, a, {"0.weight": b["0.weight"]}, b)


def test_diverging_training_names_the_step():
    with pytest.raises(FloatingPointError, match=r"loss became (inf|nan) at step \d+ of 300"):
        train_arc(lr=50.0)


def test_progress_bar_is_optional(capsys):
    train_arc(steps=5)
    assert "Bézier control" not in capsys.readouterr().err
    train_arc(steps=5, progress=True)
    assert "Bézier control" in capsys.readouterr().err
