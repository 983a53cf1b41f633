"""Each optimizer's update against its formula, computed by hand (NumPy) on small quadratics."""

import math

import numpy as np
import pytest
import torch

from landscape.linalg.line_search import strong_wolfe
from landscape.optim import (BFGS, SAM, BarzilaiBorwein, DeltaBarDelta, IterateAveraging, Lookahead, NonlinearCG,
                             ParabolaStep)

A = np.diag([1.0, 4.0, 10.0])
B = np.array([1.0, -2.0, 0.5])


def quadratic_closure(w, a=A, b=B):
    """f(w) = 1/2 w^T A w - b^T w (float64), gradient A w - b."""
    at, bt = torch.tensor(a), torch.tensor(b)

    def closure():
        w.grad = None
        loss = 0.5 * w @ at @ w - bt @ w
        loss.backward()
        return loss
    return closure


def run(opt_factory, w0, steps, a=A, b=B):
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([w])
    closure = quadratic_closure(w, a, b)
    path = []
    for _ in range(steps):
        opt.step(closure)
        path.append(w.detach().numpy().copy())
    return np.array(path), opt


def grad(w, a=A, b=B):
    return a @ w - b


W0 = np.array([2.0, 1.0, -1.0])


def test_delta_bar_delta_matches_hand_computation():
    lr, kappa, phi, theta = 0.05, 0.1, 0.3, 0.5
    path, _ = run(lambda p: DeltaBarDelta(p, lr=lr, kappa=kappa, phi=phi, theta=theta, max_gain=10), W0, 6)
    w, gain, bar = W0.copy(), np.ones(3), np.zeros(3)
    for k in range(6):
        g = grad(w)
        agree = bar * g
        gain = np.where(agree > 0, gain + kappa, gain)
        gain = np.where(agree < 0, gain * (1 - phi), gain)
        gain = np.clip(gain, 0.1, 10)
        bar = theta * bar + (1 - theta) * g
        w = w - lr * gain * g
        np.testing.assert_allclose(path[k], w, rtol=0, atol=1e-12)
    # the stiff coordinate (curvature 10, lr*gain*10 near 0.5) and the soft one behave differently
    assert gain[0] > 1.0


def test_delta_bar_delta_momentum_form():
    path, _ = run(lambda p: DeltaBarDelta(p, lr=0.01, momentum=0.5, kappa=0.0, phi=0.0), W0, 3)
    w, v = W0.copy(), np.zeros(3)
    for k in range(3):
        v = 0.5 * v + 0.01 * grad(w)
        w = w - v
        np.testing.assert_allclose(path[k], w, atol=1e-12)


def test_barzilai_borwein_matches_algorithm_3():
    lr, T, beta = 0.05, 3, 0.5
    tau_min, tau_max = 1e-3, 10.0
    epochs = 6
    path, opt = run(lambda p: BarzilaiBorwein(p, lr=lr, steps_per_epoch=T, beta=beta, tau_min=tau_min,
                                               tau_max=tau_max), W0, T * epochs)
    w = W0.copy()
    ends, avgs, etas = [], [], []
    for k in range(epochs):
        if k >= 2:
            s, y = ends[-1] - ends[-2], avgs[-1] - avgs[-2]
            eta = s @ s / (T * abs(s @ y))
            if not tau_min / (k + 1) <= eta <= tau_max / (k + 1):
                eta = lr / (k + 1)
        else:
            eta = lr
        etas.append(eta)
        avg = np.zeros(3)
        for t in range(T):
            g = grad(w)
            w = w - eta * g
            avg = (1 - beta) * avg + beta * g
            np.testing.assert_allclose(path[k * T + t], w, atol=1e-12)
        ends.append(w.copy())
        avgs.append(avg)
    assert opt.step_size() == pytest.approx(etas[-1], rel=1e-12)
    assert len(set(np.round(etas, 12))) > 2  # the step really adapts


def test_barzilai_borwein_falls_back_outside_tau_bounds():
    # tau_max tiny: every BB step is rejected, so epoch k uses tau_0 / (k + 1)
    path, opt = run(lambda p: BarzilaiBorwein(p, lr=0.05, steps_per_epoch=2, beta=1.0, tau_min=0.0,
                                               tau_max=1e-9), W0, 8)
    assert opt.step_size() == pytest.approx(0.05 / 4)


def test_parabola_lands_on_the_minimum_of_a_1d_quadratic():
    a, c = 3.0, 0.7
    path, opt = run(lambda p: ParabolaStep(p, lr=0.01, momentum=0.9, beta=0.8, max_ratio=1000), [2.0], 3,
                    a=np.array([[a]]), b=np.array([a * c]))
    # step 1 is the heavy-ball step, step 2 fits the line g = a (w - c) exactly and jumps to c
    assert path[0][0] == pytest.approx(2.0 - 0.01 * a * (2.0 - c), abs=1e-14)
    assert path[1][0] == pytest.approx(c, abs=1e-13)
    assert opt.state[opt.param_groups[0]["params"][0]]["curvature"] == pytest.approx(a, rel=1e-10)


