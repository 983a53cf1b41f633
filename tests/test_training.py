import copy
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import pytest
import torch

from landscape.data import load_dataset
from landscape.errors import LandscapeError, TrainingDiverged
from landscape.optim import train
from landscape.runs import Run, read_checkpoint


def final_params(run_dir):
    run = Run.open(run_dir)
    return read_checkpoint(run.checkpoint_path(run.checkpoint_steps()[-1])).params


def test_train_writes_a_complete_run(tmp_path, small_config):
    result = train(small_config, tmp_path / "r")
    run = Run.open(tmp_path / "r")
    assert run.status == "finished" and run.total_steps == 36
    assert run.checkpoint_steps() == [0, 6, 12, 18, 24, 30, 36]
    assert run.metrics["step"] == [0, 6, 12, 18, 24, 30, 36]
    assert run.metrics["train_loss"][-1] < run.metrics["train_loss"][0]
    assert result.final["train_acc"] > 0.3
    # readable with plain h5py, config as JSON
    with h5py.File(tmp_path / "r" / "run.h5", "r") as fh:
        assert fh.attrs["format"] == "landscape.run" and "train_loss" in fh["metrics"]
    with h5py.File(tmp_path / "r" / "checkpoints" / "00000036.h5", "r") as fh:
        assert fh["params/1.weight"].shape == (32, 40)
    # resolved config is stored: model defaults, lr and loss are explicit
    assert run.config["training"]["loss"] == "cross_entropy" and run.config["optimizer"]["lr"] == 0.05


def test_resume_in_process_is_bitwise_identical(tmp_path, small_config):
    train(small_config, tmp_path / "full")
    short = copy.deepcopy(small_config)
    short["training"]["epochs"] = 1
    train(short, tmp_path / "part")
    train({"training": {"epochs": 3}}, tmp_path / "part", resume=True)
    a, b = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert Run.open(tmp_path / "part").metrics["step"] == Run.open(tmp_path / "full").metrics["step"]


def test_dropout_and_batchnorm_resume_exactly(tmp_path):
    cfg = {"data": {"name": "digits", "samples": 300}, "model": {"name": "mlp", "widths": [16], "dropout": 0.3,
                                                                   "batchnorm": True},
           "optimizer": {"name": "adam", "lr": 0.01}, "training": {"steps": 20, "batch_size": 32,
                                                                    "checkpoint_every": 7, "device": "cpu"}}
    train(cfg, tmp_path / "full")
    part = copy.deepcopy(cfg)
    part["training"]["steps"] = 7
    train(part, tmp_path / "part")
    train({"training": {"steps": 20}}, tmp_path / "part", resume=True)
    a = read_checkpoint(Run.open(tmp_path / "full").checkpoint_path(20))
    b = read_checkpoint(Run.open(tmp_path / "part").checkpoint_path(20))
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert all(torch.equal(a.buffers[k], b.buffers[k]) for k in a.buffers)


def test_lbfgs_weight_decay_and_closure(tmp_path):
    cfg = {"data": {"name": "quadratic", "dim": 5, "condition": 10.0}, "optimizer": {"name": "lbfgs"},
           "training": {"steps": 3, "batch_size": 10, "device": "cpu"}}
    result = train(cfg, tmp_path / "q")
    assert result.final["train_loss"] < 1e-8  # L-BFGS solves a 5-d quadratic in a few iterations
    cfg["optimizer"]["weight_decay"] = 1.0
    train(cfg, tmp_path / "q2")
    # the loss has Hessian H = Q diag(lambda) Q^T and minimiser w*: with the L2 term (wd / 2) ||w||^2 the
    # minimiser is the ridge solution (H + wd I)^-1 H w* = Q diag(lambda / (lambda + wd)) Q^T w*
    meta = load_dataset("quadratic", dim=5, condition=10.0).meta
    w_star = torch.tensor(meta["minimizer"], dtype=torch.float64)
    q, lam = torch.tensor(meta["eigenvectors"], dtype=torch.float64), torch.tensor(meta["spectrum"], dtype=torch.float64)
    ridge = q @ torch.diag(lam / (lam + 1.0)) @ q.T @ w_star
    assert torch.allclose(final_params(tmp_path / "q")["1.weight"][0].double(), w_star, atol=1e-4)
    assert torch.allclose(final_params(tmp_path / "q2")["1.weight"][0].double(), ridge, atol=1e-5)
    assert float((ridge - w_star).norm()) > 0.1


