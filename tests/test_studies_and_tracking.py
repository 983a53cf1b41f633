"""Curvature tracking during training, sharpness in analyze and in studies (Kendall correlations)."""

import json

import pytest
import torch
from conftest import tree_digest

from landscape.analysis import load_checkpoint_model
from landscape.analysis.study import kendall_correlations
from landscape.cli.main import main
from landscape.linalg.operators import HessianOperator
from landscape.objective import Objective
from landscape.plotting import stability_factor
from landscape.runs import Run

SMALL = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "300", "--steps", "30",
         "--optimizer", "sgd", "--lr", "0.2", "--device", "cpu", "-q"]


def test_tracked_lambda_max_is_the_top_hessian_eigenvalue(tmp_path, capsys):
    out = tmp_path / "gd"
    assert main(["train", *SMALL, "--track-curvature-every", "10", "--track-trace", "--track-samples", "300",
                 "--out", str(out)]) == 0
    run = Run.open(out)
    m = run.metrics
    tracked = [i for i, v in enumerate(m["lambda_max"]) if v == v]
    assert [m["step"][i] for i in tracked] == [0, 10, 20, 30]
    loaded = load_checkpoint_model(out)
    dense = HessianOperator(Objective(loaded.model, loaded.dataset.x_train, loaded.dataset.y_train,
                                      dtype=torch.float64)).to_dense()
    evals = torch.linalg.eigvalsh(dense)
    assert m["lambda_max"][-1] == pytest.approx(float(evals[-1]), rel=1e-3)
    assert m["trace"][-1] == pytest.approx(float(evals.sum()), rel=0.1)
    figure = tmp_path / "s.png"
    assert main(["plot", str(out), "--kind", "sharpness", "-o", str(figure)]) == 0
    assert figure.stat().st_size > 5000
    assert main(["plot", str(out), "--kind", "sharpness", "-o", str(figure)]) == 0
    capsys.readouterr()
    plain = tmp_path / "plain"
    assert main(["train", *SMALL, "--out", str(plain)]) == 0
    assert main(["plot", str(plain), "--kind", "sharpness"]) == 1
    assert "--track-curvature-every" in capsys.readouterr().err


def test_stability_thresholds():
    assert stability_factor({"name": "sgd", "lr": 0.1})[0] == 2.0
    assert stability_factor({"name": "momentum", "momentum": 0.9})[0] == pytest.approx(3.8)
    assert stability_factor({"name": "nesterov", "momentum": 0.5})[0] == pytest.approx(1.5)
    assert stability_factor({"name": "adam"}) is None


def test_kendall_overall_and_granulated():
    rows = [{"a": 1, "b": 1, "m": 1.0, "generalization_gap": 1.0}, {"a": 2, "b": 1, "m": 2.0, "generalization_gap": 2.0},
            {"a": 1, "b": 2, "m": 3.0, "generalization_gap": 0.0}, {"a": 2, "b": 2, "m": 4.0, "generalization_gap": 3.0}]
    out = kendall_correlations(rows, ["m"], ["a", "b"])["m"]
    assert out["overall"] == pytest.approx(1 / 3)      # 4 concordant, 2 discordant pairs
    assert out["granulated"] == {"a": 1.0, "b": 0.0}  # varying a: both pairs concordant; b: one each way
    assert out["psi"] == pytest.approx(0.5)


def test_analyze_sharpness_json_and_mistakes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--sharpness", "sam,lambda-max,fisher-rao", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert set(view["measures"]) == {"sam", "lambda-max", "fisher-rao"} and view["measures"]["lambda-max"] > 0
    assert (out / "analysis" / "00000030" / "sharpness.h5").exists()
    before = tree_digest(out)
    assert main(["analyze", str(out), "--sharpness", "flatness"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown sharpness measure 'flatness'" in err[0]
    assert main(["analyze", str(out), "--sharpness", "sam", "--sharpness-rho", "0"]) == 1
    assert tree_digest(out) == before


def test_study_with_measures_correlations_interpolation_and_plot(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["study", "--vary", "batch-size=20,150", "--vary", "lr=0.05,0.2", "--samples", "300", "--epochs", "4",
            "--optimizer", "sgd", "--set", "model.widths=[12]", "--device", "cpu", "--measures", "sam,lambda-max",
            "--measure-samples", "100", "--out", str(out), "-q", "--json"]
    assert main(argv) == 0
    view = json.loads(capsys.readouterr().out)
    assert len(view["rows"]) == 4 and all("sam" in r and "lambda-max" in r for r in view["rows"])
    assert set(view["correlations"]) == {"sam", "lambda-max"}
    assert view["interpolation"].endswith("surface-1d-batch-20-to-150.h5")
    stored = {r["run"]: r["lambda-max"] for r in view["rows"]}
    assert main(argv) == 0  # rerun: measures come from the stored sharpness results
    again = json.loads(capsys.readouterr().out)
    assert {r["run"]: r["lambda-max"] for r in again["rows"]} == stored
    figure = tmp_path / "study.png"
    assert main(["plot", str(out), "-o", str(figure)]) == 0
    assert figure.stat().st_size > 10000


def test_study_spec_file_with_measures(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[data]\nname = "mnist1d"\nsamples = 200\n[model]\nname = "mlp"\nwidths = [8]\n'
                    '[optimizer]\nname = "sgd"\nlr = 0.1\n[training]\nepochs = 2\ndevice = "cpu"\n'
                    '[study]\nvary = { "training.batch_size" = [50, 100] }\nmeasures = ["sam"]\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "s"), "--measure-samples", "100", "-q", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert [r["training.batch_size"] for r in view["rows"]] == [50, 100] and all(r["sam"] >= 0 for r in view["rows"])
    spec.write_text(spec.read_text().replace('measures = ["sam"]', "measures = 3"))
    assert main(["study", str(spec), "--out", str(tmp_path / "t"), "-q"]) == 1
    assert "measures must be a list" in capsys.readouterr().err
