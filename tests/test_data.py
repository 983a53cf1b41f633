import gzip
import io
import tarfile

import numpy as np
import pytest
import torch

from landscape.data import load_dataset
from landscape.data.vision import read_cifar_binary
from landscape.errors import LandscapeError


def test_mnist1d_published_split_and_determinism():
    state = np.random.get_state()[1].copy()
    ds = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], state), "loading data must not disturb NumPy's RNG"
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.dtype == torch.int64 and set(ds.y_train.unique().tolist()) == set(range(10))
    assert ds.num_classes == 10 and ds.loss == "cross_entropy"
    again = load_dataset("mnist1d")
    assert torch.equal(ds.x_train, again.x_train)
    assert abs(float(torch.cat([ds.x_train, ds.x_test]).std()) - 1.0) < 1e-3  # standardised by the package


def test_mnist1d_disk_cache_is_reused_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    """The generated arrays are cached as .npz under $LANDSCAPE_DATA: equal to a fresh generation,
    read back without generating, regenerated when the file is damaged, skipped when unwritable."""
    import mnist1d.data

    from landscape.data import mnist1d as module

    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "cache"))
    module._generate.cache_clear()
    fresh = module._generate(200, 42, False)
    files = list((tmp_path / "cache").glob("mnist1d-*-n200-s42-plain.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    calls = []
    original = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: calls.append(1) or original(args))
    module._generate.cache_clear()
    cached = module._generate(200, 42, False)
    assert not calls and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(fresh, cached))
    files[0].write_bytes(b"not an npz file")
    module._generate.cache_clear()
    rebuilt = module._generate(200, 42, False)
    assert calls == [1] and all(np.array_equal(a, b) for a, b in zip(fresh, rebuilt))
    monkeypatch.setenv("LANDSCAPE_DATA", str(files[0] / "not-a-folder"))  # cannot be created: no cache
    module._generate.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(fresh, module._generate(200, 42, False)))
    module._generate.cache_clear()


def test_samples_subset_is_fixed_and_seeded():
    a = load_dataset("mnist1d", samples=100)
    b = load_dataset("mnist1d", samples=100)
    c = load_dataset("mnist1d", samples=100, subset_seed=1)
    assert a.x_train.shape == (100, 40) and a.x_test.shape == (1000, 40)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    with pytest.raises(LandscapeError, match="exceeds"):
        load_dataset("mnist1d", samples=10**6)


def test_digits():
    ds = load_dataset("digits")
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.num_train + ds.num_test == 1797
    assert float(ds.x_train.max()) <= 1.0 and float(ds.x_train.min()) >= 0.0


def test_rosenbrock_objective_is_exact():
    from landscape.losses import sum_squares
    from landscape.models import build_model

    ds = load_dataset("rosenbrock", noise=[0.0, 3.0], train_samples=500)
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 3.0 and ds.x_train.std() > 0.5
    model = build_model({"name": "rosenbrock", "start": [-1.2, 1.0]}, ds.input_shape, ds.output_dim)
    u, v = -1.2, 1.0
    eps = ds.x_train[:, 0].double()
    expected = float(((1 - u) ** 2 + 100 * eps * (v - u * u) ** 2).mean())
    got = float(sum_squares(model(ds.x_train), ds.y_train).detach())
    assert got == pytest.approx(expected, rel=1e-6)
    det = load_dataset("rosenbrock")
    assert torch.all(det.x_train == 1.0)
    with pytest.raises(LandscapeError):
        load_dataset("rosenbrock", noise=[2, 1])


def test_noisy_beale_objective_is_exact_and_keeps_its_minimiser():
    from landscape.losses import sum_squares
    from landscape.models import build_model

    ds = load_dataset("beale", noise=[0.5, 1.5], train_samples=400)
    assert ds.x_train.shape == (400, 3) and float(ds.x_train.min()) >= 0.5
    x, y = 1.0, 1.5
    model = build_model({"name": "beale", "start": [x, y]}, ds.input_shape, ds.output_dim)
    eps = ds.x_train.double()
    terms = [(c - x + x * y ** i) ** 2 for i, c in zip((1, 2, 3), (1.5, 2.25, 2.625))]
    expected = float(sum(eps[:, i] * terms[i] for i in range(3)).mean())
    assert float(sum_squares(model(ds.x_train), ds.y_train).detach()) == pytest.approx(expected, rel=1e-6)
    at_min = build_model({"name": "beale", "start": [3.0, 0.5]}, ds.input_shape, ds.output_dim)
    assert float(sum_squares(at_min(ds.x_train), ds.y_train).detach()) == 0.0
    # deterministic test point: Beale's function itself, 14.203125 at (0, 0)
    origin = build_model({"name": "beale", "start": [0.0, 0.0]}, ds.input_shape, ds.output_dim)
    assert float(sum_squares(origin(ds.x_test), ds.y_test).detach()) == pytest.approx(14.203125)


