"""Curvature probes on models nobody here wrote: the torchvision zoo at tiny sizes, random weights.

For each model (``weights=None``, 8 random images, 3 classes; the caller in train mode with a few
submodules switched to eval, BatchNorm statistics moved off their defaults and every ``.grad``
pre-filled), ``lanczos_top_eigs`` with the study's tolerance (1e-4 relative residual) must

* pick the expected HVP path (autograd; math attention for the ViT; finite differences for
  MobileNetV3, whose hardsigmoid has no double backward in torch 2.14.1),
* agree with an independent reference: ``scipy.sparse.linalg.eigsh(which="LA")`` on the *exact*
  autograd HVP of a deep copy in which every operation without double backward is rebuilt from
  operations that have one (hardswish → x·relu6(x+3)/6, hardsigmoid → relu6(x+3)/6,
  ``nn.MultiheadAttention`` → a manual softmax(QKᵀ/√d)V with the same weights),
* leave parameters, buffers, per-submodule modes and ``.grad`` exactly as found.

References run in float64 except for resnet18 and efficientnet_b0 (11.2M and 4.0M parameters),
whose references use float32 HVPs to keep CI time down (exact to ~1e-6 relative, far below the
agreement checked). The whole file takes about 50 s on a 2-core machine with one thread, about
half of it resnet18 (its reference needs ~21 HVPs over 11.2M parameters).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from torch import nn

from landscape_utils.probes import hvp_paths
from landscape_utils.probes.hessian import HessianOperator
from landscape_utils.probes.lanczos import lanczos_top_eigs

tvm = pytest.importorskip("torchvision.models")
from torchvision.models import VisionTransformer  # noqa: E402
from torchvision.models.convnext import CNBlockConfig, ConvNeXt  # noqa: E402

N_IMAGES, N_CLASSES, TOL = 8, 3, 1e-4


def _vit() -> nn.Module:
    return VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                             dropout=0.1, attention_dropout=0.1, num_classes=N_CLASSES)


def _convnext() -> nn.Module:
    return ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 2)], stochastic_depth_prob=0.1,
                    num_classes=N_CLASSES)


# name: (builder, image size, expected HVP path, reference dtype)
ZOO = {
    "resnet18": (lambda: tvm.resnet18(weights=None, num_classes=N_CLASSES), 32, hvp_paths.AUTOGRAD, torch.float32),
    "mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(weights=None, num_classes=N_CLASSES), 32,
                           hvp_paths.FINITE_DIFFERENCES, torch.float64),
    "efficientnet_b0": (lambda: tvm.efficientnet_b0(weights=None, num_classes=N_CLASSES), 32, hvp_paths.AUTOGRAD,
                        torch.float32),
    "convnext (2-stage, 16/32 ch)": (_convnext, 32, hvp_paths.AUTOGRAD, torch.float64),
    "vit (1 layer, 2 heads, dropout 0.1)": (_vit, 16, hvp_paths.MATH_ATTENTION, torch.float64),
}


# --------------------------------------------------------------------------- exact rebuilds


class HardswishExact(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class HardsigmoidExact(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3) / 6


class ManualSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, batch_first) as softmax(QKᵀ/√d)V, same weights."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        assert mha.batch_first and mha._qkv_same_embed_dim
        self.in_proj_weight, self.in_proj_bias = mha.in_proj_weight, mha.in_proj_bias
        self.out_proj, self.num_heads = mha.out_proj, mha.num_heads

    def forward(self, query, key, value, need_weights=False, **_):
        b, t, e = query.shape
        h = self.num_heads
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, h, e // h).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // h), dim=-1) @ v
        return self.out_proj(a.transpose(1, 2).reshape(b, t, e)), None


def exact_rebuild(model: nn.Module) -> nn.Module:
    """A deep copy with every operation lacking double backward rebuilt from ones that have it."""
    out = copy.deepcopy(model)
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Hardswish):
                setattr(module, name, HardswishExact())
            elif isinstance(child, nn.Hardsigmoid):
                setattr(module, name, HardsigmoidExact())
            elif isinstance(child, nn.MultiheadAttention):
                setattr(module, name, ManualSelfAttention(child))
    return out


def reference_lambda_max(model: nn.Module, data, dtype: torch.dtype) -> tuple[float, int]:
    """λmax by ARPACK (eigsh, which="LA") on exact autograd HVPs of the rebuilt model (eval mode)."""
    ref = exact_rebuild(model).to(dtype)
    x, y = data
    op = HessianOperator(ref, F.cross_entropy, (x.to(dtype), y), hvp="autograd")
    vals = eigsh(op.as_linear_operator(), k=1, which="LA", tol=1e-6, ncv=20, v0=np.ones(op.dim))[0]
    assert op.hvp_path == hvp_paths.AUTOGRAD
    return float(vals.max()), op.n_hvp


# --------------------------------------------------------------------------- the caller's state


def prepare_caller_state(model: nn.Module, x: torch.Tensor) -> None:
    """Train mode with every other normalisation/dropout module in eval, moved BN statistics,
    pre-filled .grad."""
    model.train()
    with torch.no_grad():
        model(x)  # BatchNorm running statistics off their defaults
    special = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.LayerNorm))]
    for m in special[::2]:
        m.eval()
    g = torch.Generator().manual_seed(9)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, grads = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert [m.training for m in model.modules()] == modes
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


def zoo_case(name: str):
    """(model in the caller's state, data) for a zoo entry; seeded."""
    build, size = ZOO[name][:2]
    torch.manual_seed(0)
    model = build()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_IMAGES, 3, size, size, generator=g)
    y = torch.randint(0, N_CLASSES, (N_IMAGES,), generator=g)
    prepare_caller_state(model, x)
    return model, (x, y)