def test_a_run_stored_with_the_old_name_of_the_decoupled_decay_resumes_with_its_meaning(tmp_path, small_config):
    """Before ``decoupled_weight_decay`` existed, kfac (adamw, adahessian) stored that decay as ``weight_decay``
    in run.h5 and in the checkpoints' optimizer groups; such a run resumes exactly as it would have."""
    from landscape.runs import write_checkpoint
    cfg = copy.deepcopy(small_config)
    cfg["optimizer"] = {"name": "polyak:kfac", "lr": 0.002, "decoupled_weight_decay": 0.05}
    train(cfg, tmp_path / "full")
    short = copy.deepcopy(cfg)
    short["training"]["epochs"] = 1
    train(short, tmp_path / "part")
    run = Run.open(tmp_path / "part")
    stored = copy.deepcopy(run.config)
    stored["optimizer"]["weight_decay"] = stored["optimizer"].pop("decoupled_weight_decay")
    run.config = stored
    run.write()
    path = run.checkpoint_path(run.checkpoint_steps()[-1])
    ckpt = read_checkpoint(path)
    for groups in (ckpt.optimizer["param_groups"], ckpt.optimizer["inner"]["param_groups"]):
        for group in groups:
            group["weight_decay"] = group.pop("decoupled_weight_decay")
    write_checkpoint(path, ckpt)
    train({"training": {"epochs": 3}}, tmp_path / "part", resume=True)
    a, b = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    upgraded = Run.open(tmp_path / "part").config["optimizer"]
    assert upgraded["decoupled_weight_decay"] == 0.05 and upgraded["weight_decay"] == 0.0


def test_divergence_guard_keeps_last_good_checkpoint(tmp_path, small_config):
    cfg = copy.deepcopy(small_config)
    cfg["optimizer"] = {"name": "sgd", "lr": 1e6}
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+ \(lr=1e\+06\)"):
        train(cfg, tmp_path / "d")
    run = Run.open(tmp_path / "d")
    assert run.status == "diverged" and "diverged" in run.message
    for step in run.checkpoint_steps():
        ckpt = read_checkpoint(run.checkpoint_path(step))
        assert all(torch.isfinite(p).all() for p in ckpt.params.values())


def test_existing_run_is_never_overwritten(tmp_path, small_config):
    train(small_config, tmp_path / "r")
    before = (tmp_path / "r" / "run.h5").read_bytes()
    with pytest.raises(LandscapeError, match="already exists"):
        train(small_config, tmp_path / "r")
    assert (tmp_path / "r" / "run.h5").read_bytes() == before
    with pytest.raises(LandscapeError, match="cannot change"):
        train({"optimizer": {"lr": 0.5}}, tmp_path / "r", resume=True)


def _train_cmd(out):
    return [sys.executable, "-m", "landscape", "train", "--samples", "800", "--model", "mlp",
            "--set", "model.widths=[64,64]", "--optimizer", "adam", "--lr", "0.003", "--batch-size", "16",
            "--epochs", "6", "--checkpoint-every", "25", "--eval-every", "25", "--device", "cpu",
            "--out", str(out), "-q"]


def _all_files_readable(run_dir):
    run = Run.open(run_dir)
    for step in run.checkpoint_steps():
        read_checkpoint(run.checkpoint_path(step))
    return run


def test_kill_minus_9_at_several_points_then_resume_is_bitwise_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference), check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills, resume = 0, False
    for attempt in range(12):
        cmd = _train_cmd(out) + (["--resume"] if resume else [])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 3:
            target = (kills + 1) * 2  # wait for more checkpoints each round, then kill at a random moment
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline:
                steps = list((out / "checkpoints").glob("*.h5")) if (out / "checkpoints").exists() else []
                if len(steps) >= target:
                    time.sleep(rng.uniform(0.0, 0.15))
                    break
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                _all_files_readable(out)  # no file is ever unreadable after a kill
                resume = True
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        break
    assert kills >= 3
    run = _all_files_readable(out)
    assert run.status == "finished"
    a, b = final_params(reference), final_params(out)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    ref_run = Run.open(reference)
    assert run.metrics["step"] == ref_run.metrics["step"]
    assert run.metrics["train_loss"] == ref_run.metrics["train_loss"]
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.slow
def test_mnist1d_published_accuracy_class(tmp_path):
    """MNIST-1D paper: MLP ~68%, CNN ~94% (Adam 1e-2, batch 100, 6000 steps)."""
    base = {"optimizer": {"name": "adam", "lr": 1e-2}, "training": {"steps": 6000, "batch_size": 100}}
    mlp = train({**base, "model": {"name": "mlp"}}, tmp_path / "mlp")
    cnn = train({**base, "model": {"name": "conv1d"}}, tmp_path / "cnn")
    assert mlp.final["test_acc"] >= 0.65
    assert cnn.final["test_acc"] >= 0.90


