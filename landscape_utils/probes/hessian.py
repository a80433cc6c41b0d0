"""Hessian-vector products and the top (or bottom) Hessian eigenvalues of a mean loss.

Everything here concerns the Hessian H of the mean loss ``L(θ) = loss_fn(model(X), Y)`` over a
fixed sample set ``S = (X, Y)`` chosen by the caller, taken with respect to the model's trainable
parameters θ at their current values. Vectors are flat, of length P, in the order of
:func:`landscape_utils.probes.params.flatten`, and in the model's dtype and device.

* :class:`HessianOperator` — the HVP ``v -> H v`` (in-memory or accumulated over batches).
* :func:`lanczos_top_eigs` — the k largest (or smallest) eigenpairs by Lanczos with full
  re-orthogonalisation, stopped on the Ritz residual or on a gap-refined error estimate; from a
  random or a given (warm) start vector.
* :func:`lanczos_extremes` — the k largest and the smallest eigenpair from one Lanczos run, with
  its Krylov basis (:class:`KrylovBasis`) for deflated trace estimates.
* :func:`power_iteration_top_eig` — the original study's (and pyhessian's) power iteration.

Models whose operations lack a second derivative (fused attention, hardsigmoid, ...) are handled by
:class:`HessianOperator`'s HVP paths (exact double backward, the math attention backend, or central
differences of gradients; see :mod:`landscape_utils.probes.hvp_paths`); every result records the path.

No probe changes the model's parameters, its train/eval mode (on any submodule), its buffers or
any ``.grad``; every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn
from torch.func import functional_call

from . import hvp_paths as paths
from .hvp_paths import HessianUnavailableError  # noqa: F401 (re-exported)
from .params import check_data, named_params, probe_mode

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- argument checks


def check_generator(generator: torch.Generator) -> torch.Generator:
    """Require an explicit ``torch.Generator`` (probes never use the global RNG)."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_positive(name: str, value: float, integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a positive (integer, if asked) number."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


# --------------------------------------------------------------------------- the operator


