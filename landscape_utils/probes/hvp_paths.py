"""How a Hessian-vector product is computed when double backward is missing.

:class:`landscape_utils.probes.hessian.HessianOperator` computes ``H v`` by one of three paths,
chosen once per operator on its first product (``hvp="auto"``, the default) or forced by the
caller (``hvp="autograd"`` or ``hvp="finite-difference"``):

``"autograd"``
    double backward through the model's own graph (exact to rounding). The default when every
    operation in the model has a second derivative.
``"autograd (math attention)"``
    the same, with the forward passes evaluated under
    ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``. PyTorch's fused CPU attention kernel
    (``_scaled_dot_product_flash_attention_for_cpu``, the default for ``F.scaled_dot_product_attention``
    and hence ``nn.MultiheadAttention`` and every torchvision transformer) has a first but no second
    derivative; the math backend computes the same function from differentiable operations.
    Tried when the double-backward error names an attention kernel.
``"finite differences"``
    central differences of gradients, ``H v ≈ (∇L(θ+εv) − ∇L(θ−εv)) / 2ε`` (two gradients per
    product), for any other missing second derivative (``hardsigmoid``, custom
    ``autograd.Function``s marked ``once_differentiable``, ...). See :func:`fd_epsilon` for ε
    and :func:`fd_compute_dtype` for the precision.

``"forward-over-reverse (linearized)"``
    opt-in (``hvp="linearize"``, never chosen by ``"auto"``): ``torch.func.linearize`` of
    ``torch.func.grad`` traces H v once (about 8 gradients on the study's CNN); each product replays
    the tangent computation (1.3 gradients there, against 1.7 for double backward). Falls back to
    ``"auto"`` when tracing fails.

When none of the allowed paths works, :class:`HessianUnavailableError` names the failing
operation and every path tried with its error.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable, Iterator

import torch

AUTOGRAD = "autograd"
MATH_ATTENTION = "autograd (math attention)"
FINITE_DIFFERENCES = "finite differences"
LINEARIZED = "forward-over-reverse (linearized)"
HVP_MODES = ("auto", "autograd", "finite-difference", "linearize")

# Lanczos/power tolerances on finite-difference HVPs are raised to at least this multiple of the
# HVPs' estimated relative error (no residual below that level can be trusted).
FD_TOL_FACTOR = 10.0


class HessianUnavailableError(RuntimeError):
    """No Hessian-vector product path works for this model.

    A ``RuntimeError`` (what PyTorch raises for missing derivatives), so existing ``except
    RuntimeError`` handlers still catch it. ``operation`` names the failing operation (an
    ``aten::`` operator, or the autograd node of a custom ``Function`` and the line of the user's
    forward that created it) and ``attempts`` lists ``(path, error message)`` for every path tried.
    """

    def __init__(self, operation: str, attempts: list[tuple[str, str]]) -> None:
        self.operation, self.attempts = operation, list(attempts)
        tried = "; ".join(f"{path}: {msg}" for path, msg in attempts)
        super().__init__(
            f"no Hessian-vector product is available for this model: operation {operation} has no "
            f"usable derivative. Paths tried: {tried}"
        )


def check_hvp_mode(hvp: str) -> str:
    """Validate the ``hvp=`` argument of the probes."""
    if hvp not in HVP_MODES:
        raise ValueError(f"hvp must be one of {HVP_MODES}, got {hvp!r}")
    return hvp


_MISSING = re.compile(
    r"not implemented|must implement either the backward|once_differentiable|differentiate twice"
    r"|double backward",
    re.IGNORECASE,
)


def is_missing_derivative(err: BaseException) -> bool:
    """True for PyTorch's "this derivative does not exist" errors (any order)."""
    return isinstance(err, (RuntimeError, NotImplementedError)) and bool(_MISSING.search(str(err)))


def mentions_attention(err: BaseException) -> bool:
    """True when the error names a fused attention kernel (the math backend may help)."""
    msg = str(err).lower()
    return "attention" in msg or "sdpa" in msg


_OP = re.compile(r"derivative for (?:the )?'?([\w:.]+(?:: \w+)?)'? is not implemented", re.IGNORECASE)


def operation_from_message(err: BaseException) -> str | None:
    """The operator named in a "derivative for X is not implemented" message, if any."""
    m = _OP.search(str(err))
    return m.group(1) if m else None


