"""scikit-learn's 8x8 handwritten digits (1797 images, UCI optdigits test set)."""

from __future__ import annotations

import numpy as np
import torch

from landscape.errors import LandscapeError

from .dataset import Dataset


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Digits as (N, 1, 8, 8) float images scaled to [0, 1], fixed seeded split (default 1438/359)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise LandscapeError("the 'digits' data set needs scikit-learn: "
                             "pip install 'landscape-toolkit[digits]'") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    raw = sk_load_digits()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = raw.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                   torch.from_numpy(x[test]), torch.from_numpy(y[test]),
                   task="classification", num_classes=10, loss="cross_entropy",
                   meta={"test_fraction": test_fraction, "split_seed": split_seed})
