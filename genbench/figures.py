"""The figures of the comparison report, as PNG files (matplotlib, headless).

Everything here works from the ``GenerativeModule`` contract (``sample``), evaluation results and
the family registry (names, colours, order); the pictures of what each family is made of (the
diffusion chains, the VAE's reconstructions, the latent walks) come as rows of images from the
family's own figure function (:mod:`models.figures`) and are drawn by :func:`image_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from models.registry import color as family_color  # noqa: E402
from models.registry import display_name  # noqa: E402
from models.registry import order as family_order  # noqa: E402


def to_image(x: Tensor, nrow: int) -> Any:
    """[-1, 1] images -> an HWC numpy grid for ``imshow``."""
    grid = make_grid(x.detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def samples_side_by_side(samples: Mapping[str, Tensor], path: Path, nrow: int = 8, title: str | None = None) -> Path:
    """One image grid per family, next to each other (same seeds, same number of samples)."""
    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.6), squeeze=False)
    for ax, (family, x) in zip(axes[0], samples.items(), strict=True):
        ax.imshow(to_image(x, nrow), cmap="gray", interpolation="nearest")
        ax.set_title(display_name(family))
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def image_rows(rows: Sequence[tuple[str, Tensor]], path: Path, title: str | None = None) -> Path:
    """Labelled rows of images (a chain, reconstructions, an interpolation)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * max(len(r[1]) for r in rows), 1.3 * len(rows) + 0.4), squeeze=False)
    for ax, (label, x) in zip(axes[:, 0], rows, strict=True):
        ax.imshow(to_image(x, nrow=len(x)), cmap="gray", interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def fid_vs_compute(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path, metric: str = "fid") -> Path:
    """FID (or another metric) against training FLOPs and against wall-clock training seconds, every
    family on the same two axes. ``curves[family]``: points with ``flops`` (None: that panel skips the
    family), ``time_s`` and the metric."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for family, points in curves.items():
        for ax, x in zip(axes, ("flops", "time_s"), strict=True):
            pts = [(p[x], p[metric]) for p in points
                   if p.get(x) is not None and p.get(metric) is not None and math.isfinite(p[metric])]  # fmt: skip
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, marker="o", label=display_name(family), color=family_color(family))
    label = metric.upper() if metric == "fid" else metric
    axes[0].set_xlabel("training FLOPs (forward + backward)")
    axes[0].set_xscale("log")
    axes[1].set_xlabel("wall-clock training seconds (evaluations excluded)")
    axes[0].set_ylabel(label)
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"{label} during training: who leads at every budget (same data, same hardware)")
    fig.tight_layout()
    return _save(fig, path)


def trilemma(rows: Mapping[str, Mapping[str, float | None]], path: Path) -> Path:
    """The generative learning trilemma: quality, diversity and sampling speed per family.

    ``rows[family]`` holds ``fid``, ``precision``, ``recall``, ``coverage``, ``sample_images_per_s``.
    """
    panels = [
        ("quality: FID ↓", "fid", False),
        ("quality: precision ↑", "precision", False),
        ("diversity: recall ↑", "recall", False),
        ("diversity: coverage ↑", "coverage", False),
        ("speed: samples/s ↑ (log)", "sample_images_per_s", True),
    ]
    fams = list(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, key, log) in zip(axes, panels, strict=True):
        vals = [rows[f].get(key) for f in fams]
        ax.bar([display_name(f) for f in fams], [v if v is not None else 0 for v in vals],
               color=[family_color(f) for f in fams])
        for i, v in enumerate(vals):
            if v is not None:
                ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    fig.suptitle("The generative learning trilemma: quality, diversity, speed")
    fig.tight_layout()
    return _save(fig, path)


def toy_scatter(
    panels: Mapping[str, Mapping[str, tuple[Tensor, Mapping[str, Any]]]],
    centers: Mapping[str, Tensor],
    stds: Mapping[str, float],
    path: Path,
) -> Path:
    """``panels[data][family] = (samples [N, 2], eval results)``: samples over the true modes."""
    datas = list(panels)
    fams = sorted({f for d in datas for f in panels[d]}, key=lambda f: (family_order(f), f))
    fig, axes = plt.subplots(len(datas), len(fams), figsize=(3.2 * len(fams), 3.2 * len(datas)), squeeze=False)
    for i, data in enumerate(datas):
        c = centers[data].cpu()
        lim = float(c.abs().max()) * 1.35 + 0.5
        for j, family in enumerate(fams):
            ax = axes[i, j]
            if family in panels[data]:
                x, ev = panels[data][family]
                x = x.detach().cpu()
                ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color=family_color(family, "k"), rasterized=True)
                covered = ev.get("modes_covered")
                hq = ev.get("high_quality_share")
                label = f"{display_name(family)} on {data}"
                if covered is not None:
                    label += f"\nmodes {covered:g}/{len(c)}"
                if hq is not None:
                    label += f", {100 * hq:.0f}% within 3σ"
                ax.set_title(label, fontsize=9)
            for k in range(len(c)):
                ax.add_patch(plt.Circle(c[k].tolist(), 3 * stds[data], fill=False, color="k", lw=0.6))
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Samples (dots) over the true modes (circles: 3σ)")
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def fixed_seed_samples(model: Any, n: int, seed: int, **sample_kwargs: Any) -> Tensor:
    """``model.sample(n)`` from a CPU generator with ``seed``: the same noise for every family."""
    return model.sample(n, generator=torch.Generator().manual_seed(seed), **sample_kwargs).cpu()
