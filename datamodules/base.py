"""In-memory data modules shared by every family.

All data sets used by genbench fit in memory (MNIST, CIFAR-10, the 2-D benchmarks), so
they are held as tensors and batches are gathered by one indexing operation instead of
``batch_size`` calls to ``__getitem__`` plus a collate.

Images are stored as ``uint8`` and mapped to [-1, 1] after the batch reaches its device
(``on_after_batch_transfer``): a quarter of the host memory and of the transfer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genbench.errors import ConfigError
from genbench.lightning_compat import training_batches_processed
from genbench.schema import check, setting

#: What one sample is: an image (C×H×W, in [-1, 1]) or a point (2-D).
KINDS = ("image", "points")
#: Keys of a data node that are no setting: the data set's name in the configs (``group: ${data.name}``).
LABELS = ("name",)


@dataclass
class DataConfig:
    """The settings every data module has (``data.*``); each data set's typed config extends it.

    The dataclass holds the one default of each setting and its allowed values (generated into
    ``conf/schema/data/``); the constructors take the settings as keyword arguments and fill in the rest.
    """

    kind: str = setting("image", choices=KINDS, allowed="'image' or 'points'",
                        doc="what one sample is: image (C×H×W, in [-1, 1]) or points; the networks (net.<kind>) and "
                            "the feature space follow it")
    shape: list | None = setting(None, null="as loaded",
                                 doc="shape of one sample: the model is built for it (model.data_shape) and setup() "
                                     "checks the data against it; null: as loaded")
    batch_size: int = setting(128, ge=1, doc="batch size of the train and validation loaders")
    num_workers: int = setting(0, ge=0, doc="loader worker processes; 0 is fastest for in-memory tensors")
    split_seed: int = setting(0, ge=0, doc="seed of the train/val split and of sampled data sets, apart from the run's "
                                           "seed, so every family and seed sees the same split")


def uint8_to_unit(x: Tensor) -> Tensor:
    """Map 8-bit images {0, ..., 255} to [-1, 1], as Ho et al. 2020 (§4) scale their data."""
    return x.float().div_(127.5).sub_(1.0)


class TensorPairs(Dataset):
    """``(x[i], y[i])`` pairs; a list of indices is fetched in one go (``__getitems__``)."""

    def __init__(self, x: Tensor, y: Tensor):
        assert len(x) == len(y)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: Tensor | list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


def _already_batched(batch: Any) -> Any:
    return batch


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochBatches:
    """Seeded batches of indices: epoch ``e`` is a permutation drawn from ``(seed, e)``.

    Each ``iter()`` is one epoch (Lightning iterates once per epoch and may stop before the
    end, so no position is tracked here). Under DDP each rank takes every ``world_size``-th
    batch of the same permutation, so the ranks together see each example at most once per
    epoch; training drops the last ``< world_size`` batches so every rank takes as many steps.
    ``resume(batches_done)`` continues the stream where a checkpoint left off, even when
    Lightning's own epoch count and the stream's differ (a run stopped by ``max_steps``).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0):
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.epoch = 0  # the epoch the next iter() yields
        self.offset = 0  # batches of that epoch to skip (resume)

    def _order(self, epoch: int) -> Tensor:
        # int32 indices (the same permutation as int64 for a given seed): the epoch's only copy is
        # 4 bytes per example, a quarter of a 2-D point with its label.
        if not self.shuffle:
            return torch.arange(self.n, dtype=torch.int32)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g, dtype=torch.int32)

    def _batch_numbers(self) -> range:
        """This rank's batches of an epoch, numbered in the epoch's permutation."""
        full, rest = divmod(self.n, self.batch_size)
        count = full if self.drop_last or not rest else full + 1
        rank, world = _rank_and_world()
        if world > 1 and self.drop_last:
            # Every rank must take the same number of training steps, or the ranks' collectives
            # (gradient all-reduce, buffer broadcast) pair up across different steps and hang or
            # fail: the last < world_size batches of the epoch's permutation are left out.
            count = count // world * world
        return range(rank, count, world)

    def _epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Tensor]:
        """This rank's batches of epoch ``epoch`` from its ``start``-th on, sliced lazily from one permutation."""
        order = self._order(epoch)
        for j in self._batch_numbers()[start:]:
            yield order[j * self.batch_size : (j + 1) * self.batch_size]

    def batches(self, epoch: int) -> list[Tensor]:
        """This rank's batches of epoch ``epoch`` (int32 index tensors, views of one permutation)."""
        return list(self._epoch_batches(epoch))

    def __len__(self) -> int:
        return len(self._batch_numbers())

    def __iter__(self):
        epoch, offset = self.epoch, self.offset
        self.offset = 0
        if self.shuffle:
            self.epoch += 1
        yield from self._epoch_batches(epoch, offset)

    def resume(self, batches_done: int) -> None:
        """Continue the stream after ``batches_done`` batches (counted over all epochs, on this rank)."""
        per_epoch = len(self)
        self.epoch, self.offset = divmod(int(batches_done), per_epoch) if self.shuffle and per_epoch else (0, 0)


