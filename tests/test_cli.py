import json
import shutil
import subprocess
import sys

import h5py
import pytest

from conftest import tree_digest
from landscape.cli.main import main

SMALL = ["--samples", "300", "--set", "model.widths=[16]", "--batch-size", "50", "--epochs", "2",
         "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    assert main(["train", *SMALL, "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture
def workdir(tmp_path, monkeypatch, trained):
    """A scratch cwd holding a copy of the trained run."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "bad.toml").write_text("[training\nepochs = ")
    (tmp_path / "garbage.h5").write_bytes(b"this is not hdf5" * 10)
    with h5py.File(tmp_path / "other.h5", "w") as fh:
        fh.attrs["format"] = "something.else"
    (tmp_path / "wrong_model.py").write_text(
        "import torch\ndef make(input_shape, num_outputs):\n    return torch.nn.Linear(7, num_outputs)\n")
    return tmp_path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_schema(path):
    with h5py.File(path, "a") as fh:
        fh.attrs["schema"] = 99


BAD_INPUTS = [
    ("unknown data set", ["train", "--data", "imagenet-42", "--out", "new"], None),
    ("unknown model", ["train", "--model", "gpt5", "--out", "new"], None),
    ("unknown optimizer", ["train", "--optimizer", "sgdd", "--out", "new"], None),
    ("negative lr", ["train", "--lr", "-0.1", "--out", "new"], None),
    ("zero batch size", ["train", "--batch-size", "0", "--out", "new"], None),
    ("epochs and steps", ["train", "--epochs", "2", "--steps", "5", "--out", "new"], None),
    ("bad --set syntax", ["train", "--set", "widths", "--out", "new"], None),
    ("unknown --set section", ["train", "--set", "net.depth=3", "--out", "new"], None),
    ("unknown model option", ["train", "--set", "model.depth=3", "--out", "new"], None),
    ("unknown training option", ["train", "--set", "training.warp=9", "--out", "new"], None),
    ("unknown schedule", ["train", "--schedule", "linear", "--out", "new"], None),
    ("non-number option", ["train", "--set", "optimizer.momentum=fast", "--optimizer", "momentum",
                           "--out", "new"], None),
    ("missing config", ["train", "--config", "nope.toml", "--out", "new"], None),
    ("invalid TOML", ["train", "--config", "bad.toml", "--out", "new"], None),
    ("too many samples", ["train", "--samples", "100000", "--out", "new"], None),
    ("shape mismatch (conv1d on images)", ["train", "--data", "digits", "--model", "conv1d", "--out", "new"], None),
    ("shape mismatch (custom model)", ["train", "--model", "wrong_model.py:make", "--out", "new"], None),
    ("missing custom file", ["train", "--model", "nowhere.py:make", "--out", "new"], None),
    ("loss for the wrong task", ["train", "--data", "chebyshev", "--set", "training.loss=cross_entropy",
                                 "--out", "new"], None),
    ("unavailable device", ["train", "--device", "cuda:3", "--out", "new"], None),
    ("run exists", ["train", *SMALL, "--out", "run"], None),
    ("resume a non-run", ["train", "--resume", "--out", "new"], None),
    ("resume with a changed lr", ["train", "--resume", "--lr", "0.5", "--out", "run"], None),
    ("info on a missing folder", ["info", "missing"], None),
    ("info on garbage run.h5", ["info", "run"], lambda w: shutil.copy(w / "garbage.h5", w / "run" / "run.h5")),
    ("info on truncated run.h5", ["info", "run"], lambda w: _truncate(w / "run" / "run.h5")),
    ("info on a future schema", ["info", "run"], lambda w: _set_schema(w / "run" / "run.h5")),
    ("info on a foreign HDF5 file", ["info", "run"], lambda w: shutil.copy(w / "other.h5", w / "run" / "run.h5")),
    ("analyze a missing step", ["analyze", "run", "--checkpoint", "12345"], None),
    ("analyze a bad checkpoint ref", ["analyze", "run", "--checkpoint", "best"], None),
    ("analyze a truncated checkpoint", ["analyze", "run"],
     lambda w: _truncate(sorted((w / "run" / "checkpoints").glob("*.h5"))[-1])),
    ("analyze bad --samples", ["analyze", "run", "--samples", "-5"], None),
    ("plot to a bad extension", ["plot", "run", "-o", "figure.bmp"], None),
    ("unknown CLI option", ["train", "--learning-rate", "0.1"], None),
    ("unknown plot kind", ["plot", "run", "--kind", "hologram"], None),
    ("study with a bad key", ["study", "--vary", "colour=1,2", "--out", "st"], None),
    ("study with a bad shard", ["study", "--vary", "seed=1,2", "--shard", "3/2", "--out", "st"], None),
    ("missing study spec", ["study", "nospec.toml", "--out", "st"], None),
]


@pytest.mark.parametrize("name,argv,damage", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_user_mistakes_give_one_line_errors_and_touch_nothing(name, argv, damage, workdir, capsys):
    if damage:
        damage(workdir)
    before = tree_digest(workdir)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err and out == ""
    assert tree_digest(workdir) == before, "a failed command must leave files untouched"


def test_diverging_lr_is_an_error_and_keeps_good_checkpoints(tmp_path, capsys):
    code = main(["train", *SMALL, "--optimizer", "sgd", "--lr", "1e6", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("Error: training diverged at step ") and "(lr=1e+06)" in err[0]
    assert main(["info", str(tmp_path / "d"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "diverged" and info["checkpoints"][0] == 0


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "landscape", "info", str(tmp_path / "nothing")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("Error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_happy_path_json_outputs(trained, tmp_path, capsys):
    assert main(["info", str(trained), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "finished" and info["parameters"] == 40 * 16 + 16 + 16 * 10 + 10
    assert main(["analyze", str(trained), "--checkpoint", "all", "--samples", "100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [c["checkpoint"] for c in res["checkpoints"]] == info["checkpoints"]
    assert res["checkpoints"][-1]["evaluation"]["train_samples"] == 100
    assert (trained / "analysis" / f"{info['checkpoints'][-1]:08d}" / "evaluation.h5").exists()
    assert main(["analyze", str(trained), "--json"]) == 0
    last = json.loads(capsys.readouterr().out)["evaluation"]
    assert last["train_acc"] == pytest.approx(info["last_metrics"]["train_acc"])
    assert last["test_loss"] == pytest.approx(info["last_metrics"]["test_loss"], rel=1e-6)
    for ext in ("png", "pdf", "svg"):
        assert main(["plot", str(trained), "-o", str(tmp_path / f"f.{ext}")]) == 0
        assert (tmp_path / f"f.{ext}").stat().st_size > 1000
    capsys.readouterr()
    assert main(["train", *SMALL, "--out", str(tmp_path / "j"), "--json"]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["step"] == 12 and 0 <= final["test_acc"] <= 1


def test_config_file_and_set_precedence(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text('[model]\nname = "mlp"\nwidths = [8]\n[optimizer]\nname = "adam"\nlr = 0.01\n'
                                       '[training]\nepochs = 1\nbatch_size = 100\n[data]\nsamples = 200\n')
    out = tmp_path / "r"
    assert main(["train", "--config", str(tmp_path / "exp.toml"), "--lr", "0.02", "--set", "model.widths=[4,4]",
                 "--device", "cpu", "-q", "--out", str(out)]) == 0
    assert main(["info", str(out), "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out.split("\n", 1)[1])["config"]
    assert cfg["optimizer"] == {"name": "adam", "lr": 0.02, "weight_decay": 0.0}
    assert cfg["model"]["widths"] == [4, 4] and cfg["training"]["batch_size"] == 100


def test_study_trains_grid_skips_finished_and_resumes(tmp_path, capsys):
    args = ["study", "--vary", "batch-size=25,100", "--vary", "lr=0.05", "--optimizer", "momentum", "--samples",
            "200", "--set", "model.widths=[8]", "--epochs", "2", "--device", "cpu", "-q", "--out",
            str(tmp_path / "st"), "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["training.batch_size"] for r in rows] == [25, 100] and all(r["status"] == "finished" for r in rows)
    assert all(0 <= r["test_acc"] <= 1 for r in rows)
    run_file = tmp_path / "st" / "runs" / "batch_size=25,lr=0.05" / "run.h5"
    before = run_file.read_bytes()
    assert main(args) == 0
    assert run_file.read_bytes() == before, "finished runs are skipped"
    with h5py.File(tmp_path / "st" / "study.h5", "r") as fh:
        assert fh.attrs["format"] == "landscape.study" and fh["table/test_acc"].shape == (2,)
