"""Curvature analyses under torchrun (2 gloo processes launched by the test): the data is split across
ranks and every product all-reduced, so eigenvalues and traces match one process."""

import json
import os
import subprocess
import sys

import pytest

from landscape.cli.main import main

from processes import free_port, two_processes

SMALL = ["--samples", "300", "--set", "model.widths=[12]", "--batch-size", "50", "--epochs", "3",
         "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q"]


def test_two_process_curvature_matches_one_process(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    args = ["analyze", str(run), "--top-k", "3", "--trace", "--batch-size", "64", "--json"]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(free_port()), "-m", "landscape", *args],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)
    capsys.readouterr()
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert two["eigenvalues"] == pytest.approx(one["eigenvalues"], rel=1e-5)
    assert two["trace"]["estimate"] == pytest.approx(one["trace"]["estimate"], rel=1e-5)
    assert two["trace"]["probes"] == one["trace"]["probes"]


def _torchrun(args, port=None):
    """Two ranks started as torchrun starts them (tests/processes.py); ``port`` is chosen free."""
    return two_processes(args)


def test_two_process_training_follows_one_process_and_resumes_with_one(tmp_path, capsys):
    """DistributedDataParallel at equal global batch: the same metrics (to float rounding); a run started
    with two processes continues with two, then with one."""
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
    out = _torchrun([*base, "--epochs", "5", "--out", str(tmp_path / "two"), "--resume", "--json"], 29544)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = json.loads(out.stdout)  # two processes resumed by two
    assert resumed["train_loss"] == pytest.approx(one["train_loss"][one["step"].index(resumed["step"])], rel=1e-5)
    assert main([*base, "--epochs", "6", "--out", str(tmp_path / "two"), "--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["train_loss"] == pytest.approx(one["train_loss"][-1], rel=1e-4)
    refused = _torchrun(["train", "--optimizer", "curveball", "--samples", "100", "--epochs", "1", "--out",
                         str(tmp_path / "cb")], 29546)
    assert refused.returncode != 0 and "does not run under torchrun" in refused.stderr
    assert not (tmp_path / "cb").exists()
    refused = _torchrun([*base, "--set", "model.batchnorm=true", "--sync-bn", "--epochs", "1", "--out",
                         str(tmp_path / "sync")], 29546)
    assert refused.returncode != 0 and "--sync-bn needs GPUs" in refused.stderr
    assert not (tmp_path / "sync").exists()


def run_metrics(path):
    from landscape.runs import Run

    return Run.open(path).metrics


def test_two_process_sharpness_matches_one_process(tmp_path, capsys):
    """The batches do not depend on the number of processes (each rank takes whole batches) and their
    losses and gradients are combined in float64, so even the inner maximisations (Keskar's L-BFGS-B, SAM's
    ascent) see the numbers one process sees and stop at the same point: agreement to float64 rounding of
    the sums (measured: bit-identical), not to a tolerance tuned until it passes."""
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    args = ["analyze", str(run), "--sharpness", "keskar,sam,adaptive-worst,lambda-max,pac-bayes,fisher-rao",
            "--batch-size", "64", "--json"]  # 240 samples: 4 batches, 2 per process
    out = _torchrun(args, 29547)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads(out.stdout)["measures"]
    capsys.readouterr()
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)["measures"]
    for name, value in one.items():  # lambda-max: float32 products whose method each run picks by timing
        assert two[name] == pytest.approx(value, rel=1e-6 if name == "lambda-max" else 1e-12, abs=1e-15), name


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


def test_two_process_connection_and_evaluation_match_one_process(tmp_path, capsys):
    """Path points, the bend's data-parallel training, AutoNEB's pivots and the plane under torchrun give
    the single-process result; the resumable state is written by rank 0 and removed with the result."""
    runs = [tmp_path / f"s{seed}" for seed in (0, 1)]
    for seed, run in enumerate(runs):
        assert main(["train", *SMALL, "--seed", str(seed), "--out", str(run)]) == 0
    capsys.readouterr()
    jobs = {"bezier": ["--curve", "bezier", "--curve-epochs", "4", "--curve-lr", "0.01", "--curve-batch-size", "64",
                       "--plane-grid", "4"],
            "autoneb": ["--curve", "autoneb", "--neb-cycles", "2", "--neb-steps", "5"]}
    for port, (kind, extra) in zip((29547, 29548), jobs.items()):
        args = ["analyze", str(runs[0]), "--connect", str(runs[1]), "--points", "9", *extra, "--json"]
        out = _torchrun([*args, "--name", f"two-{kind}"], port)
        assert out.returncode == 0, out.stderr[-2000:]
        two = json.loads(out.stdout)
        assert main([*args, "--name", f"one-{kind}"]) == 0
        one = json.loads(capsys.readouterr().out)
        for key in ("train_loss", "test_loss", "test_acc"):
            assert two[key] == pytest.approx(one[key], rel=1e-5), key
            assert two["linear"][key] == pytest.approx(one["linear"][key], rel=1e-5), key
        assert two["ensemble"] == pytest.approx(one["ensemble"], rel=1e-6)
        if kind == "bezier":
            assert two["fitted"]["training_loss"] == pytest.approx(one["fitted"]["training_loss"], rel=1e-5)
            assert two["plane"]["bend"] == pytest.approx(one["plane"]["bend"], rel=1e-5)
        else:  # every pivot computed as by one process; only the segment evaluation is split
            assert two["fitted"]["pivots"] == one["fitted"]["pivots"]
            assert two["fitted"]["length"] == pytest.approx(one["fitted"]["length"], rel=1e-6)
    names = sorted(p.name for p in (runs[0] / "analysis").rglob("*") if p.is_file())
    assert not [n for n in names if n.endswith((".training.h5", ".autoneb.h5", ".tmp"))], names
    args = ["analyze", str(runs[0]), "--json"]
    out = _torchrun(args, 29549)
    assert out.returncode == 0, out.stderr[-2000:]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert json.loads(out.stdout)["evaluation"] == pytest.approx(one["evaluation"], rel=1e-5, abs=1e-6)
