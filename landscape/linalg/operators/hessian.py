"""Hessian-vector products H v of the objective, H = d^2 L / d theta^2 (Pearlmutter 1994).

Two exact ways, chosen per device by measurement (``method="auto"``), the other kept as fallback:

- ``double-backward``: g = dL/dtheta with ``create_graph=True``, then H v = d(g . v)/dtheta. The
  gradient graph of each batch is **cached** across products while the estimated graph memory
  (saved tensors, measured on the first batch) fits the budget, so a product then costs one
  backward pass through the gradient graph and no new forward pass.
- ``forward-over-reverse``: H v = jvp(grad L)(theta; v) with ``torch.func`` (keeps no graph).

``compile=True`` runs the forward-over-reverse product through ``torch.compile`` (Inductor fuses
the elementwise work of the forward, backward and tangent passes); the compile time, paid once per
batch shape, is reported as ``calibration["compile_seconds"]``.

Calibration (``method="auto"``) times both methods once on a slice of the first batch and keeps
the faster; the choice is memoized per architecture, batch shape and device. The first product
block of four or more columns is split to time looping against batching (``is_grads_batched`` /
``vmap``) over the columns, on real products.
"""

from __future__ import annotations

import time

import torch
from torch.func import grad, jvp, vmap

from ...objective import Objective, differentiable_attention
from .base import CurvatureOperator
from .memory import may_cache, saved_tensor_bytes

METHODS = ("auto", "double-backward", "forward-over-reverse")
CALIBRATION_SAMPLES = 256
_CHOICES: dict[tuple, tuple[str, dict[str, float]]] = {}  # memoized method choices (per process)


def gradient_graph(objective: Objective, x: torch.Tensor, y: torch.Tensor) -> tuple[list, list, list[int]]:
    """(leaves, gradients with create_graph, indices of the parameters whose gradient depends on theta)."""
    leaves = [t.detach().requires_grad_() for t in objective.theta.values()]
    with differentiable_attention():  # the graph is differentiated twice
        loss = objective.batch_loss(dict(zip(objective.theta, leaves)), x, y)
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    return leaves, [grads[i] for i in used], used


