"""What every ``genbench-*`` command sets up before it runs: plug-ins and quiet libraries.

Importing genbench's packages changes no global state; the entry points call :func:`start`.
"""

from __future__ import annotations

import logging
import warnings

from genbench.plugins import load_plugins


class DropMessages(logging.Filter):
    """Drops the log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


#: Warnings that say nothing about a genbench run, with why each is wrong or beside the point here.
IGNORED_WARNINGS = (
    # The EMA copy is kept in eval mode on purpose; Lightning warns about eval-mode submodules at fit start.
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # Lightning 2.6: ModelCheckpoint saves manual-optimisation models (the GAN) after the optimizer step,
    # which is the state wanted: weights, optimizer moments, EMA and step counter agree.
    "Using ModelCheckpoint with manual optimization",
    # On a resume inside an epoch Lightning sees no DataLoader state_dict; the data module restores the
    # stream itself and a resumed run ends bitwise equal to an uninterrupted one (tests/test_resume.py).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # torch 2.14 deprecates a check Lightning's loops make on every fit (lightning/pytorch/utilities/_pytree.py).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def quiet_libraries() -> None:
    """Filter the library lines that say nothing about the run (idempotent)."""
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's ModelCheckpoint saves full checkpoints and its connector says so on every save, worded as
    # if something had been left unset; genbench loads checkpoints with weights_only=True regardless.
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    if not any(isinstance(f, DropMessages) for f in connector.filters):
        connector.addFilter(DropMessages("`weights_only` was not set, defaulting to `False`."))
    # Lightning advertises its cloud logger at every Trainer start.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages("💡 Tip: For seamless cloud logging"))
    # alembic (imported by Optuna's storages) lists the plugins it sets up, seven lines per sweep.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def start() -> None:
    """Load the plug-ins (GENBENCH_PLUGINS, entry points) and quiet the libraries."""
    quiet_libraries()
    load_plugins()
