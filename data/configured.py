"""Rebuild the data set and model a run configuration describes (shared by training and analysis)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from landscape.models import build_model, check_model_fits, floating_dtype

from .dataset import Dataset
from .registry import load_dataset


def data_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[data]`` section as keyword arguments of :func:`load_dataset`."""
    data = dict(cfg["data"])
    name = data.pop("name")
    return {"name": name, "samples": data.pop("samples", None), "data_dir": data.pop("data_dir", None), **data}


def dataset_from_config(cfg: Mapping[str, Any], device: torch.device | None = None) -> Dataset:
    """The data set a configuration names, on ``device`` when it fits."""
    return load_dataset(**data_options(cfg), device=device)


def model_from_config(cfg: Mapping[str, Any], dataset: Dataset) -> torch.nn.Module:
    """The model a resolved configuration describes, built for ``dataset`` and checked to fit it."""
    model = build_model(cfg["model"], dataset.input_shape, dataset.output_dim)
    check_model_fits(model, dataset.x_train.cpu(), dataset.output_dim, cfg["model"]["name"], dataset.name)
    return model


def data_for_model(dataset: Dataset, model: torch.nn.Module) -> Dataset:
    """``dataset`` with its floating tensors in the model's dtype (a float64 model gets float64 data; a
    float32 model float32 data, whatever dtype the arrays came in)."""
    return dataset.with_float_dtype(floating_dtype(model))
