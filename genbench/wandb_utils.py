"""Weights & Biases: offline automatically when no API key is configured, one run per job,
and the same run continued when training resumes from a checkpoint."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

import lightning as L


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



def drop_unset_anonymous(logger: Any) -> Any:
    """Lightning's ``WandbLogger`` always hands ``anonymous=None`` to ``wandb.init``, and wandb (0.19 and later)
    then warns on every run that "the anonymous setting has no effect". genbench never sets it: when it is
    None, it is not passed."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
    return logger


def is_wandb_node(node: Any) -> bool:
    return hasattr(node, "get") and str(node.get("_target_", "")).endswith(("loggers.WandbLogger", "wandb.WandbLogger"))


class WandbRunId(L.Callback):
    """Keeps the W&B run id in every checkpoint (``checkpoint["callbacks"]["wandb_run"]``).

    ``genbench-train ckpt_path=...`` reads it back and resumes that run (``resume="allow"``),
    so the curves of a preempted and resumed job continue in one run instead of two.
    """

    STATE_KEY = "wandb_run"

    def __init__(self, run_id: str):
        self.run_id = run_id

    @property
    def state_key(self) -> str:
        return self.STATE_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.run_id}


def checkpoint_run_id(ckpt: dict[str, Any] | None) -> str | None:
    """The W&B run id stored in a checkpoint by :class:`WandbRunId`, if any."""
    state = ((ckpt or {}).get("callbacks") or {}).get(WandbRunId.STATE_KEY) or {}
    run_id = state.get("id") if isinstance(state, dict) else None
    return str(run_id) if run_id else None


def wandb_run_id(logger_nodes: list[Any], ckpt: dict[str, Any] | None) -> str | None:
    """The run id of this job: the user's ``logger.wandb.id``, else the resumed checkpoint's, else a new one.

    None when there is nothing to keep (no W&B logger and no id in the checkpoint).
    """
    for node in logger_nodes:
        if is_wandb_node(node) and node.get("id"):
            return str(node.get("id"))
    run_id = checkpoint_run_id(ckpt)
    if run_id is None and any(is_wandb_node(n) for n in logger_nodes):
        run_id = new_run_id()
    return run_id


def new_run_id(length: int = 8) -> str:
    """A fresh id in W&B's own format (lower-case letters and digits)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))