def diagnose_operation(failing: Callable[[], object]) -> str | None:
    """Re-run ``failing`` under autograd anomaly detection; return the failing node and forward line.

    Only called on the error path (anomaly mode is slow). Returns e.g.
    ``"NoDerivativeBackward, created at model.py:12: y = NoDerivative.apply(x)"`` (the innermost
    forward frame outside torch and this package), or None when autograd names nothing.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autograd.detect_anomaly(check_nan=False):
                failing()
        except Exception:  # noqa: BLE001 - the failure is what we are diagnosing
            pass
    texts = [str(w.message) for w in caught]
    node, frames_text = None, ""
    for text in texts:
        m = re.search(r"Error detected in (\S+?)\.\s", text)
        if m:
            node, frames_text = m.group(1), text
            break
    if node is None:
        return None
    if node.startswith("torch::autograd::NotImplemented"):  # a missing double backward: name its parent
        for text in texts:
            m = re.search(r"induced by (\S+?)\.\s", text)
            if m:
                node, frames_text = f"the derivative of {m.group(1)}", text
                break
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s+(.*)', frames_text)
    own = ("/torch/", "/landscape_utils/probes/")
    user = [f for f in frames if not any(s in f[0] for s in own)] or frames
    if not user:
        return node
    path, line, code = user[-1]
    return f"{node}, created at {path.rsplit('/', 1)[-1]}:{line}: {code.strip()}"


@contextlib.contextmanager
def attention_context(math_attention: bool) -> Iterator[None]:
    """``sdpa_kernel(SDPBackend.MATH)`` when asked, else nothing."""
    if not math_attention:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def fd_compute_dtype(model_dtype: torch.dtype, prefer_float64: bool = True) -> torch.dtype:
    """The dtype finite differences are computed in: float64 for any floating model, if preferred.

    The operator tries this dtype first (a float64 functional copy of θ ± εv, buffers and floating
    inputs; the model itself is never cast) and falls back to the model's own dtype when the
    forward refuses float64 (e.g. a module that creates float32 constants).
    """
    return torch.float64 if prefer_float64 and model_dtype.is_floating_point else model_dtype


def fd_relative_step(dtype: torch.dtype) -> float:
    """h = (machine epsilon of ``dtype``)^(1/3): the step that balances the O(h²) truncation error
    of a central difference against its O(eps/h) rounding error (6.1e-6 in float64, 4.9e-3 in
    float32)."""
    return float(torch.finfo(dtype).eps) ** (1.0 / 3.0)


def fd_epsilon(theta_norm: float, v_norm: float, dtype: torch.dtype, rel_step: float | None = None) -> float:
    """ε for ``(∇L(θ+εv) − ∇L(θ−εv)) / 2ε``: ``ε = h · (1 + ‖θ‖) / ‖v‖``.

    The displacement ``‖εv‖ = h · (1 + ‖θ‖)`` is a relative step h of the parameter vector (an
    absolute step h near θ = 0), whatever the scale of v. ``h = rel_step`` if given, else
    :func:`fd_relative_step` of the compute dtype. Norms are Euclidean over all trainable
    parameters.
    """
    h = fd_relative_step(dtype) if rel_step is None else float(rel_step)
    if not (math.isfinite(h) and h > 0):
        raise ValueError(f"fd_step must be positive, got {rel_step!r}")
    if v_norm <= 0:
        raise ValueError("finite-difference step needs a non-zero vector")
    return h * (1.0 + theta_norm) / v_norm


def fd_note(dtype: torch.dtype, rel_step: float, rel_error: float) -> str:
    """Human-readable account of a finite-difference operator, stored in results."""
    return (
        f"central differences of gradients in {str(dtype).replace('torch.', '')}, "
        f"eps = {rel_step:.2g}*(1+|theta|)/|v| (2 gradients per HVP; the first product also at 2*eps), "
        f"estimated relative HVP error {rel_error:.2g} (|Hv(eps) - Hv(2 eps)| / |Hv(eps)|). On "
        f"piecewise-linear activations (ReLU, hardswish, hardsigmoid, max-pool) a step can cross "
        f"kinks, so this estimates a Hessian smoothed over a ball of that radius."
    )


def tolerance_for(tol: float, rel_error: float | None, kind: str = "residual") -> tuple[float, str]:
    """The tolerance a solver can honour on HVPs with relative error ``rel_error`` (None: exact).

    Returns ``(tolerance_used, note)``: ``max(tol, FD_TOL_FACTOR · rel_error)``.
    """
    if rel_error is None:
        return float(tol), ""
    floor = FD_TOL_FACTOR * rel_error
    if floor > tol:
        return float(floor), (
            f"{kind} tolerance raised from {tol:.3g} to {floor:.3g} = {FD_TOL_FACTOR:g} x the "
            f"finite-difference HVPs' estimated relative error {rel_error:.2g}"
        )
    return float(tol), (
        f"{kind} tolerance {tol:.3g} kept: finite-difference HVPs' estimated relative error "
        f"{rel_error:.2g} is below tol/{FD_TOL_FACTOR:g}"
    )
