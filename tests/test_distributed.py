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
