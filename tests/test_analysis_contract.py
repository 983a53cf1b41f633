"""The analysis contract: specs with enums and field-named errors, typed results that save and load,
the CLI's one checkpoint loop (kinds from flags, stray flags refused), study specs read by the library."""

import json

import numpy as np
import pytest
import torch
from conftest import tree_digest

from landscape.analysis import (ANALYSES, ConnectResult, ConnectSpec, CurvatureResult, CurvatureSpec, EvaluationResult,
                                EvaluationSpec, SharpnessResult, SharpnessSpec, SpecError, SurfaceResult, SurfaceSpec,
                                load_checkpoint_model, run_analysis)
from landscape.analysis.curvature import Curvature, TraceEstimate
from landscape.analysis.path_result import Curve
from landscape.analysis.study_spec import StudySpec
from landscape.cli.main import main
from landscape.errors import LandscapeError

SMALL = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--epochs", "2",
         "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    return out


def test_three_lines_per_kind_typed_results_that_save_and_load(run_dir):
    loaded = load_checkpoint_model(run_dir, "last", samples=200, seed=3)
    for spec, kind in ((EvaluationSpec(), EvaluationResult), (CurvatureSpec(top_k=2, trace=True), CurvatureResult),
                       (SharpnessSpec(measures=("sam", "lambda-max")), SharpnessResult)):
        result = run_analysis(loaded, spec)
        assert type(result) is kind and result.checkpoint == loaded.step
        path = result.save(loaded.run)
        assert path.parent.name == f"{loaded.step:08d}"
        back = kind.load(run_dir, "last")
        assert type(back) is kind and back.attrs["samples"] == 200 and back.attrs["seed"] == 3
        tree, stored = result.to_tree(), back.to_tree()
        for key in ("seconds", "product_calibration"):
            tree.pop(key, None), stored.pop(key, None)
        assert json.dumps(back.to_json(), sort_keys=True, default=str) and set(tree) == set(stored)
    curv = CurvatureResult.load(run_dir)
    assert isinstance(curv.trace, TraceEstimate) and curv.curvature is Curvature.HESSIAN
    assert curv.eigenvalues == result_eigs(loaded)  # the stored numbers are the computed ones
    assert isinstance(curv.eigenvectors, (torch.Tensor, np.ndarray)) and "eigenvectors" not in curv.to_json()


def result_eigs(loaded):
    """The top-2 Hessian eigenvalues again (same seed, same data): runs are deterministic."""
    return run_analysis(loaded, CurvatureSpec(top_k=2)).eigenvalues


def test_curvature_results_merge_across_invocations(run_dir):
    loaded = load_checkpoint_model(run_dir, "first")
    run_analysis(loaded, CurvatureSpec(top_k=1)).save(loaded.run)
    run_analysis(loaded, CurvatureSpec(trace=True)).save(loaded.run)
    both = CurvatureResult.load(run_dir, "first")
    assert both.eigenvalues and both.trace is not None  # the second invocation kept the first's eigenvalue


def test_exact_values_through_the_contract(tmp_path):
    """The curvature kind returns what the operator gives: lambda_max against a dense float64 eigh."""
    assert main(["train", *SMALL[:-1], "--set", "model.widths=[4]", "--samples", "60", "--out",
                 str(tmp_path / "r")]) == 0
    loaded = load_checkpoint_model(tmp_path / "r", samples=60)
    loaded.model.double()
    result = run_analysis(loaded, CurvatureSpec(top_k=1, bottom_k=1, precision="float64", tol=1e-10))
    eigs = torch.linalg.eigvalsh(dense_hessian(loaded))
    assert result.eigenvalues[0] == pytest.approx(float(eigs[-1]), rel=1e-8)
    assert result.smallest_eigenvalues[0] == pytest.approx(float(eigs[0]), rel=1e-6, abs=1e-9)
    assert result.summary_values.lambda_max == result.eigenvalues[0]


