"""``eval.features=dinov2``: the DINOv2 ViT of Oquab et al. (2023), the feature space Stein et al. (2023)
recommend for FD / precision / recall ("FD_DINOv2"), computed as their dgm-eval does.

dgm-eval resizes every image to 224 x 224 (bicubic), normalises it with the ImageNet mean and std,
and takes the output of the hub model: the CLS token after the final LayerNorm (``x_norm_clstoken``).
Here the network is timm's DINOv2 ViT built for 224 x 224 inputs; the official checkpoint (trained
at 518, a 37 x 37 grid) is mapped by timm's own checkpoint filter, after its position embeddings
are resampled to the 16 x 16 grid exactly as DINOv2 resamples them at run time (bicubic with
scale factor (16 + 0.1) / 37, no antialiasing), so the features equal the hub model's at 224.

Options (``eval.dinov2.*``): ``model`` = ``vits14`` | ``vitb14`` | ``vitl14`` (default) | ``vitg14``;
``weights`` = a local ``dinov2_<model>_pretrain.pth`` (null: genbench's cache, else a checked download
from Meta, see :mod:`evaluation.weights`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from evaluation.spaces.base import (
    FeatureSpace,
    FeatureSpaceSpec,
    NetworkChoice,
    resize_normalise,
)
from evaluation.weights import WeightsFile, sha256_of
from genbench.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
PATCH = 14
#: DINOv2 resamples its position embeddings with this offset added to the grid size (dinov2's ``interpolate_offset``).
INTERPOLATE_OFFSET = 0.1

_BASE = "https://dl.fbaipublicfiles.com/dinov2"
_PINNED = "full SHA-256 as pinned by independent public projects (Meta publishes none)"
#: model -> (timm architecture, feature dimension, the official checkpoint)
MODELS: dict[str, tuple[str, int, WeightsFile]] = {
    "vits14": ("vit_small_patch14_dinov2", 384, WeightsFile(
        "dinov2_vits14_pretrain.pth", f"{_BASE}/dinov2_vits14/dinov2_vits14_pretrain.pth",
        "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9", checked_by=_PINNED)),
    "vitb14": ("vit_base_patch14_dinov2", 768, WeightsFile(
        "dinov2_vitb14_pretrain.pth", f"{_BASE}/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
        "0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73", checked_by=_PINNED)),
    "vitl14": ("vit_large_patch14_dinov2", 1024, WeightsFile(
        "dinov2_vitl14_pretrain.pth", f"{_BASE}/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428", checked_by=_PINNED)),
    "vitg14": ("vit_giant_patch14_dinov2", 1536, WeightsFile(
        "dinov2_vitg14_pretrain.pth", f"{_BASE}/dinov2_vitg14/dinov2_vitg14_pretrain.pth",
        "baf8467e50af277596bbbafa06887c177ee899ab46033649c383577d7e9309d3", checked_by=_PINNED)),
}  # fmt: skip
DEFAULT_MODEL = "vitl14"


class DINOv2Features(FeatureSpace):
    """CLS token of a DINOv2 ViT at 224 x 224 (dgm-eval's FD_DINOv2 features); no class posterior.

    Args:
        model: ``vits14``, ``vitb14``, ``vitl14`` or ``vitg14``.
        weights: the official checkpoint file, or ``"random"`` (a seeded untrained network, for tests).
    """

    name = "dinov2"

    def __init__(self, model: str = DEFAULT_MODEL, weights: Any = None):
        super().__init__()
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        arch, dim, _ = MODELS[model]
        option_name = f"eval.dinov2.weights={str(weights)!r}"
        if weights != "random":  # read first: a bad file fails before the network is built
            state = resample_pos_embed(load_official_checkpoint(weights, option_name), INPUT_SIZE // PATCH)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # "random" weights are the same in every run, so their cache id holds
            self.net = timm.create_model(arch, pretrained=False, img_size=INPUT_SIZE, num_classes=0)
        if weights == "random":
            self.weights_id = "random-seed0"
        else:
            state = checkpoint_filter_fn(
                state, self.net
            )  # timm's names: drops mask_token, maps ViT-g's SwiGLU
            try:
                self.net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                first = (str(e).strip().splitlines() or ["?"])[0]
                raise ConfigError(
                    [
                        f"{option_name}: not the DINOv2 {model} checkpoint ({first}); eval.dinov2.model must match the file"
                    ]
                ) from None
            self.weights_id = sha256_of(weights)[:16]
        self.net.eval().requires_grad_(False)
        self.model = model
        self.num_features = dim
        self.num_classes = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.net(resize_normalise(x, INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD)), None

    def cache_id(self) -> str:
        return f"dinov2-{self.model}-{self.weights_id}"


def load_official_checkpoint(path: Any, option_name: str) -> dict[str, Tensor]:
    """A state dict, read safely (``weights_only``); one clear error for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a garbled file fails anywhere in the unpickler
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            [f"{option_name}: not a readable weights file (corrupt, truncated or unsafe: {first})"]
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("pos_embed"), Tensor):
        raise ConfigError([f"{option_name}: not a DINOv2 state dict (no pos_embed tensor)"])
    return state


def resample_pos_embed(state: dict[str, Tensor], grid: int) -> dict[str, Tensor]:
    """Position embeddings of a ``M x M`` grid (plus CLS) resampled to ``grid x grid``, as DINOv2's
    ``interpolate_pos_encoding`` does for every forward pass at that size."""
    pos = state["pos_embed"].float()
    n, dim = pos.shape[1] - 1, pos.shape[2]
    m = math.isqrt(n)
    if m * m != n or m == grid:
        return state
    scale = (grid + INTERPOLATE_OFFSET) / m
    patches = torch.nn.functional.interpolate(
        pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=(scale, scale),
        mode="bicubic",
        antialias=False,
    )
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return {**state, "pos_embed": torch.cat([pos[:, :1], patches], dim=1).to(state["pos_embed"].dtype)}


CHOICE = NetworkChoice(
    key="dinov2", weights_of=lambda m: MODELS[m][2], models=tuple(MODELS), default=DEFAULT_MODEL,
    needs=lambda m: f"eval.features=dinov2 needs the DINOv2 {m} weights",
)
settings_errors = CHOICE.errors


def _build(reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    return DINOv2Features(*CHOICE.weights(cfg))


SPEC = FeatureSpaceSpec(
    name="dinov2",
    kinds=frozenset({"image"}),
    resizes=True,
    input_size=INPUT_SIZE,
    build=_build,
    errors=settings_errors,
    description="DINOv2 ViT CLS token at 224 (Stein et al. 2023's FD_DINOv2); eval.dinov2.model: vits14|vitb14|vitl14|vitg14",
    key_suffix="dinov2",
)