def run_zoo_entry(name: str) -> dict:
    """One row of the coverage table (also used by benchmarks/bench_hvp_paths.py)."""
    model, data = zoo_case(name)
    snap = snapshot(model)
    start = time.perf_counter()
    res = lanczos_top_eigs(model, F.cross_entropy, data, torch.Generator().manual_seed(1), tol=TOL)
    seconds = time.perf_counter() - start
    assert_unchanged(model, snap)
    start = time.perf_counter()
    ref, ref_hvps = reference_lambda_max(model, data, ZOO[name][3])
    ref_seconds = time.perf_counter() - start
    assert_unchanged(model, snap)
    return {
        "model": name, "parameters": sum(p.numel() for p in model.parameters()), "hvp_path": res.hvp_path,
        "lambda_max": res.eigenvalues[0], "reference": ref, "rel_diff": abs(res.eigenvalues[0] - ref) / abs(ref),
        "n_hvp": res.n_hvp, "converged": res.converged, "tolerance_used": res.tolerance_used,
        "hvp_rel_error": res.hvp_rel_error, "seconds": seconds, "reference_seconds": ref_seconds,
        "reference_hvps": ref_hvps, "result": res,
    }


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_lanczos_agrees_with_exact_reference(name):
    row = run_zoo_entry(name)
    res = row["result"]
    assert res.hvp_path == ZOO[name][2]
    assert res.converged and res.to_dict()["hvp_path"] == res.hvp_path
    # Ritz-residual tolerance bounds the eigenvalue error; float32 HVPs and (for finite
    # differences) the HVP error add to it: allow 3x the tolerance actually used, at least 1e-3.
    assert row["rel_diff"] <= max(1e-3, 3 * res.tolerance_used), row
    print(f"\n{name}: P={row['parameters']} path={res.hvp_path} lambda_max={res.eigenvalues[0]:.6g} "
          f"ref={row['reference']:.6g} rel={row['rel_diff']:.1e} hvps={res.n_hvp} {row['seconds']:.1f}s")


def test_dropout_model_is_deterministic_in_eval_mode():
    """ViT with dropout 0.1, caller in train mode: the probe evaluates in eval mode, so two runs
    give bit-identical results and the global RNG is not consumed."""
    model, data = zoo_case("vit (1 layer, 2 heads, dropout 0.1)")
    assert model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    rng = torch.get_rng_state()
    a = lanczos_top_eigs(model, F.cross_entropy, data, torch.Generator().manual_seed(1))
    b = lanczos_top_eigs(model, F.cross_entropy, data, torch.Generator().manual_seed(1))
    assert a.eigenvalues == b.eigenvalues and a.hvp_path == hvp_paths.MATH_ATTENTION
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training


def test_mobilenet_batched_fd_matches_in_memory():
    """Batched evaluation (batch_size=3) on the finite-difference path gives the same HVP."""
    model, data = zoo_case("mobilenet_v3_small")
    snap = snapshot(model)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(2))
    full = HessianOperator(model, F.cross_entropy, data)
    batched = HessianOperator(model, F.cross_entropy, data, batch_size=3)
    a, b = full.matvec(v), batched.matvec(v)
    assert full.hvp_path == batched.hvp_path == hvp_paths.FINITE_DIFFERENCES
    assert float((a - b).norm() / a.norm()) < 10 * max(full.hvp_rel_error, batched.hvp_rel_error) + 1e-5
    assert_unchanged(model, snap)
