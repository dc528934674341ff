"""Callbacks shared by every family."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, showing the run's progress in steps (``step=120/2000``) next to the epoch's.

    genbench trains for ``trainer.max_steps`` with ``max_epochs=-1``, for which Lightning's own bar writes
    "Epoch 3/-2" and gives no overall progress.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if trainer.max_steps > 0:
            items["step"] = f"{trainer.global_step}/{trainer.max_steps}"
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"  # no "/-2" for an unbounded epoch count


class TrainStats(L.Callback):
    """Counts training images and wall-clock time of ``fit``; logs ``perf/train_images_per_s``.

    The clock starts at the first training batch (data loading and set-up are excluded) and
    covers everything after it, validation included: it is the time a user waits.
    """

    def __init__(self, log_every_n_steps: int = 50):
        self.log_every_n_steps = log_every_n_steps
        self.images = 0
        self.batches = 0
        self.start: float | None = None
        self.end: float | None = None
        self.start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step  # > 0 when resumed from a checkpoint

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        self.images += len(x) * trainer.world_size
        self.batches += 1
        if self.batches % self.log_every_n_steps == 0 and trainer.logger is not None:
            pl_module.log("perf/train_images_per_s", self.images_per_s, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.start is None:
            return 0.0
        return (self.end or time.perf_counter()) - self.start

    @property
    def images_per_s(self) -> float:
        s = self.seconds
        return self.images / s if s > 0 else 0.0


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats of Lightning's ``callback_metrics``."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return dict(sorted(out.items()))


class RNGState(L.Callback):
    """Saves the random number generators in checkpoints and restores them on resume.

    With the data order (saved by the data modules' loaders), the weights, the optimizer and
    EMA states, this makes a resumed run bitwise identical on CPU to an uninterrupted one.
    Stored as tensors and ints only, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        np_state = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": random.getstate()[1],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Applied just before the first training batch: Lightning draws random numbers while it
        # sets up the resumed run, which the uninterrupted run never did at that point.
        self._pending = state

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    @staticmethod
    def _restore(state: dict[str, Any]) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        random.setstate((3, tuple(state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
