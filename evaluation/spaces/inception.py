"""``eval.features=inception``: torch-fidelity's InceptionV3, as the published FIDs, IS and KIDs use it.

The 2048-d pool3 features and 1008 unbiased logits, through torchmetrics' ``NoTrainInceptionV3``.
``eval.resize`` picks how images reach 299 x 299:

- ``torch-fidelity`` (the default): the TensorFlow-1.x-compatible bilinear resize (``antialias=False``),
  so the numbers are those of torch-fidelity (and of the TF FID code its weights come from);
- ``clean``: clean-fid's PIL bicubic on each 8-bit image, not quantised after the filter
  (:func:`evaluation.resize.clean_resize`), so the numbers are those of clean-fid's ``mode="clean"``.

The mode is part of the space's cache id: real statistics of one mode are never used for the other. Weights: ``eval.inception_weights``, else torch's hub cache (where torch-fidelity
keeps them), else genbench's cache, else one checked download (:mod:`evaluation.weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from evaluation.resize import INCEPTION_SIZE, clean_resize
from evaluation.spaces.base import FeatureSpace, FeatureSpaceSpec, option, to_uint8
from evaluation.weights import WeightsFile, sha256_of, weights_errors, weights_file
from genbench.errors import ConfigError

INCEPTION = WeightsFile(
    name="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    sha256_prefix="6726825d",
    checked_by="prefix 6726825d published in the file name; full SHA-256 as pinned by independent public projects",
)
INCEPTION_URL = INCEPTION.url
OPTION = "eval.inception_weights"
NEEDS = "eval.features=inception needs the InceptionV3 weights of torch-fidelity"
ALTERNATIVE = "use eval.features=classifier (works offline)"
#: ``eval.resize``: torch-fidelity's bilinear resize (TF-1.x compatible) or clean-fid's PIL bicubic.
RESIZE_MODES = ("torch-fidelity", "clean")


class InceptionFeatures(FeatureSpace):
    """torch-fidelity's InceptionV3 (pool3 2048-d, unbiased logits) via torchmetrics, loaded from a local file."""

    name = "inception"

    def __init__(self, weights: Path, resize: str = "torch-fidelity"):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ConfigError([f"eval.resize={resize!r}: must be one of {list(RESIZE_MODES)}"])
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
            raise ConfigError(
                [f"{OPTION}={str(weights)!r}: does not fit torch-fidelity's InceptionV3 ({first})"]
            ) from None
        # NHWC weights: oneDNN's (and cuDNN's) faster convolution layout. On 2 CPU cores, 50 MNIST digits
        # resized to 299 x 299: 6.7 s -> 4.4 s, features equal to 6e-6 (of ~0.6).
        self.net.to(memory_format=torch.channels_last)
        self.weights = weights
        self.resize = resize
        self.num_features = 2048
        self.num_classes = 1008

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        # Inception sees 8-bit RGB, as torch-fidelity reads image files: grey is repeated.
        x = to_uint8(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize == "clean":
            return self.forward_resized(clean_resize(x, INCEPTION_SIZE))
        pool, logits = self.net._torch_fidelity_forward(x)
        return pool, logits

    def forward_resized(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pool3, logits) of float images ``[B, 3, 299, 299]`` in [0, 255], already resized: clean-fid's
        input to its Inception, which normalises them as torch-fidelity's does, (x − 128) / 128.

        torch-fidelity's forward takes 8-bit images and always resizes them; a float image replaces
        its resized input at the first convolution (a pre-hook), so the rest of the network is its own.
        """
        normalised = ((x.float() - 128) / 128).contiguous(memory_format=torch.channels_last)
        hook = self.net.Conv2d_1a_3x3.register_forward_pre_hook(lambda module, args: (normalised,))
        try:
            placeholder = torch.zeros(len(x), 3, *INCEPTION_SIZE, dtype=torch.uint8, device=x.device)
            pool, logits = self.net._torch_fidelity_forward(placeholder)
        finally:
            hook.remove()
        return pool, logits

    def cache_id(self) -> str:
        suffix = "" if self.resize == "torch-fidelity" else f"-{self.resize}"  # the default keeps its cache entries
        return f"inception-{sha256_of(self.weights)[:16]}{suffix}"


def default_inception_weights() -> Path:
    """Where torch-fidelity keeps the downloaded weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION.name


def inception_weights_path(value: str | None) -> Path:
    """The weights file of ``eval.inception_weights``: the option, torch's hub cache, genbench's cache or a checked download."""
    return weights_file(INCEPTION, value, OPTION, NEEDS, [default_inception_weights()], ALTERNATIVE)


def check_inception_weights(path: Path) -> None:
    """Refuse a file that is not a (safe) InceptionV3 state dict, before torch-fidelity unpickles it."""
    name = f"{OPTION}={str(path)!r}"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a garbled file fails anywhere in the unpickler (IndexError for text)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            [f"{name}: not a readable InceptionV3 weights file (corrupt, truncated or unsafe: {first})"]
        ) from None
    if (
        not isinstance(sd, dict)
        or not isinstance(sd.get("fc.weight"), Tensor)
        or tuple(sd["fc.weight"].shape) != (1008, 2048)
    ):
        got = sorted(sd)[:3] if isinstance(sd, dict) else type(sd).__name__
        raise ConfigError(
            [
                f"{name}: not an InceptionV3 state dict of torch-fidelity (no fc.weight of shape (1008, 2048); keys start {got})"
            ]
        )


def _errors(cfg: Any) -> list[str]:
    return weights_errors(
        INCEPTION, option(cfg, "inception_weights"), OPTION, NEEDS, [default_inception_weights()], ALTERNATIVE
    )


def _build(reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    return InceptionFeatures(inception_weights_path(option(cfg, "inception_weights")), option(cfg, "resize", "torch-fidelity"))


SPEC = FeatureSpaceSpec(
    name="inception",
    kinds=frozenset({"image"}),
    resizes=True,
    input_size=299,
    build=_build,
    errors=_errors,
    description="torch-fidelity's InceptionV3: pool3 (2048-d) and logits (IS), the published FID/IS/KID protocol",
)
