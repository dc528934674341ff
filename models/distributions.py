"""Closed-form pieces shared by the VAE and DDPM: Gaussian KL and the discretised decoder.

Both families are compared in bits per dimension, so both use the same functions here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mean_q: Tensor, logvar_q: Tensor, mean_p: Tensor | float = 0.0, logvar_p: Tensor | float = 0.0) -> Tensor:
    """KL( N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p)) ), elementwise, in nats.

    KL = ½ [ log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1 ]
    (Kingma & Welling 2014, appendix B, for p = N(0, I); Ho et al. 2020 eq. 5 for L_{t−1}.)
    """
    mean_p = torch.as_tensor(mean_p, dtype=mean_q.dtype, device=mean_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=mean_q.dtype, device=mean_q.device)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p) ** 2) * torch.exp(-logvar_p) - 1.0)


def standard_normal_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL( N(mean, exp(logvar)) || N(0, I) ) elementwise: ½ (μ² + σ² − log σ² − 1)."""
    return 0.5 * (mean**2 + logvar.exp() - logvar - 1.0)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log N(x; mean, exp(log_scale)²), elementwise."""
    return -0.5 * (LOG_2PI + 2 * log_scale + ((x - mean) * torch.exp(-log_scale)) ** 2)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    """log P(x) of 8-bit data under a Gaussian integrated over each pixel's bin (Ho et al. 2020, §3.3, eq. 13).

    Data are ``bins`` levels scaled to [-1, 1]; each level owns the interval x ± 1/(bins−1),
    and the two extreme levels own everything beyond them (−∞ and +∞ edges).

    Args:
        x: data in [-1, 1] on the grid {−1, −1 + 2/(bins−1), …, 1}.
        mean, log_scale: the decoder's Gaussian; broadcastable to ``x``.
    Returns:
        elementwise log-probabilities (nats), same shape as ``x``.
    """
    half_bin = 1.0 / (bins - 1)
    inv_scale = torch.exp(-log_scale)
    plus = (x - mean + half_bin) * inv_scale  # standardised upper edge of x's bin
    minus = (x - mean - half_bin) * inv_scale  # standardised lower edge
    # δ+ = +∞ at x = 1 and δ− = −∞ at x = −1 (eq. 13); log_ndtr keeps the tails accurate.
    log_cdf_plus = torch.special.log_ndtr(plus)  # log Φ(upper edge): the bin of x = −1
    log_one_minus_cdf_minus = torch.special.log_ndtr(-minus)  # log(1 − Φ(lower edge)): the bin of x = 1
    prob_mid = torch.special.ndtr(plus) - torch.special.ndtr(minus)
    log_mid = torch.log(prob_mid.clamp_min(1e-12))
    return torch.where(x < -1 + 1e-3, log_cdf_plus, torch.where(x > 1 - 1e-3, log_one_minus_cdf_minus, log_mid))


def nats_to_bits_per_dim(nats: Tensor, num_dims: int) -> Tensor:
    """Convert a per-example NLL in nats to bits per dimension: nats / (D · ln 2)."""
    return nats / (num_dims * math.log(2.0))
