import json

import h5py
import numpy as np
import pytest
import torch

from landscape.analysis import load_checkpoint_model
from landscape.cli.main import main
from landscape.objective import Objective
from landscape.operators import HessianOperator

SMALL = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--epochs", "3",
         "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curv") / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def exact(run):
    loaded = load_checkpoint_model(run, "last")
    obj = Objective(loaded.model, loaded.dataset.x_train, loaded.dataset.y_train, dtype=torch.float64)
    dense = HessianOperator(obj).to_dense()
    return {"evals": torch.linalg.eigvalsh(dense).numpy(), "trace": float(torch.trace(dense))}


def test_analyze_json_matches_exact_and_is_stored(run, exact, capsys):
    assert main(["analyze", str(run), "--top-k", "3", "--bottom-k", "1", "--trace", "--density",
                 "--precision", "float64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert np.allclose(out["eigenvalues"], exact["evals"][::-1][:3], rtol=1e-6)
    assert out["eigenvalues"] == sorted(out["eigenvalues"], reverse=True)
    assert abs(out["smallest_eigenvalues"][0] - exact["evals"][0]) <= 1e-4 * exact["evals"].max()
    assert abs(out["trace"]["estimate"] - exact["trace"]) <= 4 * out["trace"]["stderr"]
    assert len(out["density"]["grid"]) == len(out["density"]["values"]) == 1000
    assert out["summary"]["lambda_max"] == out["eigenvalues"][0]
    assert "eigenvectors" not in out and "nodes" not in out["density"]
    # a second invocation adds to the stored result instead of replacing it
    assert main(["analyze", str(run), "--frobenius", "--json"]) == 0
    capsys.readouterr()
    stored = sorted((run / "analysis").glob("*/hessian.h5"))[-1]
    with h5py.File(stored, "r") as fh:
        assert {"eigenvalues", "trace", "density", "frobenius_squared", "eigenvectors"} <= set(fh["result"])
        assert fh["result/eigenvectors"].shape == (3, 40 * 12 + 12 + 12 * 10 + 10)
    for kind in ("spectrum", "density"):
        assert main(["plot", str(run), "--kind", kind, "-o", str(run.parent / f"{kind}.svg")]) == 0
        assert (run.parent / f"{kind}.svg").stat().st_size > 1000


def test_per_layer_ggn_fisher_and_all_checkpoints(run, capsys):
    assert main(["analyze", str(run), "--curvature", "ggn", "--top-k", "2", "--per-layer", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["per_layer"]) == {"1", "3"} and all(v >= -1e-6 for v in out["eigenvalues"])
    assert main(["analyze", str(run), "--curvature", "fisher", "--fisher-type", "empirical", "--trace", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"]["estimate"] > 0
    assert main(["analyze", str(run), "--checkpoint", "all", "--top-k", "1", "--samples", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["checkpoints"]) >= 3 and all(c["samples"] == 100 for c in out["checkpoints"])


def test_pyhessian_backend_reproduces_its_numbers(run, exact, capsys):
    assert main(["analyze", str(run), "--top-k", "2", "--trace", "--backend", "pyhessian", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "pyhessian"
    # PyHessian's power iteration stops at a 1e-3 relative change: close to, not equal to, the exact values
    assert np.allclose(out["eigenvalues"], exact["evals"][::-1][:2], rtol=2e-2)
    assert out["trace"]["probes"] >= 2


@pytest.mark.parametrize("argv,message", [
    (["--density", "--backend", "pyhessian"], "torch.eig"),
    (["--bottom-k", "1", "--backend", "pyhessian"], "only the Hessian"),
    (["--top-k", "-2"], "must be >= 0"),
    (["--top-k", "1", "--batch-size", "0"], "must be positive"),
    (["--trace", "--trace-rtol", "0"], "must be positive"),
])
def test_analyze_mistakes(run, capsys, argv, message):
    assert main(["analyze", str(run), *argv]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]


def test_plot_without_analysis_says_what_to_run(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["plot", str(out), "--kind", "density"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: no hessian analysis") and "--density" in err
