import hashlib
import os
from pathlib import Path

import pytest
import torch

# pytest-xdist runs one worker per core: one thread each, so the workers do not fight over the cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


def tree_digest(folder: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``folder`` (to prove nothing changed)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def small_config():
    """A 2-3 second MNIST-1D MLP run."""
    return {"data": {"name": "mnist1d", "samples": 600}, "model": {"name": "mlp", "widths": [32]},
            "optimizer": {"name": "momentum", "lr": 0.05},
            "training": {"epochs": 3, "batch_size": 50, "checkpoint_every": 6, "eval_every": 6, "device": "cpu"}}
