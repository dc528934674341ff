"""One validation pass over the composed config, before any data is loaded or trained.

Every problem is collected and reported at once, each naming the key, the bad value and
what is allowed. Family- and data-specific checks live next to the code they protect, as
``config_errors(cfg)`` class methods of the ``_target_`` classes.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig

from genbench.budget import budget_errors
from genbench.checks import integer_errors, is_int, is_number
from genbench.config import resolved_config
from genbench.devices import visible_cuda_gpus
from genbench.errors import ConfigError
from genbench.lightning_compat import precisions, strategies


def _devices_ok(d: Any) -> bool:
    """Lightning's ``devices``: a count >= 1, -1 (all), ``auto``, or a list / comma string of device ids."""
    if is_int(d):
        return d >= 1 or d == -1
    if isinstance(d, str):
        ids = [p.strip() for p in d.split(",") if p.strip()]
        return d == "auto" or (bool(ids) and all(p.lstrip("-").isdigit() for p in ids))
    if isinstance(d, (list, tuple, ListConfig)):
        return len(d) > 0 and all(is_int(i, 0) for i in d)
    return False


def _target_class(node: Any, key: str) -> tuple[type | None, list[str]]:
    """The class ``node`` targets, or None and the message saying why there is none."""
    if not isinstance(node, (dict, DictConfig)) or "_target_" not in node:
        return None, [f"{key}: missing _target_"]
    try:
        return get_class(node["_target_"]), []
    except Exception as e:  # noqa: BLE001 - any import failure is a config problem here
        return None, [f"{key}._target_={node['_target_']!r}: cannot be imported ({e})"]


def _target_errors(node: Any, key: str, **kwargs: Any) -> list[str]:
    """The target's import problem, or its class's ``config_errors(node, **kwargs)``."""
    cls, errors = _target_class(node, key)
    check = getattr(cls, "config_errors", None)
    return errors + (list(check(node, **kwargs)) if check is not None else [])


def _network_errors(model: Any) -> list[str]:
    """The model's networks (``model.net``, ``model.encoder``, ``model.generator``, ...): each node with a
    ``_target_`` but the optimizer, checked by its class's ``config_errors(node, prefix)``."""
    errors = []
    for key in model:
        node = model.get(key)
        if key != "optimizer" and isinstance(node, (dict, DictConfig)) and "_target_" in node:
            errors += _target_errors(node, f"model.{key}", prefix=f"model.{key}.")
    return errors


def _family_trainer_errors(model: Any, trainer: Any) -> list[str]:
    """The model class's own limits on the trainer (e.g. the GAN's manual optimisation), if it imports
    (an import failure is reported by :func:`_target_errors`)."""
    cls, _ = _target_class(model, "model")
    check = getattr(cls, "trainer_errors", None)
    return list(check(trainer)) if check is not None else []


def _gpu_errors(accelerator: Any, devices: Any) -> list[str]:
    """``trainer.accelerator=gpu`` (or ``cuda``) needs CUDA GPUs, at least as many as a count in ``trainer.devices``."""
    if accelerator not in ("gpu", "cuda"):
        return []
    import torch

    visible = visible_cuda_gpus()
    if visible == 0:
        return [f"trainer.accelerator={accelerator!r}: no CUDA GPU is visible on this machine (torch "
                f"{torch.__version__}); use trainer=cpu, or trainer=ddp trainer.accelerator=cpu for CPU processes"]
    if is_int(devices) and devices > visible:
        return [f"trainer.devices={devices}: only {visible} CUDA GPU(s) are visible; use at most {visible}, or -1 for all"]
    return []


