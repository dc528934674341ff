"""DCGAN generator and discriminator (Radford et al. 2016) for 28×28 and 32×32 images, 1 or 3 channels.

Following the paper's guidelines: strided (transposed) convolutions instead of pooling,
batch norm in the generator, ReLU in the generator with ``tanh`` on the output, LeakyReLU(0.2)
in the discriminator, no normalisation on the discriminator's input layer. The discriminator's
normalisation is a choice, because batch norm mixes examples, which the per-example gradient
penalties of WGAN-GP and R1 assume it does not (Gulrajani et al. 2017, §4: use layer norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from genbench.checks import integer_errors
from models.nets.checks import CheckedNet, levels_errors

DISCRIMINATOR_NORMS = ("none", "batch", "layer")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W) of each example
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r}: must be one of {list(DISCRIMINATOR_NORMS)}")


class DCGANGenerator(CheckedNet, nn.Module):
    """``z [B, latent_dim] -> image [B, C, H, W]`` in [-1, 1].

    Args:
        latent_dim: size of z.
        out_channels: image channels.
        image_size: height (= width) of the output; a multiple of ``2 ** len(ch_mult)``.
        ch: base width; the levels mirror the discriminator's ``ch * ch_mult[i]`` (deepest first).
        ch_mult: one entry per ×2 upsampling (28 → 7 → 14 → 28 with two entries, 32 → 8 → 16 → 32).
        batch_norm: batch norm after every hidden layer (the paper's choice).
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2),
        batch_norm: bool = True,
    ):
        super().__init__()
        self.check_arguments(latent_dim, out_channels, image_size, ch, ch_mult, batch_norm)
        mults = list(ch_mult)[::-1]
        self.side = image_size // 2 ** len(mults)
        self.c0 = ch * mults[0]
        norm = nn.BatchNorm2d if batch_norm else (lambda c: nn.Identity())
        # The projection of z: a linear map reshaped to the first feature map (the paper's "project and reshape").
        self.project = nn.Linear(latent_dim, self.c0 * self.side * self.side, bias=not batch_norm)
        layers: list[nn.Module] = [norm(self.c0), nn.ReLU()]
        c_in = self.c0
        for i in range(len(mults)):
            last = i == len(mults) - 1
            c_out = out_channels if last else ch * mults[i + 1]
            layers.append(
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=last or not batch_norm)
            )
            layers += [nn.Tanh()] if last else [norm(c_out), nn.ReLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z).view(-1, self.c0, self.side, self.side))

    @staticmethod
    def argument_errors(latent_dim: Any, out_channels: Any, image_size: Any, ch: Any, ch_mult: Any, batch_norm: Any,
                        prefix: str = "") -> list[str]:  # fmt: skip
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        errors = integer_errors(prefix, ("latent_dim", latent_dim, 1), ("out_channels", out_channels, 1),
                                ("image_size", image_size, 1), ("ch", ch, 1))  # fmt: skip
        errors += levels_errors(prefix, ch_mult, image_size, name="the generator")
        if not isinstance(batch_norm, bool):
            errors.append(f"{prefix}batch_norm={batch_norm!r}: must be true or false")
        return errors


class DCGANDiscriminator(CheckedNet, nn.Module):
    """``image [B, C, H, W] -> logit [B, 1]`` (no sigmoid: the losses take logits).

    Args:
        in_channels: image channels.
        image_size: height (= width) of the input; a multiple of ``2 ** len(ch_mult)``.
        ch: base width; level ``i`` has ``ch * ch_mult[i]`` channels.
        ch_mult: one entry per stride-2 convolution.
        norm: ``none``, ``batch`` or ``layer`` after every convolution but the first.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        ch: int = 64,
        ch_mult: Sequence[int] = (1, 2),
        norm: str = "batch",
    ):
        super().__init__()
        self.check_arguments(in_channels, image_size, ch, ch_mult, norm)
        side = image_size // 2 ** len(ch_mult)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, m in enumerate(ch_mult):
            layers.append(nn.Conv2d(c_in, ch * m, 4, stride=2, padding=1))
            if i > 0:
                layers.append(_norm(norm, ch * m))
            layers.append(nn.LeakyReLU(0.2))
            c_in = ch * m
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side * side, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))

    @staticmethod
    def argument_errors(in_channels: Any, image_size: Any, ch: Any, ch_mult: Any, norm: Any,
                        prefix: str = "") -> list[str]:  # fmt: skip
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        errors = integer_errors(prefix, ("in_channels", in_channels, 1), ("image_size", image_size, 1), ("ch", ch, 1))
        errors += levels_errors(prefix, ch_mult, image_size, name="the discriminator")
        if norm not in DISCRIMINATOR_NORMS:
            errors.append(f"{prefix}norm={norm!r}: must be one of {list(DISCRIMINATOR_NORMS)}")
        return errors