class HessianOperator:
    """The linear map ``v -> H v`` for the Hessian of the mean loss over a fixed sample set.

    With ``batch_size=None`` the whole set S is forwarded once at construction and the gradient
    graph (``torch.autograd.grad(..., create_graph=True)``) is kept and re-used by every
    :meth:`matvec` (one backward pass each, ``retain_graph=True``). With ``batch_size`` given, every
    :meth:`matvec` walks S in contiguous slices of that size, rebuilds the graph per slice and
    sums the per-slice HVPs weighted by ``len(slice) / |S|`` (so the result is the HVP of the
    mean loss over S whatever the split, for a model without batch-coupled layers). Batched mode
    keeps one slice's graph at a time: use it for large models or sample sets.

    Parameters are read through ``torch.func.functional_call`` on detached leaves that share the
    model's storage: the model's parameters and ``.grad`` are never touched.

    Mode: the forward passes run in eval mode unless ``train=True`` (via ``params.probe_mode``;
    the caller's per-submodule modes are restored after each forward). In train mode the model's
    buffers are replaced by clones for each forward, so BatchNorm running statistics are *not*
    updated, and BatchNorm then normalises with the statistics of S (or of each batch slice, which
    makes the Hessian depend on ``batch_size``). Train mode is refused for models containing
    dropout, whose masks would come from the global RNG.

    HVP path (see :mod:`landscape_utils.probes.hvp_paths`): with ``hvp="auto"`` the first
    :meth:`matvec` tries double backward; if PyTorch reports a missing second derivative it
    retries under the math attention backend (when the error names an attention kernel) and then
    switches to central differences of gradients. The chosen path is kept for every later product
    and recorded in ``hvp_path`` / ``hvp_reason`` (and in every solver result). ``hvp="autograd"``
    or ``"finite-difference"`` forces a path. When nothing works,
    :class:`~landscape_utils.probes.hvp_paths.HessianUnavailableError` names the operation.

    ``hvp="linearize"`` (in-memory mode only, opt-in) instead traces H v once at construction by
    forward-over-reverse differentiation (``torch.func.linearize`` of ``torch.func.grad``): every
    later product replays only the tangent computation. On the study's CNN (2,048 samples, one
    thread) that costs 1.3 gradients per HVP against 1.7 for double backward (PyTorch's
    convolution double backward also computes the gradient with respect to the input images,
    which nothing asked for, and ReLU/max-pool double backward materialise and add zero tensors);
    on a channels_last copy of it 1.6 against 2.3 of its (faster) gradient. Tracing costs about 8
    gradients once (11 on the MLP, where double backward is already 1.06), so it pays on
    convolutional models over twenty or more products. The products equal the double-backward
    ones to rounding. If tracing fails (an
    operation without a forward-mode derivative, a forward that cannot be traced) or
    ``batch_size`` is set, the operator falls back to ``"auto"`` and ``hvp_reason`` says why.

    Finite differences: ``H v ≈ (∇L(θ+εv) − ∇L(θ−εv)) / 2ε`` with
    ``ε = h·(1 + ‖θ‖)/‖v‖``, ``h = fd_step`` or (machine eps)^(1/3) of the compute dtype, computed
    in float64 when the model allows (a float64 functional copy of θ ± εv, of the floating buffers
    and inputs; the model is not cast) and returned in the model's dtype. The first product is also
    computed at 2ε; ``hvp_rel_error = ‖Hv(ε) − Hv(2ε)‖ / ‖Hv(ε)‖`` estimates the relative error
    (truncation and rounding). It costs two gradients per product (four for the first).

    Args:
        model: any ``nn.Module``; its trainable parameters (``requires_grad``) define P.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss over the batch (scalar).
        data: ``(inputs, targets)``, the fixed sample set S.
        batch_size: ``None`` for in-memory mode, else a positive int.
        train: run the forward passes in train mode (see above).
        hvp: ``"auto"`` (default), ``"autograd"``, ``"finite-difference"`` or ``"linearize"``.
        fd_step: relative finite-difference step h (default: eps^(1/3) of the compute dtype).
        fd_float64: compute finite differences in float64 when the model allows (default True).

    Attributes:
        dim: P, the number of trainable scalars.
        dtype, device: those of the model's parameters (and of every vector in or out).
        n_hvp: number of HVPs over the whole of S computed so far.
        n_grad: number of first-order gradients over S spent by finite differences.
        loss: the mean loss over S at θ (known at construction in-memory; after the first
            matvec in batched mode, where finite differences give it to O(ε²); ``None`` before).
        hvp_path: ``"autograd"``, ``"autograd (math attention)"``, ``"finite differences"`` or
            ``"forward-over-reverse (linearized)"``; ``None`` before the first product (unless forced).
        hvp_reason: why that path (the error that ruled out the previous one).
        hvp_rel_error: estimated relative HVP error (finite differences; None for autograd).
        fd_dtype, fd_rel_step: compute dtype and h of finite differences (None otherwise).

    Raises:
        ValueError: bad data, batch size, loss, ``hvp`` or ``fd_step``, a model without trainable
            parameters, or ``train=True`` on a model with dropout.
        HessianUnavailableError: (from :meth:`matvec`) no allowed path works.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Sequence[Tensor],
        batch_size: int | None = None,
        train: bool = False,
        hvp: str = "auto",
        fd_step: float | None = None,
        fd_float64: bool = True,
    ) -> None:
        self.inputs, self.targets = check_data(data)
        if batch_size is not None:
            check_positive("batch_size", batch_size, integer=True)
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(outputs, targets)")
        if train and any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            raise ValueError("train=True is refused for models with dropout (random masks)")
        self.hvp_mode = paths.check_hvp_mode(hvp)
        if fd_step is not None:
            check_positive("fd_step", fd_step)
        self.model, self.loss_fn = model, loss_fn
        self.batch_size, self.train = batch_size, train
        # Leaves sharing storage with the model's parameters; requires_grad only on these copies.
        self._leaves = {n: p.detach().requires_grad_(True) for n, p in named_params(model).items()}
        if not self._leaves:
            raise ValueError("model has no trainable parameters")
        first = next(iter(self._leaves.values()))
        self.dtype, self.device = first.dtype, first.device
        self.dim = sum(t.numel() for t in self._leaves.values())
        self.n_hvp = 0
        self.n_grad = 0
        self.loss: float | None = None
        self._grads: list[Tensor] | None = None
        self._graph_error: BaseException | None = None
        self._math_attention = False
        self.hvp_path: str | None = None
        self.hvp_reason = ""
        self.hvp_rel_error: float | None = None
        self.fd_dtype: torch.dtype | None = None
        self.fd_rel_step: float | None = fd_step
        self._fd_float64 = fd_float64
        self._theta_norm: float | None = None
        self._linear: Callable | None = None
        self._fallback_note = ""
        if hvp == "linearize" and self._try_linearize():
            pass
        elif hvp == "finite-difference":
            self._use_fd("forced by hvp='finite-difference'")
            if batch_size is None:
                self.loss = self._loss_at_theta()
        elif batch_size is None:
            try:
                loss, self._grads = self._gradient_graph(self.inputs, self.targets)
            except (RuntimeError, NotImplementedError) as err:
                if not paths.is_missing_derivative(err):
                    raise
                self._graph_error = err  # resolved (or reported) by the first matvec
            else:
                self.loss = float(loss.detach())

    # ----------------------------------------------------------------- forward passes

    def _forward_loss(self, args: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """Mean loss of the model evaluated functionally at ``args`` (params, maybe buffers)."""
        with probe_mode(self.model, self.train), paths.attention_context(self._math_attention):
            if self.train:
                # Clones take the in-place running-statistics updates instead of the model.
                for n, b in self.model.named_buffers():
                    args.setdefault(n, b.clone())
            loss = self.loss_fn(functional_call(self.model, args, (x,)), y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor (the mean loss over the batch)")
        return loss.reshape(())

    # ----------------------------------------------------------------- linearized path

    def _try_linearize(self) -> bool:
        """Trace H v once by forward-over-reverse (``torch.func.linearize`` of the gradient).

        Returns True on success (path set, loss known). On any failure (an operation without a
        forward-mode derivative, an untraceable forward, batched mode) records why and switches
        this operator to ``hvp="auto"``, returning False.
        """
        if self.batch_size is not None:
            self._fallback_note = "hvp='linearize' needs batch_size=None (it traces all of S at once); "
            self.hvp_mode = "auto"
            return False
        names = list(self._leaves)
        x, y = self.inputs, self.targets

        def loss_of(params: dict[str, Tensor]) -> Tensor:
            return self._forward_loss(dict(params), x, y)

        primals = {n: t.detach() for n, t in self._leaves.items()}
        try:
            with warnings.catch_warnings():  # FX constant folding warns about attribute names
                warnings.simplefilter("ignore")
                (_, loss), linear = torch.func.linearize(torch.func.grad_and_value(loss_of), primals)
        except Exception as err:  # noqa: BLE001 - any tracing failure leaves the exact autograd paths
            self._fallback_note = f"hvp='linearize' failed ({_short(err)}); "
            self.hvp_mode = "auto"
            return False
        self._linear, self._linear_names = linear, names
        self.loss = float(loss)
        self.hvp_path = paths.LINEARIZED
        self.hvp_reason = "forced by hvp='linearize' (traced once by torch.func.linearize)"
        return True

    def _linear_hvp(self, v: Tensor) -> Tensor:
        leaves = [self._leaves[n] for n in self._linear_names]
        pieces = torch.split(v, [t.numel() for t in leaves])
        tangents = {n: piece.view_as(t) for n, piece, t in zip(self._linear_names, pieces, leaves)}
        hv, _ = self._linear(tangents)  # (H v as a dict, gᵀv)
        return torch.cat([hv[n].reshape(-1) for n in self._linear_names]).detach()

    def _loss_at_theta(self) -> float:
        with torch.no_grad():
            return float(self._forward_loss(dict(self._leaves), self.inputs, self.targets))

    def _gradient_graph(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Mean loss on (x, y) and its parameter gradients, with the graph kept for a 2nd pass."""
        loss = self._forward_loss(dict(self._leaves), x, y)
        # autograd.grad, not .backward(create_graph=True): no parameter-gradient reference cycle
        # and nothing written to .grad. Unused parameters get a zero gradient (and zero HVP).
        grads = torch.autograd.grad(loss, list(self._leaves.values()), create_graph=True, allow_unused=True)
        leaves = self._leaves.values()
        return loss, [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, leaves)]

    def _hvp_through(self, grads: list[Tensor], v: Tensor) -> Tensor:
        """(∂g/∂θ) v for the gradient list ``grads``; flat (P,) result."""
        leaves = list(self._leaves.values())
        pieces = list(torch.split(v, [t.numel() for t in leaves]))
        # Gradients that do not depend on θ (no grad_fn) have a zero Hessian block.
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        out = [torch.zeros_like(p) for p in leaves]
        if live:
            hv = torch.autograd.grad(
                [grads[i] for i in live],
                leaves,
                grad_outputs=[pieces[i].view_as(grads[i]) for i in live],
                retain_graph=True,
                allow_unused=True,
            )
            out = [h if h is not None else o for h, o in zip(hv, out)]
        return torch.cat([h.reshape(-1) for h in out]).detach()

    def _slices(self):
        n = self.inputs.shape[0]
        for start in range(0, n, self.batch_size):
            x, y = self.inputs[start : start + self.batch_size], self.targets[start : start + self.batch_size]
            yield x, y, x.shape[0] / n  # mean over S = size-weighted mean of batch means

    # ----------------------------------------------------------------- autograd path

    def _autograd_hvp(self, v: Tensor) -> Tensor:
        if self.batch_size is None:
            if self._grads is None:
                if self._graph_error is not None:
                    err, self._graph_error = self._graph_error, None
                    raise err
                loss, self._grads = self._gradient_graph(self.inputs, self.targets)
                self.loss = float(loss.detach())
            return self._hvp_through(self._grads, v)
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total_loss = 0.0
        for x, y, weight in self._slices():
            loss, grads = self._gradient_graph(x, y)
            out += weight * self._hvp_through(grads, v)
            total_loss += weight * float(loss.detach())
            del loss, grads  # free this slice's graph before building the next
        self.loss = total_loss
        return out

    # ----------------------------------------------------------------- finite-difference path

    def _use_fd(self, reason: str) -> None:
        self.hvp_path, self.hvp_reason = paths.FINITE_DIFFERENCES, reason
        self._grads, self._graph_error = None, None  # free the first-order graph
        self._math_attention = False
        self.fd_dtype = paths.fd_compute_dtype(self.dtype, self._fd_float64)
        with torch.no_grad():
            sq = sum(float(p.to(torch.float64).pow(2).sum()) for p in self._leaves.values())
        self._theta_norm = math.sqrt(sq)

    def _shifted_gradient(self, v: Tensor, eps: float, dtype: torch.dtype) -> tuple[Tensor, float]:
        """∇L(θ + εv) over S (flat, ``dtype``) and L(θ + εv); θ + εv is a new tensor per parameter."""
        sizes = [t.numel() for t in self._leaves.values()]
        pieces = torch.split(v.to(dtype), sizes)
        with torch.no_grad():
            shifted = {n: (p.to(dtype) + eps * s.view_as(p)).requires_grad_(True)
                       for (n, p), s in zip(self._leaves.items(), pieces)}
        buffers: dict[str, Tensor] = {}
        if dtype != self.dtype:
            buffers = {n: b.to(dtype) if b.is_floating_point() else b.clone() for n, b in self.model.named_buffers()}

        def cast(t: Tensor) -> Tensor:
            return t.to(dtype) if t.is_floating_point() and dtype != self.dtype else t

        batches = [(self.inputs, self.targets, 1.0)] if self.batch_size is None else self._slices()
        grad = torch.zeros(self.dim, dtype=dtype, device=self.device)
        total = 0.0
        for x, y, weight in batches:
            loss = self._forward_loss({**shifted, **buffers}, cast(x), cast(y))
            g = torch.autograd.grad(loss, list(shifted.values()), allow_unused=True)
            grad += weight * torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                                        for gi, p in zip(g, shifted.values())])
            total += weight * float(loss.detach())
            del loss, g
        self.n_grad += 1
        return grad, total

    def _fd_product(self, v: Tensor, scale: float = 1.0) -> Tensor:
        """Central difference at step ``scale·ε`` in ``fd_dtype`` (flat, ``fd_dtype``)."""
        vn = float(v.norm())
        if vn == 0.0:
            return torch.zeros(self.dim, dtype=self.fd_dtype, device=self.device)
        eps = scale * paths.fd_epsilon(self._theta_norm, vn, self.fd_dtype, self.fd_rel_step)
        g_plus, l_plus = self._shifted_gradient(v, eps, self.fd_dtype)
        g_minus, l_minus = self._shifted_gradient(v, -eps, self.fd_dtype)
        if self.batch_size is not None or self.loss is None:
            self.loss = 0.5 * (l_plus + l_minus)  # L(θ) + O(ε²)
        g_plus -= g_minus
        del g_minus
        return g_plus.div_(2 * eps)

    def _fd_first(self, v: Tensor) -> Tensor:
        """First finite-difference product: pick the dtype, ε, and estimate the error from 2ε."""
        if self.fd_dtype != self.dtype:
            try:
                h1 = self._fd_product(v)
            except (RuntimeError, TypeError) as err:
                if paths.is_missing_derivative(err):
                    raise
                self.hvp_reason += f"; float64 refused ({_short(err)}), computed in the model's dtype"
                self.fd_dtype = self.dtype
                h1 = self._fd_product(v)
        else:
            h1 = self._fd_product(v)
        if self.fd_rel_step is None:
            self.fd_rel_step = paths.fd_relative_step(self.fd_dtype)
        h2 = self._fd_product(v, scale=2.0)
        n1 = float(h1.norm())
        diff = float((h1 - h2).norm())
        self.hvp_rel_error = diff / n1 if n1 > 0 else (0.0 if diff == 0 else math.inf)
        return h1

    # ----------------------------------------------------------------- path selection

    def _select_and_multiply(self, v: Tensor) -> Tensor:
        """First product: choose the path (see the class docstring) and return ``H v``."""
        attempts: list[tuple[str, BaseException]] = []
        if self.hvp_mode in ("auto", "autograd"):
            try:
                out = self._autograd_hvp(v)
                self.hvp_path, self.hvp_reason = paths.AUTOGRAD, "double backward available"
                return out
            except (RuntimeError, NotImplementedError) as err:
                if not paths.is_missing_derivative(err):
                    raise
                attempts.append((paths.AUTOGRAD, err))
                self._grads = None
            if paths.mentions_attention(attempts[-1][1]):
                self._math_attention = True
                try:
                    out = self._autograd_hvp(v)
                    self.hvp_path = paths.MATH_ATTENTION
                    self.hvp_reason = f"fused attention has no double backward ({_short(attempts[-1][1])})"
                    return out
                except (RuntimeError, NotImplementedError) as err:
                    if not paths.is_missing_derivative(err):
                        raise
                    attempts.append((paths.MATH_ATTENTION, err))
                    self._grads, self._math_attention = None, False
        if self.hvp_mode in ("auto", "finite-difference"):
            if self.hvp_mode == "auto":
                self._use_fd("no double backward: " + "; ".join(f"{p}: {_short(e)}" for p, e in attempts))
            try:
                return self._fd_first(v)
            except (RuntimeError, NotImplementedError) as err:
                if not paths.is_missing_derivative(err):
                    raise
                attempts.append((paths.FINITE_DIFFERENCES, err))
                self.hvp_path = None
        raise self._unavailable(attempts)

    def _unavailable(self, attempts: list[tuple[str, BaseException]]) -> paths.HessianUnavailableError:
        """The error naming the failing operation (anomaly-mode diagnosis) and the paths tried."""
        last = attempts[-1][1]
        name = paths.operation_from_message(last)
        first_order = self.hvp_mode != "autograd" and attempts[-1][0] == paths.FINITE_DIFFERENCES

        n = self.inputs.shape[0] if self.batch_size is None else self.batch_size

        def failing() -> None:  # on one slice: the failure does not depend on the data
            loss = self._forward_loss(dict(self._leaves), self.inputs[:n], self.targets[:n])
            grads = torch.autograd.grad(loss, list(self._leaves.values()), create_graph=not first_order,
                                        allow_unused=True)
            if not first_order:
                live = [g for g in grads if g is not None and g.requires_grad]
                torch.autograd.grad(sum(g.sum() for g in live), list(self._leaves.values()), allow_unused=True)

        where = paths.diagnose_operation(failing)
        operation = (f"{name} ({where})" if name and where else name or where) or "(not identified)"
        msgs = [(p, _short(e, 300)) for p, e in attempts]
        if first_order:
            msgs[-1] = (msgs[-1][0], "needs first-order gradients, which fail: " + msgs[-1][1])
        if self.hvp_mode == "autograd":
            msgs.append((paths.FINITE_DIFFERENCES, "not tried (hvp='autograd')"))
        return paths.HessianUnavailableError(operation, msgs)

    # ----------------------------------------------------------------- public

    def matvec(self, v: Tensor) -> Tensor:
        """Return ``H v`` for a flat vector ``v`` of shape (P,) (cast to the model's dtype/device)."""
        if not isinstance(v, Tensor) or v.dim() != 1 or v.numel() != self.dim:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"vector has shape {shape}; expected ({self.dim},)")
        v = v.detach().to(dtype=self.dtype, device=self.device)
        if self.hvp_path == paths.LINEARIZED:
            out = self._linear_hvp(v)
        elif self.hvp_path is None or (self.hvp_path == paths.FINITE_DIFFERENCES and self.hvp_rel_error is None):
            out = self._select_and_multiply(v)
            if self._fallback_note:  # why hvp='linearize' was not used
                self.hvp_reason, self._fallback_note = self._fallback_note + self.hvp_reason, ""
        elif self.hvp_path == paths.FINITE_DIFFERENCES:
            out = self._fd_product(v)
        else:
            out = self._autograd_hvp(v)
        self.n_hvp += 1
        return out.to(self.dtype)

    __call__ = matvec

    @property
    def hvp_note(self) -> str:
        """One line for results: the path, why, and (finite differences) ε, dtype and error."""
        if self.hvp_path is None:
            return ""
        note = f"{self.hvp_path}: {self.hvp_reason}"
        if self.hvp_path == paths.FINITE_DIFFERENCES and self.hvp_rel_error is not None:
            note += ". " + paths.fd_note(self.fd_dtype, self.fd_rel_step, self.hvp_rel_error)
        return note

    def provenance(self) -> dict:
        """``hvp_path``, ``hvp_note`` and ``hvp_rel_error`` for result dataclasses."""
        return {"hvp_path": self.hvp_path, "hvp_note": self.hvp_note, "hvp_rel_error": self.hvp_rel_error}

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 numpy in and out) over :meth:`matvec`."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).to(torch.float64).cpu().numpy()

        return LinearOperator((self.dim, self.dim), matvec=mv, dtype=np.float64)


