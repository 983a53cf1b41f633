"""SGD momentum with the step along the momentum direction chosen from an online parabola model
(Duda 2019, "SGD momentum optimizer with step estimation by online parabola model", arXiv:1907.07063;
seed ``001_…``).

With the momentum v <- mu v + g and its direction u = v / ||v||, the loss along u is modelled as a
parabola lambda/2 (theta - p)^2, i.e. the directional gradient as a line gamma ~ lambda (theta - p) in
the position theta along u. The line is fitted by exponentially weighted least squares (rate
``beta``) from running averages: vector means of the positions and gradients (m_w, m_g) and the
scalar variance and covariance of their centred projections a = (w - m_w) . u, b = (g - m_g) . u:

    var <- beta (var + (1 - beta) a^2),   cov <- beta (cov + (1 - beta) a b),   lambda = cov / var
    modelled directional gradient at w:   gamma_hat = m_g . u + lambda (w - m_w) . u

and the step is

    along u:       -min(1/|lambda|, max_ratio * lr) * gamma_hat
    orthogonal:    -lr (g - (g . u) u)                         (plain gradient descent)

For lambda > 0 (and 1/lambda under the cap) this moves to the modelled minimum; for lambda < 0 it
moves *away* from the modelled maximum by the same distance (saddle repulsion: the 1-D saddle-free
Newton step -gamma/|lambda|). The cap ``max_ratio`` (default 10) bounds the jump to ten SGD steps:
with mini-batch noise a small fitted |lambda| would otherwise throw the weights far away (on a
deterministic problem raise it, e.g. 1000). Until two points have been seen, or while the positions along u have
no spread, it takes the heavy-ball step -lr v. Centring with vector means keeps the model exact
for the current direction's means while u turns; only the second moments mix directions (the
paper's online approximation). Each parameter group is one vector; scalars are float64.
"""

from __future__ import annotations

import math

import torch

from landscape.params import add_, flat_grad, flatten


class ParabolaStep(torch.optim.Optimizer):
    """SGD momentum with the step along the momentum direction from an online parabola model (Duda 2019,
    "SGD momentum optimizer with step estimation by online parabola model"): along u = v / ||v|| the step
    -min(1/|lambda|, max_ratio lr) gamma_hat, a gradient step orthogonal to it (module docstring).

    Args:
        params: the parameters (each group one vector). lr: the orthogonal step and the cap's scale.
        momentum: mu of v <- mu v + g. beta: of the exponentially weighted fit. max_ratio: the cap.
        weight_decay: coupled L2: g + weight_decay w.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, beta: float = 0.8, max_ratio: float = 10.0,
                 weight_decay: float = 0.0):
        if not 0 <= momentum < 1 or not 0 <= beta < 1:
            raise ValueError("momentum and beta must be in [0, 1)")
        if not max_ratio >= 1:
            raise ValueError("max_ratio must be >= 1")
        super().__init__(params, dict(lr=lr, momentum=momentum, beta=beta, max_ratio=max_ratio,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = list(group["params"])
            g = flat_grad(params)
            w = flatten(params)
            if group["weight_decay"]:
                g = g + group["weight_decay"] * w
            state = self.state[params[0]]
            beta, lr = group["beta"], group["lr"]
            if "velocity" not in state:
                state.update(velocity=torch.zeros_like(g), mean_position=w.clone(), mean_gradient=g.clone(),
                             variance=0.0, covariance=0.0, curvature=math.nan)
                first = True
            else:
                first = False
            v = state["velocity"].mul_(group["momentum"]).add_(g)
            norm = float(v.norm())
            if norm == 0:
                continue
            u = v / norm
            m_w, m_g = state["mean_position"], state["mean_gradient"]
            if not first:
                d_w, d_g = w - m_w, g - m_g
                a, b = _dot(d_w, u), _dot(d_g, u)
                m_w.add_(d_w, alpha=1 - beta)
                m_g.add_(d_g, alpha=1 - beta)
                state["variance"] = beta * (state["variance"] + (1 - beta) * a * a)
                state["covariance"] = beta * (state["covariance"] + (1 - beta) * a * b)
            var, cov = state["variance"], state["covariance"]
            if not var > 0 or cov == 0:
                add_(params, v, alpha=-lr)
                continue
            curvature = cov / var
            state["curvature"] = curvature
            modelled = _dot(m_g, u) + curvature * _dot(w - m_w, u)
            along = -min(1.0 / abs(curvature), group["max_ratio"] * lr) * modelled
            add_(params, u * along - lr * (g - _dot(g, u) * u))
        return loss


def _dot(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(x.double() @ y.double())