@pytest.mark.parametrize("name,options", [("lookahead:adam", {"k": 3}), ("polyak:momentum", {"decay": 0.9}),
                                          ("sam:momentum", {"m": 16}), ("bb", {}), ("parabola", {}),
                                          ("delta-bar-delta", {"momentum": 0.5}), ("curveball", {"lr": 1.0}),
                                          ("adahessian", {"lr": 0.05}), ("kfac", {"lr": 0.002, "inverse_every": 5}),
                                          ("hessian-free", {"lr": 0.3, "cg_iterations": 10, "damping": 10.0}),
                                          ("lookahead:curveball", {"lr": 1.0, "damping": 1.0})])
def test_suite_optimizers_resume_bitwise(tmp_path, small_config, name, options):
    cfg = copy.deepcopy(small_config)
    cfg["optimizer"] = {"name": name, "lr": 0.02, **options}
    train(cfg, tmp_path / "full")
    short = copy.deepcopy(cfg)
    short["training"]["epochs"] = 1
    train(short, tmp_path / "part")
    train({"training": {"epochs": 3}}, tmp_path / "part", resume=True)
    a, b = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = Run.open(tmp_path / "full")
    assert full.metrics["train_loss"][-1] < full.metrics["train_loss"][0]
    if name == "bb":  # the loop supplies the epoch length and records it
        assert full.config["optimizer"]["steps_per_epoch"] == 12


def test_polyak_evaluates_the_averaged_weights(tmp_path, small_config):
    cfg = copy.deepcopy(small_config)
    cfg["optimizer"] = {"name": "polyak:sgd", "lr": 0.05, "decay": 0.5}
    train(cfg, tmp_path / "p")
    run = Run.open(tmp_path / "p")
    ckpt = read_checkpoint(run.checkpoint_path(run.checkpoint_steps()[-1]))
    from landscape.data import dataset_from_config, model_from_config
    from landscape.losses import evaluate
    model = model_from_config(run.config, dataset_from_config(run.config, torch.device("cpu")))
    ds = dataset_from_config(run.config, torch.device("cpu"))
    averages = ckpt.optimizer["state"]
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(averages[i]["average"])
    stored = run.metrics["train_loss"][-1]
    assert evaluate(model, ds.x_train, ds.y_train, "cross_entropy", 2048)["loss"] == pytest.approx(stored, rel=1e-6)
    ckpt.load_into(model)  # the raw iterate differs
    assert evaluate(model, ds.x_train, ds.y_train, "cross_entropy", 2048)["loss"] != pytest.approx(stored, rel=1e-6)


def test_sam_m_sharpness_costs_one_chunk_pass_per_m_samples(tmp_path, small_config):
    calls = []
    cfg = copy.deepcopy(small_config)
    cfg["training"]["steps"], cfg["training"]["epochs"] = 1, None
    cfg["optimizer"] = {"name": "sam:sgd", "lr": 0.05, "m": 20}
    from landscape.optim import build_experiment, make_closure
    exp = build_experiment(cfg)
    closure = make_closure(exp.model, exp.optimizer, torch.nn.functional.cross_entropy,
                           exp.dataset.x_train[:50], exp.dataset.y_train[:50])

    def counting(part=None):
        calls.append(part)
        return closure(part)
    counting.batch_size = closure.batch_size
    exp.optimizer.step(counting)
    assert calls == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3), (2, 3)]  # 50 samples, m=20: 3 chunks, 2 passes each


def test_bf16_training_follows_float32(tmp_path):
    """bfloat16 autocast of the training forward passes: the run differs from float32 (the option is on)
    but ends at a close training loss; checkpoints and evaluation stay float32."""
    from landscape.cli.main import main as cli_main

    base = ["train", "--samples", "500", "--epochs", "4", "--optimizer", "adam", "--lr", "1e-2", "--device", "cpu",
            "-q"]
    assert cli_main([*base, "--bf16", "--out", str(tmp_path / "b")]) == 0
    assert cli_main([*base, "--out", str(tmp_path / "f")]) == 0
    low, full = Run.open(tmp_path / "b"), Run.open(tmp_path / "f")
    assert low.config["training"]["bf16"] is True
    a, b = low.metrics["train_loss"][-1], full.metrics["train_loss"][-1]
    assert a != b and abs(a - b) / b < 0.1
    ckpt = low.load_checkpoint("last", weights_only=True)
    assert all(t.dtype == torch.float32 for t in ckpt.params.values())
