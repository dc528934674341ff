"""FD∞: the Fréchet distance extrapolated to infinitely many generated samples (Chong & Forsyth, CVPR 2020,
"Effectively Unbiased FID and Inception Score and where to find them").

FID computed from n generated samples is biased upwards, and the bias depends on the model as well as on
n, so FIDs at a fixed n can rank models wrongly. Its expectation is, to first order, linear in 1/n
(Chong & Forsyth 2020, from a Taylor expansion of the Fréchet distance in the sample moments):

    E[FD_n] ≈ FD∞ + c / n

so FD∞ is read off as the intercept of a least-squares line of FD_n against 1/n, fitted on FD_n measured
at several n. The paper's protocol (reference code ``calculate_FID_infinity``): 15 values of n evenly
spaced from 5,000 to the number of generated samples (50,000), each FD_n from a fresh random subset
drawn without replacement, against fixed real statistics. The real side is not subsampled: its own
finite-sample bias remains (use many real samples, or published statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from evaluation.frechet import mean_and_cov, moments, psd_sqrt
from evaluation.ref_stats import frechet_distance, gaussian_stats

#: The paper's grid: 15 sample counts evenly spaced from 5,000 up to all generated samples.
FD_INF_POINTS = 15
FD_INF_MIN_N = 5000


@dataclass(frozen=True)
class FDInfinity:
    """The fit FD_n ≈ ``value`` + ``slope`` / n, and the (n, FD_n) points it was fitted on."""

    value: float
    slope: float
    ns: tuple[int, ...]
    fds: tuple[float, ...]


def fd_grid(num_samples: int, num_points: int = FD_INF_POINTS, min_n: int | None = None) -> list[int]:
    """``num_points`` sample counts evenly spaced from ``min_n`` to ``num_samples`` (Chong & Forsyth's grid).

    ``min_n`` defaults to min(5000, num_samples // 10): the paper's 5,000 at its 50,000 samples, and the
    same 1:10 range of n below that (the intercept at 1/n = 0 then lies a ninth of the fitted range of
    1/n beyond its end).
    """
    min_n = min(FD_INF_MIN_N, num_samples // 10) if min_n is None else int(min_n)
    if not 2 <= min_n < num_samples:
        raise ValueError(f"FD∞ grid: min_n={min_n} must be at least 2 and below the {num_samples} generated samples")
    if num_points < 2:
        raise ValueError(f"FD∞ grid: num_points={num_points} must be at least 2 (a line needs two points)")
    ns = np.linspace(min_n, num_samples, num_points).astype(np.int64)
    return sorted({int(n) for n in ns})


def fd_infinity(
    real: Tensor | tuple[Tensor, Tensor],
    fake: Tensor,
    ns: Sequence[int] | None = None,
    num_points: int = FD_INF_POINTS,
    min_n: int | None = None,
    seed: int = 0,
) -> FDInfinity:
    """FD∞ of generated features against a real reference (Chong & Forsyth 2020).

    Args:
        real: the real features ``[N_r, D]``, or their statistics ``(mu [D], sigma [D, D])`` (e.g. from
            :func:`~evaluation.ref_stats.load_stats`); used whole at every n.
        fake: the generated features ``[N, D]``.
        ns: the sample counts at which FD_n is measured; default :func:`fd_grid` (``num_points``, ``min_n``).
        seed: seeds the random subsets (one ``torch.randperm`` per n, without replacement).

    Returns:
        :class:`FDInfinity`: the intercept ``value`` (FD∞), the ``slope`` c, and the (n, FD_n) points.
    """
    mu_r, sigma_r = gaussian_stats(real) if isinstance(real, Tensor) else (real[0].double(), real[1].double())
    mu_r, sigma_r = mu_r.to(fake.device), sigma_r.to(fake.device)  # published statistics load on the CPU
    if fake.ndim != 2 or fake.shape[1] != mu_r.numel():
        raise ValueError(f"FD∞: generated features must be [N, {mu_r.numel()}], got shape {list(fake.shape)}")
    ns = fd_grid(len(fake), num_points, min_n) if ns is None else sorted({int(n) for n in ns})
    if len(ns) < 2 or ns[0] < 2 or ns[-1] > len(fake):
        raise ValueError(f"FD∞: ns={ns} needs at least 2 distinct counts in [2, {len(fake)}] (the generated samples)")
    root_r = psd_sqrt(sigma_r)  # Σ_r^½ once for all n
    g = torch.Generator().manual_seed(int(seed))
    fds = []
    for n in ns:
        idx = torch.randperm(len(fake), generator=g)[:n].to(fake.device)
        mu_g, sigma_g = mean_and_cov(*moments(fake[idx]))
        fds.append(float(frechet_distance(mu_r, sigma_r, mu_g, sigma_g, root_1=root_r)))
    value, slope = fit_intercept(ns, fds)
    return FDInfinity(value=value, slope=slope, ns=tuple(ns), fds=tuple(fds))


def fit_intercept(ns: Sequence[int], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares line values ≈ a + b / n (float64); returns (a, b), a being the value at 1/n = 0."""
    x = 1.0 / np.asarray(ns, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    b = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return float(y.mean() - b * x.mean()), b
