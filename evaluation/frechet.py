"""The Fréchet distance's Gaussian math, shared by FID, FD∞ and the reference statistics.

Moments are kept as float64 sums (Σf, Σffᵀ, n); from them μ and the unbiased Σ, Σ^½, the trace term
Tr((Σ₁Σ₂)^½), and FID of every bootstrap resample of the generated features.
"""

from __future__ import annotations

import torch
from torch import Tensor


def psd_sqrt(sigma: Tensor) -> Tensor:
    """Σ^½ of a symmetric PSD matrix, from its eigendecomposition (rounding-negative eigenvalues clamped to 0)."""
    lam, v = torch.linalg.eigh(sigma)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def mean_and_cov(features_sum: Tensor, cov_sum: Tensor, n: int | Tensor) -> tuple[Tensor, Tensor]:
    """μ ``[1, d]`` and the unbiased covariance from the sums: Σ = (Σffᵀ − n μμᵀ) / (n − 1)."""
    mu = (features_sum / n).unsqueeze(0)
    return mu, (cov_sum - n * mu.t().mm(mu)) / (n - 1)


def real_cov_sqrt(features_sum: Tensor, cov_sum: Tensor, n: int) -> Tensor:
    """Σ_r^½ of the real side's moments (float64), the part of FID that only depends on the real data."""
    return psd_sqrt(mean_and_cov(features_sum, cov_sum, n)[1])


def trace_sqrt_product(sigma_1: Tensor, sigma_2: Tensor, root_1: Tensor | None = None) -> Tensor:
    """Tr((Σ₁Σ₂)^½) = Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½).

    Σ₁Σ₂ is similar to the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, so both have the same eigenvalues,
    real and >= 0. torch-fidelity and torchmetrics take the general eigenvalues of Σ₁Σ₂ and drop
    the imaginary parts of their square roots; the symmetric form gets the same number with two
    symmetric eigendecompositions (faster, on GPUs by far), and rounding can only produce tiny
    negative eigenvalues, clamped to 0. ``root_1``: Σ₁^½ when already known (cached with real statistics).
    """
    root_1 = psd_sqrt(sigma_1) if root_1 is None else root_1
    m = root_1 @ sigma_2 @ root_1
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()


def moments(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """(Σf, Σffᵀ, n) in float64: FID's real-side state, cached with the real features."""
    f = features.double()
    return f.sum(0), f.t().mm(f), len(f)


def fid_of_resamples(fake: Tensor, real_sum: Tensor, real_cov_sum: Tensor, n_real: int, counts: Tensor,
                     root_r: Tensor | None = None) -> Tensor:  # fmt: skip
    """FID of every bootstrap resample of the generated features (``counts`` ``[B, n]``: how often each
    of the n rows is drawn), the real moments held fixed; float64 ``[B]``.

    A resample's moments are weighted sums, μ_b = Σ_i c_i f_i / n and Σ_b = (Σ_i c_i f_i f_iᵀ − n μ_b μ_bᵀ) / (n − 1),
    and Tr Σ_b = (Σ_i c_i ||f_i||² − n ||μ_b||²) / (n − 1). Tr((Σ_r Σ_b)^½) is Σ √λ of the d × d matrix
    Σ_r^½ Σ_b Σ_r^½ = Zᵀ Z with rows z_i = √(c_i / (n − 1)) Σ_r^½ (f_i − μ_b) over the m distinct drawn rows
    (m ≈ 0.63 n); when m < d its nonzero eigenvalues are those of the m × m Gram matrix Z Zᵀ, built from
    K = F Σ_r Fᵀ computed once. Each resample then costs one eigendecomposition of size min(m, d).
    """
    f = fake.double()
    n, d = f.shape
    w = counts.to(f.device, torch.float64)
    mu_r, cov_r = mean_and_cov(real_sum.to(f), real_cov_sum.to(f), n_real)
    root_r = psd_sqrt(cov_r) if root_r is None else root_r.to(f)
    shift = f.mean(0, keepdim=True)  # FID is invariant to a shift of both sides; centring keeps the sums small
    f, mu_r = f - shift, mu_r - shift
    mu = w @ f / n  # [B, d]
    fid = (mu_r - mu).square().sum(1) + cov_r.trace() + (w @ f.square().sum(1) - n * mu.square().sum(1)) / (n - 1)
    tr_sqrt = torch.empty(len(w), dtype=torch.float64, device=f.device)
    if int((w > 0).sum(1).max()) < d:  # the Gram route: m × m eigenproblems
        z = f @ root_r
        k = z @ z.T  # K_ij = f_iᵀ Σ_r f_j
        kw = w @ k / n  # (K c / n)_i = z_iᵀ ν_b, with ν_b = Σ_r^½ μ_b
        for b in range(len(w)):
            s = w[b] > 0
            c = w[b, s].sqrt()
            g = k[s][:, s] - kw[b, s, None] - kw[b, None, s] + (w[b] @ kw[b]) / n  # (z_i − ν)ᵀ(z_j − ν)
            tr_sqrt[b] = torch.linalg.eigvalsh(g * c[:, None] * c[None, :] / (n - 1)).clamp_min(0).sqrt().sum()
    else:  # the d × d route, in batches: Σ_r^½ Σ_b Σ_r^½ = (Σ_i c_i z_i z_iᵀ − n ν_b ν_bᵀ) / (n − 1), z_i = Σ_r^½ f_i
        z, nu = f @ root_r, mu @ root_r
        chunk = max(1, int(2**24 // (d * max(d, n))))  # resamples per batch (128 MiB of float64 each for c z and m)
        for b in range(0, len(w), chunk):
            cz = w[b : b + chunk, :, None] * z  # [chunk, n, d]
            m = cz.transpose(1, 2) @ z - n * nu[b : b + chunk, :, None] * nu[b : b + chunk, None, :]
            tr_sqrt[b : b + chunk] = torch.linalg.eigvalsh(m / (n - 1)).clamp_min(0).sqrt().sum(1)
    return (fid - 2 * tr_sqrt).clamp_min(0.0)
