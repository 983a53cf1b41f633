"""Curvature analyses under torchrun (2 gloo processes launched by the test): the data is split across
ranks and every product all-reduced, so eigenvalues and traces match one process."""

import json
import os
import subprocess
import sys

import pytest

from landscape.cli.main import main

SMALL = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--epochs", "3",
         "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q"]


def test_two_process_curvature_matches_one_process(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    args = ["analyze", str(run), "--top-k", "3", "--trace", "--batch-size", "64", "--json"]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29543", "-m", "landscape", *args],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)
    capsys.readouterr()
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert two["eigenvalues"] == pytest.approx(one["eigenvalues"], rel=1e-5)
    assert two["trace"]["estimate"] == pytest.approx(one["trace"]["estimate"], rel=1e-5)
    assert two["trace"]["probes"] == one["trace"]["probes"]


def _torchrun(args, port):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(port), "-m", "landscape", *args],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_two_process_training_follows_one_process_and_resumes_with_one(tmp_path, capsys):
    """DistributedDataParallel at equal global batch: the same metrics (to float rounding); a run started
    with two processes continues with one."""
    base = ["train", "--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--optimizer",
            "momentum", "--lr", "0.05", "--device", "cpu", "-q"]
    out = _torchrun([*base, "--epochs", "3", "--out", str(tmp_path / "two"), "--json"], 29545)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)
    assert main([*base, "--epochs", "6", "--out", str(tmp_path / "one"), "--json"]) == 0
    one = run_metrics(tmp_path / "one")
    capsys.readouterr()
    step3 = one["step"].index(two["step"])
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert two[key] == pytest.approx(one[key][step3], rel=1e-5)
    assert main([*base, "--epochs", "6", "--out", str(tmp_path / "two"), "--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["train_loss"] == pytest.approx(one["train_loss"][-1], rel=1e-4)
    refused = _torchrun(["train", "--optimizer", "curveball", "--samples", "100", "--epochs", "1", "--out",
                         str(tmp_path / "cb")], 29546)
    assert refused.returncode != 0 and "does not run under torchrun" in refused.stderr


def run_metrics(path):
    from landscape.runs import Run

    return Run.open(path).metrics


def test_two_process_sharpness_matches_one_process(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    args = ["analyze", str(run), "--sharpness", "keskar,sam,adaptive-worst,lambda-max,pac-bayes,fisher-rao", "--json"]
    out = _torchrun(args, 29547)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)["measures"]
    capsys.readouterr()
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)["measures"]
    for name, value in one.items():  # differences of two float32 losses: ~1e-7 absolute
        assert two[name] == pytest.approx(value, rel=1e-4, abs=1e-7), name


def test_two_process_study_splits_the_runs(tmp_path, capsys):
    argv = ["study", "--vary", "batch-size=20,150", "--vary", "lr=0.05,0.2", "--samples", "300", "--epochs", "2",
            "--optimizer", "sgd", "--set", "model.widths=[8]", "--device", "cpu", "--measures", "sam",
            "--measure-samples", "100", "-q", "--json"]
    out = _torchrun([*argv, "--out", str(tmp_path / "two")], 29548)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in two["rows"]] == [r["run"] for r in one["rows"]]
    for a, b in zip(two["rows"], one["rows"]):
        assert a["status"] == "finished" and a["train_loss"] == b["train_loss"] and a["sam"] == b["sam"]
    assert two["interpolation"] and two["correlations"]["sam"] == one["correlations"]["sam"]
