"""The report figures each family offers (named by its :class:`~models.registry.FamilySpec`).

Each function takes the trained model, a few validation images ``real`` ``[8, C, H, W]``, a seeded
generator and the evaluation's sampler settings, and returns rows of images; the report
(:mod:`genbench.report`) draws them. Families without figures show their samples only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.registry import FigureRows


def ddpm_figures(ddpm: Any, real: Tensor, g: torch.Generator, sample_kwargs: dict[str, Any]) -> list[FigureRows]:
    """The forward process q(x_t | x_0) (eq. 4) on validation images, and the reverse chain x_T → x_0."""
    sched = ddpm.schedule
    T = sched.T
    ts = [0, T // 20, T // 10, T // 5, T // 3, T // 2, 2 * T // 3, 5 * T // 6, T - 1]
    x0 = real[:4]
    noise = torch.randn(x0.shape, generator=g)
    rows = []
    for i in range(len(x0)):
        frames = [sched.q_sample(x0[i : i + 1], torch.tensor([t]), noise[i : i + 1])[0] for t in ts]
        rows.append((f"digit {i + 1}", torch.stack([x0[i]] + frames[1:])))
    forward = FigureRows(
        "forward_diffusion", "The forward process",
        "q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) applied to validation digits: t = "
        + ", ".join(str(t + 1) for t in ts) + f" of T = {T}.", rows,
    )  # fmt: skip
    seed = int(g.initial_seed())
    traj = ddpm.sample(4, generator=torch.Generator().manual_seed(seed), return_trajectory=True, **sample_kwargs)
    chain = traj[1] if isinstance(traj, tuple) else traj  # [steps + 1, n, C, H, W], x_T first
    idx = torch.linspace(0, len(chain) - 1, 10).round().long()
    reverse = FigureRows("reverse_chain", "The reverse process", "DDPM sampling from x_T ~ N(0, I) down to x_0.",
                         [(f"chain {i + 1}", chain[idx, i]) for i in range(chain.shape[1])])
    return [forward, reverse]


def vae_figures(vae: Any, real: Tensor, g: torch.Generator, sample_kwargs: dict[str, Any]) -> list[FigureRows]:
    """Reconstructions through the posterior mean, and straight lines between two encodings."""
    recon = FigureRows("vae_reconstructions", "VAE reconstructions", "x and the decoded posterior mean of q(z|x).",
                       [("data", real), ("reconstruction", vae.reconstruct(real))])
    rows = [(f"{a}→{b}", vae.interpolate(real[a], real[b], steps=10)) for a, b in ((0, 1), (2, 3), (4, 5))]
    return [recon, FigureRows("vae_interpolation", "VAE latent interpolation",
                              "Decoded straight lines between two encodings.", rows)]


def gan_figures(gan: Any, real: Tensor, g: torch.Generator, sample_kwargs: dict[str, Any]) -> list[FigureRows]:
    """The generator along straight lines in z."""
    z = torch.randn(6, gan.latent_dim, generator=g)
    rows = [(f"walk {k + 1}", gan.interpolate(z[2 * k], z[2 * k + 1], steps=10)) for k in range(3)]
    return [FigureRows("gan_interpolation", "GAN latent interpolation", "The generator along straight lines in z.", rows)]
