"""Convolutional encoder/decoder pairs for 28×28 and 32×32 images (1 or 3 channels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from genbench.checks import integer_errors
from models.nets.checks import CheckedNet, levels_errors


class ConvEncoder(CheckedNet, nn.Module):
    """Strided convolutions down to a vector: ``[B, C, H, W] -> [B, out_features]``.

    Args:
        in_channels: image channels.
        image_size: height (= width) of the input.
        out_features: size of the output vector (e.g. 2 × latent size for a Gaussian encoder).
        ch: channels of the first level; level ``i`` has ``ch * ch_mult[i]``.
        ch_mult: one entry per stride-2 level.
    """

    def __init__(self, in_channels: int, image_size: int, out_features: int, ch: int = 32, ch_mult: Sequence[int] = (1, 2)):
        super().__init__()
        self.check_arguments(in_channels, image_size, out_features, ch, ch_mult)
        layers: list[nn.Module] = []
        c_in = in_channels
        for m in ch_mult:
            layers += [nn.Conv2d(c_in, ch * m, 4, stride=2, padding=1), nn.SiLU()]
            c_in = ch * m
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(ch_mult)
        self.head = nn.Linear(c_in * side * side, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))

    @staticmethod
    def argument_errors(in_channels: Any, image_size: Any, out_features: Any, ch: Any, ch_mult: Any,
                        prefix: str = "") -> list[str]:  # fmt: skip
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        return integer_errors(prefix, ("in_channels", in_channels, 1), ("image_size", image_size, 1),
                              ("out_features", out_features, 1), ("ch", ch, 1)) + levels_errors(
            prefix, ch_mult, image_size, name="the encoder")  # fmt: skip


class ConvDecoder(CheckedNet, nn.Module):
    """A vector up to an image with transposed convolutions: ``[B, in_features] -> [B, C, H, W]``.

    Mirrors :class:`ConvEncoder`; the output is unbounded (the likelihood or a ``tanh`` maps it).
    """

    def __init__(self, in_features: int, out_channels: int, image_size: int, ch: int = 32, ch_mult: Sequence[int] = (1, 2)):
        super().__init__()
        self.check_arguments(in_features, out_channels, image_size, ch, ch_mult)
        mults = list(ch_mult)[::-1]
        self.side = image_size // 2 ** len(mults)
        self.c0 = ch * mults[0]
        self.head = nn.Linear(in_features, self.c0 * self.side * self.side)
        layers: list[nn.Module] = [nn.SiLU()]
        c_in = self.c0
        for i in range(len(mults)):
            last = i == len(mults) - 1
            c_out = out_channels if last else ch * mults[i + 1]
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.SiLU())
            c_in = c_out
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.head(z).view(-1, self.c0, self.side, self.side))

    @staticmethod
    def argument_errors(in_features: Any, out_channels: Any, image_size: Any, ch: Any, ch_mult: Any,
                        prefix: str = "") -> list[str]:  # fmt: skip
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        return integer_errors(prefix, ("in_features", in_features, 1), ("out_channels", out_channels, 1),
                              ("image_size", image_size, 1), ("ch", ch, 1)) + levels_errors(
            prefix, ch_mult, image_size, name="the decoder")  # fmt: skip
