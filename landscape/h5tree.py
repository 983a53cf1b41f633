"""Store nested Python structures (dicts, lists, tensors, numbers) in HDF5 without pickle.

Optimizer ``state_dict()`` objects, RNG states and result records are trees of dicts and lists
whose leaves are tensors, NumPy arrays, numbers, strings, booleans or ``None``. Each node becomes an
HDF5 group or dataset tagged with a ``kind`` attribute so that :func:`read_tree` rebuilds exactly the
same types (a dict with int keys stays a dict with int keys; a 0-d tensor stays a tensor with its
dtype). Nothing is ever unpickled, and the files stay readable with plain h5py.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np
import torch

_KIND = "kind"

_TORCH_TO_NUMPY_VIEW = {torch.bfloat16: np.uint16}


def _key_to_name(key: Any) -> tuple[str, str]:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"unsupported dict key {key!r} ({type(key).__name__})")
    if isinstance(key, int):
        return str(key), "int"
    if "/" in key or key in (".", ""):
        # HDF5 forbids '/' in names; encode such keys as JSON strings.
        return "json:" + json.dumps(key).replace("/", "\\u002f"), "str"
    return key, "str"


def _name_to_key(name: str, key_type: str) -> Any:
    if key_type == "int":
        return int(name)
    if name.startswith("json:"):
        return json.loads(name[5:])
    return name


def write_tree(parent: h5py.Group, name: str, obj: Any) -> None:
    """Write ``obj`` under ``parent[name]``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype in _TORCH_TO_NUMPY_VIEW:
            data = t.contiguous().view(torch.int16).numpy().view(_TORCH_TO_NUMPY_VIEW[t.dtype])
        else:
            data = t.numpy()
        ds = parent.create_dataset(name, data=data)
        ds.attrs[_KIND] = "tensor"
        ds.attrs["dtype"] = str(t.dtype).replace("torch.", "")
        return
    if isinstance(obj, np.ndarray):
        ds = parent.create_dataset(name, data=obj)
        ds.attrs[_KIND] = "ndarray"
        return
    if isinstance(obj, dict):
        grp = parent.create_group(name)
        grp.attrs[_KIND] = "dict"
        order = []
        for key, value in obj.items():
            child, key_type = _key_to_name(key)
            order.append([child, key_type])
            write_tree(grp, child, value)
        grp.attrs["keys"] = json.dumps(order)
        return
    if isinstance(obj, list) and obj and _homogeneous_numbers(obj):
        ds = parent.create_dataset(name, data=np.asarray(obj, dtype=np.int64 if isinstance(obj[0], int) else np.float64))
        ds.attrs[_KIND] = "number_list"
        return
    if isinstance(obj, (list, tuple)):
        grp = parent.create_group(name)
        grp.attrs[_KIND] = "tuple" if isinstance(obj, tuple) else "list"
        grp.attrs["length"] = len(obj)
        for i, value in enumerate(obj):
            write_tree(grp, str(i), value)
        return
    scalar_kind = _scalar_kind(obj)
    if scalar_kind is None:
        raise TypeError(f"cannot store {type(obj).__name__} in HDF5 without pickle")
    ds = parent.create_dataset(name, data=json.dumps(_scalar_payload(obj)))
    ds.attrs[_KIND] = scalar_kind


def _homogeneous_numbers(items: list) -> bool:
    """All Python ints or all Python floats (bools excluded): stored as one dataset."""
    first = type(items[0])
    return first in (int, float) and all(type(v) is first for v in items)


def _scalar_kind(obj: Any) -> str | None:
    if obj is None:
        return "none"
    if isinstance(obj, (bool, np.bool_)):
        return "bool"
    if isinstance(obj, (int, np.integer)):
        return "int"
    if isinstance(obj, (float, np.floating)):
        return "float"
    if isinstance(obj, str):
        return "str"
    return None


def _scalar_payload(obj: Any) -> Any:
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float) or isinstance(obj, np.floating):
        value = float(obj)
        if not np.isfinite(value):
            return repr(value)  # 'nan', 'inf', '-inf'
        return value
    return obj


def read_tree(node: h5py.Group | h5py.Dataset) -> Any:
    """Inverse of :func:`write_tree`."""
    kind = node.attrs.get(_KIND)
    if kind == "tensor":
        dtype = getattr(torch, node.attrs["dtype"])
        data = node[()]
        if dtype in _TORCH_TO_NUMPY_VIEW:
            return torch.from_numpy(np.asarray(data).view(np.int16).copy()).view(dtype)
        return torch.from_numpy(np.array(data, copy=True)).to(dtype)
    if kind == "ndarray":
        return np.array(node[()], copy=True)
    if kind == "number_list":
        return node[()].tolist()
    if kind == "dict":
        return {_name_to_key(child, key_type): read_tree(node[child])
                for child, key_type in json.loads(node.attrs["keys"])}
    if kind in ("list", "tuple"):
        items = [read_tree(node[str(i)]) for i in range(int(node.attrs["length"]))]
        return tuple(items) if kind == "tuple" else items
    if kind in ("none", "bool", "int", "float", "str"):
        raw = node[()]
        value = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if kind == "float":
            return float(value)
        return value
    raise ValueError(f"unknown node kind {kind!r} at {node.name}")