def test_quadratic_hessian_has_exact_spectrum():
    from landscape.losses import mse

    spectrum = [0.5, 1.0, 3.0, 10.0, 40.0]
    ds = load_dataset("quadratic", spectrum=spectrum, train_samples=12)
    x, y = ds.x_train.double(), ds.y_train.double()
    hess = torch.autograd.functional.hessian(lambda w: mse(x @ w[:, None], y), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(torch.linalg.eigvalsh(hess), torch.tensor(spectrum, dtype=torch.float64), rtol=1e-5)
    w_star = torch.tensor(ds.meta["minimizer"], dtype=torch.float64)
    assert float(mse(x @ w_star[:, None], y)) < 1e-10


def test_rahimi_recht_condition_number():
    ds = load_dataset("rahimi-recht", dim=6, condition=1e5)
    s = np.linalg.svd(np.array(ds.meta["A"]), compute_uv=False)
    assert s[0] / s[-1] == pytest.approx(1e5, rel=1e-6)
    assert torch.allclose(ds.y_train, ds.x_train @ torch.tensor(ds.meta["A"], dtype=torch.float32).T, atol=1e-5)


def test_teacher_student_and_chebyshev():
    ts = load_dataset("teacher-student", classes=4)
    assert ts.task == "classification" and ts.num_classes == 4
    ch = load_dataset("chebyshev", degree=3)
    x = ch.x_test.double()
    assert torch.allclose(ch.y_test.double(), 4 * x ** 3 - 3 * x, atol=1e-5)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_idx_reader_on_small_files(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "MNIST" / "raw"  # torchvision's layout
    folder.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
             "train-labels-idx1-ubyte": np.arange(20) % 10,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
             "t10k-labels-idx1-ubyte": np.arange(5)}
    for name, arr in files.items():
        (folder / (name + ".gz")).write_bytes(gzip.compress(_idx_bytes(arr)))
    ds = load_dataset("mnist", data_dir=str(tmp_path), download=False)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.y_train.tolist() == (np.arange(20) % 10).tolist()
    assert abs(float(ds.x_train.mean())) < 1e-5  # standardised with training statistics
    raw = files["train-images-idx3-ubyte"]
    expected = (raw[3] / 255.0 - (raw / 255.0).mean()) / (raw / 255.0).std()
    assert np.allclose(ds.x_train[3, 0].numpy(), expected, atol=1e-4)
    # a truncated file is a clear error
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.arange(5))[:-2]))
    with pytest.raises(LandscapeError, match="truncated"):
        load_dataset("mnist", data_dir=str(tmp_path), download=False)


def test_cifar_binary_reader_and_archive(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for label in range(6):
        img = rng.integers(0, 256, 3072, dtype=np.uint8)
        records.append(bytes([label % 3, 50 + label]) + img.tobytes())  # CIFAR-100: coarse, fine
    (tmp_path / "one.bin").write_bytes(b"".join(records))
    x, y = read_cifar_binary([tmp_path / "one.bin"], label_bytes=2)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [50, 51, 52, 53, 54, 55]
    assert np.array_equal(x[2].reshape(-1), np.frombuffer(records[2][2:], dtype=np.uint8))
    # CIFAR-10 from the official archive layout, extracted safely
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            data = b"".join(bytes([k % 10]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for k in range(4))
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    ds = load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32) and ds.num_classes == 10
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(LandscapeError, match="truncated"):
        read_cifar_binary([tmp_path / "bad.bin"], 1)


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(LandscapeError, match="cannot download data set 'fashion-mnist'.*--data-dir"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "a failed download leaves no partial files"


def test_custom_data_from_file(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def make(n=30):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.randn(n, 3, generator=g)\n"
        "    return x, (x[:, 0] > 0).long(), x[:5], (x[:5, 0] > 0).long()\n"
        "def bad():\n"
        "    return 1\n")
    ds = load_dataset(f"{tmp_path}/mydata.py:make", n=40)
    assert ds.task == "classification" and ds.x_train.shape == (40, 3) and ds.num_classes == 2
    with pytest.raises(LandscapeError, match="must return"):
        load_dataset(f"{tmp_path}/mydata.py:bad")
    with pytest.raises(LandscapeError, match="no callable"):
        load_dataset(f"{tmp_path}/mydata.py:nothing")


def test_unknown_dataset_and_option():
    with pytest.raises(LandscapeError, match="unknown data set"):
        load_dataset("imagenet-42")
    with pytest.raises(LandscapeError, match="has no option 'colour'"):
        load_dataset("mnist1d", colour=3)
