"""``eval.features=clip``: OpenAI's CLIP image embeddings (Radford et al. 2021), L2-normalised, the space
of CMMD (Jayasumana et al. 2024, who use ViT-L/14 at 336 x 336).

The image tower is open_clip's (``ViT-L-14-336`` by default, ``ViT-B-32`` as the small option) with
QuickGELU, the activation OpenAI trained with; the OpenAI checkpoint (a TorchScript archive or a
plain state dict) supplies its ``visual.*`` tensors. Preprocessing is open_clip's evaluation
transform on tensors: shorter side resized to the model's size (bicubic), centre crop, OpenAI's
mean and std (:func:`~evaluation.spaces.base.resize_normalise`).

Options (``eval.clip.*``): ``model`` = ``ViT-L-14-336`` (default) | ``ViT-B-32``; ``weights`` = the
local OpenAI file (null: genbench's cache, else a download checked against the SHA-256 OpenAI
publishes in its address).
"""

from __future__ import annotations

import warnings
import zipfile
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

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_BASE = "https://openaipublic.azureedge.net/clip/models"
_PUBLISHED = "full SHA-256 published by OpenAI in the download address"


def _openai(sha256: str, name: str) -> WeightsFile:
    return WeightsFile(name, f"{_BASE}/{sha256}/{name}", sha256, checked_by=_PUBLISHED)


#: model -> (input side, embedding dimension, the OpenAI checkpoint)
MODELS: dict[str, tuple[int, int, WeightsFile]] = {
    "ViT-L-14-336": (
        336,
        768,
        _openai("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt"),
    ),
    "ViT-B-32": (
        224,
        512,
        _openai("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    ),
}
DEFAULT_MODEL = "ViT-L-14-336"


class CLIPFeatures(FeatureSpace):
    """L2-normalised CLIP image embeddings (CMMD's features); no class posterior.

    Args:
        model: ``ViT-L-14-336`` or ``ViT-B-32``.
        weights: the OpenAI checkpoint file, or ``"random"`` (a seeded untrained tower, for tests).
    """

    name = "clip"

    def __init__(self, model: str = DEFAULT_MODEL, weights: Any = None):
        super().__init__()
        import open_clip
        from open_clip.model import (
            _build_vision_tower,  # the image tower alone: no text tower to build and drop
        )

        option_name = f"eval.clip.weights={str(weights)!r}"
        if weights != "random":  # read first: a bad file fails before the network is built
            state = {
                k.removeprefix("visual."): v
                for k, v in load_clip_state(weights, option_name).items()
                if k.startswith("visual.")
            }
        cfg = open_clip.get_model_config(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # "random" weights are the same in every run, so their cache id holds
            self.net = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=True)
        if weights == "random":
            self.weights_id = "random-seed0"
        else:
            try:
                self.net.load_state_dict(state, strict=True)
            except RuntimeError as e:
                first = (str(e).strip().splitlines() or ["?"])[0]
                raise ConfigError(
                    [
                        f"{option_name}: not OpenAI's CLIP {model} checkpoint ({first}); eval.clip.model must match the file"
                    ]
                ) from None
            self.weights_id = sha256_of(weights)[:16]
        self.net.float().eval().requires_grad_(False)
        self.model = model
        self.input_size, self.num_features, _ = MODELS[model]
        self.num_classes = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        embedding = self.net(resize_normalise(x, self.input_size, OPENAI_MEAN, OPENAI_STD))
        return torch.nn.functional.normalize(embedding, dim=-1), None

    def cache_id(self) -> str:
        return f"clip-{self.model}-{self.weights_id}"


def load_clip_state(path: Any, option_name: str) -> dict[str, Tensor]:
    """The tensors of an OpenAI CLIP file: a TorchScript archive (as OpenAI publishes it) or a state dict."""
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as e:  # noqa: BLE001 - a garbled file fails anywhere in the loader
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            [f"{option_name}: not a readable CLIP weights file (corrupt, truncated or unsafe: {first})"]
        ) from None
    if not isinstance(state, dict) or not any(str(k).startswith("visual.") for k in state):
        raise ConfigError([f"{option_name}: not a CLIP state dict (no visual.* tensors)"])
    return dict(state)


def _is_torchscript(path: Any) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


CHOICE = NetworkChoice(
    key="clip", weights_of=lambda m: MODELS[m][2], models=tuple(MODELS), default=DEFAULT_MODEL,
    needs=lambda m: f"eval.features=clip needs OpenAI's CLIP {m} weights",
)
settings_errors = CHOICE.errors


def _build(reference: Any, cfg: Any, device: torch.device) -> FeatureSpace:
    return CLIPFeatures(*CHOICE.weights(cfg))


SPEC = FeatureSpaceSpec(
    name="clip",
    kinds=frozenset({"image"}),
    resizes=True,
    input_size=336,
    build=_build,
    errors=settings_errors,
    description="OpenAI CLIP image embeddings, L2-normalised (CMMD's space); eval.clip.model: ViT-L-14-336|ViT-B-32",
    key_suffix="clip",
)
