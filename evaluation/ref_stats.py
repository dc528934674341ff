"""Gaussian reference statistics (μ, Σ) of a feature set, their ``.npz`` files, and the Fréchet distance.

The file layout is the one pytorch-fid, TTUR and clean-fid read and write: an ``.npz`` archive with
``mu`` (shape ``[D]``) and ``sigma`` (shape ``[D, D]``, the unbiased covariance, as ``np.cov``). A
file genbench writes is read by those tools unchanged, and their published statistics load here.
genbench adds keys the other tools ignore (:data:`META_KEYS`): the feature space, its cache id and
weights' SHA-256, the resize mode and n, so a file is only used in the space that wrote it.

:class:`StatsReference` is such a file as the real side of an evaluation (``real=stats.npz``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evaluation.frechet import mean_and_cov, moments, real_cov_sqrt, trace_sqrt_product
from genbench.errors import ConfigError, GenbenchError

#: The keys of a statistics file (pytorch-fid, TTUR, clean-fid).
STATS_KEYS = ("mu", "sigma")
#: What genbench records beside them: the feature space, its cache id (space + weights + resize),
#: the weights' SHA-256, the resize mode, the number of real samples and where they came from.
META_KEYS = ("features", "space_id", "weights_sha256", "resize", "n", "reference", "genbench_version")


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

    in float64, with genbench's symmetric Tr((Σ₁Σ₂)^½) (:func:`~evaluation.frechet.trace_sqrt_product`).
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


def save_stats(path: str | Path, mu: Tensor | np.ndarray, sigma: Tensor | np.ndarray, **meta: Any) -> Path:
    """Write ``mu`` and ``sigma`` (float64) to ``path`` as ``np.savez`` does; returns the path written.

    Args:
        meta: extra entries among :data:`META_KEYS` (strings and integers; None is left out), stored as
            0-d arrays that the other tools ignore and :func:`read_stats_meta` reads back.

    numpy appends ``.npz`` to a name without it; the returned path is the file's real name.
    """
    mu, sigma = _as_float64(mu), _as_float64(sigma)
    _check_shapes(str(path), mu.shape, sigma.shape)
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ValueError(f"save_stats: unknown entries {unknown}; allowed: {list(META_KEYS)}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    extra = {k: np.asarray(v if isinstance(v, int) else str(v)) for k, v in meta.items() if v is not None}
    np.savez(path, mu=mu, sigma=sigma, **extra)
    return path


def read_stats_meta(path: str | Path) -> dict[str, Any]:
    """genbench's entries of a statistics file (:data:`META_KEYS`); empty for another tool's file."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k].item() for k in META_KEYS if k in f.files and f[k].ndim == 0}


def npz_kind(path: str | Path, option: str) -> str:
    """``"stats"`` for an ``.npz`` with ``mu`` and ``sigma``, ``"samples"`` for one that
    :func:`~evaluation.sources.load_npz` reads (an array ``samples``/``images``/``x``/``arr_0``, or a single
    array); one clear error for an archive that is neither."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError([f"{option}={str(path)!r}: not a readable .npz file ({type(e).__name__}: {e})"]) from None
    names = None
    if isinstance(archive, np.lib.npyio.NpzFile):
        names = list(archive.files)
        archive.close()
    if names is not None and set(STATS_KEYS) <= set(names):
        return "stats"
    if names is not None and (set(names) & {"samples", "images", "x", "arr_0"} or (len(names) == 1 and names[0] not in STATS_KEYS)):
        return "samples"
    raise ConfigError([
        f"{option}={str(path)!r}: holds {names if names is not None else 'a single .npy array'}: neither samples (an "
        "array named 'samples', 'images', 'x' or 'arr_0', or the only array) nor reference statistics ('mu' [D] and "
        "'sigma' [D, D], the layout of pytorch-fid, TTUR and clean-fid)"
    ])


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


class StatsReference:
    """A statistics file as the real side of an evaluation (``real=stats.npz``).

    FID is computed against its (μ, Σ); the metrics that need the real features themselves (KID,
    precision/recall, ...) declare ``real_features`` in their ``needs`` and do not apply
    (:func:`evaluation.registry.build_metric`). A file written by genbench is used only in the feature
    space (weights and resize included) that wrote it; another tool's file is checked for its dimension,
    and the results say that its feature extractor cannot be verified (:attr:`notes`).

    Args:
        path: the ``.npz`` file (pytorch-fid / TTUR / clean-fid layout, or written by genbench).
        data_shape: the shape of the generated samples (the statistics say nothing of image sizes).
        option: the command-line option it came from, named in errors.
    """

    def __init__(self, path: str | Path, data_shape: tuple[int, ...], option: str = "real"):
        self.mu, self.sigma = load_stats(path)
        self.meta = read_stats_meta(path)
        self.name, self.option, self.split = str(path), option, "stats"
        self.data_shape = tuple(data_shape)
        self.is_image = len(self.data_shape) == 3
        self.num_real: int | None = int(self.meta["n"]) if "n" in self.meta else None
        self.centers, self.std, self.has_labels = None, None, False
        self.fingerprint = f"stats-{self.meta.get('space_id', 'foreign')}-{len(self.mu)}"
        self.notes: list[str] = []

    def where(self) -> str:
        return f"{self.option}={self.name!r}"

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        space = self.meta.get("features")
        raise ConfigError([
            f"{self.where()}: statistics are compared in the feature space that computed them, not in a classifier "
            "trained here; give " + (f"eval.features={space} (the space that wrote this file)" if space else
                                     "eval.features=inception (pytorch-fid, TTUR and clean-fid use InceptionV3 pool3, 2048-d)")
        ])

    def samples(self, n: int | None = None) -> Tensor:
        raise ConfigError([f"{self.where()}: holds statistics (mu, sigma), not samples"])

    def statistics(self, space: Any) -> dict[str, Any]:
        """The evaluator's real side in ``space``: FID's moments (Σf, Σffᵀ, n) and Σ^½, no features.

        Raises:
            ConfigError: the dimension differs from the space's, or genbench wrote the file in another space.
        """
        d = len(self.mu)
        if space.num_features != d:
            raise ConfigError([
                f"{self.where()}: statistics of {d}-d features, but eval.features={space.name} gives "
                f"{space.num_features}-d features; evaluate in the feature space that computed them"
            ])
        written = self.meta.get("space_id")
        if written is not None and written != space.cache_id():
            raise ConfigError([
                f"{self.where()}: written by genbench in feature space {written!r} (eval.features={self.meta.get('features')}"
                f", eval.resize={self.meta.get('resize')}), but this evaluation's is {space.cache_id()!r}; use the same "
                "eval.features, weights and eval.resize"
            ])
        if written is None:
            self.notes.append(
                f"{self.where()}: statistics from another tool; their dimension ({d}) matches, but the feature extractor "
                "(weights, resize) that computed them cannot be verified. pytorch-fid and torch-fidelity resize "
                "bilinearly, clean-fid with PIL's bicubic (eval.resize=clean)"
            )
        # FID's real state from (μ, Σ): Σf = nμ, Σffᵀ = (n − 1)Σ + nμμᵀ; mean_and_cov inverts this for any
        # n >= 2, so a foreign file (n unknown) uses n = 2.
        n = self.num_real or 2
        s = n * self.mu
        cov_sum = (n - 1) * self.sigma + n * torch.outer(self.mu, self.mu)
        return {"sum": s, "cov_sum": cov_sum, "n": n, "num_real": self.num_real, "cov_sqrt": real_cov_sqrt(s, cov_sum, n)}