def _elapsed(fn, device: torch.device) -> float:
    """Wall seconds of ``fn()``, synchronizing CUDA before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


class HessianOperator(CurvatureOperator):
    """Hessian-vector products H v, H = d^2 L / d theta^2 (Pearlmutter 1994, "Fast exact multiplication by
    the Hessian"), over every batch of the objective (module docstring for the methods).

    Args:
        objective: the :class:`~landscape.objective.Objective` whose parameters are the variables.
        method: ``"double-backward"``, ``"forward-over-reverse"`` or ``"auto"`` (timed once, memoized).
        cache: keep each batch's gradient graph across products (``"auto"``: while it fits the budget).
        batched: several columns in one batched product (``is_grads_batched`` / ``vmap``) or a loop
            (``"auto"``: measured).
        compile: run the forward-over-reverse product through ``torch.compile``.
    """

    products = "Hessian-vector products"

    def __init__(self, objective: Objective, method: str = "auto", cache: str | bool = "auto",
                 batched: str | bool = "auto", compile: bool = False):
        super().__init__(objective)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        self.method = method
        self.compile = compile
        self._compiled = None  # the compiled one-vector product, made on first use
        self.cache = cache
        self.batched = batched
        self.calibration: dict[str, float] = {}  # seconds per column product, by method / strategy
        self._graphs: dict[int, tuple] = {}
        self._batched_choice: bool | None = None  # several columns: one batched product or a loop (measured)
        self._graph_bytes: int | None = None

    def _options(self) -> dict:
        return {"method": self.method, "cache": self.cache, "batched": self.batched, "compile": self.compile}

    # --- double backward ---------------------------------------------------------------------------
    def _graph(self, b: int) -> tuple[tuple, bool]:
        if b in self._graphs:
            return self._graphs[b], True
        x, y = self.objective.batches[b]
        with saved_tensor_bytes() as counter:
            graph = gradient_graph(self.objective, x, y)
        if self._graph_bytes is None:
            self._graph_bytes = counter.bytes
        keep = may_cache(self.cache, len(self._graphs), self._graph_bytes, self.device)
        if keep:
            self._graphs[b] = graph
        return graph, keep

    def _double_backward(self, b: int, rows: torch.Tensor, batched: bool) -> torch.Tensor:
        (leaves, grads, used), keep = self._graph(b)
        layout = self.objective.layout
        if not used:  # the loss is at most linear in these parameters
            return torch.zeros_like(rows)
        parts = layout.unflatten(rows)
        outputs = [parts[layout.names[i]] for i in used]
        if batched:
            outs = torch.autograd.grad(grads, leaves, grad_outputs=outputs, retain_graph=keep,
                                       is_grads_batched=True, allow_unused=True)
            k = rows.shape[0]
            return layout.flatten([o if o is not None else leaf.new_zeros((k, *leaf.shape))
                                   for o, leaf in zip(outs, leaves)])
        result = []
        for k in range(rows.shape[0]):
            outs = torch.autograd.grad(grads, leaves, grad_outputs=[o[k] for o in outputs],
                                       retain_graph=keep or k < rows.shape[0] - 1, allow_unused=True,
                                       materialize_grads=True)
            result.append(layout.flatten(list(outs)))
        return torch.stack(result)

    # --- forward over reverse ----------------------------------------------------------------------
    def _forward_over_reverse(self, b: int, rows: torch.Tensor, batched: bool) -> torch.Tensor:
        obj = self.objective
        x, y = obj.batches[b]
        hvp = self._compiled_hvp() if self.compile else self._hvp_function()
        with obj.transformable():
            if batched and not self.compile:
                return vmap(lambda row: hvp(obj.theta, row, x, y))(rows)
            return torch.stack([hvp(obj.theta, row, x, y) for row in rows])

    def _hvp_function(self):
        """(theta, row, x, y) -> H_batch row for the flat vector ``row``: jvp of the batch-loss gradient."""
        obj = self.objective

        def hvp(theta: dict, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            gradient = grad(lambda th: obj.batch_loss(th, x, y))
            return obj.layout.flatten(jvp(gradient, (theta,), (obj.layout.unflatten(row),))[1])

        return hvp

    def _compiled_hvp(self):
        """:meth:`_hvp_function` through ``torch.compile``, one vector at a time (vmap and varying column
        counts would each compile anew). The function gets a code object of its own per operator, so
        every operator has its own compile cache (a few batch shapes each) instead of sharing dynamo's
        per-code recompile limit with earlier operators. Compile time per new batch shape is added to
        ``calibration["compile_seconds"]``."""
        if self._compiled is None:
            hvp = self._hvp_function()
            hvp.__code__ = hvp.__code__.replace()
            compiled = torch.compile(hvp, dynamic=False)  # symbolic shapes break jvp (make_dual)
            seen: set[tuple] = set()

            def call(theta, row, x, y):
                if tuple(x.shape) in seen:
                    return compiled(theta, row, x, y)
                t0 = time.perf_counter()
                out = compiled(theta, row, x, y)
                seen.add(tuple(x.shape))
                self.calibration["compile_seconds"] = (self.calibration.get("compile_seconds", 0.0)
                                                       + time.perf_counter() - t0)
                return out

            self._compiled = call
        return self._compiled

    # --- products over all batches -----------------------------------------------------------------
    def _products(self, method: str, rows: torch.Tensor, batched: bool) -> torch.Tensor:
        fn = self._double_backward if method == "double-backward" else self._forward_over_reverse
        return self._weighted(lambda b, r: fn(b, r, batched and r.shape[0] > 1), rows)

    def _timed(self, key: str, method: str, rows: torch.Tensor, batched: bool) -> torch.Tensor:
        out: list = []
        self.calibration[key] = _elapsed(lambda: out.append(self._products(method, rows, batched)),
                                         self.device) / rows.shape[0]
        return out[0]

    def _signature(self) -> tuple:
        obj = self.objective
        x, _ = obj.batches[0]
        return (type(obj.model).__name__, hash(repr(obj.model)), obj.layout.names, obj.layout.shapes,
                tuple(x.shape), str(self.device), str(self.dtype), self.cache, self.compile)

    def _calibrate(self) -> None:
        """Time both methods on a slice of the first batch (a quarter of it, 16 to CALIBRATION_SAMPLES
        samples) and keep the faster.

        Double backward is timed with its graph cached when the full graphs will fit the budget,
        otherwise including the graph build that every product then needs. The choice is memoized
        per architecture, batch shape and device for the rest of the process.
        """
        if not self.objective.batches:  # a process without data (more processes than batches) computes nothing
            self.method = "double-backward"
            return
        key = self._signature()
        if key in _CHOICES:
            self.method, measured = _CHOICES[key]
            self.calibration = dict(measured)
            return
        obj = self.objective
        x, y = obj.batches[0]
        m = min(CALIBRATION_SAMPLES, max(16, x.shape[0] // 4))  # a slice: calibration must stay cheap
        x, y = x[:m], y[:m]
        self._graph(0)  # the real first batch graph: tells whether graphs can be cached
        cached = 0 in self._graphs
        probe = obj.layout.unflatten(torch.randn(obj.dim, dtype=self.dtype, device=self.device))
        built: list = []
        build_s = _elapsed(lambda: built.append(gradient_graph(obj, x, y)), self.device)
        leaves, grads, used = built[0]
        outputs = [list(probe.values())[i] for i in used]

        def product() -> None:
            torch.autograd.grad(grads, leaves, grad_outputs=outputs, retain_graph=True, allow_unused=True)

        if grads:
            product()  # warm-up, as for forward-over-reverse below: first calls pay one-time costs
        db = _elapsed(product, self.device) if grads else 0.0
        self.calibration["double-backward"] = db if cached else db + build_s
        row = obj.layout.flatten(probe)
        hvp = self._compiled_hvp() if self.compile else self._hvp_function()

        def fo_r() -> None:
            hvp(obj.theta, row, x, y)

        try:
            with obj.transformable():
                fo_r()  # warm-up of the functorch transforms (and the compiler, timed apart)
                self.calibration["forward-over-reverse"] = _elapsed(fo_r, self.device)
        except RuntimeError:  # an operator without a forward-mode rule: keep the fallback
            self.calibration["forward-over-reverse"] = float("inf")
        self.method = min(("double-backward", "forward-over-reverse"), key=self.calibration.__getitem__)
        _CHOICES[key] = (self.method, {k: v for k, v in self.calibration.items() if k != "compile_seconds"})

    def _matmat_rows(self, rows: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        if self.method == "auto":
            self._calibrate()
            self.method = self.objective.agree(self.method)  # processes timed apart: one choice for all
        out = self._columns(rows)
        self.seconds += time.perf_counter() - t0
        return out

    def _columns(self, rows: torch.Tensor) -> torch.Tensor:
        """Products for several columns: loop or batch, the choice measured once on real columns."""
        if isinstance(self.batched, bool) or rows.shape[0] < 4 or (self.compile and self.method != "double-backward"):
            return self._products(self.method, rows, self.batched is True)
        if self._batched_choice is not None:
            return self._products(self.method, rows, self._batched_choice)
        loop_key, batch_key = f"{self.method}:loop", f"{self.method}:batched"
        first = self._timed(loop_key, self.method, rows[:2], False)
        second = self._timed(batch_key, self.method, rows[2:4], True)
        self._batched_choice = self.objective.agree(self.calibration[batch_key] < self.calibration[loop_key])
        rest = self._columns(rows[4:]) if rows.shape[0] > 4 else rows[:0]
        return torch.cat([first, second, rest])
