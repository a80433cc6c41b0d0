"""Hessian-vector products of a mean loss: the operator every curvature probe is built on.

Everything here concerns the Hessian H of the mean loss ``L(θ) = loss_fn(model(X), Y)`` over a
fixed sample set ``S = (X, Y)`` chosen by the caller, taken with respect to the model's trainable
parameters θ at their current values. Vectors are flat, of length P, in the order of
:func:`landscape_utils.probes.params.flatten`, and in the model's dtype and device.

* :class:`HessianOperator` — the HVP ``v -> H v`` (in-memory or accumulated over batches).
* :func:`hvp` — one product; :func:`random_unit_vector` and :func:`start_vector` — the (random or
  a caller's warm) start vectors of the iterative solvers; :func:`check_generator` and
  :func:`check_positive` — the argument checks the probes share.

The eigen-solvers built on it live in :mod:`landscape_utils.probes.lanczos` (:func:`lanczos_top_eigs`,
:func:`lanczos_extremes`) and :mod:`landscape_utils.probes.power` (:func:`power_iteration_top_eig`);
their names are still importable from here.

Models whose operations lack a second derivative (fused attention, hardsigmoid, ...) are handled by
:class:`HessianOperator`'s HVP paths (exact double backward, the math attention backend, or central
differences of gradients; see :mod:`landscape_utils.probes.hvp_paths`); every result records the path.

No probe changes the model's parameters, its train/eval mode (on any submodule), its buffers or
any ``.grad``; every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
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


# --------------------------------------------------------------------------- moved names

# The eigen-solvers moved to lanczos.py and power.py, which import the operator from here; their names
# stay importable from this module for external code. Resolved on first access (PEP 562), so neither
# module is imported here and the import order of the three cannot matter.
_MOVED = {
    **dict.fromkeys(("CRITERIA", "SMALLEST_FLOOR", "EigResult", "ExtremesResult", "KrylovBasis", "LanczosProcess",
                     "_End", "_budget", "_check_lanczos_args", "_gap_bounds", "_run_lanczos", "lanczos_extremes",
                     "lanczos_top_eigs"), "lanczos"),
    **dict.fromkeys(("PowerResult", "power_iteration_top_eig"), "power"),
}


def __getattr__(name: str):
    """Names that moved to :mod:`.lanczos` and :mod:`.power`, looked up where they now live."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