def _short(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    vector: Tensor,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
) -> Tensor:
    """One Hessian-vector product ``H v`` of the mean loss over ``data`` (see :class:`HessianOperator`)."""
    return HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp).matvec(vector)


def random_unit_vector(dim: int, generator: torch.Generator, dtype: torch.dtype, device) -> Tensor:
    """A standard-normal vector of length ``dim`` drawn from ``generator``, scaled to unit norm."""
    v = torch.randn(dim, generator=generator, dtype=dtype, device=generator.device).to(device)
    return v / v.norm()


def start_vector(start: Tensor, dim: int, dtype: torch.dtype, device) -> Tensor:
    """A caller's start vector, checked and scaled to unit norm in ``dtype`` on ``device``.

    Args:
        start: flat tensor of P = ``dim`` finite entries, any non-zero norm, any float dtype/device.
        dim, dtype, device: those of the operator.

    Returns:
        The unit vector ``start / ‖start‖`` (a new tensor).

    Raises:
        ValueError: not a tensor, wrong shape, non-finite entries or zero norm.
    """
    if not isinstance(start, Tensor):
        raise ValueError(f"start must be a flat tensor of {dim} entries, got {type(start).__name__}")
    if start.dim() != 1 or start.numel() != dim:
        raise ValueError(f"start has shape {tuple(start.shape)}; expected ({dim},)")
    v = start.detach().to(dtype=dtype, device=device)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("start has non-finite entries")
    norm = v.norm()
    if float(norm) == 0.0:
        raise ValueError("start is the zero vector")
    return v / norm


