"""Run the same quantities through the ``pyhessian`` package (Yao et al. 2020), to reproduce its numbers.

PyHessian 0.1 (the PyPI release) offers the top eigenvalues by power iteration and the Hutchinson
trace; its ``density()`` calls ``torch.eig``, which PyTorch removed, so it fails on current torch.
It needs every parameter to receive a gradient and takes the loss as ``criterion(model(x), y)``: the
loss function of :mod:`landscape.losses`, the one the objective uses.
Its trace stops by a heuristic (relative change of the running mean below ``tol``), not by a
standard error; we report the standard error of its probe samples.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.losses import get_loss

from .loading import LoadedCheckpoint

DENSITY_BROKEN = ("PyHessian 0.1's density() calls torch.eig, which was removed from PyTorch (1.9+), so it "
                  "cannot run on current torch; use the default backend for --density")


def pyhessian_analysis(loaded: LoadedCheckpoint, top_k: int = 0, trace: bool = False, density: bool = False,
                       batch_size: int | None = None, max_iter: int = 100, tol: float = 1e-3,
                       seed: int = 0) -> dict[str, Any]:
    """Top-k eigenvalues and trace with PyHessian (whole training set; in batches if ``batch_size`` < N)."""
    if density:
        raise LandscapeError(DENSITY_BROKEN)
    try:
        from pyhessian import hessian
    except ImportError:
        raise LandscapeError("the pyhessian package is not installed (pip install pyhessian)") from None
    ds = loaded.dataset
    model = loaded.model.float()
    x, y = ds.x_train, ds.y_train
    n = x.shape[0]
    bs = batch_size or n
    cuda = loaded.device.type == "cuda"
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if bs >= n:
                comp = hessian(model, get_loss(loaded.loss), data=(x, y), cuda=cuda)
            else:
                loader = [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]
                comp = hessian(model, get_loss(loaded.loss), dataloader=loader, cuda=cuda)
            result: dict[str, Any] = {"backend": "pyhessian", "samples": n}
            if top_k:
                values, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_k)
                result["eigenvalues"] = sorted((float(v) for v in values), reverse=True)
            if trace:
                samples = [float(s) for s in comp.trace(maxIter=max_iter, tol=tol)]
                stderr = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else None
                result["trace"] = {"estimate": float(np.mean(samples)), "stderr": stderr, "probes": len(samples)}
        except LandscapeError:
            raise
        except Exception as exc:  # PyHessian's own failures (unused parameters, ...)
            raise LandscapeError(f"PyHessian failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    result["seconds"] = time.perf_counter() - t0
    return result
