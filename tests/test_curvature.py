"""Curvature operators and estimators against exact dense answers."""

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from landscape.data import load_dataset
from landscape.linalg import exact_diagonal, hutchinson, hutchpp
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import DenseOperator, FisherOperator, GGNOperator, HessianOperator
from landscape.linalg.power import power_iteration
from landscape.linalg.slq import slq
from landscape.objective import Objective


def _cnn():
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 40)), torch.nn.Conv1d(1, 4, 5, stride=2),
                               torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Conv1d(4, 4, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 10))


MODELS = {
    "tanh-mlp": lambda: torch.nn.Sequential(torch.nn.Linear(40, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)),
    "relu-mlp": lambda: torch.nn.Sequential(torch.nn.Linear(40, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12),
                                            torch.nn.ReLU(), torch.nn.Linear(12, 10)),
    "bn-cnn": _cnn,
}


def _trained(name):
    ds = load_dataset("mnist1d", samples=256)
    torch.manual_seed(0)
    model = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):  # train mode: BatchNorm running statistics become non-trivial
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.x_train), ds.y_train).backward()
        opt.step()
    return model, ds


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    model, ds = _trained(request.param)
    obj = Objective(model, ds.x_train, ds.y_train, "cross_entropy", dtype=torch.float64)
    ref = model.double().eval()  # independent reference: dense autograd Hessian of the eval-mode loss
    names = obj.layout.names
    buffers = dict(ref.named_buffers())

    def loss(flat):
        params = obj.layout.unflatten(flat)
        out = torch.func.functional_call(ref, {**params, **buffers}, (ds.x_train.double(),))
        return torch.nn.functional.cross_entropy(out, ds.y_train)

    dense = torch.autograd.functional.hessian(loss, obj.point(), vectorize=True)
    assert names and dense.shape == (obj.dim, obj.dim)
    evals = torch.linalg.eigvalsh(dense).numpy()
    return {"name": request.param, "model": model, "ds": ds, "obj": obj, "dense": dense, "evals": evals}


@pytest.mark.parametrize("method", ["double-backward", "forward-over-reverse", "auto"])
def test_hessian_products_equal_dense(case, method):
    H = HessianOperator(case["obj"], method=method)
    err = (H.to_dense() - case["dense"]).abs().max()
    assert err <= 1e-10 * case["dense"].abs().max()
    assert H.method in ("double-backward", "forward-over-reverse")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bn-cnn"], indirect=True)
