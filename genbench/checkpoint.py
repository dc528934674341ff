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
        raise CheckpointError(f"checkpoint {path}: {'a folder, not a checkpoint file' if path.is_dir() else 'no such file'}")
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


# Network options added within a major.minor version, with the value that rebuilds the networks of
# checkpoints written before the option existed (their configs lack the key).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "models.nets.time_mlp.TimeMLP": {"linear_skip": False},
}


def with_legacy_defaults(node: Any) -> Any:
    """A copy of a config tree (plain dicts/lists) with :data:`LEGACY_DEFAULTS` filled in where absent."""
    if isinstance(node, list):
        return [with_legacy_defaults(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: with_legacy_defaults(v) for k, v in node.items()}
    for key, value in LEGACY_DEFAULTS.get(out.get("_target_"), {}).items():
        out.setdefault(key, value)
    return out


def weights_mismatch(model: torch.nn.Module, state_dict: dict[str, Any]) -> str:
    """How ``state_dict`` does not fit ``model`` (missing, unexpected or reshaped tensors); '' when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs model)", reshaped)):
        if names:
            parts.append(f"{label}: {', '.join(names[:3])}{f' (+{len(names) - 3} more)' if len(names) > 3 else ''}")
    return "; ".join(parts)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModule:
    """Rebuild the family's module from a checkpoint and load its weights (EMA included).

    Returns the module in eval mode on ``map_location``.
    """
    ckpt = read_checkpoint(path)
    meta = check_checkpoint(ckpt, path)
    config = meta.get("config") or {}
    if "model" not in config:
        raise CheckpointError(f"checkpoint {path}: holds no model config")
    model: GenerativeModule = instantiate(with_legacy_defaults(config["model"]), _convert_="all")
    if model.family != meta.get("family"):
        raise CheckpointError(
            f"checkpoint {path}: says family {meta.get('family')!r} but its config builds {model.family!r}"
        )
    model.on_load_checkpoint(ckpt)
    mismatch = weights_mismatch(model, ckpt["state_dict"])
    if mismatch:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the {model.family} model its config builds ({mismatch})")
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval()
