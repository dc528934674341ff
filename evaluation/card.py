"""The evaluation card: what a number was measured with, recorded in every result (``results["card"]``).

Numbers from different feature spaces, weights, resize modes, sample counts or references do not
compare (FID differs between tools mostly for these reasons), so each result names them, and
``genbench-compare`` marks the cells whose card differs from the rest of their column.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

#: The card's fields that define the protocol of a feature-based number: cells of one column must agree
#: on them. ``sampler`` and ``nfe`` belong to the family (a GAN has one step, a DDPM its chain) and are
#: compared only among the runs of one cell.
PROTOCOL_FIELDS = ("features", "weights_sha256", "resize", "num_generated", "reference", "split", "num_real",
                   "seed", "metric_seed")  # fmt: skip
CARD_FIELDS = (*PROTOCOL_FIELDS, "sampler", "nfe")


def weights_sha256(space: Any) -> str | None:
    """SHA-256 of a feature space's weights: of its weights file where it has one (the published hash),
    else of its parameters and buffers (name, dtype, shape and bytes, in ``state_dict`` order: the
    trained classifier); None for a space without parameters (raw points). Memoised on the space."""
    known = getattr(space, "weights_sha256", None)
    if isinstance(known, str):
        return known
    path = getattr(space, "weights", None)
    if isinstance(path, (str, Path)) and Path(path).is_file():
        from evaluation.weights import sha256_of

        digest: str | None = sha256_of(path)
    elif not any(True for _ in space.parameters()):
        digest = None
    else:
        h = hashlib.sha256()
        for name, t in space.state_dict().items():
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest = h.hexdigest()
    if digest is not None:
        space.weights_sha256 = digest
    return digest


def sampler_of(source: Any) -> str | None:
    """The sampler a model source runs (its ``sample_kwargs``, else the model's default), None for
    families and stored samples that have none."""
    kwargs = getattr(source, "sample_kwargs", None) or {}
    name = kwargs.get("sampler") or getattr(getattr(source, "model", None), "sampler", None)
    return name if isinstance(name, str) else None


def evaluation_card(cfg: Any, space: Any, reference: Any, source: Any, num_generated: int,
                    num_real: int | None) -> dict[str, Any]:  # fmt: skip
    """The card of one evaluation.

    Args:
        cfg: the :class:`~evaluation.config.EvalConfig` (seeds).
        space: the feature space (name, weights, resize mode: its ``resize`` attribute, None for a space
            with one fixed preprocessing).
        reference: the real side (name, split; ``stats`` for a statistics file).
        source: the generated side (sampler, NFE).
        num_generated, num_real: the sample counts (``num_real`` None: a statistics file that does not say).
    Returns:
        ``{features, weights_sha256, resize, num_generated, reference, split, num_real, seed, metric_seed,
        sampler, nfe}``.
    """
    return {
        "features": space.name, "weights_sha256": weights_sha256(space), "resize": getattr(space, "resize", None),
        "num_generated": int(num_generated), "reference": reference.name, "split": reference.split,
        "num_real": None if num_real is None else int(num_real), "seed": int(cfg.seed),
        "metric_seed": int(cfg.metric_seed), "sampler": sampler_of(source), "nfe": source.nfe,
    }  # fmt: skip
