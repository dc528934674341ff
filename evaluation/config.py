"""``eval.*``: the evaluation settings shared by ``genbench-train`` and ``genbench-evaluate``.

``conf/eval/*.yaml`` instantiate :class:`EvalConfig`; :meth:`EvalConfig.config_errors` is run
by :mod:`genbench.validate` before any data is loaded, so a bad value stops the run at once
with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluation.classifier import ClassifierSettings
from evaluation.features import feature_space_names, feature_space_spec
from genbench.checks import is_int
from genbench.devices import visible_cuda_gpus
from genbench.errors import ConfigError


@dataclass
class EvalConfig:
    """Args:
    features: feature space: ``auto`` (``classifier`` for images, ``raw`` for 2-D points) or a
        registered one (:func:`~evaluation.features.feature_space_names`: ``classifier``, ``clip``,
        ``dinov2``, ``inception``, ``raw``).
    num_samples: generated samples of the final / stand-alone evaluation. FID is biased at small
        ``n``: compare numbers only at equal ``num_samples`` (it is recorded in the results).
    val_num_samples: generated samples of each periodic evaluation during training.
    every_n_steps: evaluate during training every this many global steps (0: never).
    final: evaluate with ``num_samples`` when training ends and put the result in ``results.json``.
    batch_size: samples drawn (and featurised) per call.
    split: the real reference split (``val``: held out from training; ``train``).
    num_real: real samples of the reference (the first ``num_real`` of the split; null: all).
    inception_weights: local InceptionV3 weights file (null: torch's hub cache, genbench's cache, else
        one download checked against its SHA-256; see :mod:`evaluation.weights`).
    is_splits, kid_subsets, kid_subset_size: IS / KID protocol (clipped to the sample counts).
    nearest_k: k of the k-NN manifolds of precision/recall/density/coverage.
    metric_seed: seed of the IS shuffling and KID subsets (torch-fidelity's default 2020).
    seed: seed of the sampling noise (per batch, so the samples do not depend on the process count).
    nll_samples: real examples for ``nll_bpd`` where the family defines it (0: skip).
    val_nll_samples: the same for each periodic evaluation during training (the bound of a DDPM costs
        T network evaluations per example; the family's own validation logs a cheaper ``val/nll_bpd``).
    grid_size: samples in the logged image grid.
    device: ``auto`` (the model's device / CUDA when available), ``cpu``, ``cuda``, ...
    sample_kwargs: extra keyword arguments of ``model.sample`` and ``model.nfe`` (e.g. ``{steps: 100}``).
    classifier: settings of the ``classifier`` feature space (:class:`~evaluation.classifier.ClassifierSettings`).
    dinov2: ``{model: vits14|vitb14|vitl14|vitg14, weights: PATH|null}`` of ``features=dinov2``
        (:mod:`evaluation.spaces.dinov2`; default ViT-L/14, weights from genbench's cache or downloaded).
    clip: ``{model: ViT-L-14-336|ViT-B-32, weights: PATH|null}`` of ``features=clip`` (:mod:`evaluation.spaces.clip`).
    """

    features: str = "auto"
    num_samples: int = 5000
    val_num_samples: int = 500
    every_n_steps: int = 0
    final: bool = True
    batch_size: int = 250
    split: str = "val"
    num_real: int | None = None
    inception_weights: str | None = None
    is_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nearest_k: int = 3
    metric_seed: int = 2020
    seed: int = 0
    nll_samples: int = 500
    val_nll_samples: int = 0
    grid_size: int = 64
    device: str = "auto"
    sample_kwargs: dict[str, Any] = field(default_factory=dict)
    classifier: dict[str, Any] = field(default_factory=dict)
    dinov2: dict[str, Any] = field(default_factory=dict)
    clip: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        errors = self.config_errors(self.__dict__)
        if errors:
            raise ConfigError(errors)

    @classmethod
    def from_node(cls, node: Any) -> EvalConfig:
        """From a (Dict)Config node or dict, ignoring ``_target_``."""
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        d.pop("_target_", None)
        return cls(**d)

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        """Every problem of an ``eval`` node, one message each."""
        errors: list[str] = []
        known = set(cls.__dataclass_fields__) | {"_target_"}
        for key in sorted(set(cfg.keys()) - known):
            errors.append(f"eval.{key}: unknown key; allowed: {sorted(known - {'_target_'})}")

        def integer(key: str, low: int, default: Any, why: str = "") -> None:
            v = cfg.get(key, default)
            if not is_int(v, low):
                errors.append(f"eval.{key}={v!r}: must be an integer >= {low}{why}")

        features = cfg.get("features", "auto")
        if features not in feature_space_names():
            errors.append(f"eval.features={features!r}: must be one of {list(feature_space_names())}")
        integer("num_samples", 2, 5000, " (FID is undefined for fewer than 2 samples)")
        integer("val_num_samples", 2, 500, " (FID is undefined for fewer than 2 samples)")
        integer("every_n_steps", 0, 0, " (0 disables evaluation during training)")
        integer("batch_size", 1, 250)
        integer("is_splits", 1, 10)
        integer("kid_subsets", 1, 100)
        integer("kid_subset_size", 2, 1000)
        integer("nearest_k", 1, 3)
        integer("metric_seed", 0, 2020)
        integer("seed", 0, 0)
        if cfg.get("nll_samples", 500) is not None:  # genbench-evaluate: null = as the checkpoint's run
            integer("nll_samples", 0, 500)
        integer("val_nll_samples", 0, 0, " (0: no bound in the evaluations during training)")
        integer("grid_size", 1, 64)
        if not isinstance(cfg.get("final", True), bool):
            errors.append(f"eval.final={cfg.get('final')!r}: must be true or false")
        split = cfg.get("split", "val")
        if split not in ("train", "val"):
            errors.append(f"eval.split={split!r}: must be 'train' or 'val'")
        num_real = cfg.get("num_real")
        if num_real is not None and not is_int(num_real, 2):
            errors.append(f"eval.num_real={num_real!r}: must be null (the whole split) or an integer >= 2")
        errors += device_errors(cfg.get("device", "auto"))
        kwargs = cfg.get("sample_kwargs") or {}
        if not hasattr(kwargs, "keys"):
            errors.append(f"eval.sample_kwargs={kwargs!r}: must be a mapping of keyword arguments of model.sample")
        errors += ClassifierSettings.errors(cfg.get("classifier"))
        if features != "auto" and features in feature_space_names():
            errors += feature_space_spec(features).errors(cfg)  # its options and weights, before any work
        return errors


def device_errors(device: Any) -> list[str]:
    """``eval.device``: ``auto``, ``cpu``, or a CUDA / MPS device that this machine has."""
    import torch

    allowed = f"eval.device={device!r}: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    if device == "auto":
        return []
    try:
        d = torch.device(device) if isinstance(device, str) and device else None
    except RuntimeError:
        d = None
    if d is None or d.type not in ("cpu", "cuda", "mps"):
        return [allowed]
    if d.type == "cuda":
        visible = visible_cuda_gpus()
        if visible == 0:
            return [f"eval.device={device!r}: no CUDA GPU is visible on this machine; use 'cpu' or 'auto'"]
        if d.index is not None and d.index >= visible:
            return [f"eval.device={device!r}: only {visible} CUDA GPU(s) are visible (cuda:0 to cuda:{visible - 1})"]
    if d.type == "mps" and not torch.backends.mps.is_available():
        return [f"eval.device={device!r}: MPS is not available on this machine; use 'cpu' or 'auto'"]
    return []
