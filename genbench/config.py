"""Helpers around the composed Hydra config."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data with every interpolation resolved.

    The ``net`` catalogue holds one entry per data kind; only the entry for this run's
    ``data.kind`` is kept (the others may refer to keys this data set does not have,
    e.g. an image size for 2-D points).
    """
    out: dict[str, Any] = {}
    for key in cfg:
        if key == "net":
            kind = cfg.data.kind
            out["net"] = {kind: OmegaConf.to_container(cfg.net[kind], resolve=True)} if kind in cfg.net else {}
        else:
            out[key] = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
    return out
