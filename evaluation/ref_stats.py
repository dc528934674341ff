"""Gaussian reference statistics (μ, Σ) of a feature set, their ``.npz`` files, and the Fréchet distance.

The file layout is the one pytorch-fid, TTUR and clean-fid read and write: an ``.npz`` archive with
``mu`` (shape ``[D]``) and ``sigma`` (shape ``[D, D]``, the unbiased covariance, as ``np.cov``). A
file genbench writes is read by those tools unchanged, and their published statistics load here.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from evaluation.metrics import mean_and_cov, moments, trace_sqrt_product
from genbench.errors import GenbenchError

#: The keys of a statistics file (pytorch-fid, TTUR, clean-fid).
STATS_KEYS = ("mu", "sigma")


class ReferenceStatsError(GenbenchError, ValueError):
    """A statistics file that cannot be used: missing keys, mismatched shapes, non-finite values."""


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """μ ``[D]`` and the unbiased covariance Σ ``[D, D]`` (float64) of features ``[N, D]``, as FID fits them."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features: expected a [N, D] tensor with N >= 2, got shape {list(features.shape)}")
    mu, sigma = mean_and_cov(*moments(features))
    return mu[0], sigma


def frechet_distance(mu_1: Tensor, sigma_1: Tensor, mu_2: Tensor, sigma_2: Tensor, root_1: Tensor | None = None) -> Tensor:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982; FID, Heusel et al. 2017):

        d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)

    in float64, with genbench's symmetric Tr((Σ₁Σ₂)^½) (:func:`~evaluation.metrics.trace_sqrt_product`).
    ``root_1``: Σ₁^½ when already known. Not clamped: a tiny negative value is rounding error.
    """
    mu_1, mu_2 = mu_1.double().reshape(-1), mu_2.double().reshape(-1)
    sigma_1, sigma_2 = sigma_1.double(), sigma_2.double()
    d = len(mu_1)
    if len(mu_2) != d or sigma_1.shape != (d, d) or sigma_2.shape != (d, d):
        raise ValueError(
            f"Fréchet distance: mismatched statistics, mu {d} and {len(mu_2)}, sigma {list(sigma_1.shape)} and {list(sigma_2.shape)}"
        )
    tr_sqrt = trace_sqrt_product(sigma_1, sigma_2, root_1=root_1)
    return (mu_1 - mu_2).square().sum() + sigma_1.trace() + sigma_2.trace() - 2 * tr_sqrt


def save_stats(path: str | Path, mu: Tensor | np.ndarray, sigma: Tensor | np.ndarray) -> Path:
    """Write ``mu`` and ``sigma`` (float64) to ``path`` as ``np.savez`` does; returns the path written.

    numpy appends ``.npz`` to a name without it; the returned path is the file's real name.
    """
    mu, sigma = _as_float64(mu), _as_float64(sigma)
    _check_shapes(str(path), mu.shape, sigma.shape)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, mu=mu, sigma=sigma)
    return path


def load_stats(path: str | Path) -> tuple[Tensor, Tensor]:
    """``(mu [D], sigma [D, D])`` as float64 tensors from a pytorch-fid / TTUR / clean-fid ``.npz`` file.

    Raises:
        ReferenceStatsError: the file is not an ``.npz`` archive, lacks ``mu`` or ``sigma``, or their
            shapes do not fit (``mu`` ``[D]``, ``sigma`` ``[D, D]``), or holds non-finite values.
    """
    where = f"reference statistics {str(path)!r}"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ReferenceStatsError(f"{where}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ReferenceStatsError(f"{where}: a single .npy array, not an .npz archive with keys {list(STATS_KEYS)}")
    with archive as f:
        missing = [k for k in STATS_KEYS if k not in f.files]
        if missing:
            raise ReferenceStatsError(
                f"{where}: no key {' or '.join(repr(k) for k in missing)}; found {sorted(f.files)}, "
                f"need {list(STATS_KEYS)} (the layout of pytorch-fid, TTUR and clean-fid)"
            )
        mu, sigma = f["mu"], f["sigma"]
    _check_shapes(where, mu.shape, sigma.shape)
    mu, sigma = _as_float64(mu), _as_float64(sigma)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ReferenceStatsError(f"{where}: 'mu' or 'sigma' holds non-finite values (NaN or inf)")
    return torch.from_numpy(mu), torch.from_numpy(sigma)


def _as_float64(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_shapes(where: str, mu_shape: tuple[int, ...], sigma_shape: tuple[int, ...]) -> None:
    if len(mu_shape) != 1 or tuple(sigma_shape) != (mu_shape[0], mu_shape[0]):
        raise ReferenceStatsError(
            f"{where}: mismatched shapes, 'mu' {list(mu_shape)} and 'sigma' {list(sigma_shape)}; "
            "need 'mu' [D] and 'sigma' [D, D]"
        )
