"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from their official binary formats.

Files are read from ``data_dir`` (or the cache folder ``$LANDSCAPE_DATA``, default
``~/.cache/landscape/data``) and downloaded there when missing. We read the official **binary**
formats ourselves (IDX for the MNIST family, the "binary version" records for CIFAR) so that no
pickle is ever loaded (the CIFAR "python version" that torchvision uses is a pickle) and torchvision
is not needed. torchvision's folder layout (``MNIST/raw``, ``FashionMNIST/raw``,
``cifar-10-batches-bin``) is recognised, so an existing torchvision cache can be reused.

Images are returned as float32 (N, C, H, W), standardised per channel with the training-set mean
and standard deviation.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from landscape.atomic import atomic_path
from landscape.errors import LandscapeError

from .dataset import Dataset

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}

SOURCES = {
    "mnist": {
        "folders": ["mnist", "MNIST/raw", "."],
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {"train_x": "f68b3c2dcbeaaa9fbdd348bbdeb94873", "train_y": "d53e105ee54ea40749a09fcbcd1e9432",
                "test_x": "9fb629c4189551a2d022fa330f9573f3", "test_y": "ec29112dd5afa0611ce80d1b7f02629c"},
    },
    "fashion-mnist": {
        "folders": ["fashion-mnist", "FashionMNIST/raw"],
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {"train_x": "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "train_y": "25c81989df183df01b3e8a0aad5dffbe",
                "test_x": "bef4ecab320f06d8554ea6380940ec79", "test_y": "bb300cfdad3c16e7a12a480ee83cd310"},
    },
    "cifar10": {
        "archive": "cifar-10-binary.tar.gz", "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "folder": "cifar-10-batches-bin", "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
        "test": ["test_batch.bin"], "label_bytes": 1, "classes": 10,
    },
    "cifar100": {
        "archive": "cifar-100-binary.tar.gz", "md5": "03b5dce01913d631647c71ecec9e9cb8",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "folder": "cifar-100-binary", "train": ["train.bin"], "test": ["test.bin"],
        "label_bytes": 2, "classes": 100,
    },
}


def default_data_dir() -> Path:
    """``$LANDSCAPE_DATA`` or ``~/.cache/landscape/data``."""
    return Path(os.environ.get("LANDSCAPE_DATA", Path.home() / ".cache" / "landscape" / "data")).expanduser()


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, md5: str, name: str) -> None:
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            if _md5(tmp) != md5:
                raise LandscapeError(f"download of {url} is corrupt (MD5 mismatch); try again")
    except LandscapeError:
        raise
    except OSError as exc:
        raise LandscapeError(
            f"cannot download data set {name!r} from {url} ({getattr(exc, 'reason', exc)}); "
            f"without internet, put the files in {target.parent} or pass --data-dir") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic 0x00 0x00 <type> <ndim>, big-endian uint32 dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise LandscapeError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LandscapeError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise LandscapeError(f"{path} is truncated or corrupt ({len(raw) - header} bytes of data, "
                             f"{expected} expected)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(root: Path, folders: list[str], key: str) -> Path | None:
    for folder in folders:
        for suffix in ("", ".gz"):
            path = root / folder / (IDX_FILES[key] + suffix)
            if path.is_file():
                return path
    return None


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    train = train.astype(np.float32) / 255.0
    test = test.astype(np.float32) / 255.0
    axes = (0, 2, 3)
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-8
    return torch.from_numpy((train - mean) / std), torch.from_numpy((test - mean) / std)


def load_idx_family(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST: 60000/10000 images of 1x28x28, 10 classes."""
    source = SOURCES[name]
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    arrays = {}
    for key in IDX_FILES:
        path = _find_idx(root, source["folders"], key)
        if path is None:
            if not download:
                raise LandscapeError(f"data set {name!r}: {IDX_FILES[key]}(.gz) not found under {root}")
            path = root / source["folders"][0] / (IDX_FILES[key] + ".gz")
            _download(source["url"] + path.name, path, source["md5"][key], name)
        arrays[key] = read_idx(path)
    if arrays["train_x"].shape[0] != arrays["train_y"].shape[0] or \
            arrays["test_x"].shape[0] != arrays["test_y"].shape[0]:
        raise LandscapeError(f"data set {name!r}: image and label files under {root} disagree in length")
    x_train, x_test = _standardise(arrays["train_x"][:, None], arrays["test_x"][:, None])
    return Dataset(name, x_train, torch.from_numpy(arrays["train_y"].astype(np.int64)),
                   x_test, torch.from_numpy(arrays["test_y"].astype(np.int64)),
                   task="classification", num_classes=10, loss="cross_entropy", meta={"root": str(root)})


def read_cifar_binary(paths: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR "binary version" records: ``label_bytes`` label byte(s) then 3x32x32 uint8 pixels.

    For CIFAR-100 (two label bytes: coarse, fine) the fine label is returned.
    """
    record = label_bytes + 3 * 32 * 32
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise LandscapeError(f"{path} is truncated or corrupt ({raw.size} bytes is not a multiple "
                                 f"of the {record}-byte CIFAR record)")
        raw = raw.reshape(-1, record)
        labels.append(raw[:, label_bytes - 1].astype(np.int64))
        images.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _extract_members(archive: Path, root: Path, folder: str, names: list[str]) -> None:
    """Extract only the named regular files (no path traversal, no links)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in names:
                    source = tar.extractfile(member)
                    with atomic_path(root / folder / base) as tmp, open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LandscapeError(f"cannot extract {archive}: {exc}") from None


def load_cifar(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 or CIFAR-100 (fine labels): 50000/10000 images of 3x32x32."""
    source = SOURCES[name]
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    folder = root / source["folder"]
    needed = source["train"] + source["test"]
    if not all((folder / n).is_file() for n in needed):
        archive = root / source["archive"]
        if not archive.is_file():
            if not download:
                raise LandscapeError(f"data set {name!r}: {source['folder']}/ not found under {root}")
            _download(source["url"], archive, source["md5"], name)
        _extract_members(archive, root, source["folder"], needed)
        missing = [n for n in needed if not (folder / n).is_file()]
        if missing:
            raise LandscapeError(f"{archive} does not contain {missing[0]}")
    x_train, y_train = read_cifar_binary([folder / n for n in source["train"]], source["label_bytes"])
    x_test, y_test = read_cifar_binary([folder / n for n in source["test"]], source["label_bytes"])
    x_train, x_test = _standardise(x_train, x_test)
    return Dataset(name, x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test),
                   task="classification", num_classes=source["classes"], loss="cross_entropy",
                   meta={"root": str(root)})


def load_mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """MNIST (LeCun et al. 1998)."""
    return load_idx_family("mnist", data_dir, download)


def load_fashion_mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017)."""
    return load_idx_family("fashion-mnist", data_dir, download)


def load_cifar10(data_dir: str | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009)."""
    return load_cifar("cifar10", data_dir, download)


def load_cifar100(data_dir: str | None = None, download: bool = True) -> Dataset:
    """CIFAR-100 with fine labels (Krizhevsky 2009)."""
    return load_cifar("cifar100", data_dir, download)
