"""The feature-space contract and its registry: one :class:`FeatureSpaceSpec` and one
:func:`register_feature_space` call add a space to ``eval.features``, its config checks and the evaluator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genbench.errors import ConfigError


class FeatureSpace(nn.Module):
    """Base of the feature spaces: ``forward(x in [-1, 1]) -> (features [B, D], logits [B, K] | None)``."""

    name: str = "base"
    num_features: int
    num_classes: int | None = None

    def cache_id(self) -> str:
        """Identifies the space *and its weights* in cache keys."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Extra entries of the results (e.g. the classifier's accuracy)."""
        return {}


@dataclass(frozen=True)
class FeatureSpaceSpec:
    """What the evaluation needs to know of a feature space, registered once by name.

    Args:
        name: the value of ``eval.features``.
        kinds: the data it reads: ``{"image"}`` or ``{"points"}``.
        resizes: accepts images of any size (generated samples need not match the reference's size).
        input_size: side of the images the network sees (None: the data's own size).
        build: ``(reference, cfg, device) -> FeatureSpace``; ``cfg`` is the :class:`~evaluation.config.EvalConfig`.
        errors: ``cfg -> [message]``, the problems found before any work (weights missing, bad option),
            one message each naming the key, the value and what is allowed; ``cfg`` is the ``eval`` mapping.
        description: one line for docs and ``--help``.
        key_suffix: where set, the space names the result keys of its feature metrics (``fid`` -> ``fd_dinov2``,
            ``kid_mean`` -> ``kid_mean_dinov2``, ...), so numbers of different spaces never share a key; None keeps
            the plain keys (``fid`` for Inception, as published, and for genbench's classifier and raw spaces).
    """

    name: str
    kinds: frozenset[str]
    resizes: bool
    input_size: int | None
    build: Callable[[Any, Any, torch.device], FeatureSpace]
    errors: Callable[[Any], list[str]]
    description: str
    key_suffix: str | None = None


_REGISTRY: dict[str, FeatureSpaceSpec] = {}


def register_feature_space(spec: FeatureSpaceSpec) -> FeatureSpaceSpec:
    """Add ``spec`` under ``spec.name`` (``auto`` is reserved; a name is registered once)."""
    if spec.name == "auto" or spec.name in _REGISTRY:
        raise ValueError(f"feature space {spec.name!r} is already registered (or reserved)")
    if not spec.kinds or not spec.kinds <= {"image", "points"}:
        raise ValueError(
            f"feature space {spec.name!r}: kinds must be a non-empty subset of {{'image', 'points'}}, got {set(spec.kinds)}"
        )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_feature_space(name: str) -> None:
    """Remove a registered space (tests that register a toy one)."""
    _REGISTRY.pop(name, None)


def feature_space_names() -> tuple[str, ...]:
    """The values ``eval.features`` accepts: ``auto`` then the registered spaces, sorted."""
    return ("auto", *sorted(_REGISTRY))


def feature_space_spec(name: str) -> FeatureSpaceSpec:
    """The spec registered as ``name``; one clear error for an unknown name."""
    if name not in _REGISTRY:
        raise ConfigError([f"eval.features={name!r}: must be one of {list(feature_space_names())}"])
    return _REGISTRY[name]


class _Names(Sequence):
    """``FEATURE_SPACES``: a live, read-only view of :func:`feature_space_names`."""

    def __getitem__(self, i):  # type: ignore[override]
        return feature_space_names()[i]

    def __len__(self) -> int:
        return len(feature_space_names())

    def __iter__(self) -> Iterator[str]:
        return iter(feature_space_names())

    def __contains__(self, name: object) -> bool:
        return name in feature_space_names()

    def __repr__(self) -> str:
        return repr(feature_space_names())


FEATURE_SPACES: Sequence[str] = _Names()


def resolve_feature_space(name: str, is_image: bool) -> str:
    """``auto`` -> ``classifier`` for images, ``raw`` for points; other names are checked against the data."""
    if name == "auto":
        return "classifier" if is_image else "raw"
    spec = feature_space_spec(name)
    kind = "image" if is_image else "points"
    if kind not in spec.kinds:
        fitting = [n for n in feature_space_names()[1:] if kind in _REGISTRY[n].kinds]
        if is_image:
            raise ConfigError([f"eval.features={name!r}: is for 2-D points; images use one of {fitting}"])
        raise ConfigError(
            [f"eval.features={name!r}: 2-D points have no {name} features; use one of {fitting} (or 'auto')"]
        )
    return name


