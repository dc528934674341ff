"""The ε-network of DDPM (Ho et al. 2020, §4 and appendix B): a PixelCNN++-style U-Net.

Sinusoidal time embedding (Vaswani et al. 2017) → two dense layers → added to every residual
block; residual blocks with GroupNorm, SiLU and dropout; self-attention blocks at chosen
resolutions; ``num_res_blocks`` blocks per resolution on the way down and ``num_res_blocks + 1``
on the way up, each fed a skip connection. With ``ch=128, ch_mult=(1, 2, 2, 2),
num_res_blocks=2, attn_resolutions=(16,), dropout=0.1`` on 32×32×3 images it is the paper's
35.7 M-parameter CIFAR-10 network (``conf/net/unet_cifar10.yaml``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbench.checks import integer_errors, is_int, is_number
from models.nets.checks import CheckedNet, levels_errors


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (0-indexed) timesteps ``t`` ``[B]`` → ``[B, dim]``.

    [sin(t ω_0), …, sin(t ω_{d/2−1}), cos(t ω_0), …], ω_k = max_period^(−k / (d/2 − 1)),
    as in Ho et al.'s code (the Transformer's positional encoding, Vaswani et al. 2017 §3.5).
    """
    half = dim // 2
    scale = math.log(max_period) / max(half - 1, 1)
    freqs = torch.exp(-scale * torch.arange(half, device=t.device, dtype=torch.float32))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → + time projection → GroupNorm → SiLU → dropout → conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Ho et al.'s init scale 1e-10)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = (
            self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        )  # [B, HW, C] each
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # softmax(QKᵀ/√C) V
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """3×3 convolution with stride 2."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(CheckedNet, nn.Module):
    """ε_θ(x_t, t) for images ``[B, C, H, W]`` and 0-indexed timesteps ``[B]``.

    Args:
        in_channels: image channels (the output has the same number).
        image_size: H = W; must be divisible by 2^(len(ch_mult) − 1).
        ch: base channel count; level i has ``ch * ch_mult[i]`` channels.
        ch_mult: channel multipliers, one per resolution level.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (in pixels) that get a self-attention block after each
            residual block; each must be one of the levels' resolutions.
        attn_levels: the same by level index (0 = full resolution, −1 = the lowest), for configs
            shared by data sets of different sizes; the two lists are combined.
        dropout: dropout rate inside the residual blocks.
        groups: GroupNorm groups (32 in the paper); must divide every block's channel count.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        groups: int = 32,
        attn_levels: Sequence[int] = (),
    ):
        super().__init__()
        self.check_arguments(
            in_channels,
            image_size,
            ch,
            ch_mult,
            num_res_blocks,
            attn_resolutions,
            dropout,
            groups,
            attn_levels,
        )
        ch_mult = tuple(ch_mult)
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        attn_resolutions = set(attn_resolutions) | {resolutions[i] for i in attn_levels}
        self.attn_resolutions = sorted(attn_resolutions, reverse=True)
        self.ch, self.image_size = ch, image_size
        temb_ch = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Down: remember every output's channel count, they are the skips of the way up.
        self.down = nn.ModuleList()
        skips, block_in, res = [ch], ch, image_size
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([ResBlock(block_in, ch * mult, temb_ch, dropout, groups)])
                block_in = ch * mult
                if res in attn_resolutions:
                    layer.append(AttnBlock(block_in, groups))
                self.down.append(layer)
                skips.append(block_in)
            if level != len(ch_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(block_in)]))
                skips.append(block_in)
                res //= 2

        self.mid = nn.ModuleList(
            [
                ResBlock(block_in, block_in, temb_ch, dropout, groups),
                AttnBlock(block_in, groups),
                ResBlock(block_in, block_in, temb_ch, dropout, groups),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([ResBlock(block_in + skips.pop(), ch * mult, temb_ch, dropout, groups)])
                block_in = ch * mult
                if res in attn_resolutions:
                    layer.append(AttnBlock(block_in, groups))
                self.up.append(layer)
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(block_in)]))
                res *= 2

        self.norm_out = nn.GroupNorm(groups, block_in)
        self.conv_out = nn.Conv2d(block_in, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run(layer: nn.ModuleList, h: Tensor, temb: Tensor) -> Tensor:
        for m in layer:
            h = m(h, temb) if isinstance(m, ResBlock) else m(h)
        return h

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.temb(timestep_embedding(t, self.ch))
        hs = [self.conv_in(x)]
        for layer in self.down:
            hs.append(self._run(layer, hs[-1], temb))
        h = self._run(self.mid, hs[-1], temb)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layer, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))

    # --- configuration checks ---------------------------------------------------------
    @staticmethod
    def argument_errors(
        in_channels: Any,
        image_size: Any,
        ch: Any,
        ch_mult: Any,
        num_res_blocks: Any,
        attn_resolutions: Any,
        dropout: Any,
        groups: Any,
        attn_levels: Any,
        prefix: str = "",
    ) -> list[str]:
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        errors = integer_errors(prefix, ("in_channels", in_channels, 1), ("image_size", image_size, 1), ("ch", ch, 1),
                                ("num_res_blocks", num_res_blocks, 1), ("groups", groups, 1))  # fmt: skip
        if not (is_number(dropout) and 0 <= dropout < 1):
            errors.append(f"{prefix}dropout={dropout!r}: must be a number in [0, 1)")
        # the lowest level is not halved: len(ch_mult) - 1 halvings
        errors += levels_errors(prefix, ch_mult, image_size, len(ch_mult) - 1 if isinstance(ch_mult, Sequence) else None,
                                name="the UNet")  # fmt: skip
        if errors:
            return errors
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        if not isinstance(attn_resolutions, Sequence) or any(r not in resolutions for r in attn_resolutions):
            errors.append(
                f"{prefix}attn_resolutions={attn_resolutions!r}: each must be one of the UNet's resolutions {resolutions}"
            )
        n = len(ch_mult)
        if not isinstance(attn_levels, Sequence) or not all(is_int(i, -n) and i < n for i in attn_levels):
            errors.append(
                f"{prefix}attn_levels={attn_levels!r}: each must be a level index in [{-n}, {n - 1}] (len(ch_mult)={n})"
            )
        widths = {ch} | {ch * m for m in ch_mult}
        bad = sorted(w for w in widths if w % groups)
        if bad:
            errors.append(
                f"{prefix}groups={groups}: must divide every level's channel count ch*ch_mult = {sorted(widths)}"
            )
        return errors
