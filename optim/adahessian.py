"""AdaHessian (Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney 2021; seed ``003_…`` Algorithm 2, seed
survey Sec. 3.9): Adam with the squared gradient replaced by a Hutchinson estimate of the Hessian
diagonal.

    D = z * (H z),  z with i.i.d. Rademacher (+-1) entries        (Hutchinson; E[D] = diag(H))
    D_bar = |D| (= |Hz| for +-1 probes, as the official code), averaged over the spatial dims of
            each convolution kernel (parameters with 3 or more dims)
    m <- beta1 m + (1 - beta1) g,       v <- beta2 v + (1 - beta2) D_bar^2
    w <- w - lr ( (m / (1 - beta1^t)) / ((v / (1 - beta2^t))^(k/2) + eps) + decoupled_weight_decay w )

k = ``hessian_power`` (1 in the paper; 1/2 interpolates towards Adam-like scaling); the paper's weight
decay is the decoupled one (AdamW style). The coupled ``weight_decay`` is the L2 term of the loss: g and
H become those of the regularized loss, g + weight_decay w and H + weight_decay I (D + weight_decay, as
z * z = 1). The diagonal is re-estimated every ``update_each`` steps (the
last estimate is reused in between). The probes are drawn from the optimizer's own generator
(seeded, saved in the state), with both signs: one public implementation draws ``randint(0, 1)``,
i.e. all -1, which turns D into the Hessian's row sums; the tests check we do not.
"""

from __future__ import annotations

import torch

from landscape.linalg.operators import HessianOperator
from landscape.linalg.probes import probes

from .curvature_optimizer import CurvatureOptimizer
from .state import load_moving_decoupled_decay


class AdaHessian(CurvatureOptimizer):
    """AdaHessian (Yao et al. 2021, "ADAHESSIAN: an adaptive second order optimizer for machine learning"):
    Adam on a spatially averaged Rademacher-Hutchinson estimate of the Hessian diagonal (module docstring).

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: learning rate. betas: the moments' averaging coefficients. eps: added to the denominator.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2, seen by the gradient and the Hessian diagonal.
        decoupled_weight_decay: the paper's decay, decoupled_weight_decay * w added to the step (what this
            class called ``weight_decay`` before).
        hessian_power: k, the power of the diagonal in the denominator.
        update_each: steps between two estimates of the diagonal.
        seed: of the probes' generator (saved in the state).
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 0.15,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-4, weight_decay: float = 0.0,
                 hessian_power: float = 1.0, update_each: int = 1, decoupled_weight_decay: float = 0.0,
                 seed: int = 0):
        if not 0 < hessian_power <= 1:
            raise ValueError("hessian_power must be in (0, 1]")
        if int(update_each) != update_each or update_each < 1:
            raise ValueError("update_each must be a positive integer")
        super().__init__(params, model, loss, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                                   hessian_power=hessian_power, update_each=int(update_each),
                                                   decoupled_weight_decay=decoupled_weight_decay))
        self.generator = torch.Generator().manual_seed(seed)

    def load_state_dict(self, state_dict) -> None:
        load_moving_decoupled_decay(self, super().load_state_dict, state_dict)

    def hutchinson_diagonal(self, obj) -> torch.Tensor:
        """One-probe estimate z * (H z) of diag(H) (flat), H that of the regularized loss (+ weight_decay)."""
        z = probes(obj.dim, 1, self.generator, "rademacher", obj.dtype, obj.device)[:, 0]
        d = z * (HessianOperator(obj, method="double-backward") @ z)
        wd = self.param_groups[0]["weight_decay"]
        return d + wd if wd else d

    @staticmethod
    def spatial_average(obj, diagonal: torch.Tensor) -> torch.Tensor:
        """|D| averaged over the spatial dims of conv kernels (tensors with 3+ dims), per output/input channel."""
        out = {}
        for name, d in obj.layout.unflatten(diagonal).items():
            d = d.abs()
            if d.dim() >= 3:
                d = d.mean(dim=tuple(range(2, d.dim())), keepdim=True).expand_as(d)
            out[name] = d
        return obj.layout.flatten(out)

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        loss, g = self.loss_and_gradient(obj)
        state = self.scalars
        if "exp_avg" not in state:
            state.update(step=0, exp_avg=torch.zeros_like(g), exp_hessian_sq=torch.zeros_like(g),
                         diagonal=torch.zeros_like(g))
            state["generator"] = self.generator.get_state()
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))  # load_state_dict may re-cast it
        if state["step"] % group["update_each"] == 0:
            state["diagonal"] = self.spatial_average(obj, self.hutchinson_diagonal(obj))
            state["generator"] = self.generator.get_state()
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
        state["exp_hessian_sq"].mul_(beta2).addcmul_(state["diagonal"], state["diagonal"], value=1 - beta2)
        m_hat = state["exp_avg"] / (1 - beta1 ** t)
        v_hat = state["exp_hessian_sq"] / (1 - beta2 ** t)
        denom = v_hat.pow(group["hessian_power"] / 2) + group["eps"]
        update = m_hat / denom
        if group["decoupled_weight_decay"]:
            update = update + group["decoupled_weight_decay"] * obj.point()
        self.add_to_params(obj, update, -group["lr"])
        return loss
