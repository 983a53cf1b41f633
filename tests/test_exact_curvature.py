"""Every "exact" curvature path against dense float64 references, on the models that once broke them.

The references do not use the operators: Jacobians of the outputs by ``torch.func.jacrev``, the loss
Hessian in output space by autograd, the Hessian by
``torch.autograd.functional.hessian``. Models: one Parameter held by two modules (tied weights) plus an
unused layer, one module called twice, a BatchNorm CNN, a Linear layer on sequences,
``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` in eval mode. Batches of 24 on 64 samples
make the last batch ragged.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.data import load_dataset
from landscape.errors import LandscapeError
from landscape.linalg import control_variate_trace, estimate_trace, hutchpp
from landscape.linalg.operators import DenseOperator, FisherOperator, GGNOperator, HessianOperator
from landscape.linalg.operators.exact_trace import exact_fisher_trace, exact_ggn_trace
from landscape.linalg.trace import _choose_hessian_estimator
from landscape.losses import per_sample
from landscape.objective import Objective

from user_models import Encoder, SquareLayer  # SquareLayer: x^2 with a backward but no forward-mode rule


class Tied(nn.Module):
    """``b.weight is a.weight``: one tensor, two modules, two names; ``unused`` never runs."""

    def __init__(self):
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(40, 12), nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 10)
        self.b.weight = self.a.weight
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        h = torch.tanh(self.a(torch.tanh(self.inp(x))))
        return self.out(torch.tanh(self.b(h)))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], 10, 4))
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def _called_twice():
    shared = nn.Linear(16, 16)
    return nn.Sequential(nn.Linear(40, 16), nn.Tanh(), shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(16, 10))


def _bn_cnn():
    return nn.Sequential(nn.Unflatten(1, (1, 40)), nn.Conv1d(1, 3, 5, stride=2, padding=1), nn.BatchNorm1d(3), nn.ReLU(),
                         nn.Conv1d(3, 4, 3, stride=2, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 10))


def _sequence_linear():
    return nn.Sequential(nn.Unflatten(1, (4, 10)), nn.Linear(10, 6), nn.Tanh(), nn.Flatten(), nn.Linear(24, 10))


MODELS = {"tied": Tied, "called-twice": _called_twice, "bn-cnn": _bn_cnn, "sequence-linear": _sequence_linear,
          "encoder": lambda: Encoder(10), "attention": Attention}
EXACT_TRACE_MODELS = ("tied", "called-twice", "bn-cnn", "sequence-linear")


def _objective(name, loss="cross_entropy"):
    ds = load_dataset("mnist1d", samples=64)
    torch.manual_seed(0)
    model = MODELS[name]().double()
    x = ds.x_train.double()
    y = ds.y_train if loss == "cross_entropy" else torch.randn(64, 10, dtype=torch.float64)
    model.train()
    model(x)  # BatchNorm running statistics
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        opt.zero_grad()
        per_sample(loss, model(x), y).mean().backward()
        opt.step()
    return Objective(model, x, y, loss, batch_size=24)


# --- references -------------------------------------------------------------------------------------------------
def _reference_forward(obj, flat, x):
    params = obj.layout.unflatten(flat)
    torch.backends.mha.set_fastpath_enabled(False)  # as the tested code: the fast path has no derivatives
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            return functional_call(obj.model, {**obj.frozen, **params}, (x,))
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def _data(obj):
    return torch.cat([b[0] for b in obj.batches]), torch.cat([b[1] for b in obj.batches])


def dense_hessian(obj):
    x, y = _data(obj)
    return torch.autograd.functional.hessian(lambda w: obj.loss_fn(_reference_forward(obj, w, x), y), obj.point(),
                                             vectorize=True)


def jacobian(obj):
    """(N, D, P): d outputs / d flat parameters."""
    x, _ = _data(obj)
    return jacrev(lambda w: _reference_forward(obj, w, x).reshape(x.shape[0], -1))(obj.point())


def dense_ggn(obj):
    x, y = _data(obj)
    z = _reference_forward(obj, obj.point(), x).detach()
    hz = torch.autograd.functional.hessian(lambda out: obj.loss_fn(out.reshape(z.shape), y), z.reshape(-1))
    J = jacobian(obj).reshape(-1, obj.dim)
    return J.T @ hz @ J


def dense_fisher(obj, scores):
    """(1/(N S)) sum_s sum_n (J_n^T s_sn)(J_n^T s_sn)^T for output gradients ``scores`` (S, N, D)."""
    g = torch.einsum("snd,ndp->snp", scores, jacobian(obj)).reshape(-1, obj.dim)
    return g.T @ g / g.shape[0]


def scores_of(op):
    """The Fisher operator's own output gradients s (S, N, D), batch by batch."""
    obj = op.objective
    parts = []
    for b, (x, _) in enumerate(obj.batches):
        out = obj.output(obj.theta, x).detach()
        parts.append(op._score(b, out).reshape(-1, out.shape[0], out[0].numel()))
    return torch.cat(parts, dim=1)