# --------------------------------------------------------------------------- Lanczos core


class LanczosProcess:
    """Lanczos tridiagonalisation ``Qᵀ H Q = T`` with full re-orthogonalisation.

    Each :meth:`step` costs one matvec. ``Q`` holds the orthonormal Lanczos vectors taken so far
    as rows (shape (m, P), model dtype). They are stored in blocks allocated as steps are taken
    (a block holds ``max(1, min(32, 2**20 // P))`` rows), so memory grows with the steps actually
    taken, not with ``max_steps``: on an 11.7M-parameter model, 13 steps hold 13 vectors rather
    than the 100 a preallocated basis would. ``alphas``/``betas`` the diagonal and off-diagonal of
    T as floats. ``betas[j]`` couples step j to step j+1, so after m steps ``betas[m-1]`` is the
    residual scale of every Ritz pair: ``‖H y_i − θ_i y_i‖ = betas[m-1] · |s_i[m-1]|``.
    ``block_starts`` lists the steps at which a Krylov sequence began (0, then every restart):
    T is block diagonal along them.
    """

    def __init__(self, matvec: Callable[[Tensor], Tensor], q0: Tensor, max_steps: int) -> None:
        self.matvec, self.max_steps = matvec, max_steps
        self._dim, self._dtype, self._device = q0.numel(), q0.dtype, q0.device
        self._block_rows = max(1, min(32, 2**20 // max(1, self._dim)))
        self._blocks: list[Tensor] = []  # each (rows, P); the last may be partly filled
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.block_starts: list[int] = [0]
        self._next: Tensor | None = q0 / q0.norm()  # unit vector for the next step
        # Breakdown threshold: β below this (relative to ‖T‖) means an invariant subspace.
        self._tiny = 100 * torch.finfo(q0.dtype).eps

    @property
    def m(self) -> int:
        """Number of steps (matvecs) taken."""
        return len(self.alphas)

    @property
    def dim(self) -> int:
        """P, the length of the vectors."""
        return self._dim

    def _filled(self, upto: int):
        """The filled parts of the blocks covering rows [0, upto)."""
        left = upto
        for block in self._blocks:
            if left <= 0:
                break
            yield block[: min(left, block.shape[0])]
            left -= block.shape[0]

    @property
    def Q(self) -> Tensor:
        """The Lanczos vectors taken so far as rows, (m, P) (a copy)."""
        rows = list(self._filled(self.m))
        return torch.cat(rows) if rows else torch.zeros(0, self._dim, dtype=self._dtype, device=self._device)

    def _store(self, j: int, q: Tensor) -> None:
        b, r = divmod(j, self._block_rows)
        if b == len(self._blocks):
            rows = min(self._block_rows, self.max_steps - j)
            self._blocks.append(torch.zeros(rows, self._dim, dtype=self._dtype, device=self._device))
        self._blocks[b][r] = q

    def _orthogonalise(self, w: Tensor, upto: int) -> Tensor:
        # Classical Gram-Schmidt twice against the first `upto` Lanczos vectors ("twice is enough").
        # In place on a private copy: a fresh P-vector per block would cost more than the
        # arithmetic on large models (page faults on every allocation).
        w = w.clone()
        for _ in range(2):
            coeffs = [Qb @ w for Qb in self._filled(upto)]  # all projections from the same w
            for Qb, c in zip(self._filled(upto), coeffs):
                w.addmv_(Qb.T, c, alpha=-1)
        return w

    def step(self) -> None:
        """Take one step (one matvec); requires a next vector (see :meth:`restart`)."""
        j = self.m
        if j >= self.max_steps or self._next is None:
            raise RuntimeError("Lanczos process cannot step (max_steps reached or breakdown)")
        q = self._next
        w = self.matvec(q)  # (P,)
        self._store(j, q)
        self.alphas.append(float(torch.dot(q, w)))
        w = self._orthogonalise(w, j + 1)  # removes α_j q_j, β_{j-1} q_{j-1} and rounding drift
        beta = float(w.norm())
        self.betas.append(beta)
        self._next = w / beta if beta > 0 else None

    def broke_down(self) -> bool:
        """True when the last β is negligible: span(Q) is an invariant subspace of H."""
        scale = max(max(abs(a) for a in self.alphas), max(self.betas[:-1], default=0.0), 1e-300)
        return self.betas[-1] <= self._tiny * scale

    def restart(self, generator: torch.Generator) -> bool:
        """After a breakdown, continue from a random unit vector orthogonal to Q.

        Sets the last β to 0, so T becomes block diagonal and the Ritz pairs found so far keep a
        zero residual. Returns False when no new direction exists (Q spans the whole space).
        """
        m, dim = self.m, self._dim
        if m >= min(dim, self.max_steps):
            return False
        for _ in range(3):
            v = random_unit_vector(dim, generator, self._dtype, self._device)
            v = self._orthogonalise(v, m)
            if float(v.norm()) > 1e-3:
                self.betas[-1] = 0.0
                self._next = v / v.norm()
                self.block_starts.append(m)
                return True
        return False

    def tridiagonal(self) -> np.ndarray:
        """T of the steps taken so far, shape (m, m), float64."""
        m = self.m
        T = np.diag(np.asarray(self.alphas, dtype=np.float64))
        off = np.asarray(self.betas[: m - 1], dtype=np.float64)
        return T + np.diag(off, 1) + np.diag(off, -1)

    def ritz(self, first: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values θ (ascending, (n,)), T's eigenvectors S (columns, (n, n)), residual norms (n,).

        Of all of T (``first=0``), or of its trailing block from step ``first`` on (n = m − first;
        a block of :attr:`block_starts` is itself the T of one Krylov sequence).
        """
        # LAPACK's tridiagonal solver: also avoids threaded dense eigh (slow when cores are shared).
        theta, S = eigh_tridiagonal(np.asarray(self.alphas[first:]), np.asarray(self.betas[first : self.m - 1]))
        return theta, S, np.abs(self.betas[-1] * S[-1, :])

    def ritz_vectors(self, S: np.ndarray) -> Tensor:
        """Ritz vectors ``Qᵀ s`` for the columns s of ``S`` (n, k), as unit rows (k, P).

        ``S`` may have fewer rows than steps taken (n ≤ m): the Ritz vectors of the first n steps
        (the basis only grows, so those of an earlier step can be formed later).
        """
        s = torch.as_tensor(S, dtype=self._dtype, device=self._device)  # (n, k)
        Y = torch.zeros(s.shape[1], self._dim, dtype=self._dtype, device=self._device)
        start = 0
        for Qb in self._filled(s.shape[0]):
            Y.addmm_(s[start : start + Qb.shape[0]].T, Qb)
            start += Qb.shape[0]
        return Y / Y.norm(dim=1, keepdim=True)

    def basis(self) -> "KrylovBasis":
        """The basis built so far and its T, as a :class:`KrylovBasis` (copies)."""
        return KrylovBasis(vectors=self.Q, alphas=tuple(self.alphas), betas=tuple(self.betas[: self.m - 1]),
                           block_starts=tuple(self.block_starts))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class KrylovBasis:
    """The orthonormal Krylov basis of a Lanczos run and the projection of H on it.

    ``vectors`` (m, P), model dtype: orthonormal rows q_j (rows of Q). ``alphas`` (m) and
    ``betas`` (m − 1) are the diagonal and off-diagonal of ``T = Q H Qᵀ`` (zeros in ``betas`` at
    restarts, listed in ``block_starts``). So ``tr(Q H Qᵀ) = Σ alphas`` costs no HVP, and
    ``Q H Qᵀ = T`` holds to rounding (full re-orthogonalisation) for exact HVPs, to the HVPs'
    relative error for finite differences. A random start vector makes the basis independent of
    any probe drawn from another generator: what unbiased deflation needs (see
    :func:`landscape_utils.probes.spectrum.hutchpp_lanczos_trace`).
    """

    vectors: Tensor = field(repr=False)
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    block_starts: tuple[int, ...] = (0,)

    @property
    def m(self) -> int:
        """Dimension of the Krylov space (number of Lanczos vectors)."""
        return len(self.alphas)

    def trace(self) -> float:
        """tr(Q H Qᵀ) = tr(T) = Σ alphas."""
        return float(math.fsum(self.alphas))

    def tridiagonal(self) -> np.ndarray:
        """T, shape (m, m), float64."""
        off = np.asarray(self.betas, dtype=np.float64)
        return np.diag(np.asarray(self.alphas, dtype=np.float64)) + np.diag(off, 1) + np.diag(off, -1)


@dataclass(frozen=True, eq=False)
class EigResult:
    """Eigenpairs from :func:`lanczos_top_eigs` (or one end of :func:`lanczos_extremes`).

    ``eigenvalues`` are sorted descending for ``which="largest"`` and ascending for
    ``"smallest"`` (so ``eigenvalues[0]`` is always the extreme one); ``eigenvectors[i]`` (unit,
    flat, model dtype) belongs to ``eigenvalues[i]``; ``residuals[i] = ‖H y_i − θ_i y_i‖`` (from
    the Lanczos recurrence), ``relative_residuals[i] = residuals[i] / |θ_i|`` and
    ``error_bounds[i] = min(r_i, r_i²/gap_i)``, the gap-refined estimate of |θ_i − λ_i|.
    ``history[j]`` is the extreme Ritz value after j+1 HVPs. ``criterion`` is the stopping rule
    (``"residual"`` or ``"gap"``), ``warm_start`` whether the caller gave the start vector.

    HVP accounting: ``n_hvp`` HVPs were spent on this result and not counted in any other;
    ``n_hvp_shared`` more came from a Krylov run shared with another result (for the smallest
    end of :func:`lanczos_extremes`: the steps the top end had already taken). A standalone run
    would have cost ``n_hvp + n_hvp_shared``; summing ``n_hvp`` over results counts each HVP once.

    Provenance of the HVPs: ``hvp_path`` (``"autograd"``, ``"autograd (math attention)"`` or
    ``"finite differences"``), ``hvp_note`` (why, and for finite differences ε, dtype and error),
    ``hvp_rel_error`` (estimated relative HVP error; None when exact), ``tolerance_used`` (the
    tolerance actually applied: ``max(tol, 10·hvp_rel_error)``) and ``tolerance_note``.
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor = field(repr=False)
    residuals: tuple[float, ...]
    relative_residuals: tuple[float, ...]
    error_bounds: tuple[float, ...]
    n_hvp: int
    converged: bool
    which: str
    tol: float
    history: tuple[float, ...] = field(repr=False)
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None
    tolerance_used: float | None = None
    tolerance_note: str = ""
    criterion: str = "residual"
    atol: float = 0.0
    warm_start: bool = False
    n_hvp_shared: int = 0

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain JSON-serialisable values (eigenvectors only if asked: they are P floats each)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        vecs = d.pop("eigenvectors")
        if include_vectors:
            d["eigenvectors"] = vecs.detach().to(torch.float64).cpu().tolist()
        return d


@dataclass(frozen=True, eq=False)
class ExtremesResult:
    """Both ends of the spectrum from one Krylov run (:func:`lanczos_extremes`).

    ``top`` (``which="largest"``) and ``smallest`` (``which="smallest"``) are what standalone
    :func:`lanczos_top_eigs` runs with the same generator, start vector and stopping rules would
    return (each taken at the step its own rule was met), except for the HVP accounting:
    ``n_hvp = top.n_hvp + smallest.n_hvp`` is the run's total. ``basis`` is the whole run's
    Krylov basis (both ends' steps), for deflated trace estimates.
    """

    top: EigResult
    smallest: EigResult
    basis: KrylovBasis = field(repr=False)
    n_hvp: int

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain values: ``top``, ``smallest`` (see :meth:`EigResult.to_dict`), ``n_hvp`` and the basis size."""
        return {"top": self.top.to_dict(include_vectors), "smallest": self.smallest.to_dict(include_vectors),
                "n_hvp": self.n_hvp, "basis_dim": self.basis.m}


@dataclass(frozen=True, eq=False)
class PowerResult:
    """Result of :func:`power_iteration_top_eig` (``eigenvector`` unit, flat, model dtype).

    ``residual = ‖H v − λ v‖`` for the returned pair, ``history[j]`` the Rayleigh quotient of
    iteration j+1, ``warm_start`` whether the caller gave the start vector.

    Provenance of the HVPs: ``hvp_path`` (``"autograd"``, ``"autograd (math attention)"`` or
    ``"finite differences"``), ``hvp_note`` (why, and for finite differences ε, dtype and error),
    ``hvp_rel_error`` (estimated relative HVP error; None when exact), ``tolerance_used`` (the
    tolerance actually applied: ``max(tol, 10·hvp_rel_error)``) and ``tolerance_note``.
    """

    eigenvalue: float
    eigenvector: Tensor = field(repr=False)
    residual: float
    n_hvp: int
    converged: bool
    tol: float
    history: tuple[float, ...] = field(repr=False)
    hvp_path: str | None = None
    hvp_note: str = ""
    hvp_rel_error: float | None = None
    tolerance_used: float | None = None
    tolerance_note: str = ""
    warm_start: bool = False

    def to_dict(self, include_vectors: bool = False) -> dict:
        """Plain JSON-serialisable values (the eigenvector only if asked)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        vec = d.pop("eigenvector")
        d["history"] = list(d["history"])
        if include_vectors:
            d["eigenvector"] = vec.detach().to(torch.float64).cpu().tolist()
        return d


# --------------------------------------------------------------------------- eigen-solvers

CRITERIA = ("residual", "gap")
# lanczos_extremes' default absolute floor for the smallest end: this fraction of smallest_tol
# times the largest |Ritz value| (a lower bound on ‖H‖). Near a minimum λmin ≈ 0 and a purely
# relative rule may never be met; an error of 1e-2·tol·‖H‖ still tells its sign and size.
SMALLEST_FLOOR = 1e-2


def _gap_bounds(theta: np.ndarray, res: np.ndarray) -> np.ndarray:
    """min(r_i, r_i²/gap_i) with gap_i = min_{j≠i}(|θ_i − θ_j| − r_j); r_i where gap_i ≤ 0."""
    m = theta.size
    if m == 1:
        return res.copy()
    dist = np.abs(theta[:, None] - theta[None, :]) - res[None, :]  # (m, m): gap to pair j
    np.fill_diagonal(dist, np.inf)
    gap = dist.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        refined = np.where(gap > 0, res**2 / np.where(gap > 0, gap, 1.0), np.inf)
    return np.minimum(res, refined)


@dataclass
class _End:
    """Stopping rule and record of one end of the spectrum in a Lanczos run (internal).

    Wanted: the k extreme Ritz pairs at ``which`` end. The end is met when each wanted pair has
    its error estimate ``e_i ≤ max(tol·|θ_i|, atol, rel_floor·max|θ|)``, where e_i is r_i
    (``criterion="residual"``) or min(r_i, r_i²/gap_i) (``"gap"``, which also holds the next
    pair inward, the guard, to the same bound), *and* the extreme Ritz pair of
    the newest Krylov block (after a restart) meets the same rule at the scale of the wanted
    ones: until it has, an eigenvalue beyond the pairs found may still be hiding in the
    complement of the invariant subspace that broke the run down.
    """

    which: str
    k: int
    tol: float
    atol: float
    criterion: str
    rel_floor: float = 0.0
    tol_used: float | None = None
    tol_note: str = ""
    history: list[float] = field(default_factory=list)
    snapshot: tuple | None = None  # (values, S columns, residuals, error bounds, n_hvp, converged) at the stop

    def wanted(self, n: int) -> np.ndarray:
        """Indices (into ascending Ritz values) of the wanted pairs, extreme one first."""
        return np.arange(n)[::-1][: self.k] if self.which == "largest" else np.arange(n)[: self.k]

    def errors(self, theta: np.ndarray, res: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return res[idx] if self.criterion == "residual" else _gap_bounds(theta, res)[idx]

    def threshold(self, values: np.ndarray, theta: np.ndarray) -> np.ndarray:
        floor = max(self.atol, self.rel_floor * float(np.max(np.abs(theta))))
        return np.maximum(self.tol_used * np.abs(values), floor)

    def met(self, proc: LanczosProcess, theta: np.ndarray, res: np.ndarray) -> bool:
        # The gap rule also holds the guard pair (the next one inward) to the same bound: its
        # r²/gap estimate trusts θ_k − θ_{k+1} − r_{k+1} as the gap, which overstates it while
        # θ_{k+1} has not yet found its eigenvalue (an unresolved near-degenerate λ_{k+1} hides
        # inside θ_k's Ritz vector). Without the guard, 1 start in 50 stopped on λ₂ for λ₂/λ₁ = 0.98.
        n = self.k + (1 if self.criterion == "gap" else 0)
        if proc.m < n and proc.m < proc.dim:  # (at m = P, T is exact: every pair is converged)
            return False
        idx = self.wanted(proc.m)
        check = np.arange(proc.m)[::-1][:n] if self.which == "largest" else np.arange(proc.m)[:n]
        if not bool(np.all(self.errors(theta, res, check) <= self.threshold(theta[check], theta))):
            return False
        first = proc.block_starts[-1]
        if first == 0:  # one Krylov sequence: its extreme pair is the first wanted one
            return True
        bt, _, br = proc.ritz(first)  # the newest block's own Ritz pairs and residuals
        j = self.wanted(bt.size)[:1]
        # At the wanted pairs' scale: a block whose extreme value sits near 0 need only be
        # converged well enough to rule out its passing the last wanted value.
        scale = max(abs(float(bt[j[0]])), abs(float(theta[idx[-1]])))
        return bool(self.errors(bt, br, j)[0] <= self.threshold(np.array([scale]), theta)[0])

    def record(self, proc: LanczosProcess, theta: np.ndarray, S: np.ndarray, res: np.ndarray, n_hvp: int,
               converged: bool) -> None:
        idx = self.wanted(proc.m)
        self.snapshot = (theta[idx].copy(), S[:, idx].copy(), res[idx].copy(), _gap_bounds(theta, res)[idx],
                         n_hvp, converged)

    def result(self, proc: LanczosProcess, op: HessianOperator, tol: float, warm: bool, n_hvp: int,
               shared: int) -> EigResult:
        vals, S, r, bounds, _, converged = self.snapshot
        rel = r / np.maximum(np.abs(vals), np.finfo(np.float64).tiny)
        return EigResult(
            eigenvalues=tuple(float(v) for v in vals),
            eigenvectors=proc.ritz_vectors(S),
            residuals=tuple(float(v) for v in r),
            relative_residuals=tuple(float(v) for v in rel),
            error_bounds=tuple(float(v) for v in bounds),
            n_hvp=n_hvp,
            converged=converged,
            which=self.which,
            tol=float(tol),
            history=tuple(self.history),
            **op.provenance(),
            tolerance_used=self.tol_used,
            tolerance_note=self.tol_note,
            criterion=self.criterion,
            atol=float(self.atol),
            warm_start=warm,
            n_hvp_shared=shared,
        )


def _run_lanczos(op: HessianOperator, q0: Tensor, generator: torch.Generator, ends: list[_End],
                 max_iter: int) -> LanczosProcess:
    """Step one Lanczos process from ``q0`` until every end is met (or ``max_iter``); each end
    records its pairs at the step its own rule was first met."""
    proc = LanczosProcess(op.matvec, q0, max_iter)
    while True:
        proc.step()
        open_ends = [e for e in ends if e.snapshot is None]
        for e in open_ends:
            if e.tol_used is None:  # the HVP path (and its error) is known after the first product
                e.tol_used, e.tol_note = paths.tolerance_for(e.tol, op.hvp_rel_error, f"{e.criterion} (relative)")
        theta, S, res = proc.ritz()
        for e in open_ends:
            e.history.append(float(theta[e.wanted(proc.m)[0]]))
        if proc.broke_down():
            # Invariant Krylov space: its Ritz pairs are exact, but eigenvalues whose
            # eigenvectors are orthogonal to it (e.g. a second copy of a repeated one, or a
            # larger one missed by a warm start that was an eigenvector) were missed. Restart
            # orthogonally and take at least one more step before stopping.
            if proc.restart(generator):
                continue
            for e in open_ends:  # nothing left to explore within max_iter: pairs are exact
                e.record(proc, theta, S, res, op.n_hvp, converged=proc.m >= e.k)
            return proc
        for e in open_ends:
            if e.met(proc, theta, res):
                e.record(proc, theta, S, res, op.n_hvp, converged=True)
        if all(e.snapshot is not None for e in ends):
            return proc
        if proc.m >= max_iter:
            for e in ends:
                if e.snapshot is None:
                    e.record(proc, theta, S, res, op.n_hvp, converged=False)
            return proc


def _check_lanczos_args(k: int, tol: float, which: str, atol: float, criterion: str, name: str = "") -> None:
    check_positive(f"{name}k" if name else "k", k, integer=True)
    check_positive(f"{name}tol", tol)
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and math.isfinite(atol) and atol >= 0):
        raise ValueError(f"{name}atol must be >= 0, got {atol!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"{name}criterion must be 'residual' or 'gap', got {criterion!r}")


def _budget(max_iter: int | None, k: int, dim: int) -> int:
    if max_iter is None:
        return min(dim, max(100, 10 * k))
    check_positive("max_iter", max_iter, integer=True)
    if max_iter < k:
        raise ValueError(f"max_iter={max_iter} must be >= k={k}")
    return min(max_iter, dim)  # P steps span the space: T is then exact


def lanczos_top_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    k: int = 1,
    tol: float = 1e-4,
    max_iter: int | None = None,
    which: str = "largest",
    atol: float = 0.0,
    criterion: str = "residual",
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
) -> EigResult:
    """The k largest (or smallest, i.e. most negative) Hessian eigenpairs by Lanczos.

    Lanczos with full re-orthogonalisation from a random unit start vector (drawn from
    ``generator``) or from ``start``. After every HVP the tridiagonal T is diagonalised (its last
    row gives every Ritz residual ``r_i = ‖H y_i − θ_i y_i‖`` without extra HVPs) and the run
    stops as soon as each of the k wanted Ritz pairs (θ_i, y_i) has
    ``e_i ≤ max(tol·|θ_i|, atol)``, where

    * ``criterion="residual"`` (default): ``e_i = r_i``. This bounds the distance from θ_i to an
      eigenvalue of H rigorously, so the values are within relative ``tol`` of true eigenvalues
      (in practice far closer, as the error shrinks like r²/gap; it costs more HVPs);
    * ``criterion="gap"``: ``e_i = min(r_i, r_i²/gap_i)`` with
      ``gap_i = min_{j≠i}(|θ_i − θ_j| − r_j)`` over the other Ritz values (falling back to r_i
      when that is ≤ 0), required of the k wanted pairs *and of the next one* (the (k+1)-th
      from that end, a guard; not needed once m = P). This is the gap-refined bound
      |θ − λ| ≤ r²/gap with the gap estimated from the Ritz values. It is not rigorous: Ritz
      values lie inside the spectrum, so θ_k − θ_{k+1} overstates the distance to the next
      eigenvalue until θ_{k+1} has found it. The r_j margin alone did not cover that (1 start
      in 50 stopped on λ₂ when λ₂/λ₁ = 0.98, k = 1, error 200·tol); the guard does. It targets
      an eigenvalue *error* of ``tol`` and usually stops earlier than the residual rule.
      Validated in tests/test_lanczos_stopping.py over 50 start vectors on exact Hessians with
      near-degenerate (λ₂/λ₁ = 0.98), clustered, power-law and indefinite spectra.

    Neither rule can see an eigenvector the start vector almost misses: a start whose
    component along a wanted eigenvector is ~1/50 of the typical one or less can stop with
    that eigenvalue missing (both rules; the residual rule, being stricter, waits longer and
    misses fewer). With random starts that is a ~1% event per wanted eigenvector.

    The result's ``error_bounds`` hold ``min(r_i, r_i²/gap_i)`` whichever criterion stopped it.

    On an invariant-subspace breakdown (β ≈ 0) the pairs found are exact and the process
    restarts from a random vector orthogonal to the Krylov space (T becomes block diagonal), so
    that eigenvalues missed by the start vector, such as a second copy of a repeated eigenvalue
    or a larger eigenvalue missed by a ``start`` that was an exact eigenvector, can still be
    found: after a restart the run also waits for the newest block's extreme Ritz pair to meet
    the rule. Like any single-vector Krylov method it cannot otherwise see multiplicities. For
    ``which="smallest"`` near a minimum |θ| can be tiny: pass ``atol`` (e.g. a fraction of
    λmax) or expect more iterations.

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see :class:`HessianOperator`).
        generator: source of the start vector (unless ``start``) and of restart vectors.
        k: number of eigenpairs, 1 ≤ k ≤ P.
        tol: relative tolerance (> 0) on the residual or on the error bound (see ``criterion``).
        max_iter: HVP budget (default ``min(P, max(100, 10k))``); must be ≥ k.
        which: ``"largest"`` (algebraic) or ``"smallest"`` (algebraic, i.e. most negative).
        atol: absolute floor of the stopping threshold (≥ 0).
        criterion: ``"residual"`` or ``"gap"`` (see above).
        hvp, fd_step: HVP path (``"auto"``, ``"autograd"``, ``"finite-difference"``,
            ``"linearize"``) and finite-difference step (see :class:`HessianOperator`). On finite-difference HVPs the
            tolerance actually applied is ``max(tol, 10 · hvp_rel_error)``: no Ritz residual below
            the HVPs' own error means anything. The result records it (``tolerance_used``,
            ``tolerance_note``).
        start: warm start: a flat vector of P entries (any norm, any float dtype; scaled to unit
            norm in the model's dtype), e.g. the top eigenvector at a nearby θ. ``None``: a
            random start from ``generator``. A start close to the wanted eigenvector converges
            in far fewer HVPs; one that is an exact eigenvector of another eigenvalue breaks the
            run down at once and it restarts randomly (see above).

    Returns:
        :class:`EigResult`; ``converged`` is False if ``max_iter`` ran out first.

    Raises:
        ValueError: on bad arguments (k, tol, max_iter, which, atol, data, generator, start, ...).
        HessianUnavailableError: no HVP path works for this model.
    """
    _check_lanczos_args(k, tol, which, atol, criterion)
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    if k > op.dim:
        raise ValueError(f"k={k} exceeds the number of parameters P={op.dim}")
    max_iter = _budget(max_iter, k, op.dim)
    q0 = (random_unit_vector(op.dim, generator, op.dtype, op.device) if start is None
          else start_vector(start, op.dim, op.dtype, op.device))
    end = _End(which, k, tol, atol, criterion)
    proc = _run_lanczos(op, q0, generator, [end], max_iter)
    return end.result(proc, op, tol, start is not None, n_hvp=end.snapshot[4], shared=0)


def lanczos_extremes(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    k: int = 1,
    tol: float = 1e-4,
    criterion: str = "gap",
    smallest_tol: float = 1e-2,
    smallest_atol: float | None = None,
    smallest_criterion: str = "residual",
    max_iter: int | None = None,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
) -> ExtremesResult:
    """The k largest eigenpairs and the smallest eigenpair of the Hessian from ONE Lanczos run.

    Lanczos converges at both ends of the spectrum at once, so the smallest eigenvalue needs no
    separate run: this runs one process (same start vector, restarts and re-orthogonalisation as
    :func:`lanczos_top_eigs`) until both ends meet their rules, and records each end at the step
    its own rule was first met. Each end is therefore exactly what a standalone
    ``lanczos_top_eigs`` with the same generator (or ``start``) would return: ``top`` as with
    ``k, tol, criterion``, ``smallest`` as with ``k=1, tol=smallest_tol, which="smallest",
    criterion=smallest_criterion, atol=<the floor>``. The total cost is the larger of the two
    runs' HVP counts instead of their sum.

    Args:
        model, loss_fn, data, batch_size, train, hvp, fd_step: define the Hessian and how its
            HVPs are computed (see :class:`HessianOperator` and :func:`lanczos_top_eigs`).
        generator: source of the start vector (unless ``start``) and of restart vectors.
        k, tol, criterion: the top end (k largest pairs); see :func:`lanczos_top_eigs`.
        smallest_tol, smallest_criterion: relative tolerance (> 0) and rule of the smallest end.
        smallest_atol: absolute floor of the smallest end's threshold (≥ 0). ``None`` (default):
            ``SMALLEST_FLOOR · smallest_tol · max|θ|`` (1e-2 · tol times the largest |Ritz value|,
            a lower bound on ‖H‖, updated every step), so that λmin ≈ 0 still stops.
        max_iter: HVP budget of the whole run (default ``min(P, max(100, 10k))``); must be ≥ k.
        start: warm start vector (see :func:`lanczos_top_eigs`).

    Returns:
        :class:`ExtremesResult`: ``top`` (``n_hvp`` = the steps it needed), ``smallest``
        (``n_hvp`` = the steps the run took beyond ``top``'s, ``n_hvp_shared`` = those it
        reused), ``basis`` (the whole run's Krylov basis and T) and ``n_hvp`` (the total).

    Raises:
        ValueError: on bad arguments.
        HessianUnavailableError: no HVP path works for this model.
    """
    _check_lanczos_args(k, tol, "largest", 0.0, criterion)
    floor = 0.0 if smallest_atol is None else smallest_atol
    _check_lanczos_args(1, smallest_tol, "smallest", floor, smallest_criterion, name="smallest_")
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    if k > op.dim:
        raise ValueError(f"k={k} exceeds the number of parameters P={op.dim}")
    max_iter = _budget(max_iter, k, op.dim)
    q0 = (random_unit_vector(op.dim, generator, op.dtype, op.device) if start is None
          else start_vector(start, op.dim, op.dtype, op.device))
    top = _End("largest", k, tol, 0.0, criterion)
    low = _End("smallest", 1, smallest_tol, floor, smallest_criterion,
               rel_floor=SMALLEST_FLOOR * smallest_tol if smallest_atol is None else 0.0)
    proc = _run_lanczos(op, q0, generator, [top, low], max_iter)
    n_top, n_low = top.snapshot[4], low.snapshot[4]
    warm = start is not None
    return ExtremesResult(
        top=top.result(proc, op, tol, warm, n_hvp=n_top, shared=0),
        smallest=low.result(proc, op, smallest_tol, warm, n_hvp=max(0, n_low - n_top), shared=min(n_low, n_top)),
        basis=proc.basis(),
        n_hvp=op.n_hvp,
    )


def power_iteration_top_eig(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    generator: torch.Generator,
    tol: float = 1e-3,
    max_iter: int = 100,
    batch_size: int | None = None,
    train: bool = False,
    hvp: str = "auto",
    fd_step: float | None = None,
    start: Tensor | None = None,
) -> PowerResult:
    """Power iteration for the dominant Hessian eigenvalue, as the original study and pyhessian do it.

    From a random unit vector v (drawn from ``generator``) or ``start``, repeat: ``w = H v``,
    ``λ = vᵀw`` (Rayleigh quotient), ``v = w/‖w‖``. **Stopping rule** (pyhessian's): stop when
    ``|λ_new − λ_old| / (|λ_old| + 1e-6) < tol``, or after ``max_iter`` HVPs. That rule measures
    how fast λ is *changing*, not its error: when λ2/λ1 ≈ 1 it stops early and off. It converges
    to the eigenvalue of largest *magnitude*, which is negative if the most negative eigenvalue
    outweighs the largest one (near saddles). Returns the last Rayleigh quotient with the vector
    it belongs to (pyhessian returns the previous one).

    Args:
        model, loss_fn, data, batch_size, train: define the Hessian (see :class:`HessianOperator`).
        generator: source of the start vector (unused when ``start`` is given).
        tol: relative-change tolerance (> 0; pyhessian's default 1e-3).
        max_iter: HVP budget (positive int; pyhessian's default 100).
        hvp, fd_step: HVP path and finite-difference step (see :class:`HessianOperator`); on
            finite-difference HVPs the relative-change tolerance applied is
            ``max(tol, 10 · hvp_rel_error)`` (recorded in ``tolerance_used``).
        start: warm start: a flat vector of P entries (any norm; scaled to unit norm in the
            model's dtype). ``None``: random from ``generator``.

    Returns:
        :class:`PowerResult` with the residual ``‖Hv − λv‖`` of the returned pair.

    Raises:
        ValueError: on bad arguments (including a ``start`` of the wrong shape or zero norm).
    """
    check_positive("tol", tol)
    check_positive("max_iter", max_iter, integer=True)
    check_generator(generator)
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, train=train, hvp=hvp, fd_step=fd_step)
    v = (random_unit_vector(op.dim, generator, op.dtype, op.device) if start is None
         else start_vector(start, op.dim, op.dtype, op.device))
    history: list[float] = []
    converged = False
    tol_used: float | None = None
    for it in range(max_iter):
        w = op.matvec(v)
        if tol_used is None:
            tol_used, tol_note = paths.tolerance_for(tol, op.hvp_rel_error, "relative-change")
        lam = float(torch.dot(v, w))
        residual = float((w - lam * v).norm())
        history.append(lam)
        if len(history) > 1 and abs(lam - history[-2]) / (abs(history[-2]) + 1e-6) < tol_used:
            converged = True
            break
        wn = w.norm()
        if float(wn) == 0.0:  # v is in the null space: λ = 0 exactly
            converged = True
            break
        if it + 1 < max_iter:  # keep v paired with the returned λ
            v = w / wn
    return PowerResult(
        eigenvalue=lam,
        eigenvector=v,
        residual=residual,
        n_hvp=op.n_hvp,
        converged=converged,
        tol=float(tol),
        history=tuple(history),
        **op.provenance(),
        tolerance_used=tol_used,
        tolerance_note=tol_note,
        warm_start=start is not None,
    )
