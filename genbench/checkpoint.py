"""Load any genbench checkpoint back into its family's module, safely.

A checkpoint carries the resolved run config (``checkpoint["genbench"]["config"]``), so the
model is rebuilt from it without the original command line. Files are read with
``torch.load(weights_only=True)``: a pickle that would run code is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from genbench import __version__
from genbench.errors import GenbenchError
from models.base import CHECKPOINT_KEY, GenerativeModule


class CheckpointError(GenbenchError):
    """A checkpoint file that cannot be used: missing, corrupt, unsafe or not genbench's."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded on the CPU with ``weights_only=True``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" not in msg and "GLOBAL" not in msg:
            raise CheckpointError(f"checkpoint {path}: corrupt or truncated (not a readable torch file)") from None
        refused = next((line.strip() for line in msg.splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(
            f"checkpoint {path}: refused to load: it holds objects that are not plain tensors and "
            f"containers, and loading it would run code from the file ({refused or 'unsupported global'})"
        ) from None
    except Exception as e:  # noqa: BLE001 - garbled bytes fail anywhere in the unpickler (IndexError, KeyError, ...)
        raise CheckpointError(f"checkpoint {path}: corrupt or truncated ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a genbench checkpoint (no '{CHECKPOINT_KEY}' entry)")
    return ckpt


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def check_checkpoint(ckpt: dict[str, Any], path: str | Path, family: str | None = None) -> dict[str, Any]:
    """The checkpoint's genbench metadata, after checking its version (and family, if given)."""
    meta = ckpt[CHECKPOINT_KEY]
    version = str(meta.get("version", "unknown"))
    if _major_minor(version) != _major_minor(__version__):
        raise CheckpointError(
            f"checkpoint {path}: written by genbench {version}, this is genbench {__version__}; "
            f"checkpoints are compatible within the same major.minor version"
        )
    if family is not None and meta.get("family") != family:
        raise CheckpointError(
            f"checkpoint {path}: holds a {meta.get('family')!r} model, but this run trains model={family!r}"
        )
    return meta


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModule:
    """Rebuild the family's module from a checkpoint and load its weights (EMA included).

    Returns the module in eval mode on ``map_location``.
    """
    ckpt = read_checkpoint(path)
    meta = check_checkpoint(ckpt, path)
    config = meta.get("config") or {}
    if "model" not in config:
        raise CheckpointError(f"checkpoint {path}: holds no model config")
    model: GenerativeModule = instantiate(config["model"], _convert_="all")
    if model.family != meta.get("family"):
        raise CheckpointError(
            f"checkpoint {path}: says family {meta.get('family')!r} but its config builds {model.family!r}"
        )
    model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the {model.family} model: {e}") from None
    return model.to(map_location).eval()