def test_parabola_repels_from_a_maximum():
    a = 2.0  # f = -a/2 w^2: a maximum at 0
    path, opt = run(lambda p: ParabolaStep(p, lr=0.01, momentum=0.0, beta=0.8, max_ratio=1000), [0.5], 2,
                    a=np.array([[-a]]), b=np.array([0.0]))
    w1 = 0.5 + 0.01 * a * 0.5
    assert path[0][0] == pytest.approx(w1, abs=1e-14)
    assert path[1][0] == pytest.approx(2 * w1, abs=1e-12)  # moved away from 0 by its distance (SGD: x1.02)


def test_parabola_caps_the_step_on_flat_directions():
    # curvature 1e-6: 1/lambda = 1e6 would be capped at max_ratio * lr = 10
    path, _ = run(lambda p: ParabolaStep(p, lr=0.01, momentum=0.0, max_ratio=1000.0), [1.0], 2,
                  a=np.array([[1e-6]]), b=np.array([0.0]))
    g1 = 1e-6 * path[0][0]
    assert path[1][0] == pytest.approx(path[0][0] - 10.0 * g1, rel=1e-9)


def test_parabola_converges_on_an_ill_conditioned_quadratic():
    a = np.diag([1.0, 30.0, 100.0])
    path, _ = run(lambda p: ParabolaStep(p, lr=0.009, momentum=0.9, beta=0.8, max_ratio=1000), W0, 300, a=a)
    sgd, _ = run(lambda p: torch.optim.SGD(p, lr=0.009), W0, 300, a=a)
    x_star = np.linalg.solve(a, B)
    start = np.linalg.norm(W0 - x_star)
    assert np.linalg.norm(path[-1] - x_star) < 1e-10 * start
    assert np.linalg.norm(sgd[-1] - x_star) > 1e-2 * start  # same lr, no parabola: (1 - 0.009)^300


def test_strong_wolfe_conditions_hold():
    def f(x):
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)

    def fg(x):
        x = x.clone().requires_grad_()
        y = f(x)
        y.backward()
        return float(y.detach()), x.grad

    f0, g0 = fg(x0)
    d = -g0
    for c2 in (0.9, 0.1):
        res = strong_wolfe(lambda t: fg(x0 + t * d), f0, g0, d, 1.0, c1=1e-4, c2=c2)
        assert res.wolfe
        assert res.loss <= f0 + 1e-4 * res.step * float(g0 @ d)
        assert abs(float(res.grad @ d)) <= c2 * abs(float(g0 @ d))
        np.testing.assert_allclose(res.grad.numpy(), fg(x0 + res.step * d)[1].numpy())


def test_line_search_is_exact_on_a_quadratic():
    a = torch.tensor(A)
    x0, d = torch.tensor(W0), -torch.tensor(grad(W0))

    def fg(t):
        x = x0 + t * d
        return float(0.5 * x @ a @ x - torch.tensor(B) @ x), a @ x - torch.tensor(B)

    f0, g0 = fg(0.0)
    res = strong_wolfe(fg, f0, g0, d, 1.0, c2=0.1)
    t_exact = -float(g0 @ d) / float(d @ a @ d)
    assert res.step == pytest.approx(t_exact, rel=1e-10)


def _linear_cg(a, b, x, n):
    r = b - a @ x
    p = r.copy()
    out = []
    for _ in range(n):
        alpha = r @ r / (p @ a @ p)
        x = x + alpha * p
        r_new = r - alpha * a @ p
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        out.append(x)
    return out


