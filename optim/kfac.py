"""K-FAC: natural-gradient steps with a Kronecker-factored Fisher (Martens & Grosse 2015; convolutions:
KFC, Grosse & Martens 2016).

For a layer s = W a (bias as a last column of W with a homogeneous 1 in a), the Fisher block is
approximated by A (x) G with A = E[a a^T] (over samples and, for convolutions, spatial locations of
the unfolded input patches) and G = E[(dL/ds)(dL/ds)^T] summed over locations, where the output
gradients come from targets *sampled* from the model's predictive distribution (``fisher="mc"``:
the true Fisher) or from the data labels (``"empirical"``). The factors are exponential averages
(``factor_decay`` 0.95) refreshed every ``factor_every`` steps; the damped inverses, with the
factored Tikhonov damping of Martens & Grosse Sec. 6.3,

    A_d = A + pi sqrt(gamma) I,   G_d = G + sqrt(gamma) / pi I,   pi = sqrt((tr A / dim A) / (tr G / dim G)),

are recomputed every ``inverse_every`` steps. The step on each Linear/Conv1d/Conv2d weight is
G_d^-1 grad_W A_d^-1; other parameters (BatchNorm, ...) take the plain gradient. Then
v <- momentum v + step (+ decoupled_weight_decay w), w <- w - lr v. The coupled ``weight_decay`` is the L2
term of the loss: its gradient enters grad_W and its curvature the damping gamma (class docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from landscape.losses import get_loss, sample_targets

from .closure import l2_value
from .curvature_optimizer import CurvatureOptimizer
from .state import load_moving_decoupled_decay

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _patches(module: nn.Module, a: torch.Tensor, bias: bool) -> torch.Tensor:
    """Layer inputs as rows (samples x locations, fan-in), with a column of ones for an optimized bias."""
    if isinstance(module, nn.Linear):
        rows = a.reshape(-1, a.shape[-1])
    else:
        if isinstance(module, nn.Conv1d):
            a = a.unsqueeze(2)
            kernel, stride = (1, module.kernel_size[0]), (1, module.stride[0])
            padding, dilation = (0, module.padding[0]), (1, module.dilation[0])
        else:
            kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation
        if module.groups != 1 or isinstance(padding, str):
            raise ValueError("K-FAC supports convolutions with groups=1 and numeric padding")
        cols = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, C k, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if bias:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


def _output_rows(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Output gradients as rows (samples x locations, channels)."""
    if isinstance(module, nn.Linear):
        return g.reshape(-1, g.shape[-1])
    channels_last = g.movedim(1, -1)  # (N, L, C) or (N, H, W, C)
    return channels_last.reshape(-1, g.shape[1])


