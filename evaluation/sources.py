"""What the evaluator compares: a *sample source* against a *real reference*.

A sample source is anything that can hand out samples: a trained model (only through the
:class:`~models.base.GenerativeModule` contract, whatever its family), or samples stored on
disk (a folder of images or an ``.npz`` file, e.g. from another project). A real reference is
a split of a genbench data set, or real images on disk.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genbench.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# --- sample sources ---------------------------------------------------------------------------
class ModelSource:
    """Samples of a :class:`~models.base.GenerativeModule`, drawn through its ``sample(n, generator)``.

    Args:
        model: any family; it is put in eval mode while sampling and restored afterwards.
        sample_kwargs: passed to ``model.sample`` and ``model.nfe`` (e.g. ``{"steps": 50}``).
    """

    def __init__(self, model: Any, sample_kwargs: dict[str, Any] | None = None):
        self.model = model
        self.sample_kwargs = dict(sample_kwargs or {})
        self.name = f"{getattr(model, 'family', type(model).__name__)} model"
        self.data_shape = tuple(model.data_shape)
        self.length: int | None = None  # unlimited

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def nfe(self) -> int | None:
        return int(self.model.nfe(**self.sample_kwargs))

    @property
    def has_likelihood(self) -> bool:
        return bool(self.model.has_likelihood)

    def nll_bpd(self, x: Tensor) -> Tensor:
        return self.model.nll_bpd(x.to(self.device))

    def draw(self, start: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` fresh samples; ``start`` (their index in the whole evaluation) is not needed."""
        return self.model.sample(n, generator=generator, **self.sample_kwargs)

    def __enter__(self) -> ModelSource:
        self._was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self._was_training)


class TensorSource:
    """Samples that already exist (loaded from a folder or an ``.npz`` file), handed out in order.

    Args:
        samples: a tensor, or :class:`StoredSamples` (a folder decoded only as far as it is drawn).
        name: shown in the results.
    """

    def __init__(self, samples: Tensor | StoredSamples, name: str):
        self.samples = samples if isinstance(samples, StoredSamples) else StoredSamples(samples)
        self.name = name
        self.data_shape = self.samples.shape
        self.length = self.samples.length
        self.device = torch.device("cpu")
        self.nfe = None
        self.has_likelihood = False

    @property
    def x(self) -> Tensor:
        return self.samples.x

    @property
    def content_digest(self) -> str:
        """:func:`tensor_digest` of the samples: the key of their cached features."""
        return self.samples.digest

    def nll_bpd(self, x: Tensor) -> Tensor:
        raise NotImplementedError("stored samples have no likelihood")

    def draw(self, start: int, n: int, generator: torch.Generator) -> Tensor:
        return self.samples.rows(start, n)

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


# --- real references ----------------------------------------------------------------------
class DataReference:
    """One split of a genbench data module as the real reference.

    Args:
        datamodule: an :class:`~datamodules.base.InMemoryDataModule`.
        split: ``"val"`` (held out; the default) or ``"train"``.
        num_real: use ``num_real`` samples of the split (all when None), a fixed random subset
            (the splits may be sorted by class, so the first ``n`` would not be representative).
    """

    def __init__(self, datamodule: Any, split: str = "val", num_real: int | None = None):
        self.datamodule = datamodule
        self.split = split
        datamodule.setup()
        self.name = datamodule.name
        self.is_image = bool(datamodule.is_image)
        self.data_shape = tuple(datamodule.data_shape)
        available = len(datamodule.real_samples(split))
        if num_real is not None and num_real > available:
            raise ConfigError([f"eval.num_real={num_real}: {self.name}/{split} has only {available} samples"])
        self.num_real = available if num_real is None else int(num_real)
        self.centers: Tensor | None = getattr(datamodule, "centers", None)
        self.std: float | None = getattr(datamodule, "std", None)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.datamodule.fingerprint()
        return self._fingerprint

    def samples(self, n: int | None = None) -> Tensor:
        """The reference samples, or a fixed random subset of ``n`` of them."""
        return fixed_subset(self.datamodule.real_samples(self.split), self.num_real if n is None else min(n, self.num_real))

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        """All samples and labels of ``split`` (for the feature classifier)."""
        return self.datamodule.real_samples(split), self.datamodule.real_labels(split).long()

    @property
    def has_labels(self) -> bool:
        return self.is_image


class TensorReference:
    """Real samples from disk (``real=DIR|FILE.npz``); no labels, so no ``classifier`` feature space.

    Args:
        samples: a tensor, or :class:`StoredSamples` (a folder is decoded only when its statistics
            are not cached yet).
        name: shown in the results.
    """

    def __init__(self, samples: Tensor | StoredSamples, name: str):
        self.stored = samples if isinstance(samples, StoredSamples) else StoredSamples(samples)
        self.name = name
        self.split = "all"
        self.data_shape = self.stored.shape
        self.is_image = len(self.data_shape) == 3
        self.num_real = self.stored.length
        self.centers = None
        self.std = None
        self.has_labels = False
        self.fingerprint = self.stored.digest[:16]

    @property
    def x(self) -> Tensor:
        return self.stored.x

    def samples(self, n: int | None = None) -> Tensor:
        return self.x if n is None else fixed_subset(self.x, n)

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        raise ConfigError([
            f"real={self.name!r}: images are scored with the data set's classifier (eval.features=classifier, "
            "which eval.features=auto picks for images), and it needs a labelled data set to train on; give data=NAME "
            "instead of real=..., or use eval.features=inception"
        ])


