"""Feature spaces of the evaluation (``eval.features``), read from a registry.

Every space maps a batch in the genbench data range to ``(features, logits)``: ``features``
feed FID, KID and precision/recall/density/coverage; ``logits`` feed the Inception Score
(``None`` where the space has no class posterior). A space is one :class:`FeatureSpaceSpec`
and one :func:`register_feature_space` call; config checks, ``auto`` and the evaluator read the
registry. The built-in spaces:

- ``raw``: the coordinates of 2-D points; the class posterior is the posterior over the mixture's
  modes, p(k | x) ∝ N(x; μ_k, σ²I), when the data set knows its modes.
- ``classifier``: a small CNN trained on the data set's train split (:mod:`evaluation.classifier`).
- ``inception``: torch-fidelity's InceptionV3, the published FID/IS/KID (:mod:`evaluation.spaces.inception`).
- ``dinov2``: DINOv2's CLS token at 224, Stein et al. (2023)'s FD_DINOv2 (:mod:`evaluation.spaces.dinov2`).
- ``clip``: OpenAI CLIP image embeddings, CMMD's space (:mod:`evaluation.spaces.clip`).

``auto`` is ``classifier`` for images and ``raw`` for points. Pretrained weights are local files or
one checked download (:mod:`evaluation.weights`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from evaluation.classifier import ClassifierSettings, load_or_train_classifier
from evaluation.spaces import clip, dinov2, inception
from evaluation.spaces.base import (
    FEATURE_SPACES,
    FeatureSpace,
    FeatureSpaceSpec,
    build_feature_space,
    feature_space_names,
    feature_space_spec,
    register_feature_space,
    resolve_feature_space,
    to_uint8,
    unregister_feature_space,
)
from evaluation.spaces.clip import CLIPFeatures
from evaluation.spaces.dinov2 import DINOv2Features
from evaluation.spaces.inception import (
    INCEPTION_URL,
    InceptionFeatures,
    check_inception_weights,
    default_inception_weights,
    inception_weights_path,
)
from genbench.errors import ConfigError

__all__ = [
    "FEATURE_SPACES", "INCEPTION_URL", "CLIPFeatures", "ClassifierFeatures", "DINOv2Features", "FeatureSpace",
    "FeatureSpaceSpec", "InceptionFeatures", "RawFeatures", "build_feature_space", "check_inception_weights",
    "default_inception_weights", "feature_space_names", "feature_space_spec", "file_sha1", "inception_weights_path",
    "register_feature_space", "resolve_feature_space", "to_uint8", "unregister_feature_space",
]  # fmt: skip


class RawFeatures(FeatureSpace):
    """The points themselves; mode posteriors as logits when the mixture is known."""

    name = "raw"

    def __init__(self, dim: int, centers: Tensor | None = None, std: float | None = None):
        super().__init__()
        self.num_features = int(dim)
        self.std = None if std is None else float(std)
        self.register_buffer("centers", None if centers is None else centers.float().clone())
        self.num_classes = None if centers is None else len(centers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = x.flatten(1).float()
        if self.centers is None:
            return x, None
        # log p(k | x) up to a constant: log N(x; μ_k, σ²I) with equal weights 1/K.
        logits = -torch.cdist(x, self.centers).square() / (2 * self.std**2)
        return x, logits

    def cache_id(self) -> str:
        return "raw"


class ClassifierFeatures(FeatureSpace):
    """Penultimate activations and logits of the data set's cached :class:`~evaluation.classifier.SmallCNN`."""

    name = "classifier"

    def __init__(self, net: nn.Module, train_info: dict[str, Any]):
        super().__init__()
        # NHWC weights, as InceptionFeatures: oneDNN's convolutions and max-pooling run about 1.8x
        # faster in that layout (250 digits, one thread: 49 -> 27 ms), features equal to 3e-7.
        self.net = net.to(memory_format=torch.channels_last)
        self.num_features = net.num_features
        self.num_classes = net.num_classes
        self.train_info = train_info

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.net(x.float())

    def cache_id(self) -> str:
        return f"classifier-{self.train_info['weights_sha1']}"

    def info(self) -> dict[str, Any]:
        return {"classifier_accuracy": round(self.train_info["accuracy"], 5)}


@lru_cache(maxsize=8)
def file_sha1(path: str, size: int, mtime_ns: int) -> str:
    """sha1 of a file's bytes, memoised per (path, size, mtime)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _build_raw(reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    return RawFeatures(reference.data_shape[0], reference.centers, reference.std)


def _build_classifier(reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    if not reference.has_labels:
        reference.labelled("train")  # raises the explanation
    if reference.data_shape[-1] % 4 or reference.data_shape[-1] != reference.data_shape[-2]:
        raise ConfigError(
            [
                f"eval.features='classifier': needs square images with a side divisible by 4, got {list(reference.data_shape)}"
            ]
        )
    net, info = load_or_train_classifier(reference, ClassifierSettings.from_dict(cfg.classifier), device)
    return ClassifierFeatures(net, info)


def _no_errors(cfg: Any) -> list[str]:
    return []


register_feature_space(FeatureSpaceSpec(
    name="raw", kinds=frozenset({"points"}), resizes=False, input_size=None, build=_build_raw, errors=_no_errors,
    description="the 2-D points themselves; logits: the posterior over the mixture's modes",
))  # fmt: skip
register_feature_space(FeatureSpaceSpec(
    name="classifier", kinds=frozenset({"image"}), resizes=False, input_size=None, build=_build_classifier,
    errors=_no_errors,  # eval.classifier.* is checked with every config: auto picks this space for images
    description="a small CNN trained on the data set's train split (works offline)",
))  # fmt: skip
for _spec in (inception.SPEC, dinov2.SPEC, clip.SPEC):
    register_feature_space(_spec)