def _weight_matrix(module: nn.Module, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
    m = weight_grad.reshape(weight_grad.shape[0], -1)
    return torch.cat([m, bias_grad[:, None]], dim=1) if bias_grad is not None else m


class KFAC(CurvatureOptimizer):
    """K-FAC (Martens & Grosse 2015, "Optimizing neural networks with Kronecker-factored approximate
    curvature"; convolutions: KFC, Grosse & Martens 2016): the step on each Linear/Conv1d/Conv2d layer is
    G_d^-1 grad_W A_d^-1 with the Kronecker factors A = E[a a^T] and G = E[(dL/ds)(dL/ds)^T] (module
    docstring), other parameters take the gradient; then v <- momentum v + step, w <- w - lr v.

    Args:
        params: the parameters to optimize (a subset of ``model``'s: a layer is Kronecker-factored when
            its weight is among them, with its bias as a homogeneous column when the bias is too).
        model: the module; loss: its loss name.
        lr: learning rate. momentum: heavy-ball coefficient on the preconditioned step.
        damping: gamma of the factored Tikhonov damping (Sec. 6.3).
        factor_decay: exponential average of the factors; factor_every, inverse_every: refresh periods.
        fisher: ``"mc"`` (targets sampled from the model: the Fisher) or ``"empirical"`` (the labels).
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2: its gradient weight_decay * w enters the
            preconditioned gradient and its curvature weight_decay * I the damping, gamma + weight_decay
            (Martens & Grosse Sec. 6.3: gamma = sqrt(lambda + eta)).
        decoupled_weight_decay: decoupled_weight_decay * w added to the preconditioned step, before the
            momentum (not seen by the factors; what this class called ``weight_decay`` before).
        seed: of the generator of the Monte-Carlo targets (saved in the state).
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 0.01,
                 momentum: float = 0.9, damping: float = 1e-3, factor_decay: float = 0.95, factor_every: int = 1,
                 inverse_every: int = 10, fisher: str = "mc", weight_decay: float = 0.0,
                 decoupled_weight_decay: float = 0.0, seed: int = 0):
        if fisher not in ("mc", "empirical"):
            raise ValueError("fisher must be 'mc' or 'empirical'")
        if not damping > 0:
            raise ValueError("damping must be positive")
        super().__init__(params, model, loss, dict(lr=lr, momentum=momentum, damping=damping,
                                                   factor_decay=factor_decay, factor_every=int(factor_every),
                                                   inverse_every=int(inverse_every), fisher=fisher,
                                                   weight_decay=weight_decay,
                                                   decoupled_weight_decay=decoupled_weight_decay))
        chosen = {id(p) for p in self.param_groups[0]["params"]}
        self.layers = [m for m in model.modules() if isinstance(m, SUPPORTED) and id(m.weight) in chosen]
        self.biases = {m: m.bias if m.bias is not None and id(m.bias) in chosen else None for m in self.layers}
        self.generator = torch.Generator().manual_seed(seed)

    def load_state_dict(self, state_dict) -> None:
        load_moving_decoupled_decay(self, super().load_state_dict, state_dict)

    def factors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
        """(loss, A per layer, G per layer) of one batch; leaves the true-label gradients in .grad."""
        inputs, outputs = {}, {}

        def record(module, args, out):
            inputs[module] = args[0].detach()
            if out.requires_grad:
                out.register_hook(lambda grad: outputs.__setitem__(module, grad.detach()))

        handles = [m.register_forward_hook(record) for m in self.layers]
        try:
            loss_fn = get_loss(self.loss)
            with torch.enable_grad():
                out = self.model(x)
                n = x.shape[0]
                if not bool(torch.isfinite(out).all()):  # diverged: report the loss, take no step
                    return loss_fn(out, y).detach(), {}, {}
                if self.param_groups[0]["fisher"] == "mc":
                    sampled = loss_fn(out, sample_targets(self.loss, out, self.generator))
                    torch.autograd.backward(sampled, inputs=[m.weight for m in self.layers], retain_graph=True)
                    g_rows = {m: _output_rows(m, outputs[m]) * n for m in self.layers}
                    self.zero_grad(set_to_none=True)
                loss = loss_fn(out, y)
                loss.backward(inputs=self.param_groups[0]["params"])
                if self.param_groups[0]["fisher"] == "empirical":
                    g_rows = {m: _output_rows(m, outputs[m]) * n for m in self.layers}
        finally:
            for h in handles:
                h.remove()
        a_mats = {}
        g_mats = {}
        for m in self.layers:
            a = _patches(m, inputs[m], self.biases[m] is not None)
            a_mats[m] = a.T @ a / a.shape[0]
            g = g_rows[m]
            g_mats[m] = g.T @ g / n
        return loss.detach(), a_mats, g_mats

    def _step(self, batch):
        group = self.param_groups[0]
        x, y = batch
        self.zero_grad(set_to_none=True)
        state = self.scalars
        if "step" not in state:
            state.update(step=0, generator=self.generator.get_state())
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))  # load_state_dict may re-cast it
        loss, a_new, g_new = self.factors(x, y)
        state["generator"] = self.generator.get_state()
        if not a_new:
            return loss
        t = state["step"]
        decay = group["factor_decay"]
        wd, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        for m in self.layers:
            st = self.state[m.weight]
            if "A" not in st:
                st["A"], st["G"] = a_new[m], g_new[m]
            elif t % group["factor_every"] == 0:
                st["A"] = decay * st["A"] + (1 - decay) * a_new[m]
                st["G"] = decay * st["G"] + (1 - decay) * g_new[m]
            if t % group["inverse_every"] == 0 or "A_inv" not in st:
                st["A_inv"], st["G_inv"] = self._damped_inverses(st["A"], st["G"], group["damping"] + wd)
        state["step"] = t + 1
        with torch.no_grad():
            grads = {p: p.grad + wd * p if wd else p.grad for p in group["params"] if p.grad is not None}
            steps = {}
            for m in self.layers:
                st = self.state[m.weight]
                bias = self.biases[m]
                grad = _weight_matrix(m, grads[m.weight], grads[bias] if bias is not None else None)
                pre = st["G_inv"] @ grad @ st["A_inv"]
                if bias is not None:
                    steps[bias] = pre[:, -1]
                    pre = pre[:, :-1]
                steps[m.weight] = pre.reshape(m.weight.shape)
            for p, g in grads.items():
                d = steps.get(p, g)
                if decoupled:
                    d = d + decoupled * p
                buf = self.state[p].setdefault("velocity", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
            if wd:
                loss = loss + l2_value(group["params"], wd)
        return loss

    @staticmethod
    def _damped_inverses(a: torch.Tensor, g: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        ta = float(torch.trace(a)) / a.shape[0]
        tg = float(torch.trace(g)) / g.shape[0]
        pi = (ta / tg) ** 0.5 if ta > 0 and tg > 0 else 1.0
        root = gamma ** 0.5
        eye_a = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        eye_g = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
        # contiguous: LAPACK returns column-major inverses, and a checkpoint restores row-major ones, which
        # would take a different matmul kernel (last-bit differences after a resume)
        a_inv = torch.linalg.inv((a + pi * root * eye_a).double()).to(a.dtype).contiguous()
        g_inv = torch.linalg.inv((g + root / pi * eye_g).double()).to(g.dtype).contiguous()
        return a_inv, g_inv