def dense_hessian(loaded) -> torch.Tensor:
    """The training-loss Hessian in float64 by torch.func.hessian, independent of landscape's operators."""
    model, ds = loaded.model, loaded.dataset
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def loss(theta):
        parts, i = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = theta[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        out = torch.func.functional_call(model, parts, (ds.x_train.double(),))
        return torch.nn.functional.cross_entropy(out, ds.y_train)

    return torch.func.hessian(loss)(flat)


def test_specs_take_enums_or_strings_and_name_fields_in_errors():
    assert CurvatureSpec(curvature="ggn").curvature is Curvature.GGN
    assert CurvatureSpec(curvature=Curvature.FISHER).curvature == "fisher"
    with pytest.raises(SpecError, match=r"^CurvatureSpec.curvature must be one of hessian, ggn, fisher, got 'hesian'$"):
        CurvatureSpec(curvature="hesian")
    with pytest.raises(SpecError, match=r"^CurvatureSpec.top_k must be >= 0, got -2$"):
        CurvatureSpec(top_k=-2).validate()
    with pytest.raises(SpecError, match="set top_k, bottom_k, trace"):
        CurvatureSpec().validate()  # asks for nothing
    with pytest.raises(SpecError, match="SharpnessSpec.measures names the unknown sharpness measure 'sharp'"):
        SharpnessSpec(measures=("sharp",))
    with pytest.raises(SpecError, match=r"SharpnessSpec.rho must be positive"):
        SharpnessSpec(measures=("sam",), rho=0).validate()
    err = SpecError("CurvatureSpec", "backend", "pyhessian computes only {top_k} and {trace}")
    assert str(err) == "CurvatureSpec.backend pyhessian computes only top_k and trace"
    assert err.render(lambda f: "--" + f.replace("_", "-")) == "--backend pyhessian computes only --top-k and --trace"
    assert set(ANALYSES) == {"evaluation", "curvature", "sharpness", "surface", "connect"}
    with pytest.raises(LandscapeError, match="not an analysis spec"):
        run_analysis(None, object())


@pytest.mark.parametrize("args, message", [
    (["--top-k", "0"], "--top-k is 0 and nothing else is asked for"),
    (["--top-k", "-1"], "--top-k must be >= 0, got -1"),
    (["--slice", "2d", "--top-k", "5"], "--top-k belongs to the curvature analysis, not to this surface analysis"),
    (["--sharpness", "sam", "--per-layer"], "--per-layer belongs to the curvature analysis"),
    (["--grid", "11"], "--grid belongs to the surface analysis, not to this evaluation analysis"),
    (["--slice", "1d", "--sharpness", "sam"], "--slice and --sharpness are two analyses"),
    (["--sharpness", "sam", "--sharpness-rho", "0"], "--sharpness-rho must be positive"),
    (["--curvature", "ggn", "--compile", "--top-k", "1"], "--compile applies to Hessian-vector products "
                                                         "(--curvature hessian)"),
    (["--top-k", "1", "--frobenius", "--backend", "pyhessian"], "--backend pyhessian computes only the Hessian's "
                                                                "--top-k and --trace"),
])
def test_cli_refuses_flags_of_other_kinds_and_maps_fields_to_flags(run_dir, capsys, args, message):
    before = tree_digest(run_dir)
    assert main(["analyze", str(run_dir), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err
    assert tree_digest(run_dir) == before


def test_cli_json_is_the_results_dict(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--top-k", "1", "--samples", "100", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    stored = json.loads(json.dumps(CurvatureResult.load(run_dir).to_json()))  # merged with earlier quantities
    assert view.pop("run") == str(run_dir) and view["eigenvalues"] and view["loss"] > 0
    assert {key: stored[key] for key in view} == view


def test_study_spec_read_by_the_library(tmp_path):
    path = tmp_path / "bs.toml"
    path.write_text('[training]\nseed = 4\n[study]\nvary = { "batch-size" = [32, 64], "optimizer.lr" = [0.1] }\n'
                    'measures = ["sam"]\n')
    spec = StudySpec.from_toml(path)
    assert spec.vary == {"training.batch_size": [32, 64], "optimizer.lr": [0.1]}
    assert spec.measures.measures == ("sam",) and spec.measures.seed == 4 and spec.out.name == "bs"
    assert spec.base == {"training": {"seed": 4}}
    path.write_text("[study\n")
    with pytest.raises(LandscapeError, match="is not valid TOML"):
        StudySpec.from_toml(path)
    with pytest.raises(SpecError, match="StudySpec.shard must be i/n"):
        StudySpec(vary={"lr": [0.1]}, shard=(3, 2)).validate()
    with pytest.raises(SpecError, match="StudySpec.vary is empty"):
        StudySpec().validate()


def test_curvature_plots_draw_the_stored_result(run_dir, tmp_path, capsys):
    assert main(["analyze", str(run_dir), "--top-k", "3", "--bottom-k", "1", "--density", "--density-runs", "2",
                 "--density-steps", "10", "--samples", "100"]) == 0
    for kind in ("spectrum", "density"):
        figure = tmp_path / f"{kind}.png"
        assert main(["plot", str(run_dir), "--kind", kind, "-o", str(figure)]) == 0
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["plot", str(run_dir), "--kind", "density", "--curvature", "ggn", "-o", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: no ggn analysis for checkpoint") and "--density --curvature ggn" in err


def test_surface_and_connect_through_the_contract(run_dir, tmp_path):
    other = tmp_path / "other"
    assert main(["train", *SMALL, "--seed", "1", "--out", str(other)]) == 0
    loaded = load_checkpoint_model(run_dir, samples=100)
    surf = run_analysis(loaded, SurfaceSpec(dims=2, xnum=3, ynum=4, name="contract"))
    assert isinstance(surf, SurfaceResult) and surf.train_loss.shape == (3, 4) and surf.computed_points == 12
    back = SurfaceResult.load(surf.path)
    assert np.array_equal(back.train_loss, surf.train_loss) and back.options == surf.options
    assert surf.save(loaded.run) == surf.path and set(surf.to_json()) >= {"xcoordinates", "train_loss", "surface"}
    again = run_analysis(loaded, SurfaceSpec(dims=2, xnum=3, ynum=4, name="contract"))
    assert again.computed_points == 0 and np.array_equal(again.train_loss, surf.train_loss)
    path = run_analysis(loaded, ConnectSpec(other=str(other), points=5, ensemble_points=0))
    assert isinstance(path, ConnectResult) and path.curve is Curve.LINEAR and path.fitted is None
    stored = ConnectResult.load(run_dir, "last", path.result_name)
    assert np.array_equal(stored.linear.train_loss, path.linear.train_loss)
    assert stored.linear.barrier == path.linear.barrier and stored.distance == path.distance
    assert path.to_json()["barrier"] == path.linear.barrier["train_loss"]["barrier"]
    with pytest.raises(SpecError, match=r"^ConnectSpec.curve must be one of linear, bezier, polychain, autoneb"):
        ConnectSpec(other="x", curve="spline")
    with pytest.raises(SpecError, match=r"^SurfaceSpec.xnum needs at least 2 points"):
        SurfaceSpec(xnum=1).validate()
