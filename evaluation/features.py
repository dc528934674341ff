"""Feature spaces of the evaluation (``eval.features``).

Every space maps a batch in the genbench data range to ``(features, logits)``: ``features``
feed FID, KID and precision/recall/density/coverage; ``logits`` feed the Inception Score
(``None`` where the space has no class posterior).

- ``inception``: the 2048-d pool3 features and 1008 unbiased logits of the InceptionV3 of
  torch-fidelity, through torchmetrics' ``NoTrainInceptionV3`` with the TensorFlow-1.x-compatible
  bilinear resize (``antialias=False``), so the numbers are those of torch-fidelity and of the
  published FIDs. The weights come from ``eval.inception_weights`` or torch's hub cache; genbench
  never downloads them.
- ``classifier``: a small CNN trained on the data set's train split (:mod:`evaluation.classifier`).
- ``raw``: the coordinates of 2-D points; the class posterior is the posterior over the mixture's
  modes, p(k | x) ∝ N(x; μ_k, σ²I), when the data set knows its modes.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from evaluation.classifier import ClassifierSettings, load_or_train_classifier
from genbench.errors import ConfigError

FEATURE_SPACES = ("auto", "classifier", "inception", "raw")
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


def resolve_feature_space(name: str, is_image: bool) -> str:
    """``auto`` -> ``classifier`` for images, ``raw`` for points; other names are checked against the data."""
    if name == "auto":
        return "classifier" if is_image else "raw"
    if name not in FEATURE_SPACES:
        raise ConfigError([f"eval.features={name!r}: must be one of {list(FEATURE_SPACES)}"])
    if is_image and name == "raw":
        raise ConfigError(["eval.features='raw': is for 2-D points; images use 'classifier' or 'inception'"])
    if not is_image and name != "raw":
        raise ConfigError([f"eval.features={name!r}: 2-D points have no {name} features; use 'raw' (or 'auto')"])
    return name


class FeatureSpace(nn.Module):
    """Base of the feature spaces: ``forward(x) -> (features [B, D], logits [B, K] | None)``."""

    name: str = "base"
    num_features: int
    num_classes: int | None = None

    def cache_id(self) -> str:
        """Identifies the space *and its weights* in cache keys."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Extra entries of the results (e.g. the classifier's accuracy)."""
        return {}


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


class InceptionFeatures(FeatureSpace):
    """torch-fidelity's InceptionV3 (pool3 2048-d, unbiased logits) via torchmetrics, loaded from a local file."""

    name = "inception"

    def __init__(self, weights: Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        check_inception_weights(weights)
        try:
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(weights),
                antialias=False,  # torch-fidelity's resize, as the published numbers
            )
        except RuntimeError as e:  # load_state_dict: missing / unexpected / mis-shaped tensors
            first = (str(e).strip().splitlines() or ["?"])[0]
            raise ConfigError([f"eval.inception_weights={str(weights)!r}: does not fit torch-fidelity's InceptionV3 ({first})"]) from None
        # NHWC weights: oneDNN's (and cuDNN's) faster convolution layout. On 2 CPU cores, 50 MNIST digits
        # resized to 299 x 299: 6.7 s -> 4.4 s, features equal to 6e-6 (of ~0.6).
        self.net.to(memory_format=torch.channels_last)
        self.weights = weights
        self.num_features = 2048
        self.num_classes = 1008

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        # Inception sees 8-bit RGB, as torch-fidelity reads image files: grey is repeated.
        x = to_uint8(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pool, logits = self.net._torch_fidelity_forward(x)
        return pool, logits

    def cache_id(self) -> str:
        return f"inception-{file_sha1(str(self.weights), *_stat(self.weights))}"


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] -> {0, ..., 255}, rounding as an image file stores it."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def file_sha1(path: str, size: int, mtime_ns: int) -> str:
    """sha1 of a file's bytes, memoised per (path, size, mtime)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --- Inception weights --------------------------------------------------------------------
def default_inception_weights() -> Path:
    """Where torch-fidelity keeps the downloaded weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]


def inception_weights_path(value: str | None) -> Path:
    """The weights file of ``eval.inception_weights`` (or the hub cache when null); one clear error when missing."""
    if value:
        path = Path(str(value)).expanduser()
        if not path.is_file():
            raise ConfigError([f"eval.inception_weights={value!r}: no such file"])
        return path
    path = default_inception_weights()
    if not path.is_file():
        raise ConfigError([
            "eval.inception_weights=null: eval.features=inception needs the InceptionV3 weights of torch-fidelity "
            f"and none are in {path.parent}. genbench does not download them: fetch {INCEPTION_URL} and set "
            "eval.inception_weights=PATH, or use eval.features=classifier (works offline)"
        ])
    return path


def check_inception_weights(path: Path) -> None:
    """Refuse a file that is not a (safe) InceptionV3 state dict, before torch-fidelity unpickles it."""
    option = f"eval.inception_weights={str(path)!r}"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a garbled file fails anywhere in the unpickler (IndexError for text)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError([f"{option}: not a readable InceptionV3 weights file (corrupt, truncated or unsafe: {first})"]) from None
    if not isinstance(sd, dict) or not isinstance(sd.get("fc.weight"), Tensor) or tuple(sd["fc.weight"].shape) != (1008, 2048):
        got = sorted(sd)[:3] if isinstance(sd, dict) else type(sd).__name__
        raise ConfigError([f"{option}: not an InceptionV3 state dict of torch-fidelity (no fc.weight of shape (1008, 2048); keys start {got})"])


# --- building ---------------------------------------------------------------------------
def build_feature_space(name: str, reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    """The feature space ``name`` (already resolved) for ``reference``'s data, on ``device``.

    Args:
        name: ``classifier``, ``inception`` or ``raw``.
        reference: the real reference (its data set trains the classifier; its modes give raw logits).
        cfg: the :class:`~evaluation.config.EvalConfig`.
    """
    if name == "raw":
        return RawFeatures(reference.data_shape[0], reference.centers, reference.std).to(device)
    if name == "inception":
        return InceptionFeatures(inception_weights_path(cfg.inception_weights)).to(device)
    if name == "classifier":
        if not reference.has_labels:
            reference.labelled("train")  # raises the explanation
        if reference.data_shape[-1] % 4 or reference.data_shape[-1] != reference.data_shape[-2]:
            raise ConfigError([f"eval.features='classifier': needs square images with a side divisible by 4, got {list(reference.data_shape)}"])
        net, info = load_or_train_classifier(reference, ClassifierSettings.from_dict(cfg.classifier), device)
        return ClassifierFeatures(net, info).to(device)
    raise ConfigError([f"eval.features={name!r}: must be one of {list(FEATURE_SPACES)}"])
