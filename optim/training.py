"""The training loop: seeded, exactly resumable, crash-safe, with a divergence guard.

Exact resume: the data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), so it can be regenerated; parameters, buffers, optimizer state and every global RNG are
checkpointed. Resuming from a checkpoint therefore replays the same computation, and on the CPU
the final parameters equal those of an uninterrupted run bit for bit.

Every optimizer is stepped with the mini-batch's :class:`~landscape.optim.Closure`
(``optimizer.step(closure)``), which zeroes gradients, evaluates the mini-batch loss and back-propagates;
torch's first-order optimizers call it once, L-BFGS and other line-search methods as often as they need,
and the curvature methods read its mini-batch. Weight decay is the optimizers' own (``weight_decay``,
``decoupled_weight_decay``: :mod:`landscape.optim.registry`); the loop adds nothing to the loss.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from landscape import distributed
from landscape.data import Dataset, data_for_model, dataset_from_config, model_from_config
from landscape.devices import resolve_device
from landscape.errors import LandscapeError, TrainingDiverged
from landscape.losses import evaluate, get_loss
from landscape.models import count_parameters, has_batchnorm, normalize_spec
from landscape.options import accepted_options
from landscape.runs import Checkpoint, Run
from landscape.seeding import capture_rng_state, restore_rng_state, seed_everything

from . import config as config_mod
from .closure import Closure, DataParallelClosure
from .registry import build_optimizer, get_entry, has_decoupled_weight_decay
from .schedules import lr_factor
from .tracking import CurvatureTracker

MAX_EVALUATIONS = 200
TARGET_CHECKPOINTS = 20
LOG_LINES = 10


@dataclass
class Experiment:
    """Everything built from a configuration: data, model, optimizer, and the resolved config."""

    config: dict[str, Any]
    dataset: Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    steps_per_epoch: int
    total_steps: int


@dataclass
class TrainResult:
    """What :func:`train` returns: the run, its last metrics row, the steps this call ran and their seconds."""

    run: Run
    final: dict[str, float]
    steps_run: int
    seconds: float


def _resolve_schedule(training: dict[str, Any], steps_per_epoch: int) -> int:
    total = training["steps"] if training["steps"] is not None else training["epochs"] * steps_per_epoch
    if training["eval_every"] is None:
        epochs = math.ceil(total / steps_per_epoch)
        training["eval_every"] = min(total, steps_per_epoch * max(1, math.ceil(epochs / MAX_EVALUATIONS)))
    if training["checkpoint_every"] is None:
        every = training["eval_every"]
        training["checkpoint_every"] = every * max(1, math.ceil(total / every / TARGET_CHECKPOINTS))
    return total


def build_experiment(config: Mapping[str, Any]) -> Experiment:
    """Validate ``config``, load data, build model and optimizer (seeded, deterministic init)."""
    cfg = config_mod.normalize(config)
    training = cfg["training"]
    device = resolve_device(training["device"])
    seed_everything(training["seed"])
    dataset = dataset_from_config(cfg, device)
    if not cfg["model"].get("name"):
        cfg["model"] = normalize_spec(dataset.meta.get("default_model", {"name": "mlp"})) | cfg["model"]
        if not cfg["model"].get("name"):
            cfg["model"]["name"] = "mlp"
    if training["loss"] is None:
        training["loss"] = dataset.loss
    get_loss(training["loss"])
    if training["loss"] == "cross_entropy" and dataset.task != "classification":
        raise LandscapeError(f"loss cross_entropy needs a classification data set; {dataset.name!r} is regression")
    entry = get_entry(cfg["optimizer"]["name"])
    if cfg["optimizer"].get("lr") is None:
        cfg["optimizer"]["lr"] = entry.default_lr
    cfg["optimizer"].setdefault("weight_decay", 0.0)
    if has_decoupled_weight_decay(cfg["optimizer"]["name"]):  # stored: marks the configuration as the new names'
        cfg["optimizer"].setdefault("decoupled_weight_decay", 0.0)
    seed_everything(training["seed"])  # model init does not depend on how the data was made
    model = model_from_config(cfg, dataset).to(device)
    dataset = data_for_model(dataset, model)
    steps_per_epoch = math.ceil(dataset.num_train / training["batch_size"])
    if "steps_per_epoch" in (accepted_options(entry.factory) or ()):  # epoch-based step sizes (bb)
        cfg["optimizer"].setdefault("steps_per_epoch", steps_per_epoch)
    optimizer = build_optimizer(cfg["optimizer"], model.parameters(), model=model, loss=training["loss"])
    total = _resolve_schedule(training, steps_per_epoch)
    return Experiment(cfg, dataset, model, optimizer, device, steps_per_epoch, total)


def epoch_order(seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """The sample order of ``epoch``: a permutation fixed by (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


class _Console:
    """Progress bar and log lines on stderr (stdout stays clean for --json)."""

    def __init__(self, enabled: bool, log: Callable[[str], None] | None):
        self.enabled = enabled
        self._log = log
        self.progress = None
        self.task = None

    @contextlib.contextmanager
    def bar(self, total: int, completed: int) -> Iterator["_Console"]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            self.progress = progress
            self.task = progress.add_task("train", total=total, completed=completed, info="")
            try:
                yield self
            finally:
                self.progress = None

    def advance(self, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, info=info)

    def log(self, message: str) -> None:
        if self._log is None:
            return
        if self.progress is not None:
            self.progress.console.print(message, highlight=False, markup=False)
        else:
            self._log(message)


def format_metrics(row: Mapping[str, float], total_steps: int) -> str:
    parts = [f"step {int(row['step'])}/{total_steps}", f"epoch {row['epoch']:.2f}",
             f"train loss {row['train_loss']:.4g}"]
    if "train_acc" in row and not math.isnan(row["train_acc"]):
        parts.append(f"acc {100 * row['train_acc']:.1f}%")
    parts.append(f"test loss {row['test_loss']:.4g}")
    if "test_acc" in row and not math.isnan(row["test_acc"]):
        parts.append(f"acc {100 * row['test_acc']:.1f}%")
    return "  ".join(parts)


def evaluation_weights(optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager:
    """The weights to evaluate: the averaged ones for iterate averaging (``polyak:...``, also when
    wrapped again), otherwise the parameters as they are."""
    while optimizer is not None:
        if hasattr(optimizer, "averaged"):
            return optimizer.averaged()
        optimizer = getattr(optimizer, "inner", None)
    return contextlib.nullcontext()


def _measure(exp: Experiment, step: int, lr: float, seconds: float, shard: bool) -> dict[str, float]:
    """Train/test loss (accuracy) of the current weights; ``shard``: the ranks of a DDP job evaluate
    a block of the samples each and all-reduce the sums."""
    training = exp.config["training"]
    loss, batch = training["loss"], training["eval_batch_size"]
    with evaluation_weights(exp.optimizer):
        train = evaluate(exp.model, exp.dataset.x_train, exp.dataset.y_train, loss, batch, shard)
        test = evaluate(exp.model, exp.dataset.x_test, exp.dataset.y_test, loss, batch, shard)
    row = {"step": step, "epoch": step / exp.steps_per_epoch, "train_loss": train["loss"],
           "test_loss": test["loss"], "lr": lr, "time": seconds}
    if "acc" in train:
        row["train_acc"], row["test_acc"] = train["acc"], test["acc"]
    return row


def train(config: Mapping[str, Any], out: str | Path, *, resume: bool = False, progress: bool = False,
          log: Callable[[str], None] | None = None, local: bool = False) -> TrainResult:
    """Train the model ``config`` describes into the run folder ``out``.

    With ``resume=True`` the stored configuration is continued from the last checkpoint (``config``
    may only extend ``training.epochs``/``training.steps`` or change ``training.device``). Nothing
    is written until the configuration, data, model and optimizer have all been validated.
    Raises :class:`TrainingDiverged` when the loss becomes non-finite; the last good checkpoint stays.
    Under torchrun the ranks train together (DDP) unless ``local``: then this process trains and
    writes the run on its own (a study gives each rank its own runs).
    """
    out = Path(out)
    stored = None
    if resume:
        if not Run.exists(out):
            raise LandscapeError(f"cannot resume: {out} is not a run folder (no {out / 'run.h5'})")
        stored = Run.open(out)
        stored.writable = stored.writable or local
        config = config_mod.resume_config(stored.config, config)
    elif Run.exists(out):
        raise LandscapeError(f"run {out} already exists; use --resume to continue it or choose another --out")
    if not local:
        distributed.barrier()  # every rank has checked the folder before rank 0 creates anything
    session = _Session(build_experiment(config), local, progress, log)
    start, elapsed = session.begin(out, stored)
    if start >= session.total:
        session.run.status = "finished"
        session.run.write()
        session.console.log(f"run {out} has already finished its {session.total} steps")
        return TrainResult(session.run, session.run.last_metrics(), 0, 0.0)
    return session.loop(start, elapsed)


class _Session:
    """One call of :func:`train`: the experiment, its run folder, the optional DDP wrapper and curvature
    tracker, the console; ``begin`` creates or restores the run, ``loop`` takes the steps."""

    def __init__(self, exp: Experiment, local: bool, progress: bool, log: Callable[[str], None] | None):
        self.exp, self.local = exp, local
        self.cfg, self.training = exp.config, exp.config["training"]
        speaks = local or distributed.is_main()  # under DDP only rank 0 shows progress and log lines
        self.console = _Console(progress and speaks, log if speaks else None)
        entry = get_entry(self.cfg["optimizer"]["name"])
        self.loss_fn = get_loss(self.training["loss"])
        self.base_lr = float(self.cfg["optimizer"]["lr"])
        self.total = exp.total_steps
        if self.training["bf16"] and entry.needs_model:
            raise LandscapeError(f"--bf16 applies to closure-driven optimizers; {self.cfg['optimizer']['name']!r} "
                                 "evaluates the model itself")
        # wrapped (and checked) before anything is written: a refused combination leaves no run folder
        self.ddp = None if local else _data_parallel(exp.model, entry, self.training, self.cfg["optimizer"])
        self.tracker = None
        if self.training["track_curvature_every"]:
            self.tracker = CurvatureTracker(exp.dataset.x_train, exp.dataset.y_train, self.training["loss"],
                                            self.training["track_samples"], self.training["seed"],
                                            self.training["track_trace"])
        self.run: Run | None = None

    def begin(self, out: Path, stored: Run | None) -> tuple[int, float]:
        """(first step, seconds trained before): a stored run restored, or a new one with its step-0 row."""
        exp, total = self.exp, self.total
        if stored is not None:
            self.run = stored
            stored.config, stored.total_steps, stored.status, stored.message = self.cfg, total, "running", ""
            return _restore(stored, exp)
        writes = distributed.is_main() or self.local
        self.run = Run.create(out, self.cfg, writable=True) if writes else Run(out, self.cfg)
        self.run.total_steps = total
        row = _measure(exp, 0, self.base_lr * lr_factor(0, total, **_schedule_args(self.training)), 0.0,
                       not self.local)
        if self.tracker is not None:
            row.update(self.tracker(exp.model))
        self.run.append_metrics(row)
        self.run.write()
        self.run.save_checkpoint(Checkpoint.from_model(0, 0, exp.model, exp.optimizer, capture_rng_state()))
        self.console.log(f"{count_parameters(exp.model):,} parameters; " + format_metrics(row, total))
        return 0, 0.0

    def loop(self, start: int, elapsed: float) -> TrainResult:
        exp, training, total, run = self.exp, self.training, self.total, self.run
        x, y, n = exp.dataset.x_train, exp.dataset.y_train, exp.dataset.num_train
        batch_size, seed = training["batch_size"], training["seed"]
        model, optimizer = exp.model, exp.optimizer
        model.train()
        schedule = _schedule_args(training)
        order, order_epoch = None, -1
        t0 = time.perf_counter()
        with self.console.bar(total, start):
            for step in range(start, total):
                epoch, batch = divmod(step, exp.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = epoch_order(seed, epoch, n, x.device), epoch
                index = order[batch * batch_size:(batch + 1) * batch_size]
                lr = self.base_lr * lr_factor(step, total, **schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_value = self._step(x[index], y[index], lr, step)
                self.console.advance(f"loss {loss_value:.4g}")
                self._record(step + 1, lr, elapsed + time.perf_counter() - t0)
        run.status = "finished"
        run.write()
        return TrainResult(run, run.last_metrics(), total - start, time.perf_counter() - t0)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, lr: float, step: int) -> float:
        """One optimizer step on the mini-batch; a non-finite loss marks the run diverged."""
        bf16 = self.training["bf16"]
        closure = (make_closure(self.exp.model, self.exp.optimizer, self.loss_fn, xb, yb, bf16=bf16) if self.ddp is None
                   else make_ddp_closure(self.ddp, self.exp.optimizer, self.loss_fn, xb, yb, bf16=bf16))
        loss = self.exp.optimizer.step(closure)
        loss_value = float(loss.detach()) if loss is not None else math.nan
        if not math.isfinite(loss_value):
            _mark_diverged(self.run, TrainingDiverged(step + 1, lr))
        return loss_value

    def _record(self, done: int, lr: float, seconds: float) -> None:
        """After step ``done``: the metrics row (evaluation cadence, tracking), log lines, checkpoints."""
        exp, training, total, run = self.exp, self.training, self.total, self.run
        every = training["eval_every"]
        log_every = every * max(1, math.ceil(total / every / LOG_LINES))  # all rows are stored; ~10 are printed
        final = done == total
        tracked = self.tracker is not None and done % training["track_curvature_every"] == 0
        if done % every == 0 or final or tracked:
            row = _measure(exp, done, lr, seconds, not self.local)
            if not math.isfinite(row["train_loss"]):
                _mark_diverged(run, TrainingDiverged(done, lr))
            if tracked:
                row.update(self.tracker(exp.model))
            exp.model.train()
            run.append_metrics(row)
            run.write()
            if done % log_every == 0 or final:
                self.console.log(format_metrics(row, total))
        if done % training["checkpoint_every"] == 0 or final:
            run.save_checkpoint(Checkpoint.from_model(done, done // exp.steps_per_epoch, exp.model, exp.optimizer,
                                                      capture_rng_state()))


def make_closure(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, xb: torch.Tensor,
                 yb: torch.Tensor, *, bf16: bool = False) -> Closure:
    """The :class:`Closure` of the mini-batch (xb, yb): ``closure(part=None)`` zeroes the gradients, evaluates
    the mini-batch loss and back-propagates; ``closure.batch`` is (xb, yb), ``closure.batch_size`` B."""
    return Closure(model, optimizer, loss_fn, xb, yb, bf16)


def _data_parallel(model: torch.nn.Module, entry, training: Mapping[str, Any],
                   optimizer: Mapping[str, Any]) -> torch.nn.Module | None:
    """DistributedDataParallel under torchrun (None for one process). Each rank takes its share of every
    global mini-batch, so a run on W processes follows the one-process run at equal global batch."""
    size = distributed.world_size()
    if size <= 1:
        return None
    if entry.needs_model:
        raise LandscapeError(f"optimizer {optimizer['name']!r} evaluates the model itself and does not run under "
                             "torchrun; use a first-order or closure-based optimizer, or one process")
    if training["batch_size"] < size:
        raise LandscapeError(f"--batch-size {training['batch_size']} is smaller than the {size} processes")
    if optimizer.get("m"):
        raise LandscapeError("SAM's m-sharpness (m) does not run under torchrun")
    if training["sync_batchnorm"] and has_batchnorm(model):
        if next(model.parameters()).device.type != "cuda":
            raise LandscapeError("--sync-bn needs GPUs (torch's SyncBatchNorm runs on CUDA devices only); "
                                 "without it each process normalises with the statistics of its share of the batch")
        # in place for the children (the same Parameter and buffer objects), so optimizer and checkpoints still see them
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model)


def make_ddp_closure(ddp: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, xb: torch.Tensor,
                     yb: torch.Tensor, *, bf16: bool = False) -> Closure:
    """The :class:`DataParallelClosure` of the global mini-batch (xb, yb) for the DDP module ``ddp``."""
    return DataParallelClosure(ddp, optimizer, loss_fn, xb, yb, bf16)


def _mark_diverged(run: Run, error: TrainingDiverged) -> None:
    run.status, run.message = "diverged", str(error)
    run.write()
    raise error


def _schedule_args(training: Mapping[str, Any]) -> dict[str, Any]:
    return {"schedule": training["schedule"], "milestones": training["milestones"], "gamma": training["gamma"],
            "min_factor": training["min_factor"], "warmup_steps": training["warmup_steps"]}


def _restore(run: Run, exp: Experiment) -> tuple[int, float]:
    """Load the last checkpoint into the experiment; returns (step, elapsed training seconds)."""
    if not run.checkpoint_steps():
        run.truncate_metrics(-1)
        return 0, 0.0
    ckpt = run.load_checkpoint("last")
    ckpt.load_into(exp.model)
    if ckpt.optimizer is not None:
        try:
            exp.optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise LandscapeError(f"checkpoint {ckpt.step} has an optimizer state that does not match: {exc}") from None
    if ckpt.rng is not None:
        restore_rng_state(ckpt.rng)
    run.truncate_metrics(ckpt.step)
    elapsed = run.metrics["time"][-1] if run.metrics.get("time") else 0.0
    run.write()
    return ckpt.step, float(elapsed)
