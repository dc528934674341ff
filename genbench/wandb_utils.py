"""Weights & Biases: offline automatically when no API key is configured, one run per job."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any


def wandb_api_key_configured() -> bool:
    """True when W&B could authenticate: ``WANDB_API_KEY`` or a ``~/.netrc`` entry (never read out)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        auth = netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def configure_wandb_mode() -> str:
    """Set ``WANDB_MODE=offline`` unless the user chose a mode or a key is configured.

    Offline runs are real run directories (``<run_dir>/wandb/offline-run-*``) that
    ``wandb sync`` uploads later; nothing blocks on the network.
    """
    if not os.environ.get("WANDB_MODE") and not wandb_api_key_configured():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run so the next job of a Hydra multirun starts a new one."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()
