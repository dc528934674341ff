"""The one place that reads Lightning state with no public API (pinned by tests/test_lightning_compat.py).

models/ and datamodules/ call these functions instead of reaching into the Trainer themselves, so a
Lightning release that moves one of them breaks one module and one test, not the families.
"""

from __future__ import annotations

import typing
from typing import Any


def training_batches_processed(trainer: Any) -> int:
    """Training batches *processed* so far, over all epochs.

    Lightning's progress counter, not the loader's position: the loader has already prefetched the
    next batch when a checkpoint is saved. No public property exposes it (``trainer.global_step``
    counts optimizer steps, which differ under manual optimisation and gradient accumulation).
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)


def logs_this_step(trainer: Any) -> bool:
    """Whether values ``self.log``-ged in this training step reach the loggers.

    Lightning sends on-step values every ``trainer.log_every_n_steps`` steps; its logger connector
    decides (``should_update_logs``), and no public property says so. Outside a Trainer: True.
    """
    connector = getattr(trainer, "_logger_connector", None)
    if trainer is None or connector is None:
        return True
    last = trainer.is_last_batch or (trainer.max_steps > 0 and trainer.global_step + 1 >= trainer.max_steps)
    return bool(last or connector.should_update_logs)


def precisions() -> list[str]:
    """The values ``Trainer(precision=...)`` accepts in this Lightning, as strings.

    Lightning types them as the private ``_PRECISION_INPUT`` (a union of ``Literal``s); read from there,
    the list cannot drift from the installed release.
    """
    from lightning.fabric.connector import _PRECISION_INPUT

    values: list[str] = []
    for literal in typing.get_args(_PRECISION_INPUT):
        values += [str(v) for v in typing.get_args(literal) if str(v) not in values]
    return values


def strategies() -> list[str]:
    """The names ``Trainer(strategy=...)`` accepts: ``auto`` and Lightning's registered strategies (public API)."""
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]
