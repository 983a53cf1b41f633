"""MNIST-1D (Greydanus & Kobak, 2020; arXiv 2011.14439), generated offline.

The ``mnist1d`` package builds the data set procedurally from ten 1-D digit templates. With its
default arguments and seed 42 this gives the published split: 4000 training and 1000 test
sequences of length 40 with labels 0..9. Generation takes about a second and a half and touches
NumPy's global generator, whose state we save and restore so that loading data never changes a run's
randomness. The generated arrays are kept in the data cache folder (``$LANDSCAPE_DATA``, default
``~/.cache/landscape/data``) as an ``.npz`` file written atomically and read without pickle, keyed by
the arguments and the ``mnist1d`` version; an unreadable or mismatching file is regenerated, and a
cache folder that cannot be written is skipped.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset


KEYS = ("x", "y", "x_test", "y_test")


def _cache_file(num_samples: int, seed: int, shuffle_seq: bool) -> Path:
    from .vision import default_data_dir

    version = importlib.metadata.version("mnist1d")
    return default_data_dir() / f"mnist1d-{version}-n{num_samples}-s{seed}-{'shuffled' if shuffle_seq else 'plain'}.npz"


def _read_cache(path: Path, num_samples: int) -> tuple[np.ndarray, ...] | None:
    try:
        with np.load(path, allow_pickle=False) as fh:
            arrays = tuple(fh[k] for k in KEYS)
    except (OSError, ValueError, KeyError):
        return None
    x, y, xt, yt = arrays
    if (x.dtype != np.float32 or xt.dtype != np.float32 or y.dtype != np.int64 or yt.dtype != np.int64
            or x.ndim != 2 or len(x) + len(xt) != num_samples or len(x) != len(y) or len(xt) != len(yt)):
        return None
    return arrays


def _write_cache(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **dict(zip(KEYS, arrays)))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only or full cache folder only costs the generation next time


@functools.lru_cache(maxsize=4)
def _generate(num_samples: int, seed: int, shuffle_seq: bool) -> tuple[np.ndarray, ...]:
    path = _cache_file(num_samples, seed, shuffle_seq)
    cached = _read_cache(path, num_samples)
    if cached is not None:
        return cached
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.shuffle_seq = shuffle_seq
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    arrays = (raw["x"].astype(np.float32), raw["y"].astype(np.int64),
              raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int64))
    _write_cache(path, arrays)
    return arrays


def load_mnist1d(num_samples: int = 5000, seed: int = 42, shuffle_seq: bool = False) -> Dataset:
    """MNIST-1D with the paper's defaults (5000 samples, 80/20 split, seed 42).

    ``shuffle_seq=True`` gives the spatially shuffled variant used to test spatial priors.
    """
    if num_samples < 20:
        raise ValueError("num_samples must be at least 20")
    x, y, xt, yt = _generate(int(num_samples), int(seed), bool(shuffle_seq))
    return Dataset("mnist1d", torch.from_numpy(x.copy()), torch.from_numpy(y.copy()),
                   torch.from_numpy(xt.copy()), torch.from_numpy(yt.copy()),
                   task="classification", num_classes=10, loss="cross_entropy",
                   meta={"seed": seed, "num_samples": num_samples, "shuffle_seq": shuffle_seq})
