"""One validation pass over the composed config, before any data is loaded or trained.

Every problem is collected and reported at once, each naming the key, the bad value and
what is allowed. Family- and data-specific checks live next to the code they protect, as
``config_errors(cfg)`` class methods of the ``_target_`` classes.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from genbench.config import resolved_config
from genbench.errors import ConfigError

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true", "64", "16-true", "transformer-engine")


def _target_errors(node: Any, key: str) -> list[str]:
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        return [f"{key}: missing _target_"]
    try:
        cls = get_class(node["_target_"])
    except Exception as e:  # noqa: BLE001 - any import failure is a config problem here
        return [f"{key}._target_={node['_target_']!r}: cannot be imported ({e})"]
    check = getattr(cls, "config_errors", None)
    return list(check(node)) if check is not None else []


def trainer_errors(t: Any) -> list[str]:
    errors = []
    ms = t.get("max_steps", -1)
    if not isinstance(ms, int) or (ms < 1 and ms != -1):
        errors.append(f"trainer.max_steps={ms!r}: must be an integer >= 1 (or -1 with max_epochs)")
    prec = str(t.get("precision", "32-true"))
    if prec not in PRECISIONS:
        errors.append(f"trainer.precision={prec!r}: must be one of {list(PRECISIONS)}")
    acc = t.get("accelerator", "cpu")
    if acc not in ("cpu", "gpu", "cuda", "mps", "auto", "tpu"):
        errors.append(f"trainer.accelerator={acc!r}: must be one of ['cpu', 'gpu', 'cuda', 'mps', 'auto']")
    clip = t.get("gradient_clip_val")
    if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
        errors.append(f"trainer.gradient_clip_val={clip!r}: must be null or a number >= 0")
    return errors


def config_errors(cfg: DictConfig) -> list[str]:
    """All problems found in ``cfg`` (empty when valid)."""
    errors: list[str] = []
    try:
        resolved_config(cfg)
    except Exception as e:  # noqa: BLE001 - an unresolvable interpolation or missing value
        return [f"the config does not resolve: {e}"]
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        errors.append(f"seed={seed!r}: must be an integer >= 0")
    errors += _target_errors(cfg.data, "data")
    errors += _target_errors(cfg.model, "model")
    errors += trainer_errors(cfg.trainer)
    for section in ("eval",):
        node = cfg.get(section)
        if node is not None and "_target_" in node:
            errors += _target_errors(node, section)
    return errors


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem in ``cfg``."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigError(errors)