def build_feature_space(name: str, reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    """The feature space ``name`` (already resolved) for ``reference``'s data, on ``device``.

    Args:
        name: a registered name (see :func:`feature_space_names`).
        reference: the real reference (its data set trains the classifier; its modes give raw logits).
        cfg: the :class:`~evaluation.config.EvalConfig`.
        device: where the features are computed.
    """
    return feature_space_spec(name).build(reference, cfg, device).to(device)


def option(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` of a mapping (the ``eval`` node) or ``cfg.key`` of an :class:`EvalConfig`, or ``default``."""
    value = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
    return default if value is None else value


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] -> {0, ..., 255}, rounding as an image file stores it."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def random_weights_errors(option_name: str, value: Any) -> list[str]:
    """``weights: random`` (an untrained network of the right shape) is for genbench's own tests only."""
    if value == "random" and "PYTEST_CURRENT_TEST" not in os.environ:
        return [
            f"{option_name}='random': untrained weights give meaningless features and are only for genbench's "
            "tests; give a weights file, or null to use (or download) the published weights"
        ]
    return []


def resize_normalise(x: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Images in [-1, 1] -> the input of a network trained on ``torchvision``-preprocessed photos.

    As ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` + ``ToTensor()`` + ``Normalize(mean, std)`` do to
    an 8-bit image file: grey repeated to RGB, the shorter side resized to ``size`` (bicubic,
    antialiased when shrinking), the centre ``size`` x ``size`` cropped, rounded back to 8 bits,
    scaled to [0, 1] and normalised per channel. Torch's bicubic kernel (a = -0.75) stands in for
    PIL's (a = -0.5) on tensors.
    """
    x = to_uint8(x).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = torch.nn.functional.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
        top, left = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))  # as CenterCrop
        x = x[..., top : top + size, left : left + size].round().clamp(0, 255)
    x = x / 255.0
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


@dataclass(frozen=True)
class NetworkChoice:
    """``eval.<key>: {model, weights}`` of a feature space that offers several published networks.

    Args:
        key: the option's name under ``eval`` (``dinov2``, ``clip``).
        weights_of: model name -> its :class:`~evaluation.weights.WeightsFile`.
        default: the model when ``model`` is null.
        needs: model name -> the sentence that starts the missing-weights message.
    """

    key: str
    weights_of: Callable[[str], Any]
    models: tuple[str, ...]
    default: str
    needs: Callable[[str], str]

    def chosen(self, cfg: Any) -> tuple[str, Any]:
        """(model, weights option) of ``cfg``."""
        d = option(cfg, self.key, {}) or {}
        return d.get("model") or self.default, d.get("weights")

    def errors(self, cfg: Any) -> list[str]:
        """The option's problems, before any work: its keys, the model, and the weights (random only in tests)."""
        from evaluation.weights import weights_errors

        d = option(cfg, self.key, {}) or {}
        keys = ["model", "weights"]
        if not hasattr(d, "keys"):
            return [f"eval.{self.key}={d!r}: must be a mapping with keys {keys}"]
        errors = [f"eval.{self.key}.{k}: unknown key; allowed: {keys}" for k in sorted(set(d) - set(keys))]
        model, weights = self.chosen(cfg)
        if model not in self.models:
            return [*errors, f"eval.{self.key}.model={model!r}: must be one of {list(self.models)}"]
        option_name = f"eval.{self.key}.weights"
        if weights == "random":
            return errors + random_weights_errors(option_name, weights)
        return errors + weights_errors(self.weights_of(model), weights, option_name, self.needs(model))

    def weights(self, cfg: Any) -> tuple[str, Any]:
        """(model, weights file) of ``cfg``: the local file, the cached one, or one checked download (``random``
        in tests)."""
        from evaluation.weights import weights_file

        model, weights = self.chosen(cfg)
        if weights != "random":
            weights = weights_file(self.weights_of(model), weights, f"eval.{self.key}.weights", self.needs(model))
        return model, weights