def stratified_split(labels: Tensor, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of a train/val split holding ``val_fraction`` of every class."""
    train, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    # Classes interleaved in a seeded order, so the first n of a split are a fair sample of it.
    train_idx, val_idx = torch.cat(train), torch.cat(val)
    return train_idx[torch.randperm(len(train_idx), generator=generator)], val_idx[torch.randperm(len(val_idx), generator=generator)]


class InMemoryDataModule(L.LightningDataModule):
    """Base of every genbench data module.

    Args:
        **settings: the fields of :attr:`config_type` (:class:`DataConfig`: ``kind``, ``shape``, ``batch_size``,
            ``num_workers``, ``split_seed``; each data set adds its own); absent ones take their defaults there.
            ``name`` (the configs' label of the data set) is accepted and ignored.

    Raises:
        ConfigError: naming every unknown setting and every bad value.

    Subclasses set :attr:`config_type` and implement :meth:`load` returning ``(x_train, y_train, x_val, y_val)``.
    """

    name: str = "base"
    #: The data module's typed config: its settings, their defaults and allowed values.
    config_type: ClassVar[type] = DataConfig

    def __init__(self, **settings: Any):
        super().__init__()
        #: The typed config of this data module (every setting, defaults filled in).
        self.hp = self.settings(settings)
        self.batch_size = int(self.hp.batch_size)
        self.num_workers = int(self.hp.num_workers)
        self.split_seed = int(self.hp.split_seed)
        self.kind = self.hp.kind
        self.expected_shape = tuple(int(s) for s in self.hp.shape) if self.hp.shape is not None else None
        self._resume_state: dict[str, int] | None = None
        self.x_train: Tensor | None = None
        self.y_train: Tensor | None = None
        self.x_val: Tensor | None = None
        self.y_val: Tensor | None = None

    # --- to implement -----------------------------------------------------------------
    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    @property
    def is_image(self) -> bool:
        return self.kind != "points"

    # --- Lightning hooks --------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.x_train is not None:
            return
        x_train, y_train, x_val, y_val = self.load()
        shape = tuple(x_train.shape[1:])
        if self.expected_shape is not None and shape != self.expected_shape:
            raise ValueError(f"{self.name}: data has shape {shape}, config says data.shape={list(self.expected_shape)}")
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.x_train, self.y_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.x_val, self.y_val, shuffle=False)

    def _loader(self, x: Tensor, y: Tensor, shuffle: bool) -> DataLoader:
        # The order is a function of (run seed, epoch) and its position is saved in checkpoints
        # (``state_dict`` below), so runs are reproducible and resume exactly; DDP ranks split
        # the batches themselves (``use_distributed_sampler: false`` in conf/trainer).
        seed = torch.initial_seed() % (2**31) if shuffle else 0
        batches = EpochBatches(len(x), self.batch_size, shuffle=shuffle, drop_last=shuffle and len(x) >= self.batch_size,
                               seed=seed)
        if shuffle and self._resume_state:
            batches.resume(self._resume_state["batches_done"])
            self._resume_state = None
        # The loader's own generator: otherwise every new iterator (each epoch, each validation)
        # draws its worker base seed from the global RNG and shifts the training noise stream,
        # which a run resumed at an epoch boundary would not reproduce.
        return DataLoader(TensorPairs(x, y), batch_sampler=batches, num_workers=self.num_workers,
                          collate_fn=_already_batched, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(seed))

    def state_dict(self) -> dict[str, int]:
        """Where the training data stream stands: saved in checkpoints by Lightning.

        Taken from Lightning's progress counter of training batches *processed* (over all
        epochs), not from the loader, which has already prefetched the next batch when a
        checkpoint is saved.
        """
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"batches_done": training_batches_processed(trainer)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_state = dict(state) if state else None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if x.dtype == torch.uint8:
            x = uint8_to_unit(x)
        return x, y

    # --- what evaluation uses -----------------------------------------------------------
    @property
    def data_shape(self) -> tuple[int, ...]:
        if self.expected_shape is not None:
            return self.expected_shape
        self.setup()
        return tuple(self.x_train.shape[1:])

    def real_samples(self, split: str = "val", n: int | None = None) -> Tensor:
        """Real samples of ``split`` (``"train"`` or ``"val"``) in the models' data range.

        Args:
            split: which split; evaluation compares samples against ``"val"`` by default.
            n: the first ``n`` samples (the split order is fixed by ``split_seed``); all if None.
        Returns:
            float tensor ``[n, *data_shape]`` (images in [-1, 1]).
        """
        self.setup()
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}: must be 'train' or 'val'")
        x = self.x_train if split == "train" else self.x_val
        if n is not None:
            if n > len(x):
                raise ValueError(f"asked for {n} real samples of {self.name}/{split}, which has {len(x)}")
            x = x[:n]
        return uint8_to_unit(x) if x.dtype == torch.uint8 else x.float()

    def real_labels(self, split: str = "val") -> Tensor:
        self.setup()
        return self.y_train if split == "train" else self.y_val

    def fingerprint(self) -> str:
        """A short hash of the data, used as a cache key by evaluation."""
        import hashlib

        self.setup()
        h = hashlib.sha1()
        for t in (self.x_train, self.y_train, self.x_val, self.y_val):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # --- configuration checks ---------------------------------------------------------
    @classmethod
    def settings(cls, given: Mapping[str, Any]) -> Any:
        """The typed config of the settings ``given`` (the rest at their defaults), checked. Raises
        ``ConfigError`` naming every bad or unknown setting."""
        given = {k: v for k, v in given.items() if k not in LABELS}
        errors = cls.config_errors(given)
        if errors:
            raise ConfigError(errors)
        return cls.config_type(**given)

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        """Problems in a data node (``cfg.data``), one message each: unknown keys, then the typed config's
        declared ranges and choices, then :meth:`rule_errors`. Called by :mod:`genbench.validate` before any
        data is loaded."""
        known = set(cls.config_type.__dataclass_fields__)
        unknown = sorted(set(cfg) - known - set(LABELS) - {"_target_"})
        errors = [f"data.{k}: not a setting of {cls.__name__}; allowed: {sorted(known)}" for k in unknown]
        return errors + check(cls.config_type, cfg, "data.") + cls.rule_errors(cfg)

    @classmethod
    def rule_errors(cls, cfg: Any) -> list[str]:
        """Rules that a field's declaration cannot state (between fields, or beyond a type and range)."""
        return []
