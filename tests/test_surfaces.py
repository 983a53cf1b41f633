"""Loss slices and surfaces: directions, batched evaluation, resume, file format, CLI and plots."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
import torch
from conftest import tree_digest
from processes import two_processes

from landscape.analysis import directions as dirs
from landscape.analysis import evaluate_checkpoint, load_checkpoint_model
from landscape.analysis.grid_evaluation import GridEvaluator
from landscape.analysis.curvature import CurvatureResult
from landscape.analysis.surface import SurfaceResult, SurfaceSpec, compute_surface
from landscape.analysis.surface_job import EvaluationPlan
from landscape.cli.main import main
from landscape.data import load_dataset
from landscape.linalg.operators import HessianOperator
from landscape.losses import evaluate
from landscape.models import build_model
from landscape.errors import LandscapeError
from landscape.objective import Objective, recompute_batchnorm, split_batches
from landscape.objective_grid import ObjectiveGrid, first_affine_layer

MLP = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--epochs", "3",
       "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q", "--checkpoint-every", "6"]
CNN_BN = ["--samples", "200", "--model", "cnn", "--set", "model.bn=true", "--set", "model.channels=[4,4,8,8]",
          "--batch-size", "50", "--steps", "8", "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q",
          "--checkpoint-every", "4"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("surf") / "mlp"
    assert main(["train", *MLP, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("surf") / "cnn"
    assert main(["train", *CNN_BN, "--out", str(out)]) == 0
    return out


def _set_params(model, center, directions, coords):
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(center[n] + sum(float(c) * d[n] for c, d in zip(coords, directions)))


# --- directions ----------------------------------------------------------------------------------------------
def test_filter_normalization_gives_each_filter_the_weight_filter_norm():
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "bn": True, "channels": [4, 4, 8, 8]}, (40,), 10)
    layout, w = dirs.flat_parameters(model)
    d = dirs.normalize(dirs.gaussian(layout, torch.Generator().manual_seed(0)), w, layout, "filter")
    dp, wp = layout.unflatten(d), layout.unflatten(w)
    checked = 0
    for name in layout.names:
        if wp[name].ndim <= 1:  # biases and BatchNorm scales/shifts: zero (biasbn ignored)
            assert not dp[name].any(), name
            continue
        for df, wf in zip(dp[name], wp[name]):
            torch.testing.assert_close(df.norm(), wf.norm(), rtol=1e-5, atol=0)
            checked += 1
    assert checked == 4 + 4 + 8 + 8 + 10
    kept = dirs.normalize(dirs.gaussian(layout, torch.Generator().manual_seed(0)), w, layout, "filter",
                          ignore_biasbn=False)
    for name in layout.names:
        if wp[name].ndim == 1:
            torch.testing.assert_close(layout.unflatten(kept)[name].norm(), wp[name].norm(), rtol=1e-5, atol=0)
    layer = layout.unflatten(dirs.normalize(dirs.gaussian(layout, torch.Generator()), w, layout, "layer"))
    for name in layout.names:
        if wp[name].ndim > 1:
            torch.testing.assert_close(layer[name].norm(), wp[name].norm(), rtol=1e-5, atol=0)
    raw = dirs.gaussian(layout, torch.Generator().manual_seed(3))
    weight = dirs.normalize(raw, w, layout, "weight", ignore_biasbn=False)
    torch.testing.assert_close(weight, raw * w)


def test_orthogonalize_keeps_norm_and_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    z = dirs.orthogonalize(y, x)
    assert abs(float(z @ x)) < 1e-12 and abs(float(z.norm() - y.norm())) < 1e-12
    # a trajectory drifting mostly along two directions
    steps = torch.linspace(0, 1, 12, dtype=torch.float64)[:, None]
    points = (steps * torch.randn(1, 30, generator=g, dtype=torch.float64)
              + steps.pow(2) * torch.randn(1, 30, generator=g, dtype=torch.float64)
              + 0.01 * torch.randn(12, 30, generator=g, dtype=torch.float64))
    pca = dirs.trajectory_pca(points)
    ref = PCA(n_components=2).fit((points - points[-1]).numpy())
    np.testing.assert_allclose(pca.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs((pca.directions.numpy() * ref.components_).sum(1)), 1.0, rtol=1e-10)
    # the projection reproduces the points that lie in the plane
    inside = pca.coordinates @ pca.directions
    torch.testing.assert_close(dirs.project(inside, pca.directions), pca.coordinates)
    with pytest.raises(Exception, match="at least 3 checkpoints"):
        dirs.trajectory_pca(points[:2])


# --- evaluation --------------------------------------------------------------------------------------------
def test_quadratic_surface_equals_the_closed_form():
    ds = load_dataset("quadratic", spectrum=[0.5, 1.0, 3.0, 8.0], train_samples=12)
    torch.manual_seed(0)
    model = build_model({"name": "linear", "bias": False}, ds.input_shape, ds.output_dim).double()
    layout, w = dirs.flat_parameters(model)
    g = torch.Generator().manual_seed(1)
    dx, dy = (dirs.gaussian(layout, g, torch.float64) for _ in range(2))
    ev = GridEvaluator(model, "mse", layout.unflatten(w), [layout.unflatten(dx), layout.unflatten(dy)],
                       sample_input=ds.x_train[:2].double())
    assert ev.first is not None  # the linear layer is the affine first layer
    a, b = np.meshgrid(np.linspace(-2, 2, 7), np.linspace(-1, 3, 5), indexing="ij")
    coords = torch.tensor(np.stack([a.ravel(), b.ravel()], 1))
    sums = ev.sums(coords, split_batches(ds.x_train.double(), ds.y_train.double(), 5))
    # L(w + a dx + b dy) = L(w) + g.(a dx + b dy) + 1/2 (a dx + b dy)^T H (a dx + b dy), with the data's
    # H = (2/N) X^T X (the quadratic's spectrum, up to the float32 rounding of the stored data)
    x, y = ds.x_train.double(), ds.y_train.double().reshape(-1)
    n = x.shape[0]
    h = 2 / n * x.T @ x
    torch.testing.assert_close(torch.linalg.eigvalsh(h), torch.tensor([0.5, 1.0, 3.0, 8.0], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    r = x @ w - y
    g = 2 / n * x.T @ r
    step = coords[:, :1] * dx + coords[:, 1:] * dy
    closed = (r @ r) / n + step @ g + 0.5 * ((step @ h) * step).sum(1)
    torch.testing.assert_close(sums.loss / sums.samples, closed, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["mlp", {"name": "cnn", "bn": True, "channels": [4, 4, 8, 8]},
                                  {"name": "resnet20", "width": 0.25}])
def test_batched_evaluation_matches_point_by_point(spec):
    if isinstance(spec, dict) and spec["name"] == "resnet20":
        x = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 10, (24,), generator=torch.Generator().manual_seed(1))
        shape = (3, 8, 8)
    else:
        ds = load_dataset("mnist1d", samples=64)
        x, y, shape = ds.x_train, ds.y_train, ds.input_shape
    torch.manual_seed(0)
    model = build_model(spec, shape, 10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    layout, w = dirs.flat_parameters(model)
    g = torch.Generator().manual_seed(2)
    ds_ = [layout.unflatten(dirs.normalize(dirs.gaussian(layout, g), w, layout)) for _ in range(2)]
    coords = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.7, 0.5], [1.0, 1.0], [0.1, 0.9]])
    results = []
    for affine in (True, False):
        ev = GridEvaluator(model, "cross_entropy", layout.unflatten(w), ds_, affine_first_layer=affine,
                           sample_input=x[:2])
        assert (ev.first is not None) == affine
        results.append(ev.sums(coords, split_batches(x, y, 10)))
    ref = copy.deepcopy(model)
    for k, c in enumerate(coords):
        _set_params(ref, layout.unflatten(w), ds_, c)
        r = evaluate(ref, x, y, "cross_entropy")
        for s in results:
            assert abs(float(s.loss[k]) / s.samples - r["loss"]) < 2e-5 * max(1.0, r["loss"])
            assert int(s.correct[k]) / s.samples == r["acc"]


def test_first_affine_layer_detection_refuses_custom_parameterised_modules():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x * self.scale)

    assert first_affine_layer(Scaled(), torch.randn(2, 4)) is None
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert first_affine_layer(seq, torch.randn(2, 4)) == "1"


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_objective_grid_on_the_objectives_own_batches(loss):
    """The grid of an Objective evaluates its batches: at the centre it is the objective's value, along a
    direction the value at the moved point (to rounding: float64 sums of per-sample losses vs batch means)."""
    ds = load_dataset("mnist1d", samples=64)
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, 10)
    y = ds.y_train if loss == "cross_entropy" else torch.randn(ds.y_train.shape[0], 10)
    obj = Objective(model, ds.x_train, y, loss, batch_size=20)
    d = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1)) * 0.1
    grid = ObjectiveGrid(obj, [d])
    assert grid.first is not None  # the first batch served to find the affine first layer
    sums = grid.sums(torch.tensor([[0.0], [0.5]]))
    assert sums.samples == obj.num_samples and (sums.correct is not None) == (loss == "cross_entropy")
    for k, t in enumerate((0.0, 0.5)):
        assert float(sums.loss[k]) / sums.samples == pytest.approx(obj.value(obj.point() + t * d), rel=1e-6)
    outputs = list(grid.outputs(torch.tensor([[0.5]]), [x for x, _ in obj.batches]))
    assert [o.shape for o in outputs] == [(1, b[0].shape[0], 10) for b in obj.batches]
    bare = Objective.without_data(model, loss)
    with pytest.raises(LandscapeError, match="no data of its own"):
        bare.value()
    assert torch.equal(ObjectiveGrid(bare, [d], sample_input=ds.x_train[:2]).sums(
        torch.tensor([[0.5]]), obj.batches).loss, sums.loss[1:])


# --- surfaces of runs ----------------------------------------------------------------------------------------
def test_grid_center_equals_checkpoint_loss_and_axis_order(mlp_run, cnn_run):
    for run in (mlp_run, cnn_run):
        loaded = load_checkpoint_model(run)
        ev = evaluate_checkpoint(loaded)
        spec = SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=5, yrange=(-0.5, 1.5), ynum=3,
                           name="nonsquare")
        res = compute_surface(loaded, spec)
        assert res.train_loss.shape == (5, 3) and res.test_acc.shape == (5, 3)
        one = compute_surface(loaded, SurfaceSpec(dims=1, directions="filter", xnum=5, name="line"))
        assert abs(one.train_loss[2] - ev.train_loss) < 1e-6 * max(1, ev.train_loss)
        assert abs(one.test_loss[2] - ev.test_loss) < 1e-6 * max(1, ev.test_loss)
        assert one.train_acc[2] == ev.train_acc and one.test_acc[2] == ev.test_acc
        # axis order: train_loss[i, j] = L(x_i, y_j), checked against a direct evaluation
        with h5py.File(res.path) as fh:
            names = json.loads(fh["xdirection"].attrs["names"])
            dx = {n: torch.from_numpy(fh["xdirection"][str(k)][()]) for k, n in enumerate(names)}
            dy = {n: torch.from_numpy(fh["ydirection"][str(k)][()]) for k, n in enumerate(names)}
        model = copy.deepcopy(loaded.model)
        center = {n: p.detach().clone() for n, p in model.named_parameters()}
        for i, j in ((4, 0), (1, 2)):
            _set_params(model, center, [dx, dy], (res.xcoordinates[i], res.ycoordinates[j]))
            direct = evaluate(model, loaded.dataset.x_train, loaded.dataset.y_train, loaded.loss)["loss"]
            assert abs(res.train_loss[i, j] - direct) < 2e-5 * max(1, direct)


def test_between_slice_reproduces_both_endpoints_with_batchnorm(cnn_run):
    loaded = load_checkpoint_model(cnn_run)
    other = load_checkpoint_model(cnn_run, 4)
    spec = SurfaceSpec(dims=1, between=str(cnn_run / "checkpoints" / "00000004.h5"), xrange=(0, 1), xnum=3)
    res = compute_surface(loaded, spec)
    for t, ref in ((0, loaded), (2, other)):
        ev = evaluate_checkpoint(ref)
        assert abs(res.train_loss[t] - ev.train_loss) < 1e-5 * max(1, ev.train_loss)
        assert abs(res.test_loss[t] - ev.test_loss) < 1e-5 * max(1, ev.test_loss)
    assert res.info["between"].endswith("00000004.h5")


def test_batchnorm_recompute_mode(cnn_run):
    loaded = load_checkpoint_model(cnn_run)
    spec = SurfaceSpec(dims=1, directions="filter", xrange=(-1, 1), xnum=3, bn="recompute", splits=("train",))
    res = compute_surface(loaded, spec)
    ref = copy.deepcopy(loaded.model)
    ds = loaded.dataset
    recompute_batchnorm(ref, split_batches(ds.x_train, ds.y_train, 10**6))
    direct = evaluate(ref, ds.x_train, ds.y_train, loaded.loss)["loss"]
    assert abs(res.train_loss[1] - direct) < 1e-5 * max(1, direct)
    assert abs(res.train_loss[1] - evaluate_checkpoint(loaded).train_loss) > 1e-4  # stats did change


def test_eigen_plane_uses_the_top_hessian_eigenvectors(mlp_run):
    loaded = load_checkpoint_model(mlp_run, samples=100)
    spec = SurfaceSpec(dims=2, directions="eigen", xrange=(-0.5, 0.5), xnum=3, eigen_samples=100)
    res = compute_surface(loaded, spec)
    obj = Objective(loaded.model, loaded.dataset.x_train, loaded.dataset.y_train, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(HessianOperator(obj).to_dense())
    np.testing.assert_allclose(res.info["eigenvalues"], evals.numpy()[::-1][:2], rtol=1e-4)
    with h5py.File(res.path) as fh:
        names = json.loads(fh["xdirection"].attrs["names"])
        x = np.concatenate([fh["xdirection"][str(k)][()].ravel() for k in range(len(names))])
    assert abs(abs(float(np.dot(x, evecs[:, -1].numpy()))) - 1) < 1e-3


def test_eigen_plane_reuses_stored_eigenvectors(cnn_run, capsys):
    assert main(["analyze", str(cnn_run), "--top-k", "2", "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)["eigenvalues"]
    res = compute_surface(load_checkpoint_model(cnn_run), SurfaceSpec(dims=2, directions="eigen", xnum=3))
    assert list(res.info["eigenvalues"]) == pytest.approx(stored, rel=1e-12)
    hess = CurvatureResult.load(cnn_run, res.checkpoint)
    with h5py.File(res.path) as fh:
        n = len(json.loads(fh["ydirection"].attrs["names"]))
        y = np.concatenate([fh["ydirection"][str(k)][()].ravel() for k in range(n)])
    np.testing.assert_allclose(y, np.asarray(hess.eigenvectors)[1], atol=1e-6)  # orthogonal already


def test_pca_plane_projects_the_trajectory(mlp_run):
    loaded = load_checkpoint_model(mlp_run)
    res = compute_surface(loaded, SurfaceSpec(dims=2, directions="pca", xnum=4))
    steps = load_checkpoint_model(mlp_run).run.checkpoint_steps()
    assert list(res.proj_steps) == steps
    assert res.proj_xcoord[-1] == pytest.approx(0, abs=1e-6) and res.proj_ycoord[-1] == pytest.approx(0, abs=1e-6)
    assert sum(res.info["explained_variance_ratio_"]) <= 1 + 1e-9 and res.info["explained_variance_ratio_"][0] > 0.5
    xs = res.xcoordinates
    assert xs[0] <= res.proj_xcoord.min() and xs[-1] >= res.proj_xcoord.max()  # default range covers the path


# --- resume ------------------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def test_interrupted_surface_resumes_with_only_missing_points(mlp_run):
    loaded = load_checkpoint_model(mlp_run)
    spec = SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=7, name="resumed")
    calls = []

    def stop_after_two(done, total, message):
        calls.append(done)
        if len(calls) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        compute_surface(loaded, spec, stop_after_two, plan=EvaluationPlan(points_per_chunk=5, save_every=0))
    partial = mlp_run / "analysis" / f"{loaded.step:08d}" / "resumed.h5.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["part-000000.h5", "part-000001.h5", "spec.h5"]
    resumed = compute_surface(loaded, spec, plan=EvaluationPlan(points_per_chunk=99))  # the stored chunking wins
    assert resumed.resumed_points == 10 and resumed.computed_points == 39
    assert not partial.exists()
    whole = compute_surface(loaded, SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=7, name="whole"),
                            plan=EvaluationPlan(points_per_chunk=5))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "xcoordinates", "ycoordinates"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(whole, key))
    again = compute_surface(loaded, spec)  # finished with the same options: nothing to do
    assert again.computed_points == 0 and again.resumed_points == 0


def test_kill_9_then_rerun_computes_only_missing_points(mlp_run, capsys):
    args = ["analyze", str(mlp_run), "--slice", "2d", "--grid", "15", "--chunk-points", "4", "--batch-size", "30",
            "--save-every", "0"]
    partial = mlp_run / "analysis" / "00000018" / "killed.h5.partial"
    proc = subprocess.Popen([sys.executable, "-m", "landscape", *args, "--name", "killed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if partial.is_dir() and len(list(partial.glob("part-*.h5"))) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the surface finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    stored = len(list(partial.glob("part-*.h5")))  # one chunk per part with --save-every 0
    assert 3 <= stored < 57
    capsys.readouterr()
    assert main([*args, "--name", "killed", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed_points"] == 4 * stored and result["computed_points"] == 15 * 15 - 4 * stored
    assert main([*args, "--name", "unkilled", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_loss"] == result["train_loss"]


# --- CLI, plots, export --------------------------------------------------------------------------------------
def test_cli_surface_json_plots_and_vtp(mlp_run, tmp_path, capsys):
    assert main(["analyze", str(mlp_run), "--slice", "2d", "--grid", "6", "--range", "-0.5:0.5", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["surface"].endswith("surface-2d-filter.h5") and len(view["train_loss"]) == 6
    assert len(view["train_loss"][0]) == 6 and view["xcoordinates"][0] == -0.5
    assert main(["analyze", str(mlp_run), "--slice", "1d", "--grid", "5"]) == 0
    assert "5 points computed" in capsys.readouterr().out
    for kind in ("contour", "surface", "heatmap", "surface3d", "trajectory", "slice"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(mlp_run), "--kind", kind, "-o", str(out)]) == 0
        assert out.stat().st_size > 5000
    vtp = tmp_path / "s.vtp"
    assert main(["plot", str(mlp_run), "--format", "vtp", "--log", "-o", str(vtp)]) == 0
    piece = ET.parse(vtp).getroot().find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "36" and piece.get("NumberOfPolys") == "25"
    surface = SurfaceResult.load(view["surface"])
    z = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)[:, 2]
    np.testing.assert_allclose(z, np.log(surface.train_loss.ravel() + 0.1), rtol=1e-7)


@pytest.mark.parametrize("argv,message", [
    (["--slice", "2d", "--range", "1:0"], "finite A < B"),
    (["--slice", "2d", "--range", "a:b"], "--range must be A:B"),
    (["--slice", "1d", "--grid", "1"], "at least 2 points"),
    (["--slice", "1d", "--between", "no-such-thing"], "neither a run folder"),
    (["--slice", "2d", "--metrics", "valid"], "--metrics takes train and/or test"),
    (["--slice", "2d", "--directions", "pca", "--checkpoint", "0"], "at least 3 checkpoints"),
    (["--slice", "2d", "--chunk-points", "0"], "--chunk-points must be positive"),
    (["--slice", "2d", "--save-every", "-1"], "--save-every must be >= 0"),
])
def test_surface_mistakes_are_one_line_errors_and_touch_nothing(mlp_run, capsys, argv, message):
    before = tree_digest(mlp_run)
    assert main(["analyze", str(mlp_run), *argv]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err
    assert tree_digest(mlp_run) == before


def test_plot_mistakes(mlp_run, tmp_path, capsys):
    assert main(["plot", str(mlp_run), "--kind", "contour", "--surface", "nope"]) != 0
    assert "no surface 'nope'" in capsys.readouterr().err
    assert main(["plot", str(mlp_run), "--kind", "trajectory", "--checkpoint", "6"]) != 0
    assert "no 2-D surface for checkpoint 6" in capsys.readouterr().err
    assert main(["analyze", str(mlp_run), "--slice", "2d", "--grid", "3", "--name", "surface-mistakes"]) == 0
    capsys.readouterr()  # a 2-D surface of its own: the file-name check does not depend on other tests' surfaces
    assert main(["plot", str(mlp_run), "--format", "vtp", "-o", str(tmp_path / "x.txt")]) != 0
    assert "must end in .vtp" in capsys.readouterr().err


def test_unfinished_surface_with_other_options_is_refused(mlp_run, capsys):
    loaded = load_checkpoint_model(mlp_run)
    spec = SurfaceSpec(dims=1, directions="filter", xnum=9, name="clash")

    def stop(done, total, message):
        raise Interrupt

    with pytest.raises(Interrupt):
        compute_surface(loaded, spec, stop, plan=EvaluationPlan(points_per_chunk=2, save_every=0))
    assert main(["analyze", str(mlp_run), "--slice", "1d", "--grid", "11", "--name", "clash"]) != 0
    assert "with other options" in capsys.readouterr().err
    assert compute_surface(loaded, spec).resumed_points == 2


def test_two_process_surface_equals_one_process_and_resumes_across_world_sizes(mlp_run, capsys):
    """torchrun with 2 gloo processes: the grid is split across ranks, rank 0 writes; a surface started
    by one process and killed is finished by two."""
    loaded = load_checkpoint_model(mlp_run)
    spec = SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=9, name="two-ranks")

    def stop(done, total, message):
        if done >= 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        compute_surface(loaded, spec, stop, plan=EvaluationPlan(points_per_chunk=4, save_every=0))
    args = ["analyze", str(mlp_run), "--slice", "2d", "--grid", "9", "--range=-1:1", "--chunk-points", "4",
            "--save-every", "0"]
    out = two_processes([*args, "--name", "two-ranks", "--json"])
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)  # only rank 0 prints
    assert two["resumed_points"] == 20 and two["computed_points"] == 61
    assert main([*args, "--name", "one-rank", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert two["train_loss"] == one["train_loss"] and two["test_acc"] == one["test_acc"]
    refused = two_processes(["analyze", str(mlp_run), "--top-k", "1", "--backend", "pyhessian"])
    assert refused.returncode != 0 and "does not run under torchrun" in refused.stderr


def test_bf16_surface_is_close_and_reports_its_error(mlp_run):
    loaded = load_checkpoint_model(mlp_run)
    full = compute_surface(loaded, SurfaceSpec(dims=2, xrange=(-1, 1), xnum=5, name="fp32"))
    low = compute_surface(loaded, SurfaceSpec(dims=2, xrange=(-1, 1), xnum=5, name="bf16", bf16=True))
    err = low.info["bf16_max_relative_error"]
    assert 0 < err < 1e-2
    rel = np.abs(low.train_loss - full.train_loss) / full.train_loss
    assert 0 < rel.max() < 2e-2
    corners = [rel[0, 0], rel[-1, -1], rel[2, 2]]  # the points the check measures
    assert max(corners) == pytest.approx(err, rel=1e-3)
