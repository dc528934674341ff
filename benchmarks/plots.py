"""Figures shared by the benchmark scripts: the FID-against-NFE panels' axes and how a figure is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (110 dpi) and close a benchmark figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def style_fid_nfe_axes(ax: Any, curve: dict[str, Any], title: str, fontsize: int) -> None:
    """The axes of an FID-against-NFE panel (sampling.py, fid_vs_nfe.py): the real-sample floor, log-log
    scales, the labels naming the feature space and n, the title and the legend."""
    if curve.get("real_floor_fid"):
        ax.axhline(curve["real_floor_fid"], color="grey", ls=":", label="real samples (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel(f"FID ({curve['features']} features, n = {curve['num_samples']})")
    ax.set_title(title, fontsize=fontsize)
