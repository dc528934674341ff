"""Improved precision & recall and density & coverage: k-NN manifolds of real and generated features.

Distances are taken in tiles of :data:`~evaluation.metrics.TILE` rows and columns, so the working memory
does not grow with the number of samples. :class:`ManifoldMetrics` gathers the features across processes
as the other metrics of :mod:`evaluation.metrics` do.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from evaluation.metrics import TILE, features_state


def knn_radii(x: Tensor, k: int, chunk: int = TILE) -> Tensor:
    """Distance of every point of ``x`` to its k-th nearest neighbour in ``x`` (itself excluded).

    Distances are taken in ``chunk`` × ``chunk`` tiles, keeping the k + 1 smallest per row: besides
    those k + 1 distances per point, the working memory is fixed (a few MiB at 512) whatever the number
    of points. The distance matrix is symmetric, so only the tiles on and above the diagonal are
    computed; one above it serves its rows and, transposed, its columns' rows.
    """
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(x)}")
    starts = range(0, len(x), chunk)
    best: list[Tensor | None] = [None] * len(starts)  # per row tile: the k + 1 smallest distances so far

    def keep(b: int, d: Tensor) -> None:
        d = d if best[b] is None else torch.cat([best[b], d], dim=1)
        best[b] = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values

    for a, i in enumerate(starts):
        for b in range(a, len(starts)):
            d = torch.cdist(x[i : i + chunk], x[starts[b] : starts[b] + chunk])
            keep(a, d)
            if b > a:
                keep(b, d.T)
    return torch.cat([t[:, k] for t in best])  # column 0 is the point itself


def _ball_counts(query: Tensor, centres: Tensor, radii: Tensor, chunk: int = TILE) -> tuple[Tensor, Tensor]:
    """For every query point: how many balls B(centre_i, radius_i) contain it, and its nearest-centre distance.

    Tiled like :func:`knn_radii`, so the working memory does not grow with the number of points.
    """
    counts, nearest = [], []
    for i in range(0, len(query), chunk):
        q = query[i : i + chunk]
        count = torch.zeros(len(q), dtype=torch.long, device=q.device)
        near = torch.full((len(q),), float("inf"), device=q.device)
        for j in range(0, len(centres), chunk):
            d = torch.cdist(q, centres[j : j + chunk])
            count += (d < radii[None, j : j + chunk]).sum(1)
            near = torch.minimum(near, d.min(1).values)
        counts.append(count)
        nearest.append(near)
    return torch.cat(counts), torch.cat(nearest)


def _manifold_parts(real: Tensor, fake: Tensor, k: int) -> dict[str, Tensor]:
    """The per-sample parts of :func:`manifold_metrics`: both sides' k-NN radii, for every generated sample
    the number of real balls holding it, for every real sample whether a generated ball holds it and its
    nearest generated sample's distance."""
    real, fake = real.float(), fake.float()
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    in_real_balls, _ = _ball_counts(fake, real, r_real)
    in_fake_balls, _ = _ball_counts(real, fake, r_fake)
    _, nearest_fake = _ball_counts(real, fake, torch.zeros(len(fake), device=fake.device))
    return {"real": real, "fake": fake, "r_real": r_real, "r_fake": r_fake, "in_real_balls": in_real_balls,
            "in_fake_balls": in_fake_balls, "nearest_fake": nearest_fake}  # fmt: skip


def _manifold_values(parts: dict[str, Tensor], k: int) -> dict[str, float]:
    return {
        "precision": (parts["in_real_balls"] > 0).double().mean().item(),
        "recall": (parts["in_fake_balls"] > 0).double().mean().item(),
        "density": (parts["in_real_balls"].double().sum() / (k * len(parts["fake"]))).item(),
        "coverage": (parts["nearest_fake"] < parts["r_real"]).double().mean().item(),
    }


def manifold_metrics(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision & recall (Kynkäänniemi et al. 2019) and density & coverage (Naeem et al. 2020).

    The real (generated) manifold is the union of balls around every real (generated) feature with
    the radius of its k-th nearest neighbour. With strict inequalities, as the reference code (prdc):

        precision = 1/M Σ_j 1[Y_j ∈ manifold(X)]        recall   = 1/N Σ_i 1[X_i ∈ manifold(Y)]
        density   = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_i)]  coverage = 1/N Σ_i 1[∃ j: Y_j ∈ B(X_i, r_i)]
    """
    return _manifold_values(_manifold_parts(real, fake, k), k)


def manifold_resampled(parts: dict[str, Tensor], k: int, counts: Tensor, tile: int = TILE) -> dict[str, Tensor]:
    """precision, recall, density and coverage of every bootstrap resample of the generated samples
    (``counts`` ``[B, M]``), the real set and its manifold fixed; float64 ``[B]`` each.

    precision and density are means over generated samples of per-sample values (1[Y_j ∈ manifold(X)],
    Σ_i 1[Y_j ∈ B(X_i, r_i)] / k): exact, a weighted mean with the counts. coverage asks, for every real
    sample, whether a drawn generated sample lies in its ball: exact. recall asks whether a real sample lies
    in the ball of a drawn generated sample, with each generated ball's radius from the full generated set
    (an approximation: recomputed on a resample, a drawn duplicate would shrink its neighbours' radii to 0).
    """
    fake, real, r_real, r_fake = parts["fake"], parts["real"], parts["r_real"], parts["r_fake"]
    w = counts.to(fake.device, torch.float64)
    m = w.shape[1]
    counts_j = parts["in_real_balls"].double()
    present = (w > 0).float().T  # [M, B]
    recall = torch.zeros(len(w), dtype=torch.float64, device=fake.device)
    coverage = torch.zeros_like(recall)
    for i in range(0, len(real), tile):
        d = torch.cdist(real[i : i + tile], fake)  # [t, M]
        recall += (((d < r_fake[None]).float() @ present) > 0).sum(0)
        coverage += (((d < r_real[i : i + tile, None]).float() @ present) > 0).sum(0)
    return {
        "precision": w @ (counts_j > 0).double() / m,
        "recall": recall / len(real),
        "density": w @ counts_j / (k * m),
        "coverage": coverage / len(real),
    }


class ManifoldMetrics(Metric):
    """:func:`manifold_metrics` with feature lists gathered across processes; ``parts`` keeps the last
    ``compute``'s per-sample parts (gathered) for :func:`manifold_resampled`."""

    full_state_update = False

    def __init__(self, nearest_k: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.nearest_k = int(nearest_k)
        self.parts: dict[str, Tensor] | None = None
        features_state(self, "real_features")
        features_state(self, "fake_features")

    def update(self, features: Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(features.float())

    def compute(self) -> dict[str, float]:
        self.parts = _manifold_parts(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features), self.nearest_k)
        return self.compute_values()

    def compute_values(self) -> dict[str, float]:
        """The values of the last ``compute`` (from ``parts``)."""
        return _manifold_values(self.parts, self.nearest_k)
