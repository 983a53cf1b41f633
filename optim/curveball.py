"""CurveBall (Henriques, Ehrhardt, Albanie & Vedaldi 2019, "Small steps and giant leaps: minimal
Newton solvers for deep learning"; seed ``004_…`` Algorithm 1, eqs. 15-18).

One gradient-descent step on the quadratic model of the loss per iteration, on a persistent step z
(like the momentum buffer) instead of solving the Newton system:

    Delta_z = (H + lambda I) z + J  = J_phi^T (H_L J_phi z + J_L) + lambda z     (eqs. 15-17)
    z <- rho z - beta Delta_z,      w <- w + z                                     (Algorithm 1)

H = J_phi^T H_L J_phi is the Gauss-Newton matrix (J_phi the Jacobian of the model outputs, H_L the
loss Hessian in output space, J_L the output gradient, J = J_phi^T J_L the gradient). J_phi z is one
forward-mode pass, and J_phi^T(.) one backward pass for both terms together.

Automatic rho and beta (eq. 18) minimise the quadratic model over the plane of z and Delta_z:

    [beta, -rho]^T = [[Dz^T H^ Dz, z^T H^ Dz], [z^T H^ Dz, z^T H^ z]]^-1 [J^T Dz, J^T z]^T,  H^ = H + lambda I

using one more forward-mode pass (J_phi Delta_z); with both rho and beta fixed that pass is made only on
the steps that update lambda. While z = 0 (first step, or after a reset) the
system is singular and beta = J^T Dz / Dz^T H^ Dz with rho = 0. Automatic lambda (Sec. 3, after
Wright & Nocedal p. 69): every ``lambda_every`` = 5 steps the ratio gamma = (f(w + z) - f(w)) /
f^(z) of actual to predicted change is measured on the same batch; lambda is multiplied by
``lambda_factor`` ** ``lambda_every`` = 0.999^5 when gamma > 3/2 and divided by it when gamma < 1/2
(the official implementations' rate: 0.999 per step). lambda starts at 1 for
models with batch normalisation and 10 otherwise, as in the paper. ``lr`` multiplies beta (1: the
paper's method; a schedule scales the steps). Fixed ``rho``, ``beta`` or ``damping`` switch the
automatic rules off.
"""

from __future__ import annotations

import math

import torch
from torch.func import grad

from landscape.linalg.operators import GGNOperator
from landscape.models import has_batchnorm

from .curvature_optimizer import CurvatureOptimizer


