"""The 2-D mode-collapse benchmarks: ``data=rings`` and ``data=grid``.

``rings``: 8 Gaussians, σ = 0.02, on a circle of radius 2 (Metz et al. 2017, unrolled GANs).
``grid``: 25 Gaussians, σ = 0.05, on the 5×5 grid {-4, -2, 0, 2, 4}² (Srivastava et al. 2017, VEEGAN).
Samples are drawn exactly from the mixture with the configured ``split_seed``; the labels are
the mode index, and the mode centres and σ are exposed for evaluation (modes covered, share
of high-quality samples within 3σ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from datamodules.base import KINDS, DataConfig, InMemoryDataModule
from genbench.schema import setting


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


@dataclass
class MixtureConfig(DataConfig):
    """The settings of the 2-D mixtures (``data=rings``, ``data=grid``)."""

    kind: str = setting("points", choices=KINDS, allowed="'image' or 'points'",
                        doc="what one sample is: points (2-D) for the mixtures")
    batch_size: int = setting(256, ge=1, doc="batch size of the train and validation loaders")
    n_train: int = setting(50_000, ge=1, doc="size of the training split, drawn with split_seed")
    n_val: int = setting(10_000, ge=1, doc="size of the validation / evaluation split, drawn after the training one")


@dataclass
class RingsConfig(MixtureConfig):
    """``data=rings``'s settings (Metz et al. 2017)."""

    n_modes: int = setting(8, ge=1, doc="modes, evenly spaced on the circle")
    radius: float = setting(2.0, gt=0, doc="radius of the circle")
    std: float = setting(0.02, gt=0, doc="standard deviation σ of each mode")


@dataclass
class GridConfig(MixtureConfig):
    """``data=grid``'s settings (Srivastava et al. 2017)."""

    side: int = setting(5, ge=1, doc="modes per side of the square grid (side² modes)")
    spacing: float = setting(2.0, gt=0, doc="distance between neighbouring modes")
    std: float = setting(0.05, gt=0, doc="standard deviation σ of each mode")


class MixtureDataModule(InMemoryDataModule):
    """A 2-D Gaussian mixture with known modes; subclasses say where (:meth:`mixture`).

    Args:
        **settings: the fields of :attr:`config_type` (:class:`MixtureConfig`: ``n_train``, ``n_val``, the sizes
            of the two splits, each drawn independently with ``split_seed``; each layout adds its own).
    """

    name = "mixture"
    config_type = MixtureConfig

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        #: The mode centres ``[K, 2]`` and the per-mode standard deviation σ.
        self.centers, self.std = self.mixture(self.hp)
        self.n_train, self.n_val = int(self.hp.n_train), int(self.hp.n_val)

    def mixture(self, hp: Any) -> tuple[Tensor, float]:
        """The mode centres ``[K, 2]`` and σ of the typed config ``hp``."""
        raise NotImplementedError

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.split_seed)
        x_train, y_train = sample_mixture(self.centers, self.std, self.n_train, g)
        x_val, y_val = sample_mixture(self.centers, self.std, self.n_val, g)
        return x_train, y_train, x_val, y_val


class RingsDataModule(MixtureDataModule):
    """``data=rings``: :class:`RingsConfig`'s ``n_modes`` Gaussians on a circle of ``radius``."""

    name = "rings"
    config_type = RingsConfig

    def mixture(self, hp: RingsConfig) -> tuple[Tensor, float]:
        return ring_centers(int(hp.n_modes), float(hp.radius)), float(hp.std)


class GridDataModule(MixtureDataModule):
    """``data=grid``: :class:`GridConfig`'s ``side``² Gaussians on a square grid of ``spacing``."""

    name = "grid"
    config_type = GridConfig

    def mixture(self, hp: GridConfig) -> tuple[Tensor, float]:
        return grid_centers(int(hp.side), float(hp.spacing)), float(hp.std)
