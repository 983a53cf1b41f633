"""Data sets: MNIST-1D (default, offline), digits, MNIST/Fashion-MNIST/CIFAR, synthetic problems.

>>> from landscape.data import load_dataset
>>> ds = load_dataset("mnist1d")
>>> ds.x_train.shape, ds.x_test.shape
(torch.Size([4000, 40]), torch.Size([1000, 40]))
"""

from .dataset import Dataset
from .configured import data_for_model, dataset_from_config, model_from_config
from .registry import DATASETS, available_datasets, load_dataset

__all__ = ["Dataset", "DATASETS", "available_datasets", "load_dataset", "data_for_model", "dataset_from_config",
           "model_from_config"]