class CurveBall(CurvatureOptimizer):
    """CurveBall (Henriques, Ehrhardt, Albanie & Vedaldi 2019, "Small steps and giant leaps: minimal
    Newton solvers for deep learning"): one gradient step per iteration on the damped Gauss-Newton model,
    on a persistent step z:

        Delta_z = (G + lambda I) z + g,   z <- rho z - beta Delta_z,   w <- w + z

    with rho and beta minimising the quadratic model over span(z, Delta_z) (eq. 18) and lambda adapted
    from the reduction ratio (module docstring).

    Args:
        params: the parameters to optimize (a subset of ``model``'s); model: the module; loss: its loss name.
        lr: multiplies beta (1: the paper's method).
        rho, beta: fixed values instead of the automatic ones.
        damping: lambda (default 1 with batch normalisation, 10 otherwise); auto_damping: adapt it every
            ``lambda_every`` steps by ``lambda_factor`` ** ``lambda_every``.
        weight_decay: coupled L2 (weight_decay / 2) ||w||^2: g + weight_decay w, G + weight_decay I.
    """

    def __init__(self, params, model: torch.nn.Module, loss: str = "cross_entropy", lr: float = 1.0,
                 rho: float | None = None, beta: float | None = None, damping: float | None = None,
                 auto_damping: bool = True, lambda_every: int = 5, lambda_factor: float = 0.999,
                 weight_decay: float = 0.0):
        if rho is not None and not rho >= 0:  # rho > 1 can converge (Theorem A.1: rho < 1 + beta h_min)
            raise ValueError("rho must be >= 0")
        if beta is not None and not beta > 0:
            raise ValueError("beta must be positive")
        if not 0 < lambda_factor <= 1:
            raise ValueError("lambda_factor must be in (0, 1]")
        if damping is None:
            damping = 1.0 if has_batchnorm(model) else 10.0
        if not damping >= 0:
            raise ValueError("damping (lambda) must be >= 0")
        super().__init__(params, model, loss, dict(lr=lr, rho=rho, beta=beta, damping=float(damping),
                                           auto_damping=auto_damping, lambda_every=int(lambda_every),
                                           lambda_factor=lambda_factor, weight_decay=weight_decay))

    def _step(self, batch):
        group = self.param_groups[0]
        obj = self.objective(batch)
        _, y = obj.batches[0]
        state = self.scalars
        if "z" not in state:
            state.update(z=torch.zeros(obj.dim, dtype=obj.dtype, device=obj.device), damping=group["damping"],
                         iteration=0, rho=math.nan, beta=math.nan)
        z = state["z"]
        lam_l2 = group["weight_decay"]
        lam = state["damping"] + lam_l2
        op = GGNOperator(obj, cache=False)
        with torch.enable_grad():
            out, pullback = op.linearization(0)
            loss = obj.loss_fn(out, y)
            j_out = grad(lambda o: obj.loss_fn(o, y))(out)
        zero = not bool(z.any())
        jz = torch.zeros_like(out) if zero else op.jvp_rows(0, z[None])[0]
        hjz = torch.zeros_like(out) if zero else op.output_product(0, out, jz)
        w = obj.point() if lam_l2 else None
        dz = obj.layout.flatten(pullback(hjz + j_out)) + lam * z
        if lam_l2:
            dz = dz + lam_l2 * w
        update_damping = group["auto_damping"] and (state["iteration"] + 1) % group["lambda_every"] == 0
        fixed = group["rho"] is not None and group["beta"] is not None
        if fixed and not update_damping:  # the quadratic model is not needed: skip the J Dz pass
            rho, beta = group["rho"], group["beta"] * group["lr"]
        else:
            jdz = op.jvp_rows(0, dz[None])[0]
            hjdz = op.output_product(0, out, jdz)
            a11 = float((jdz * hjdz).sum()) + lam * float(dz @ dz)
            a12 = float((jz * hjdz).sum()) + lam * float(z @ dz)
            a22 = float((jz * hjz).sum()) + lam * float(z @ z)
            b1 = float((j_out * jdz).sum()) + (lam_l2 * float(w @ dz) if lam_l2 else 0.0)  # J^T Dz
            b2 = float((j_out * jz).sum()) + (lam_l2 * float(w @ z) if lam_l2 else 0.0)    # J^T z
            rho, beta = self._hyperparameters(group, zero, a11, a12, a22, b1, b2)
            beta *= group["lr"]
        new_z = rho * z - beta * dz
        state["z"] = new_z
        self.add_to_params(obj, new_z)
        state["iteration"] += 1
        state["rho"], state["beta"] = rho, beta
        if update_damping:
            # predicted change f^(z) = J^T z + 1/2 z^T H^ z for the new z, from the same scalars
            predicted = rho * b2 - beta * b1 + 0.5 * (rho * rho * a22 - 2 * rho * beta * a12 + beta * beta * a11)
            with torch.no_grad():
                actual = float(obj.batch_loss(obj.theta, *obj.batches[0])) - float(loss)
            if predicted < 0 and math.isfinite(actual):
                ratio = actual / predicted
                factor = group["lambda_factor"] ** group["lambda_every"]  # 0.999 per step, applied every 5
                if ratio > 1.5:
                    state["damping"] *= factor
                elif ratio < 0.5:
                    state["damping"] /= factor
        return loss.detach()

    @staticmethod
    def _hyperparameters(group: dict, zero: bool, a11: float, a12: float, a22: float, b1: float, b2: float
                         ) -> tuple[float, float]:
        """(rho, beta): the fixed ones, or the minimisers of the quadratic model (eq. 18)."""
        rho, beta = group["rho"], group["beta"]
        if rho is not None and beta is not None:
            return rho, beta
        if zero or rho is not None:
            rho = 0.0 if rho is None else rho
            # beta alone: minimise over beta with rho fixed: beta = (J^T Dz + rho z^T H^ Dz) / Dz^T H^ Dz
            return rho, (b1 + rho * a12) / a11 if a11 > 0 else 0.0
        if beta is not None:  # rho alone: rho = -(J^T z - beta z^T H^ Dz) / z^T H^ z
            return (-(b2 - beta * a12) / a22 if a22 > 0 else 0.0), beta
        det = a11 * a22 - a12 * a12
        if not det > 1e-12 * abs(a11 * a22):
            return 0.0, (b1 / a11 if a11 > 0 else 0.0)
        beta = (a22 * b1 - a12 * b2) / det
        rho = -(-a12 * b1 + a11 * b2) / det
        return rho, beta