@pytest.mark.parametrize("variant", ["fr", "pr", "pr+"])
def test_nonlinear_cg_equals_linear_cg_on_a_quadratic(variant):
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    a = q @ np.diag([1.0, 2.0, 3.0, 5.0, 8.0]) @ q.T
    b = rng.standard_normal(5)
    x0 = rng.standard_normal(5)
    path, _ = run(lambda p: NonlinearCG(p, variant=variant, lr=1.0), x0, 5, a=a, b=b)
    reference = _linear_cg(a, b, x0, 5)
    for k in range(3):  # exact line searches make nonlinear CG the linear CG iteration
        np.testing.assert_allclose(path[k], reference[k], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(path[4], np.linalg.solve(a, b), atol=1e-8)  # n steps solve it


def test_bfgs_terminates_on_a_quadratic_and_learns_the_inverse_hessian():
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    a = q @ np.diag([1.0, 3.0, 10.0, 30.0]) @ q.T
    b = rng.standard_normal(4)
    path, opt = run(lambda p: BFGS(p, c1=1e-10, c2=1e-9), rng.standard_normal(4), 4, a=a, b=b)  # exact searches
    np.testing.assert_allclose(path[3], np.linalg.solve(a, b), atol=1e-8)  # n exact-search steps
    h = opt.state[opt.param_groups[0]["params"][0]]["inverse_hessian"].numpy()
    np.testing.assert_allclose(h, np.linalg.inv(a), atol=1e-6)


def test_bfgs_and_cg_solve_rosenbrock():
    for factory, iterations in ((lambda p: BFGS(p), 40), (lambda p: NonlinearCG(p, variant="pr+"), 200)):
        w = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
        opt = factory([w])

        def closure():
            w.grad = None
            loss = (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
            loss.backward()
            return loss
        for _ in range(iterations):
            opt.step(closure)
        assert float(torch.linalg.norm(w.detach() - 1.0)) < 1e-6


def test_bfgs_refuses_large_models():
    with pytest.raises(ValueError, match="max_parameters"):
        BFGS([torch.zeros(5000, requires_grad=True)])


def test_lookahead_matches_hand_computation():
    lr, k, alpha = 0.1, 2, 0.5
    path, _ = run(lambda p: Lookahead(torch.optim.SGD(p, lr=lr), k=k, alpha=alpha), W0, 6)
    fast, slow = W0.copy(), W0.copy()
    for step in range(1, 7):
        fast = fast - lr * grad(fast)
        if step % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(path[step - 1], fast, atol=1e-12)


@pytest.mark.parametrize("decay", [None, 0.7])
def test_iterate_averaging(decay):
    w = torch.tensor(W0, requires_grad=True)
    opt = IterateAveraging(torch.optim.SGD([w], lr=0.1), decay=decay, start=2)
    closure = quadratic_closure(w)
    iterates = []
    for _ in range(6):
        opt.step(closure)
        iterates.append(w.detach().numpy().copy())
    if decay is None:
        expected = np.mean(iterates[2:], axis=0)  # uniform mean of the iterates after `start` steps
    else:
        expected = iterates[2]
        for x in iterates[3:]:
            expected = decay * expected + (1 - decay) * x
    current = w.detach().clone()
    with opt.averaged():
        np.testing.assert_allclose(w.detach().numpy(), expected, atol=1e-12)
    assert torch.equal(w.detach(), current)  # the iterate is restored


def test_sam_and_asam_match_hand_computation():
    lr, rho, eta = 0.1, 0.05, 0.01
    for adaptive in (False, True):
        path, _ = run(lambda p: SAM(torch.optim.SGD(p, lr=lr), rho=rho, adaptive=adaptive, eta=eta), W0, 3)
        w = W0.copy()
        for k in range(3):
            g = grad(w)
            if adaptive:
                t = np.abs(w) + eta
                e = rho * t * t * g / np.linalg.norm(t * g)
            else:
                e = rho * g / np.linalg.norm(g)
            w = w - lr * grad(w + e)
            np.testing.assert_allclose(path[k], w, atol=1e-12)


def test_sam_m_sharpness_perturbs_each_chunk_separately():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    w0 = torch.randn(3, generator=g, dtype=torch.float64)
    w = w0.clone().requires_grad_()
    opt = SAM(torch.optim.SGD([w], lr=0.1), rho=0.1, m=4)  # chunks of 4, 3, 3

    def closure(part=None):
        w.grad = None
        xb, yb = (x, y) if part is None else (x.tensor_split(part[1])[part[0]], y.tensor_split(part[1])[part[0]])
        loss = ((xb @ w - yb) ** 2).mean()
        loss.backward()
        return loss
    closure.batch_size = 10
    opt.step(closure)

    def chunk_grad(v, xb, yb):
        return 2 * xb.T @ (xb @ v - yb) / len(yb)
    total = torch.zeros(3, dtype=torch.float64)
    for xb, yb in zip(x.tensor_split(3), y.tensor_split(3)):
        gc = chunk_grad(w0, xb, yb)
        total += len(yb) / 10 * chunk_grad(w0 + 0.1 * gc / gc.norm(), xb, yb)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * total, rtol=0, atol=1e-12)


def test_wrapper_shares_learning_rate_with_inner():
    w = torch.zeros(2, requires_grad=True)
    opt = Lookahead(torch.optim.Adam([w], lr=0.1))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w.grad = torch.ones(2)
    opt.step()
    scheduler.step()
    assert opt.inner.param_groups[0]["lr"] == pytest.approx(0.05)
    state = opt.state_dict()
    fresh = Lookahead(torch.optim.Adam([w], lr=0.1))
    fresh.load_state_dict(state)
    fresh.param_groups[0]["lr"] = 0.01
    assert fresh.inner.param_groups[0]["lr"] == 0.01 and math.isclose(fresh.param_groups[0]["alpha"], 0.5)


def test_conjugate_gradient_recovers_after_a_failed_first_line_search():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([w])
    calls = [0]

    def closure():
        calls[0] += 1
        w.grad = None
        loss = (w * w).sum()
        if 1 < calls[0] <= 26:  # every trial point of the first search is non-finite
            loss = loss * float("nan")
        loss.backward()
        return loss
    opt.step(closure)
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))  # no move
    for _ in range(3):
        opt.step(closure)
    assert float(w.detach().norm()) < 1e-8
