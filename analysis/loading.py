"""Load a run's checkpoint into its model together with the evaluation data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape.data import Dataset, data_for_model, dataset_from_config, model_from_config
from landscape.devices import resolve_device
from landscape.runs import Checkpoint, Run


@dataclass
class LoadedCheckpoint:
    run: Run
    checkpoint: Checkpoint
    model: torch.nn.Module
    dataset: Dataset
    device: torch.device
    samples: int | None = None  # the training subset's size (None: all samples) ...
    subset_seed: int = 0        # ... and the seed that drew it

    @property
    def subset(self) -> dict[str, Any]:
        """How the training data was chosen, as stored with every result: ``samples`` and ``seed``."""
        return {"samples": self.samples, "seed": self.subset_seed}

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @property
    def loss(self) -> str:
        return self.run.config["training"]["loss"]


def resolve_steps(run: Run, ref: str | int) -> list[int]:
    """``all`` -> every checkpoint step; otherwise the one step ``ref`` names."""
    if isinstance(ref, str) and ref.strip().lower() == "all":
        steps = run.checkpoint_steps()
        if not steps:
            run.resolve_checkpoint("last")  # raises the "no checkpoints" error
        return steps
    return [run.resolve_checkpoint(ref)]


def load_checkpoint_model(run: Run | str | Path, ref: str | int = "last", device: str = "auto",
                          samples: int | None = None, seed: int = 0,
                          dataset: Dataset | None = None) -> LoadedCheckpoint:
    """Rebuild the run's model, load checkpoint ``ref`` into it (eval mode) and load its data.

    ``samples`` restricts the training set to a fixed subset drawn with ``seed``; a ``dataset``
    already loaded for another checkpoint of the same run can be passed to avoid reloading it.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    dev = resolve_device(device)
    cfg: dict[str, Any] = run.config
    if dataset is None:
        data_cfg = dict(cfg["data"])
        if samples is not None:
            data_cfg["samples"] = samples
            data_cfg["subset_seed"] = seed
        dataset = dataset_from_config({**cfg, "data": data_cfg}, dev)
    ckpt = run.load_checkpoint(ref, weights_only=True)
    model = model_from_config(cfg, dataset)
    ckpt.load_into(model)
    model.to(dev).eval()
    return LoadedCheckpoint(run, ckpt, model, data_for_model(dataset, model), dev, samples, seed)
