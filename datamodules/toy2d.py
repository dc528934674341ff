"""The 2-D mode-collapse benchmarks: ``data=rings`` and ``data=grid``.

``rings``: 8 Gaussians, σ = 0.02, on a circle of radius 2 (Metz et al. 2017, unrolled GANs).
``grid``: 25 Gaussians, σ = 0.05, on the 5×5 grid {-4, -2, 0, 2, 4}² (Srivastava et al. 2017, VEEGAN).
Samples are drawn exactly from the mixture with the configured ``split_seed``; the labels are
the mode index, and the mode centres and σ are exposed for evaluation (modes covered, share
of high-quality samples within 3σ).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from datamodules.base import InMemoryDataModule
from genbench.checks import integer_errors, positive_errors


def ring_centers(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_centers(side: int = 5, spacing: float = 2.0) -> Tensor:
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def sample_mixture(centers: Tensor, std: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` draws from the equal-weight mixture of N(centre_k, std² I); returns points and mode index."""
    k = torch.randint(len(centers), (n,), generator=generator)
    x = centers[k] + std * torch.randn(n, centers.shape[1], generator=generator)
    return x, k


class MixtureDataModule(InMemoryDataModule):
    """A 2-D Gaussian mixture with known modes.

    Args:
        centers: the mode centres ``[K, 2]``.
        std: the per-mode standard deviation σ.
        n_train, n_val: sizes of the two splits, each drawn independently with ``split_seed``.
    """

    name = "mixture"

    def __init__(self, centers: Tensor, std: float, n_train: int = 50_000, n_val: int = 10_000, **kwargs: Any):
        kwargs.setdefault("kind", "points")
        super().__init__(**kwargs)
        self.centers = centers
        self.std = float(std)
        self.n_train, self.n_val = int(n_train), int(n_val)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.split_seed)
        x_train, y_train = sample_mixture(self.centers, self.std, self.n_train, g)
        x_val, y_val = sample_mixture(self.centers, self.std, self.n_val, g)
        return x_train, y_train, x_val, y_val

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        errors = super().config_errors(cfg)
        errors += integer_errors("data.", ("n_train", cfg.get("n_train", 1), 1), ("n_val", cfg.get("n_val", 1), 1))
        errors += positive_errors("data.", ("std", cfg.get("std", 0.02)))
        return errors


def _layout_errors(cfg: Any, count: tuple[str, int], size: tuple[str, float]) -> list[str]:
    """The mixture's number of modes (an integer >= 1) and its scale (a number > 0)."""
    (count_key, count_default), (size_key, size_default) = count, size
    errors = integer_errors("data.", (count_key, cfg.get(count_key, count_default), 1))
    return errors + positive_errors("data.", (size_key, cfg.get(size_key, size_default)))


class RingsDataModule(MixtureDataModule):
    name = "rings"

    def __init__(self, n_modes: int = 8, radius: float = 2.0, std: float = 0.02, **kwargs: Any):
        super().__init__(centers=ring_centers(n_modes, radius), std=std, **kwargs)

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        return super().config_errors(cfg) + _layout_errors(cfg, ("n_modes", 8), ("radius", 2.0))


class GridDataModule(MixtureDataModule):
    name = "grid"

    def __init__(self, side: int = 5, spacing: float = 2.0, std: float = 0.05, **kwargs: Any):
        super().__init__(centers=grid_centers(side, spacing), std=std, **kwargs)

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        return super().config_errors(cfg) + _layout_errors(cfg, ("side", 5), ("spacing", 2.0))