def tensor_digest(x: Tensor) -> str:
    """SHA-1 of a tensor's shape, dtype and bytes: cache keys of samples and references read from disk."""
    h = hashlib.sha1(f"{tuple(x.shape)}{x.dtype}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fixed_subset(x: Tensor, n: int | None) -> Tensor:
    """``n`` rows of ``x`` chosen by a fixed seed, in their original order (all rows when ``n >= len(x)``)."""
    if n is None or n >= len(x):
        return x
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return x[idx]


# --- loading samples from disk ------------------------------------------------------------
def uint8_images_to_unit(x: Tensor) -> Tensor:
    """{0, ..., 255} -> [-1, 1], the genbench image range."""
    return x.float().div(127.5).sub(1.0)


def image_files(path: Path, option: str) -> list[Path]:
    """The images directly in ``path``, sorted by name (as torch-fidelity orders them)."""
    # scandir's entries know their type without a stat per file; names sort as Paths of one folder do
    with os.scandir(path) as entries:
        names = sorted(e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
    files = [path / name for name in names]
    if not files:
        raise ConfigError([f"{option}={str(path)!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder"])
    return files


def load_image_folder(path: Path, option: str, files: list[Path] | None = None) -> Tensor:
    """Every image directly in ``path`` (or the given ``files`` of it) as ``uint8 [N, C, H, W]``.

    Grayscale files give one channel, colour files three (alpha is dropped).
    """
    from PIL import Image, UnidentifiedImageError

    files = image_files(path, option) if files is None else files
    arrays, first = [], None
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                mode = "L" if img.mode in ("L", "1", "I;16", "I", "F") else "RGB"
                a = np.asarray(img.convert(mode))
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError([f"{option}={str(path)!r}: {f.name} is not a readable image ({e})"]) from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if first is None:
            first = (f.name, a.shape)
        elif a.shape != first[1]:
            raise ConfigError([
                f"{option}={str(path)!r}: images of different sizes or channel counts: {first[0]} is "
                f"{_describe(first[1])}, {f.name} is {_describe(a.shape)}; all images must have one size"
            ])
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays))


def _describe(chw: tuple[int, ...]) -> str:
    c, h, w = chw
    return f"{h}x{w} with {c} channel{'s' if c > 1 else ''}"


