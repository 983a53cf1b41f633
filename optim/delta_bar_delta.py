"""Delta-bar-delta: a learning-rate gain per weight (Jacobs 1988; seed survey Sec. 2.3).

For each weight i with gradient g_i (plus coupled weight decay) and the exponential average of its
past gradients  bar_i <- (1 - theta) g_i + theta bar_i  (the "delta-bar"):

    gain_i <- gain_i + kappa           if bar_i(previous) * g_i > 0   (consistent sign: additive increase)
    gain_i <- gain_i * (1 - phi)       if bar_i(previous) * g_i < 0   (sign flip: multiplicative decrease)
    gain_i clipped to [min_gain, max_gain]  (gains start at 1)
    v_i <- momentum v_i + lr gain_i g_i,     w_i <- w_i - v_i

With ``momentum=0`` this is Jacobs' rule with step lr * gain_i; ``momentum > 0`` adds heavy-ball
momentum on the gain-scaled step, the combination the survey describes.
"""

from __future__ import annotations

import torch


class DeltaBarDelta(torch.optim.Optimizer):
    """Delta-bar-delta (Jacobs 1988, "Increased rates of convergence through learning rate adaptation"):
    per-weight gains, + kappa when the gradient agrees in sign with its average, x (1 - phi) when not;
    v <- momentum v + lr gain g, w <- w - v (module docstring).

    Args:
        params: the parameters. lr: base step. kappa, phi: gain increase and decrease. theta: of the
            average. min_gain, max_gain: clip. momentum: heavy-ball coefficient.
        weight_decay: coupled L2: g + weight_decay w.
    """

    def __init__(self, params, lr: float = 0.01, kappa: float = 0.05, phi: float = 0.05, theta: float = 0.7,
                 min_gain: float = 0.1, max_gain: float = 10.0, momentum: float = 0.0, weight_decay: float = 0.0):
        if not 0 <= phi < 1 or not 0 <= theta < 1 or kappa < 0:
            raise ValueError("need kappa >= 0, 0 <= phi < 1 and 0 <= theta < 1")
        if not 0 < min_gain <= 1 <= max_gain:
            raise ValueError("need 0 < min_gain <= 1 <= max_gain")
        if not 0 <= momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        super().__init__(params, dict(lr=lr, kappa=kappa, phi=phi, theta=theta, min_gain=min_gain,
                                      max_gain=max_gain, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["gain"] = torch.ones_like(p)
                    state["bar"] = torch.zeros_like(p)
                    state["velocity"] = torch.zeros_like(p)
                gain, bar = state["gain"], state["bar"]
                agree = bar * g
                gain.add_((agree > 0).to(gain.dtype), alpha=group["kappa"])
                gain.mul_(1.0 - group["phi"] * (agree < 0).to(gain.dtype))
                gain.clamp_(group["min_gain"], group["max_gain"])
                bar.mul_(group["theta"]).add_(g, alpha=1.0 - group["theta"])
                velocity = state["velocity"]
                velocity.mul_(group["momentum"]).add_(gain * g, alpha=group["lr"])
                p.sub_(velocity)
        return loss