def test_compiled_hessian_products_equal_dense(case):
    """torch.compile'd forward-over-reverse products (BatchNorm CNN, float64) = the dense Hessian; the
    compile time is reported apart (slow: several Inductor compiles)."""
    H = HessianOperator(case["obj"], method="forward-over-reverse", compile=True)
    V = torch.randn(case["obj"].dim, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    err = (H @ V - case["dense"] @ V).abs().max()
    assert err <= 1e-10 * (case["dense"] @ V).abs().max()
    assert H.calibration["compile_seconds"] > 0
    auto = HessianOperator(case["obj"], compile=True)
    v = torch.randn(3, case["obj"].dim, dtype=torch.float64)
    assert torch.allclose(auto._matmat_rows(v), v @ case["dense"], rtol=0, atol=1e-10 * case["dense"].abs().max())
    assert {"double-backward", "forward-over-reverse"} <= set(auto.calibration)


@pytest.mark.slow
def test_compiled_products_of_a_small_model_equal_eager():
    """Compiled products equal the eager ones (one batch shape: one Inductor compile, ~14 s on two cores)."""
    ds = load_dataset("mnist1d", samples=100)
    other = Objective(torch.nn.Sequential(torch.nn.Linear(40, 6), torch.nn.Tanh(), torch.nn.Linear(6, 10)),
                      ds.x_train, ds.y_train, dtype=torch.float64)
    V = torch.randn(other.dim, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    compiled = HessianOperator(other, method="forward-over-reverse", compile=True)
    assert torch.allclose(compiled @ V, HessianOperator(other) @ V, rtol=0, atol=1e-12)
    assert compiled.calibration["compile_seconds"] > 0


def test_lanczos_top5_and_most_negative(case):
    evals = case["evals"]
    top = lanczos(HessianOperator(case["obj"]), k=5, tol=1e-8)
    assert top.converged and top.eigenvalues.tolist() == sorted(top.eigenvalues.tolist(), reverse=True)
    assert np.allclose(top.eigenvalues, evals[::-1][:5], rtol=1e-6, atol=0)
    neg = lanczos(HessianOperator(case["obj"]), k=1, which="SA", tol=1e-8, max_iter=400)
    assert evals[0] < 0, "these trained nets have negative curvature"
    assert abs(neg.eigenvalues[0] - evals[0]) <= 1e-6 * abs(evals).max()
    # float32 products (the default precision) still give the top-5 to 1e-4 relative
    model, ds = case["model"], case["ds"]
    obj32 = Objective(model.float(), ds.x_train, ds.y_train, "cross_entropy")
    top32 = lanczos(HessianOperator(obj32), k=5, tol=1e-5)
    assert np.allclose(top32.eigenvalues, evals[::-1][:5], rtol=1e-4, atol=0)
    model.double()
    # eigenvector of the top eigenvalue
    u = torch.linalg.eigh(case["dense"]).eigenvectors[:, -1]
    assert abs(float(top.eigenvectors[:, 0] @ u)) > 1 - 1e-6


def test_power_iteration_agrees_but_costs_more(case):
    H = HessianOperator(case["obj"])
    pw = power_iteration(H, k=2, tol=1e-7, max_iter=5000)
    mags = np.sort(np.abs(case["evals"]))[::-1][:2]
    assert np.allclose(np.abs(pw.eigenvalues), mags, rtol=1e-4)
    lz = lanczos(HessianOperator(case["obj"]), k=2, tol=1e-7)
    assert lz.products < pw.products


def test_trace_frobenius_diagonal_against_exact(case):
    dense = case["dense"]
    H = DenseOperator(dense)  # the operator's products equal it (test_hessian_products_equal_dense); estimators only
    exact_trace = float(torch.trace(dense))
    res = hutchinson(H, rtol=0.0, atol=0.0, max_probes=400, block=50, frobenius=True, diagonal=True, seed=3)
    assert res.probes == 400 and abs(res.estimate - exact_trace) <= 3 * res.stderr
    frob = float((dense * dense).sum())
    assert abs(res.frobenius.estimate - frob) <= 3 * res.frobenius.stderr
    assert abs(res.frobenius.estimate - frob) <= 0.1 * frob
    diag = torch.diagonal(dense)
    assert torch.allclose(exact_diagonal(H), diag, rtol=0, atol=1e-10 * float(diag.abs().max()))
    within = ((res.diagonal - diag).abs() <= 3 * res.diagonal_stderr + 1e-12).double().mean()
    assert within >= 0.95


def test_estimators_converge_to_exact():
    model, ds = _trained("tanh-mlp")
    obj = Objective(model, ds.x_train, ds.y_train, dtype=torch.float64)
    dense = HessianOperator(obj).to_dense()
    A = DenseOperator(dense)
    diag, frob = torch.diagonal(dense), float((dense * dense).sum())
    errors = {}
    for m in (25, 1600):
        r = hutchinson(A, rtol=0, max_probes=m, block=m, frobenius=True, diagonal=True, seed=1)
        errors[m] = (float((r.diagonal - diag).norm() / diag.norm()), abs(r.frobenius.estimate - frob) / frob)
    assert errors[1600][0] < 0.3 * errors[25][0]  # 1/sqrt(64) = 0.125 expected
    assert errors[1600][0] < 0.1 and errors[1600][1] < 0.02


def test_trace_standard_errors_cover_the_truth():
    """|estimate - tr(H)| <= 3 stderr in at least 95 of 100 seeds, for Hutchinson and Hutch++."""
    model, ds = _trained("relu-mlp")
    obj = Objective(model, ds.x_train, ds.y_train, dtype=torch.float64)
    dense = HessianOperator(obj).to_dense()
    A, exact = DenseOperator(dense), float(torch.trace(dense))
    for estimator in (hutchinson, hutchpp):
        hits, ses = 0, []
        for seed in range(100):
            r = estimator(A, rtol=0.02, min_probes=20, block=10, seed=seed)
            hits += abs(r.estimate - exact) <= 3 * r.stderr
            ses.append(r.stderr)
        assert hits >= 95, (estimator.__name__, hits)
        assert np.median(ses) <= 0.03 * abs(exact)


def test_slq_density_cdf_matches_exact(case):
    evals = case["evals"]
    density = slq(DenseOperator(case["dense"]), num_runs=10, num_steps=80, seed=0)  # products: tested above
    assert np.allclose(density.weights.sum(1), 1.0)
    sigma = density.default_sigma()
    t = np.linspace(evals.min() - 5 * sigma, evals.max() + 5 * sigma, 20000)
    exact_cdf = ndtr((t[:, None] - evals[None, :]) / sigma).mean(1)
    assert np.abs(density.smoothed_cdf(t, sigma) - exact_cdf).max() <= 0.05
    grid, values = density.smooth(num_points=4000)
    assert abs(np.trapezoid(values, grid) - 1.0) < 1e-3


def test_ggn_equals_hessian_for_linear_model_with_mse():
    ds = load_dataset("quadratic", spectrum=[0.5, 2.0, 3.0, 7.0], train_samples=9)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    obj = Objective(model, ds.x_train, ds.y_train, "mse", dtype=torch.float64)
    H, G = HessianOperator(obj).to_dense(), GGNOperator(obj).to_dense()
    assert torch.allclose(H, G, atol=1e-12)
    x = torch.cat([ds.x_train.double(), torch.ones(9, 1, dtype=torch.float64)], 1)
    assert torch.allclose(H, 2 * x.T @ x / 9, atol=1e-12)  # closed form, weights and bias
    ev = torch.linalg.eigvalsh(H[:4, :4])
    assert torch.allclose(ev, torch.tensor([0.5, 2.0, 3.0, 7.0], dtype=torch.float64), rtol=1e-5)


def test_fisher_equals_ggn_for_cross_entropy_in_expectation():
    model, ds = _trained("tanh-mlp")
    obj = Objective(model, ds.x_train[:64], ds.y_train[:64], dtype=torch.float64)
    # G = J^T H_out J and F_S = (1/N) sum_n J_n^T (mean_s s_ns s_ns^T) J_n from the dense Jacobian and the
    # operator's own score draws (the operators' products equal these matrices: tests/test_exact_curvature.py)
    x, y = obj.batches[0]
    J = torch.func.jacrev(lambda w: obj.output(obj.layout.unflatten(w), x))(obj.point())  # (N, D, P)
    out = obj.output(obj.theta, x).detach()
    h_out = torch.autograd.functional.hessian(lambda z: obj.loss_fn(z.reshape(out.shape), y), out.reshape(-1))
    G = J.reshape(-1, obj.dim).T @ h_out @ J.reshape(-1, obj.dim)
    assert torch.allclose(GGNOperator(obj) @ torch.eye(obj.dim, dtype=torch.float64)[:, :4], G[:, :4], atol=1e-12)

    def fisher(samples):
        s = FisherOperator(obj, "mc", mc_samples=samples, seed=1)._score(0, out)   # (S, N, D)
        g = torch.einsum("snd,ndp->snp", s, J).reshape(-1, obj.dim)
        return g.T @ g / g.shape[0]

    errors = [float((fisher(s) - G).norm() / G.norm()) for s in (16, 1024)]
    assert errors[1] < 0.25 * errors[0] and errors[1] < 0.12  # 1/sqrt(S) convergence (0.125 expected): no bias
    # empirical Fisher: (1/N) sum_n g_n g_n^T with per-sample gradients
    V = torch.randn(obj.dim, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    per_sample = torch.stack([Objective(model, ds.x_train[i:i + 1], ds.y_train[i:i + 1], dtype=torch.float64)
                              .gradient() for i in range(64)])
    assert torch.allclose(FisherOperator(obj, "empirical") @ V, per_sample.T @ (per_sample @ V) / 64, atol=1e-12)


def test_unused_parameters_give_zero_rows():
    model = torch.nn.Sequential(torch.nn.Linear(40, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10))
    model.register_parameter("frozen_head", torch.nn.Parameter(torch.randn(5)))
    ds = load_dataset("mnist1d", samples=64)
    obj = Objective(model, ds.x_train, ds.y_train, dtype=torch.float64)
    sl = obj.layout.slice("frozen_head")
    for op in (HessianOperator(obj, method="double-backward"), HessianOperator(obj, method="forward-over-reverse"),
               HessianOperator(obj, batched=True), GGNOperator(obj), FisherOperator(obj, "empirical")):
        D = op.to_dense()
        assert torch.all(D[sl] == 0) and torch.all(D[:, sl] == 0) and D.abs().sum() > 0
    assert lanczos(HessianOperator(obj), k=2).converged


def test_blocks_batches_scipy_and_determinism(case):
    obj, dense = case["obj"], case["dense"]
    H = HessianOperator(obj)
    gen = torch.Generator().manual_seed(0)  # random columns: equal products on them (not n products each)
    for group, block in H.blocks().items():
        names = obj.layout.groups()[group]
        idx = torch.cat([torch.arange(obj.dim)[obj.layout.slice(n)] for n in names])
        V = torch.randn(len(idx), 4, dtype=torch.float64, generator=gen)
        assert torch.allclose(block @ V, dense[idx][:, idx] @ V, atol=1e-12)
    ragged = Objective(case["model"], case["ds"].x_train, case["ds"].y_train, dtype=torch.float64, batch_size=100)
    assert len(ragged.batches) == 3
    V = torch.randn(obj.dim, 4, dtype=torch.float64, generator=gen)
    assert torch.allclose(HessianOperator(ragged, cache=False) @ V, dense @ V, atol=1e-12)
    from scipy.sparse.linalg import eigsh

    vals = np.sort(eigsh(HessianOperator(obj).to_scipy(), k=3, which="LA", tol=1e-10)[0])[::-1]
    assert np.allclose(vals, case["evals"][::-1][:3], rtol=1e-8)
    pinned = dict(method="double-backward", batched=False)  # bitwise determinism needs a fixed product path
    a, b = lanczos(HessianOperator(obj, **pinned), k=3, seed=5), lanczos(HessianOperator(obj, **pinned), k=3, seed=5)
    assert np.array_equal(a.eigenvalues, b.eigenvalues) and a.products == b.products
    t1, t2, t3 = (hutchinson(HessianOperator(obj, **pinned), seed=s, min_probes=16, max_probes=16) for s in (1, 1, 2))
    assert t1.estimate == t2.estimate and t1.estimate != t3.estimate


def test_control_variate_trace_is_unbiased_and_cheaper(case):
    from landscape.linalg import control_variate_trace, estimate_trace

    obj, exact = case["obj"], float(torch.trace(case["dense"]))
    result = estimate_trace(HessianOperator(obj), rtol=0.01, seed=0)
    assert result.method == "ggn-control-variate" and result.converged
    assert abs(result.estimate - exact) <= 3 * result.stderr
    plain = hutchinson(HessianOperator(obj), rtol=0.01, seed=0, max_probes=result.products)
    assert not plain.converged  # plain Hutchinson needs more products than the control variate used
    # unbiased for any control: with C = 0 it is Hutchinson
    A = DenseOperator(case["dense"])
    zero = DenseOperator(torch.zeros_like(case["dense"]))
    runs = [control_variate_trace(A, zero, 0.0, rtol=0.05, min_probes=20, seed=s) for s in range(40)]
    hits = sum(abs(r.estimate - exact) <= 3 * r.stderr for r in runs)
    assert hits >= 37
