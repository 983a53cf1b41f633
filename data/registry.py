"""Data-set registry: names to loaders, custom ``module:function`` data, subsetting, device placement."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from landscape.devices import fits_on_device
from landscape.errors import LandscapeError
from landscape.imports import is_import_spec, resolve_callable
from landscape.options import call_with_options

from . import digits, mnist1d, synthetic, vision
from .dataset import Dataset

DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": mnist1d.load_mnist1d,
    "digits": digits.load_digits,
    "mnist": vision.load_mnist,
    "fashion-mnist": vision.load_fashion_mnist,
    "cifar10": vision.load_cifar10,
    "cifar100": vision.load_cifar100,
    "rosenbrock": synthetic.load_rosenbrock,
    "beale": synthetic.load_beale,
    "rahimi-recht": synthetic.load_rahimi_recht,
    "quadratic": synthetic.load_quadratic,
    "teacher-student": synthetic.load_teacher_student,
    "chebyshev": synthetic.load_chebyshev,
}


def available_datasets() -> list[str]:
    return sorted(DATASETS)


def _from_user_result(name: str, result: Any) -> Dataset:
    """Turn what a custom data function returned into a Dataset."""
    if isinstance(result, Dataset):
        return result
    extra: dict[str, Any] = {}
    if isinstance(result, Mapping):
        try:
            tensors = [result[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except KeyError as exc:
            raise LandscapeError(f"custom data {name!r} returned a dict without key {exc.args[0]!r}") from None
        extra = {k: result[k] for k in ("task", "num_classes", "loss") if k in result}
    elif isinstance(result, (tuple, list)) and len(result) == 4:
        tensors = list(result)
    else:
        raise LandscapeError(f"custom data {name!r} must return (x_train, y_train, x_test, y_test), "
                             "a dict with those keys, or a landscape.data.Dataset")
    tensors = [torch.as_tensor(t) for t in tensors]
    if "task" not in extra:
        extra["task"] = "regression" if tensors[1].is_floating_point() else "classification"
    extra.setdefault("loss", "cross_entropy" if extra["task"] == "classification" else "mse")
    x_train, y_train, x_test, y_test = tensors  # floating tensors keep their dtype: they follow the model's
    if extra["task"] == "regression" and not y_train.is_floating_point():
        y_train, y_test = y_train.float(), y_test.float()
    return Dataset(name, x_train, y_train, x_test, y_test, **extra)


def load_dataset(name: str = "mnist1d", *, samples: int | None = None, subset_seed: int = 0,
                 data_dir: str | None = None, device: torch.device | str | None = None,
                 **options: Any) -> Dataset:
    """Load a registered data set (or ``module:function`` / ``file.py:function``) with its options.

    ``samples`` keeps a fixed seeded subset of the training set; ``device`` moves the tensors there
    when they fit (on CUDA: a quarter of the free memory), otherwise they stay on the CPU.
    """
    if not isinstance(name, str) or not name:
        raise LandscapeError("data set name must be a non-empty string")
    if name in DATASETS:
        fixed = {"data_dir": data_dir} if name in ("mnist", "fashion-mnist", "cifar10", "cifar100") else {}
        dataset = call_with_options(DATASETS[name], f"data set {name!r}", options, **fixed)
    elif is_import_spec(name):
        fn = resolve_callable(name, "data function")
        try:
            result = fn(**options)
        except LandscapeError:
            raise
        except Exception as exc:
            raise LandscapeError(f"custom data {name!r} failed: {type(exc).__name__}: {exc}") from exc
        dataset = _from_user_result(name, result)
    else:
        raise LandscapeError(f"unknown data set {name!r}; choose from {', '.join(available_datasets())} "
                             "or give module:function")
    if samples is not None:
        dataset = dataset.subset(int(samples), seed=subset_seed)
    if device is not None:
        device = torch.device(device)
        if fits_on_device(dataset.nbytes(), device):
            dataset = dataset.to(device)
    return dataset
