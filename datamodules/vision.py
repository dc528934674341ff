"""``data=mnist``, ``data=fashion_mnist``, ``data=cifar10``: torchvision data sets under ``data.root``.

The official train split is used for training and the official test split is the validation
/ evaluation split. Files are downloaded by torchvision when ``data.download`` is true and the
machine is online; offline, a missing data set is one clear error naming the path and the
offline alternative ``data=mnist5k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import Tensor

from datamodules.base import DataConfig, InMemoryDataModule
from genbench.errors import DatasetCorruptError, DatasetNotFoundError
from genbench.schema import setting

DEFAULT_ROOT = "~/.cache/genbench/data"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _torchvision_reason(e: Exception) -> str:
    """The first line of torchvision's error without its advice to pass ``download=True`` (genbench's key is
    ``data.download``, and the message says what to do)."""
    return _first_line(e).replace(" You can use download=True to download it", "")


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader; files already on disk are accepted when all present.

    torchvision checks the MD5 of each batch file before reading; genbench checks the MD5 of
    the archive when torchvision downloads it, and otherwise reads any well-formed batches
    (so tests and pre-downloaded copies with re-pickled batches work).
    """

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        self.classes = list(CIFAR10_CLASSES)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


@dataclass
class TorchvisionConfig(DataConfig):
    """The settings of the torchvision data sets (``data=mnist``, ``data=fashion_mnist``, ``data=cifar10``)."""

    root: str = setting(DEFAULT_ROOT, allowed="the path of a directory", doc="directory holding (or receiving) the files")
    download: bool = setting(True, doc="let torchvision download missing files (online only)")


class TorchvisionDataModule(InMemoryDataModule):
    """A torchvision image data set held in memory as ``uint8``.

    Args:
        **settings: :class:`TorchvisionConfig`'s (``root``: directory holding or receiving the files;
            ``download``: let torchvision download missing files; and the shared ones of
            :class:`~datamodules.base.DataConfig`).
    """

    name = "torchvision"
    title = ""  # the data set's name in messages
    dataset_cls: Any = None
    folder: str = ""
    config_type = TorchvisionConfig

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self.root = Path(os.path.expanduser(str(self.hp.root)))
        self.download = bool(self.hp.download)

    def _open(self, train: bool, download: bool):
        return self.dataset_cls(str(self.root), train=train, download=download)

    def prepare_data(self) -> None:
        """Download once (rank 0 only under DDP); raises a clear error when impossible."""
        self._read(train=True, download=self.download)
        self._read(train=False, download=self.download)

    def _read(self, train: bool, download: bool):
        try:
            return self._open(train, download)
        except (RuntimeError, URLError, OSError, EOFError, ValueError) as e:
            if not self._missing(e, download):
                raise self._corrupt(e) from None
            hint = (
                "download=true failed (no network?)"
                if download
                else "data.download=false, so nothing was downloaded"
            )
            raise DatasetNotFoundError(
                f"data={self.name}: the {self.title} files are missing under "
                f"{self.root / self.folder} ({hint}: {_torchvision_reason(e)}). "
                f"Put the files there, set data.root=PATH to where they are, run once online with "
                f"data.download=true, or use the offline data set data=mnist5k."
            ) from None
        except Exception as e:  # noqa: BLE001 - a garbled file fails anywhere in torchvision's parser
            raise self._corrupt(e) from None

    @staticmethod
    def _missing(e: Exception, download: bool) -> bool:
        """torchvision's own "not found" errors and failed downloads, as opposed to files that do not parse."""
        network = download and isinstance(e, OSError)
        return network or isinstance(e, (URLError, FileNotFoundError)) or "not found" in str(e).lower()

    def _corrupt(self, e: Exception) -> DatasetCorruptError:
        return DatasetCorruptError(
            f"data={self.name}: the {self.title} files under {self.root / self.folder} are corrupt or "
            f"truncated ({type(e).__name__}: {_first_line(e) or 'the file does not parse'}). Delete them and download "
            f"them again (data.download=true), or set data.root=PATH to an intact copy."
        )

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        train, test = self._read(True, self.download), self._read(False, self.download)
        x_train, y_train = self._tensors(train)
        x_val, y_val = self._tensors(test)
        return x_train, y_train, x_val, y_val

    @staticmethod
    def _tensors(ds) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(ds.data)
        if x.ndim == 3:  # MNIST-like: [N, H, W]
            x = x.unsqueeze(1)
        else:  # CIFAR: [N, H, W, C]
            x = x.permute(0, 3, 1, 2)
        return x.to(torch.uint8).contiguous(), torch.as_tensor(ds.targets).long()

    @classmethod
    def rule_errors(cls, cfg: Any) -> list[str]:
        """An empty ``root`` would be the working directory: refused like a non-string."""
        root = cfg.get("root", DEFAULT_ROOT)
        return [f"data.root={root!r}: must be the path of a directory"] if isinstance(root, str) and not root.strip() else []


class MNISTDataModule(TorchvisionDataModule):
    name = "mnist"
    title = "MNIST"
    dataset_cls = torchvision.datasets.MNIST
    folder = "MNIST"


class FashionMNISTDataModule(TorchvisionDataModule):
    name = "fashion_mnist"
    title = "Fashion-MNIST"
    dataset_cls = torchvision.datasets.FashionMNIST
    folder = "FashionMNIST"


class CIFAR10DataModule(TorchvisionDataModule):
    name = "cifar10"
    title = "CIFAR-10"
    dataset_cls = _CIFAR10Files
    folder = "cifar-10-batches-py"