def per_parameter(obj, diagonal):
    return {name: float(diagonal[obj.layout.slice(name)].sum()) for name in obj.layout.names}


# --- exact traces -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,loss", [(m, "cross_entropy") for m in EXACT_TRACE_MODELS]
                         + [("tied", "mse"), ("tied", "sum_squares"), ("bn-cnn", "mse"), ("bn-cnn", "sum_squares")])
def test_exact_ggn_and_fisher_traces_equal_dense(name, loss):
    """Per parameter, to 1e-9; the tied weight counts both modules' uses (it was 7% low)."""
    obj = _objective(name, loss)
    ggn = exact_ggn_trace(obj)
    assert ggn is not None, "every layer is supported: the trace must be exact"
    want = per_parameter(obj, torch.diagonal(dense_ggn(obj)))
    for key in obj.layout.names:
        assert ggn[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    for op in (FisherOperator(obj, "empirical"), FisherOperator(obj, "mc", mc_samples=2, seed=3)):
        exact = exact_fisher_trace(op)
        want = per_parameter(obj, torch.diagonal(dense_fisher(obj, scores_of(op))))
        for key in obj.layout.names:
            assert exact[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (op.kind, key)
    if name == "tied":
        assert obj.layout.names.count("a.weight") == 1 and "b.weight" not in obj.layout.names
        assert ggn["unused.weight"] == 0.0 and ggn["a.weight"] > 0


def test_exact_traces_refuse_parameters_used_outside_their_modules():
    class Functional(nn.Module):  # the weight also enters as a plain tensor: invisible to module hooks
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(40, 40), nn.Linear(40, 10)

        def forward(self, x):
            return self.out(torch.tanh(torch.tanh(self.a(x)) @ self.a.weight.T))

    class Doubled(nn.Linear):  # a supported type with its own forward
        def forward(self, x):
            return nn.functional.linear(x, 2 * self.weight, self.bias)

    class Scale(nn.Module):  # an unsupported parameterised module
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(10))

        def forward(self, x):
            return x * self.s

    ds = load_dataset("mnist1d", samples=50)
    for model in (Functional(), nn.Sequential(Doubled(40, 10)), nn.Sequential(nn.Linear(40, 10), Scale())):
        obj = Objective(model, ds.x_train, ds.y_train, dtype=torch.float64)
        assert exact_ggn_trace(obj) is None
        assert exact_fisher_trace(FisherOperator(obj, "empirical")) is None
        result = estimate_trace(GGNOperator(obj), rtol=0.05, seed=0)  # the stochastic fallback, honest stderr
        assert result.method == "hutch++" and result.stderr > 0
        assert abs(result.estimate - float(torch.trace(dense_ggn(obj)))) <= 4 * result.stderr


def test_hessian_trace_with_tied_weights_is_unbiased():
    """The control variate adds the exact GGN trace: with the tied weight's second use dropped it was
    off by about 5 standard errors on every seed."""
    obj = _objective("tied")
    exact = float(torch.trace(dense_hessian(obj)))
    for seed in range(4):
        result = estimate_trace(HessianOperator(obj), rtol=0.01, seed=seed)
        assert result.method in ("ggn-control-variate", "hutch++") and result.converged
        assert abs(result.estimate - exact) <= 4 * result.stderr, (seed, result.estimate, exact, result.stderr)


# --- products ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_products_equal_dense(name):
    """Hessian (both methods), GGN and Fisher (empirical, MC) products against dense matrices; attention in
    eval mode used to crash (the inference fast path and fused attention kernels have no such derivatives)."""
    obj = _objective(name)
    V = torch.randn(obj.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    H, G = dense_hessian(obj), dense_ggn(obj)
    cases = [(HessianOperator(obj, method="double-backward"), H), (HessianOperator(obj, method="forward-over-reverse"), H),
             (GGNOperator(obj), G)]
    for kind in ("empirical", "mc"):
        op = FisherOperator(obj, kind, seed=2)
        cases.append((op, dense_fisher(obj, scores_of(op))))
    for op, dense in cases:
        want = dense @ V
        assert float((op @ V - want).norm()) <= 1e-10 * float(want.norm()), type(op).__name__
    if name in ("encoder", "attention"):
        assert exact_ggn_trace(obj) is None  # attention is not a supported layer: the trace is estimated
        assert estimate_trace(GGNOperator(obj), rtol=0.05).method == "hutch++"


def test_a_layer_without_derivatives_gives_one_error_naming_it():
    ds = load_dataset("mnist1d", samples=32)
    obj = Objective(nn.Sequential(nn.Linear(40, 8), SquareLayer(), nn.Linear(8, 10)), ds.x_train, ds.y_train)
    v = torch.randn(obj.dim)
    for op in (GGNOperator(obj), FisherOperator(obj), HessianOperator(obj, method="forward-over-reverse")):
        with pytest.raises(LandscapeError, match=r"products need derivatives that PyTorch .* for layer 1 \(SquareLayer\)"):
            op @ v
    assert torch.isfinite(HessianOperator(obj) @ v).all()  # auto falls back to double backward, which works


# --- the trace pilot --------------------------------------------------------------------------------------------
def _spectrum_matrix(eigenvalues, seed):
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T, q


@pytest.mark.parametrize("winner", ["hutch++", "ggn-control-variate"])
def test_trace_pilot_picks_the_estimator_with_fewer_products(winner):
    """Outlying eigenvalues that the control misses: Hutch++ deflates them and needs far fewer products than
    the control variate (the old pilot compared the control with plain Hutchinson and chose it). A control
    close to A: its residual is tiny and the control variate wins."""
    n = 300
    values = np.concatenate([[400.0, 300.0, 200.0, 150.0], np.linspace(0.5, 1.5, n - 4)])
    A, q = _spectrum_matrix(values, 0)
    if winner == "hutch++":  # the control has the bulk right but none of the outliers
        C = q @ torch.diag(torch.as_tensor(np.concatenate([[0.0] * 4, values[4:] * 0.5]))) @ q.T
    else:
        noise, _ = _spectrum_matrix(np.linspace(-0.05, 0.05, n), 1)
        C = A + noise
    exact, control_trace = float(torch.trace(A)), float(torch.trace(C))
    chosen = _choose_hessian_estimator(DenseOperator(A), DenseOperator(C), control_trace, rtol=0.005, max_probes=2000,
                                       seed=0)
    assert chosen.method == winner and chosen.converged
    assert abs(chosen.estimate - exact) <= 4 * chosen.stderr
    alone = {"hutch++": hutchpp(DenseOperator(A), rtol=0.005, max_probes=2000, seed=0),
             "ggn-control-variate": control_variate_trace(DenseOperator(A), DenseOperator(C), control_trace,
                                                          rtol=0.005, max_probes=2000, seed=0)}
    loser = next(k for k in alone if k != winner)
    assert chosen.products < alone[loser].products  # the pilots included
    assert chosen.products <= alone[winner].products + 2 * 16 + 2 * 8 + 8  # at most both pilots' cost more


# --- float64 models ---------------------------------------------------------------------------------------------
def test_float64_model_keeps_its_precision():
    ds = load_dataset("mnist1d", samples=40)
    model = nn.Sequential(nn.Linear(40, 6), nn.Tanh(), nn.Linear(6, 10)).double()
    obj = Objective(model, ds.x_train, ds.y_train)  # float32 data follows the model
    assert obj.dtype == torch.float64 and obj.batches[0][0].dtype == torch.float64
    assert Objective(model, ds.x_train, ds.y_train, dtype=torch.float32).dtype == torch.float32

    class HardCoded(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(40, 10).double()

        def forward(self, x):
            return self.lin(x + torch.zeros(40, dtype=torch.float64))

    with pytest.raises(LandscapeError, match="does not run in float32"):
        Objective(HardCoded(), ds.x_train, ds.y_train, dtype=torch.float32)
    assert math.isfinite(Objective(HardCoded(), ds.x_train, ds.y_train).value())
