import pytest
import torch

from landscape.errors import LandscapeError
from landscape.models import MODELS, build_model, check_model_fits
from landscape.runs import Checkpoint, read_checkpoint, write_checkpoint

SHAPES = {"mnist1d": (40,), "digits": (1, 8, 8), "cifar": (3, 32, 32)}
SKIP = {("conv1d", "digits"), ("conv1d", "cifar")}
SMALL = {"vgg11": {"width": 0.125}, "random-cnn": {"channel_scale": 0.125}, "resnet56": {"width": 0.25},
         "resnet32": {"width": 0.25}}


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"rosenbrock", "beale"}))
@pytest.mark.parametrize("data", sorted(SHAPES))
def test_every_model_builds_runs_and_roundtrips(name, data, tmp_path):
    if (name, data) in SKIP:
        with pytest.raises(LandscapeError, match="sequence inputs"):
            build_model(name, SHAPES[data], 10)
        return
    torch.manual_seed(0)
    model = build_model({"name": name, **SMALL.get(name, {})}, SHAPES[data], 10)
    x = torch.randn(4, *SHAPES[data])
    model.train()
    model(x)  # updates BatchNorm running statistics, so buffers are non-trivial
    model.eval()
    out = model(x)
    assert out.shape == (4, 10)
    write_checkpoint(tmp_path / "c.h5", Checkpoint.from_model(5, 1, model))
    torch.manual_seed(1)
    fresh = build_model({"name": name, **SMALL.get(name, {})}, SHAPES[data], 10)
    read_checkpoint(tmp_path / "c.h5").load_into(fresh)
    fresh.eval()
    assert torch.equal(fresh(x), out)


def test_architecture_options():
    no_bn = build_model({"name": "resnet20", "bn": False}, (3, 32, 32), 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in no_bn.modules())
    plain = build_model({"name": "resnet20", "residual": False}, (3, 32, 32), 10)
    assert sum(p.numel() for p in plain.parameters()) < sum(
        p.numel() for p in build_model("resnet20", (3, 32, 32), 10).parameters())
    assert sum(p.numel() for p in build_model("resnet20", (3, 32, 32), 10).parameters()) == 272474
    cnn_bn = build_model({"name": "cnn", "bn": True}, (3, 32, 32), 10)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in cnn_bn.modules()) == 4
    convs = [m for m in build_model("cnn", (3, 32, 32), 10).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 10] and convs[0].kernel_size == (5, 5)
    mlp = build_model({"name": "mlp", "widths": [7, 5], "activation": "tanh"}, (40,), 3)
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [7, 5, 3]
    assert any(isinstance(m, torch.nn.Tanh) for m in mlp.modules())


def test_random_cnn_is_a_function_of_its_seed():
    from landscape.models.conv import random_cnn_layout

    layouts = [random_cnn_layout(s) for s in range(30)]
    assert random_cnn_layout(3) == layouts[3]
    depths = {len(l) for l in layouts}
    assert min(depths) >= 3 and max(depths) <= 10 and len(depths) > 3
    channels = {layer["channels"] for l in layouts for layer in l}
    assert channels <= {32, 64, 128, 256} and len(channels) == 4
    a = build_model({"name": "random-cnn", "seed": 5}, (3, 32, 32), 10)
    b = build_model({"name": "random-cnn", "seed": 5}, (3, 32, 32), 10)
    assert str(a) == str(b)


def test_mnist1d_cnn_matches_paper_layout():
    model = build_model("conv1d", (40,), 10)
    assert sum(p.numel() for p in model.parameters()) == 5210  # 25 channels, 125 features to the head


def test_custom_factory_and_errors(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make(input_shape, num_outputs, hidden=8):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], hidden),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(hidden, num_outputs))\n"
        "def wrong(input_shape, num_outputs):\n"
        "    return torch.nn.Linear(3, num_outputs)\n")
    model = build_model({"name": f"{tmp_path}/net.py:make", "hidden": 4}, (40,), 10)
    assert model(torch.randn(2, 40)).shape == (2, 10)
    wrong = build_model(f"{tmp_path}/net.py:wrong", (40,), 10)
    with pytest.raises(LandscapeError, match="does not fit"):
        check_model_fits(wrong, torch.randn(3, 40), 10, "wrong", "mnist1d")
    with pytest.raises(LandscapeError, match="unknown model"):
        build_model("transformer-xxl", (40,), 10)
    with pytest.raises(LandscapeError, match="has no option 'depth'"):
        build_model({"name": "mlp", "depth": 3}, (40,), 10)
    with pytest.raises(LandscapeError, match="unknown activation"):
        build_model({"name": "mlp", "activation": "swishy"}, (40,), 10)