def load_npz(path: Path, option: str) -> Tensor:
    """The samples array of an ``.npz`` file.

    The array is the one named ``samples``, ``images``, ``x`` or ``arr_0``, or the only one.
    ``uint8`` images may be ``[N, H, W, C]`` (as ``np.savez`` of guided-diffusion/ADM samples) or
    ``[N, C, H, W]``; float images must be ``[N, C, H, W]`` in [-1, 1]; ``[N, D]`` floats are points.
    Returns images as ``uint8`` and points as float.
    """
    try:
        with np.load(path) as z:
            names = list(z.keys())
            name = next((n for n in ("samples", "images", "x", "arr_0") if n in names), names[0] if len(names) == 1 else None)
            if name is None:
                raise ConfigError([f"{option}={str(path)!r}: holds arrays {names}; name the samples 'samples' or 'arr_0'"])
            a = z[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # EOFError: empty, BadZipFile: truncated
        raise ConfigError([f"{option}={str(path)!r}: not a readable .npz file ({type(e).__name__}: {e})"]) from None
    if np.issubdtype(a.dtype, np.floating) and a.ndim in (2, 4) and len(a):
        bad = int((~np.isfinite(a.reshape(len(a), -1))).any(1).sum())
        if bad:
            raise ConfigError([f"{option}={str(path)!r}: {bad} of {len(a)} samples contain NaN or inf"])
    if a.ndim == 2 and np.issubdtype(a.dtype, np.floating):
        return torch.from_numpy(a.astype(np.float32))
    if a.ndim == 4 and a.shape[1] not in (1, 3) and a.shape[-1] not in (1, 3):
        raise ConfigError([f"{option}={str(path)!r}: images of shape {list(a.shape)} have neither 1 nor 3 channels "
                           "(uint8 [N,H,W,C] / [N,C,H,W], or float [N,C,H,W] in [-1,1])"])
    if a.ndim == 4 and a.dtype == np.uint8:
        if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.ndim == 4 and np.issubdtype(a.dtype, np.floating):
        if a.min() < -1.001 or a.max() > 1.001:
            raise ConfigError([f"{option}={str(path)!r}: float images must lie in [-1, 1], found [{a.min():.3g}, {a.max():.3g}]"])
        return torch.from_numpy(np.round((a.astype(np.float64) + 1) * 127.5).clip(0, 255).astype(np.uint8))
    raise ConfigError([
        f"{option}={str(path)!r}: array {name!r} of shape {list(a.shape)} and dtype {a.dtype} is neither images "
        "(uint8 [N,H,W,C] / [N,C,H,W], or float [N,C,H,W] in [-1,1]) nor points (float [N,D])"
    ])


class StoredSamples:
    """Samples in the genbench data range, with their content digest, count and shape; a folder of
    images can be decoded lazily, only the rows drawn.

    Decoding is the slow part of reading a folder: PIL opens every file, about 0.1 ms each. So the
    digest, count and shape of a folder are kept in the cache under its *listing*: the name, size,
    modification and change time of every image in it. Any rewrite of a file changes its change time,
    and a copy of the folder elsewhere is a new listing. While the listing is unchanged, a re-run
    knows the digest that keys the cached features (and real statistics) without decoding anything,
    and decodes only the rows it draws: the images it shows in the sample grid.

    Args:
        x: the samples, when already in memory.
        folder, files, meta: a folder whose ``files`` are decoded on demand; ``meta`` holds its
            ``digest``, ``n`` and ``shape`` from the cache.
        option: the command-line option the samples came from (``fake`` / ``real``), named in errors.
    """

    def __init__(self, x: Tensor | None = None, folder: Path | None = None, files: list[Path] | None = None,
                 meta: dict[str, Any] | None = None, option: str = "fake"):  # fmt: skip
        if x is None and (folder is None or files is None or meta is None):
            raise ValueError("StoredSamples needs x, or a folder with its files and cached meta")
        self._x, self.folder, self.files, self.option = x, folder, files, option
        self._digest = None if meta is None else str(meta["digest"])
        self.unrecorded_listing: dict[str, Any] | None = None  # set by read_samples for a folder read in full
        self.length = len(x) if x is not None else int(meta["n"])
        self.shape = tuple(x.shape[1:]) if x is not None else tuple(int(d) for d in meta["shape"])

    @property
    def lazy(self) -> bool:
        """True while nothing has been decoded in full."""
        return self._x is None

    @property
    def x(self) -> Tensor:
        if self._x is None:
            self._x = uint8_images_to_unit(load_image_folder(self.folder, self.option, self.files))
        return self._x

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = tensor_digest(self.x)
        return self._digest

    def record_listing(self) -> None:
        """Remember this folder's digest, count and shape under its listing (after a successful evaluation,
        so bad input leaves the cache as it was)."""
        from evaluation.cache import TensorCache

        if self.unrecorded_listing is not None:
            meta = {"digest": self.digest, "n": self.length, "shape": list(self.shape)}
            TensorCache("image_folders").store(self.unrecorded_listing, meta)
            self.unrecorded_listing = None

    def rows(self, start: int, n: int) -> Tensor:
        """Rows ``start`` … ``start + n − 1``; of a lazy folder only those files are decoded."""
        if self._x is None:
            return uint8_images_to_unit(load_image_folder(self.folder, self.option, self.files[start : start + n]))
        return self._x[start : start + n]


def folder_listing(folder: Path, files: list[Path]) -> dict[str, Any]:
    """The cache key of a folder's listing: where it is, and every image's name, size and times."""
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    return {"what": "image_folder", "folder": str(folder.resolve()), "files": len(files), "listing": h.hexdigest()}


def read_samples(spec: str, option: str) -> StoredSamples:
    """:func:`load_samples` for the evaluator: a folder whose listing is in the cache is not decoded
    here (see :class:`StoredSamples`); anything else is read and checked now, and a folder's listing is
    recorded by :meth:`StoredSamples.record_listing` once its evaluation has succeeded."""
    from evaluation.cache import TensorCache

    path = Path(spec).expanduser()
    if not path.is_dir():
        return StoredSamples(load_samples(spec, option))
    files = image_files(path, option)
    cache, key = TensorCache("image_folders"), folder_listing(path, files)
    meta = cache.load(key)
    if meta is not None:
        return StoredSamples(folder=path, files=files, meta=meta, option=option)
    samples = StoredSamples(load_samples(spec, option))
    samples.unrecorded_listing = key  # see StoredSamples.record_listing
    return samples


def load_samples(spec: str, option: str) -> Tensor:
    """Samples from a folder of images or an ``.npz`` file, in the genbench data range.

    Args:
        spec: the path given on the command line.
        option: the option's name (``fake`` or ``real``), for error messages.
    Returns:
        images as float ``[N, C, H, W]`` in [-1, 1], or points as float ``[N, D]``.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        x = load_image_folder(path, option)
    elif path.is_file() and path.suffix.lower() == ".npz":
        x = load_npz(path, option)
    elif path.exists():
        raise ConfigError([f"{option}={spec!r}: must be a folder of images or an .npz file"])
    else:
        raise ConfigError([f"{option}={spec!r}: no such file or folder"])
    if len(x) < 2:
        raise ConfigError([f"{option}={spec!r}: holds {len(x)} sample(s); FID needs at least 2"])
    return uint8_images_to_unit(x) if x.dtype == torch.uint8 else x
