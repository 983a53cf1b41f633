"""The objective: a model's mean loss over a data set as a pure function of (some of) its parameters.

L(theta) = sum_b (n_b / N) l_b(theta), where l_b is the mean loss over batch b of n_b samples, so
the result is the exact mean over all N samples whatever the batch sizes (a ragged last batch is
weighted correctly). The model is evaluated with ``torch.func.functional_call`` on a private copy
(the caller's model is neither switched to eval mode nor re-cast); buffers such as BatchNorm
statistics are held fixed and the copy runs in eval mode.

Only the selected parameters (``params``; default: all that require grad) are variables; the
others are constants. Parameters that do not influence the loss are allowed: their gradient and
curvature rows are zero.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator, Sequence

import torch
from torch.func import functional_call

from . import distributed
from .errors import LandscapeError
from .losses import get_loss, per_sample
from .models import floating_dtype
from .params import ParamLayout

DEFAULT_BATCH_SIZE = 1024  # CPU sweet spot between MLPs (~2048) and convolutions (~1024)

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def split_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Batches:
    """Consecutive batches of ``batch_size`` samples (views; the last one may have fewer)."""
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Attention through composite kernels, which have forward-mode and second derivatives: the inference
    fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` and the fused (flash,
    memory-efficient) scaled-dot-product kernels have neither. Off again after the block."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def batchnorm_statistics_frozen(model: torch.nn.Module, after_first_forward: bool = False) -> Iterator[None]:
    """BatchNorm layers in training mode keep normalising by batch statistics, but their running statistics
    stop changing within the block, at once or after each layer's first plain forward pass; restored after it.

    The one BatchNorm rule of the curvature code: ``torch.func`` transforms (jvp, vmap) refuse the in-place
    update of the running statistics (frozen at once inside every product), and an optimizer step that
    evaluates the model many times (line searches, curvature products) updates them once
    (``after_first_forward=True``).
    """
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]

    def freeze(module, args=None, out=None):
        module.track_running_stats = False

    handles = [m.register_forward_hook(freeze) for m in layers] if after_first_forward else []
    if not after_first_forward:
        for m in layers:
            freeze(m)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in layers:
            m.track_running_stats = True


def recompute_batchnorm(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Running statistics of every BatchNorm layer = the cumulative average of its batch statistics over
    ``batches`` (train-mode passes, as ``torch.optim.swa_utils.update_bn``); the model's mode is restored."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = {}
    for m in layers:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    was = model.training
    model.train()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.train(was)


class Objective:
    """L(theta) = sum_b (n_b / N) l_b(theta) over the batches of (x, y), a pure function of the selected
    parameters (module docstring).

    Args:
        model: any ``nn.Module`` called as ``model(x)``.
        x, y: the inputs and targets of all N samples (None: no data of its own, :meth:`without_data`).
        loss: a loss name of :mod:`landscape.losses` (``cross_entropy``, ``mse``, ``sum_squares``).
        batch_size: samples per batch (default 1024); the value is the same for any batch size.
        params: the names of the parameters that are variables (default: all that require grad).
        dtype: run in this floating dtype instead of the model's own (the data follows the model).
        device: where to run (default: the model's device).
        shard: under torchrun, each process takes a contiguous block of whole batches and results are summed.
        live: the model itself instead of a private copy, for optimizers (:meth:`live`).
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor | None, y: torch.Tensor | None,
                 loss: str = "cross_entropy", *,
                 batch_size: int | None = None, params: Sequence[str] | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 shard: bool = False, live: bool = False):
        if live and (batch_size is not None or dtype is not None or device is not None or shard or x is None):
            raise ValueError("a live objective is one batch on the model as it is: no batch_size, dtype, device "
                             "or shard")
        device = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), x.device if x is not None else torch.device("cpu"))
        recast = False
        if not live:  # a private copy, in eval mode, in ``dtype`` on ``device``; the data follows its dtype
            model = copy.deepcopy(model)
            recast = dtype is not None and dtype != floating_dtype(model)
            if recast:
                model = model.to(dtype)
            if x is not None:
                x, y = (t.to(floating_dtype(model)) if t.is_floating_point() else t for t in (x, y))
            model = model.to(device).eval()
        self.model = model
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        self._select(params, live)
        if x is None:  # no data of its own (:meth:`without_data`)
            self.sharded, self.batch_ids, self.batches, self.weights, self.num_samples = False, [], [], [], 0
        else:
            self._batch(x, y, x.shape[0] if live else batch_size, shard and distributed.world_size() > 1, device)
        self.device = device
        self.dtype = next(iter(self.theta.values())).dtype
        if recast and x is not None:
            self._check_runs_in(floating_dtype(model), x[:1].to(device))

    def _select(self, params: Sequence[str] | None, live: bool) -> None:
        """The variables (``layout``, ``theta``: detached views of the parameters, so in-place updates of a
        live model show through) and the constants (``frozen``: the other parameters and the buffers)."""
        named = dict(self.model.named_parameters())
        selected = list(params) if params is not None else [n for n, p in named.items() if p.requires_grad]
        unknown = [n for n in selected if n not in named]
        if unknown:
            raise LandscapeError(f"model has no parameter {unknown[0]!r}")
        if not selected:
            raise LandscapeError("the model has no trainable parameters" if live and params is None
                                 else "no parameters selected for differentiation")
        self.layout = ParamLayout.from_tensors({n: named[n] for n in selected})
        self.theta = {n: named[n].detach() for n in self.layout.names}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in self.theta}
        self.frozen.update({n: b if live else b.detach() for n, b in self.model.named_buffers()})

    def _batch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, sharded: bool,
               device: torch.device) -> None:
        """Whole batches of ``batch_size`` samples. They depend on N and the batch size only; a sharded
        objective (under torchrun) takes a contiguous block of whole batches (a rank may have none), so every
        batch is computed exactly as by one process."""
        n = x.shape[0]
        if n == 0:
            raise LandscapeError("the objective needs at least one sample")
        bs = min(n, batch_size or DEFAULT_BATCH_SIZE)
        if bs <= 0:
            raise LandscapeError(f"batch size must be positive, got {batch_size}")
        self.sharded = sharded
        ids = range((n + bs - 1) // bs)
        if sharded:
            lo, hi = distributed.block(len(ids))
            ids = ids[lo:hi]
        self.batch_ids = list(ids)  # global batch numbers (per-batch random draws are seeded by them)
        every = split_batches(x, y, bs)
        self.batches = [(every[b][0].to(device), every[b][1].to(device)) for b in ids]
        self.weights = [xb.shape[0] / n for xb, _ in self.batches]
        self.num_samples = n

    def _check_runs_in(self, dtype: torch.dtype, sample: torch.Tensor) -> None:
        """A model cast to another precision may not run there (a forward that hard-codes a dtype)."""
        try:
            with torch.no_grad():
                self.output(self.theta, sample)
        except (RuntimeError, TypeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LandscapeError(f"the model does not run in {str(dtype).replace('torch.', '')} (its own precision "
                                 f"works; leave --precision out to use it): {first}") from None

    @classmethod
    def live(cls, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy", *,
             params: Sequence[str] | None = None) -> "Objective":
        """The loss of one mini-batch on ``model`` itself, for optimizers: no copy, the model's own
        train/eval mode and buffers, and ``theta`` holding detached *views* of the live parameters
        (``params``, default every parameter that requires grad), so in-place updates of the model show
        through."""
        return cls(model, x, y, loss, params=params, live=True)

    @classmethod
    def without_data(cls, model: torch.nn.Module, loss: str = "cross_entropy", *,
                     params: Sequence[str] | None = None) -> "Objective":
        """The loss as a function of the parameters on a private copy of ``model`` (as the constructor
        makes it) with no data of its own: its batch methods (:meth:`output`, :meth:`batch_loss`,
        :meth:`batch_per_sample`, :meth:`stacked_per_sample`) take the data they are given, :meth:`value` and
        :meth:`value_and_gradient` refuse. For evaluating several data sets with one model copy
        (:class:`landscape.objective_grid.ObjectiveGrid`)."""
        return cls(model, None, None, loss, params=params)

    @contextlib.contextmanager
    def transformable(self) -> Iterator[None]:
        """Within the block, BatchNorm layers in training mode keep using batch statistics but stop
        updating their running statistics, an in-place mutation that ``torch.func`` transforms (jvp,
        vmap) refuse, and attention runs through kernels with forward-mode derivatives
        (:func:`differentiable_attention`). The running statistics are updated by the plain forward
        passes outside."""
        with batchnorm_statistics_frozen(self.model), differentiable_attention():
            yield

    # --- structure ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.layout.dim

    def restrict(self, names: Iterable[str]) -> "Objective":
        """The same objective with only ``names`` as variables (the others held at their values)."""
        names = list(names)
        layout = self.layout.subset(names)
        other = copy.copy(self)
        other.layout = layout
        other.theta = {n: self.theta[n] for n in layout.names}
        other.frozen = {**self.frozen, **{n: t for n, t in self.theta.items() if n not in other.theta}}
        return other

    def point(self) -> torch.Tensor:
        """The current parameters as a flat vector."""
        return self.layout.flatten(self.theta)

    def groups(self, m: int) -> list["Objective"]:
        """The objectives of consecutive groups of ``m`` samples, one batch each (a last group with fewer than
        ``m`` samples is left out); e.g. for m-sharpness. Not for sharded objectives."""
        if self.sharded:
            raise LandscapeError("an objective whose data is shared by several processes cannot be split in groups "
                                 "of samples; run it as one process")
        x = torch.cat([b[0] for b in self.batches])
        y = torch.cat([b[1] for b in self.batches])
        out = []
        for i in range(0, (x.shape[0] // m) * m, m):
            group = copy.copy(self)
            group.batches, group.batch_ids, group.weights, group.num_samples = [(x[i:i + m], y[i:i + m])], [0], [1.0], m
            out.append(group)
        return out

    # --- evaluation --------------------------------------------------------------------------------
    def output(self, theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.frozen, **theta}, (x,))

    def batch_loss(self, theta: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.output(theta, x), y)

    def batch_per_sample(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample(self.loss_name, output, y)

    def stacked_per_sample(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(K, B) per-sample losses of K parameter sets' outputs (K, B, ...) on one batch with targets ``y``
        (B, ...). Cross-entropy as log-sum-exp minus the target logit (4x faster than ``F.cross_entropy``
        on stacked outputs, the same to rounding); the other losses as :meth:`batch_per_sample`."""
        k = outputs.shape[0]
        if self.loss_name == "cross_entropy":
            target = y.unsqueeze(0).expand(k, *y.shape).unsqueeze(-1)
            return torch.logsumexp(outputs, dim=-1) - outputs.gather(-1, target).squeeze(-1)
        flat = outputs.reshape(k * outputs.shape[1], *outputs.shape[2:])
        target = y.unsqueeze(0).expand(k, *y.shape).reshape(k * y.shape[0], *y.shape[1:])
        return per_sample(self.loss_name, flat, target).reshape(k, -1)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of a per-rank partial sum over the ranks sharing the data (identity when not sharded)."""
        if self.sharded:
            distributed.all_reduce_sum(tensor)
        return tensor

    def reduce_scalar(self, value: float) -> float:
        """:meth:`all_reduce` for a Python number (returned unchanged when not sharded)."""
        if not self.sharded:
            return value
        return float(self.all_reduce(torch.tensor(value, dtype=torch.float64, device=self.device)))

    def agree(self, choice):
        """``choice`` as made by the first process that holds batches, on every process (choices made by
        timing would otherwise differ between processes); unchanged when not sharded."""
        if not self.sharded:
            return choice
        return next(c for c, has_data in distributed.all_gather((choice, bool(self.batches))) if has_data)

    def _at(self, point: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.theta if point is None else self.layout.unflatten(point)

    def _needs_data(self) -> None:
        if not self.num_samples:
            raise LandscapeError("this objective has no data of its own (Objective.without_data)")

    def differentiable_value(self, point: torch.Tensor) -> torch.Tensor:
        """L at the flat ``point`` as a tensor in ``point``'s autograd graph (the point may depend on other
        variables, e.g. a point on a curve whose bend is trained). One batch only (a live objective)."""
        if len(self.batches) != 1 or self.sharded:
            raise LandscapeError("a differentiable value is for an objective of one batch")
        x, y = self.batches[0]
        return self.batch_loss(self.layout.unflatten(point), x, y)

    @torch.no_grad()
    def value(self, point: torch.Tensor | None = None) -> float:
        """L over all samples at the current parameters, or at the flat ``point``; the batch means are
        combined in float64 (the same number, to float64 rounding, for any number of processes)."""
        self._needs_data()
        theta = self._at(point)
        return self.reduce_scalar(sum(w * float(self.batch_loss(theta, x, y))
                                      for (x, y), w in zip(self.batches, self.weights)))

    def value_and_gradient(self, point: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """(L, flat gradient of L) at the current parameters, or at the flat ``point``. Several batches'
        gradients are combined in float64 and rounded once to the parameters' dtype, so the result does
        not depend on how the batches are shared among processes."""
        self._needs_data()
        base = self._at(point)
        value, total = 0.0, None
        for (x, y), w in zip(self.batches, self.weights):
            leaves = {n: t.detach().requires_grad_() for n, t in base.items()}
            with torch.enable_grad():
                loss = self.batch_loss(leaves, x, y)
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
            flat = self.layout.flatten(list(grads))
            if total is None and len(self.batches) == 1 and not self.sharded:
                total = flat if w == 1.0 else w * flat  # one batch: nothing to combine
            else:
                if total is None:
                    total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
                total.add_(flat, alpha=w)
            value += w * float(loss.detach())
        if total is None:  # a rank without batches contributes nothing
            total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        return self.reduce_scalar(value), self.all_reduce(total).to(self.dtype)

    def gradient(self, point: torch.Tensor | None = None) -> torch.Tensor:
        """Flat gradient of L at the current parameters, or at the flat ``point``."""
        return self.value_and_gradient(point)[1]
