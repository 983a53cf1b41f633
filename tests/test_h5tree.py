import h5py
import numpy as np
import pytest
import torch

from landscape.h5tree import read_tree, write_tree


def roundtrip(tmp_path, obj):
    with h5py.File(tmp_path / "t.h5", "w") as fh:
        write_tree(fh, "x", obj)
    with h5py.File(tmp_path / "t.h5", "r") as fh:
        return read_tree(fh["x"])


def test_nested_types_survive(tmp_path):
    obj = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3, 2)}, 7: {"m": torch.arange(4)}},
           "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "nesterov": False, "foreach": None,
                             "params": [0, 7], "name": "a/b"}],
           "arr": np.arange(5, dtype=np.uint32), "nan": float("nan"), "inf": float("-inf"),
           "bf16": torch.randn(4).to(torch.bfloat16), "empty": []}
    back = roundtrip(tmp_path, obj)
    assert set(back["state"]) == {0, 7}
    assert torch.equal(back["state"][0]["exp_avg"], obj["state"][0]["exp_avg"])
    assert back["state"][0]["step"].dtype == torch.float32 and back["state"][0]["step"].ndim == 0
    assert back["state"][7]["m"].dtype == torch.int64
    g = back["param_groups"][0]
    assert g["betas"] == (0.9, 0.999) and isinstance(g["betas"], tuple)
    assert g["nesterov"] is False and g["foreach"] is None and g["params"] == [0, 7] and g["name"] == "a/b"
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2, 3, 4]
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf")
    assert torch.equal(back["bf16"], obj["bf16"]) and back["bf16"].dtype == torch.bfloat16
    assert back["empty"] == []


def test_slash_keys_and_unsupported(tmp_path):
    assert roundtrip(tmp_path, {"a/b": 1, "": 2}) == {"a/b": 1, "": 2}
    with pytest.raises(TypeError):
        roundtrip(tmp_path, {"x": object()})