def trainer_errors(t: Any) -> list[str]:
    errors = []
    ms = t.get("max_steps", -1)
    if not is_int(ms) or (ms < 1 and ms != -1):
        errors.append(f"trainer.max_steps={ms!r}: must be an integer >= 1 (or -1 with max_epochs)")
    prec = str(t.get("precision", "32-true"))
    if prec not in precisions():
        errors.append(f"trainer.precision={prec!r}: must be one of {precisions()}")
    acc = t.get("accelerator", "cpu")
    if acc not in ("cpu", "gpu", "cuda", "mps", "auto", "tpu"):
        errors.append(f"trainer.accelerator={acc!r}: must be one of ['cpu', 'gpu', 'cuda', 'mps', 'auto']")
    clip = t.get("gradient_clip_val")
    if clip is not None and not (is_number(clip) and clip >= 0):
        errors.append(f"trainer.gradient_clip_val={clip!r}: must be null or a number >= 0")
    accumulate = t.get("accumulate_grad_batches", 1)
    if not is_int(accumulate, 1):
        errors.append(f"trainer.accumulate_grad_batches={accumulate!r}: must be an integer >= 1")
    devices = t.get("devices", "auto")
    if not _devices_ok(devices):
        errors.append(f"trainer.devices={devices!r}: must be an integer >= 1, -1 (all), 'auto' or a list of device ids")
    else:
        errors += _gpu_errors(acc, devices)
    strategy = t.get("strategy", "auto")
    if not isinstance(strategy, str) or strategy not in strategies():
        errors.append(f"trainer.strategy={strategy!r}: must be one of {strategies()}")
    me = t.get("max_epochs", -1)
    if me is not None and (not is_int(me) or (me < 1 and me != -1)):
        errors.append(f"trainer.max_epochs={me!r}: must be an integer >= 1, or -1 (no limit, max_steps decides)")
    if ms == -1 and me in (-1, None):
        errors.append("trainer.max_steps=-1 and trainer.max_epochs=-1: training would never end; set one of them")
    for key, low, default in (("log_every_n_steps", 1, 50), ("check_val_every_n_epoch", 1, 1),
                              ("num_sanity_val_steps", -1, 2)):
        v = t.get(key, default)
        if v is not None and not is_int(v, low):
            errors.append(f"trainer.{key}={v!r}: must be an integer >= {low}")
    for key in ("benchmark", "enable_progress_bar", "enable_model_summary", "use_distributed_sampler"):
        v = t.get(key)
        if v is not None and not isinstance(v, bool):
            errors.append(f"trainer.{key}={v!r}: must be true or false")
    det = t.get("deterministic")
    if det is not None and not isinstance(det, bool) and det != "warn":
        errors.append(f"trainer.deterministic={det!r}: must be true, false or 'warn'")
    return errors


def callbacks_errors(callbacks: Any) -> list[str]:
    errors = []
    ckpt = (callbacks or {}).get("model_checkpoint") or {}
    every = ckpt.get("every_n_train_steps")
    if every is not None and not is_int(every, 0):
        errors.append(
            f"callbacks.model_checkpoint.every_n_train_steps={every!r}: "
            "must be null or an integer >= 0 (0: only at the end)"
        )
    top_k = ckpt.get("save_top_k", 1)
    if not is_int(top_k, -1):
        errors.append(f"callbacks.model_checkpoint.save_top_k={top_k!r}: must be an integer >= -1 (-1: every checkpoint)")
    return errors


def config_errors(cfg: DictConfig) -> list[str]:
    """All problems found in ``cfg`` (empty when valid)."""
    errors: list[str] = []
    try:
        resolved_config(cfg)
    except Exception as e:  # noqa: BLE001 - an unresolvable interpolation or missing value
        return [f"the config does not resolve: {e}"]
    errors += integer_errors("", ("seed", cfg.get("seed", 0), 0))
    monitor = cfg.get("monitor", "train/loss")
    if not isinstance(monitor, str) or not monitor:
        errors.append(f"monitor={monitor!r}: must be the name of a logged metric, e.g. 'train/loss' or 'val/fid'")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not isinstance(ckpt_path, str):
        errors.append(f"ckpt_path={ckpt_path!r}: must be null, 'last' or the path of a checkpoint file")
    errors += _target_errors(cfg.data, "data")
    errors += _target_errors(cfg.model, "model")
    errors += _network_errors(cfg.model)
    errors += trainer_errors(cfg.trainer)
    errors += _family_trainer_errors(cfg.model, cfg.trainer)
    errors += callbacks_errors(cfg.get("callbacks"))
    errors += budget_errors(cfg)
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
