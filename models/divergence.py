"""The divergence guard every family inherits: training stops at the first non-finite loss, before it
reaches the weights, and no checkpoint is written with non-finite weights, so the last good one stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from genbench.errors import TrainingDivergedError
from genbench.lightning_compat import logs_this_step


class DivergenceGuard(L.LightningModule):
    """The finiteness checks of :class:`~models.base.GenerativeModule` (its ``family`` names the model in the
    messages). Automatic optimisation is checked in :meth:`on_before_backward`; a family that optimises
    manually calls :meth:`check_finite` on each of its losses.
    """

    #: What to try when training diverges (ends the divergence message; families refine it).
    divergence_hint: ClassVar[str] = "Try a lower model.lr or trainer.gradient_clip_val=1.0"

    def __init__(self) -> None:
        super().__init__()
        #: Deferred finiteness checks (:meth:`check_finite`): loss name -> first non-finite step (-1: none).
        self._first_nonfinite: dict[str, Tensor] = {}

    def on_before_backward(self, loss: Tensor) -> None:
        """Stop at the first non-finite loss, before it reaches the weights.

        Families with manual optimisation (the GAN) call :meth:`check_finite` on each of their
        losses by name instead, before their own backward.
        """
        if self.automatic_optimization:
            self.check_finite("train/loss", loss)

    #: When the finiteness checks run: ``None`` picks per device. On the CPU every loss is checked
    #: at once (reading it costs nothing); on a GPU reading it would stall the queue of kernels once
    #: per step, so the first non-finite step is recorded on the device and read on the steps whose
    #: metrics go to the loggers (which read values anyway) and before every checkpoint.
    defer_finite_checks: bool | None = None
    #: False turns the divergence guard off (a throwaway copy whose step is only measured, genbench/budget.py).
    finite_checks: bool = True

    def check_finite(self, name: str, value: Tensor, step: int | None = None) -> None:
        """Raise :class:`TrainingDivergedError` when ``value`` (the loss ``name``) is not finite.

        Args:
            name: the logged name of the loss, e.g. ``train/loss`` or ``train/d_loss``.
            value: the loss, about to be back-propagated.
            step: the optimizer step this loss belongs to; the next one (``global_step + 1``) by default.

        Under DDP every rank stops together (one rank's non-finite loss would otherwise leave
        the others waiting in the gradient all-reduce).
        """
        if not self.finite_checks:
            return
        step = self.global_step + 1 if step is None else step
        defer = self.defer_finite_checks if self.defer_finite_checks is not None else value.device.type != "cpu"
        if defer and self._trainer is not None:
            # first[name]: the first step with a non-finite value, -1 while none; no host sync here.
            first = self._first_nonfinite.get(name)
            if first is None:
                first = torch.full((), -1, dtype=torch.long, device=value.device)
            bad = ~torch.isfinite(value.detach()).all()
            self._first_nonfinite[name] = torch.where(bad & (first < 0), step, first)
            return
        here = bool(torch.isfinite(value.detach()).all())
        if self._all_ranks_agree(here):
            return
        shown = f"{value.item()}" if value.numel() == 1 else "non-finite"
        shown += "" if not here else " here but non-finite on another rank"
        raise TrainingDivergedError(
            f"{self.family} training diverged: {name}={shown} at step {step}{self.divergence_context()}; "
            f"stopped before this update, {self._kept_checkpoint()}. {self.divergence_hint}"
        )

    def _all_ranks_agree(self, ok: bool) -> bool:
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce_boolean_decision(ok, all=True)
        return ok

    def flush_finite_checks(self) -> None:
        """Read the deferred checks (one host sync) and raise if a loss was non-finite since the last read."""
        for name, first in list(self._first_nonfinite.items()):
            step = int(first)
            if self._all_ranks_agree(step < 0):
                continue
            shown = f"non-finite at step {step}" if step >= 0 else "non-finite on another rank"
            raise TrainingDivergedError(
                f"{self.family} training diverged: {name}={shown}{self.divergence_context()}; found at step "
                f"{self.global_step} (on this device the check is read every trainer.log_every_n_steps steps), the "
                f"weights since then were not checkpointed, {self._kept_checkpoint()}. {self.divergence_hint}"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._first_nonfinite and self._logs_this_step():
            self.flush_finite_checks()

    def divergence_context(self) -> str:
        """Extra settings named in the divergence message, e.g. `` (model.loss=hinge)``."""
        return ""

    def _kept_checkpoint(self) -> str:
        callback = self._trainer.checkpoint_callback if self._trainer is not None else None
        ckpt = getattr(callback, "last_model_path", "") or ""
        if ckpt and Path(ckpt).is_file():
            return f"the last good checkpoint is {ckpt}"
        return "no checkpoint was written yet"

    def _logs_this_step(self) -> bool:
        """Whether this step's metrics reach the loggers: the deferred checks are read then, and log_train logs."""
        return logs_this_step(self._trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read the deferred checks, and refuse a checkpoint with non-finite weights."""
        self.flush_finite_checks()
        # Never overwrite a good checkpoint with diverged weights (EMA copies included).
        weights = checkpoint.get("state_dict", {})
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise TrainingDivergedError(
                f"{self.family} training diverged: non-finite weights at step {self.global_step} in "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; this checkpoint was not written, "
                f"{self._kept_checkpoint()}. {self.divergence_hint}"
            )
