"""MNIST-1D (Greydanus & Kobak, 2020; arXiv 2011.14439), generated offline.

The ``mnist1d`` package builds the data set procedurally from ten 1-D digit templates. With its
default arguments and seed 42 this gives the published split: 4000 training and 1000 test
sequences of length 40 with labels 0..9. Generation takes about a second and touches NumPy's global
generator, whose state we save and restore so that loading data never changes a run's randomness.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .dataset import Dataset


@functools.lru_cache(maxsize=4)
def _generate(num_samples: int, seed: int, shuffle_seq: bool) -> tuple[np.ndarray, ...]:
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
    return (raw["x"].astype(np.float32), raw["y"].astype(np.int64),
            raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int64))


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
