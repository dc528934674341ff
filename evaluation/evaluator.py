"""The one evaluation loop of genbench.

:class:`Evaluator` compares a sample source (any family's model, through ``sample(n, generator)``
only, or stored samples) with a real reference, in one pass: every batch is drawn, quantised
to 8 bits (images), featurised once, and the same features update FID, IS, KID,
precision/recall/density/coverage (and the mode metrics of 2-D mixtures). The real side comes
from the cache of real statistics. Under ``torch.distributed`` every rank draws a contiguous
share of the batches and the torchmetrics states are synchronised, which gives the
single-process result on the same samples.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.aggregation import MaxMetric, MeanMetric

from evaluation.cache import TensorCache
from evaluation.config import EvalConfig
from evaluation.features import FeatureSpace, build_feature_space, feature_space_spec, resolve_feature_space, to_uint8
from evaluation.metrics import (
    FID,
    IS,
    KID,
    ManifoldMetrics,
    ModeMetrics,
    finite_or_none,
    moments,
    real_cov_sqrt,
)
from genbench.errors import ConfigError, GenbenchError

log = logging.getLogger("genbench.evaluation")

#: The keys of every result, whatever the family (values may be None where undefined, e.g. no NFE for stored samples).
RESULT_KEYS = (
    "fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
    "sample_images_per_s", "nfe", "features", "num_samples",
)  # fmt: skip


class EvaluationError(GenbenchError):
    """Samples that cannot be evaluated (wrong shape, NaN/inf)."""


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def batch_seed(seed: int, batch: int) -> int:
    """Independent seed of batch ``batch``: samples depend on their index, not on which process draws them."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def quantize(x: Tensor) -> Tensor:
    """Round images in [-1, 1] to 8 bits, as saving them as PNG would: what is evaluated is an image."""
    return to_uint8(x).float().div_(127.5).sub_(1.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Evaluator:
    """Evaluate sample sources against one real reference in one feature space.

    Args:
        cfg: the evaluation settings (``eval.*``).
        reference: a :class:`~evaluation.sources.DataReference` or :class:`~evaluation.sources.TensorReference`.
        device: where features are computed (``None``: ``cfg.device``; ``auto`` means CUDA when available).

    The feature space (and the classifier it may need) is built by :meth:`prepare`, the real
    statistics are loaded or computed (and cached) on first use.
    """

    def __init__(self, cfg: EvalConfig, reference: Any, device: str | torch.device | None = None):
        self.cfg = cfg
        self.reference = reference
        if device is None or str(device) == "auto":
            device = cfg.device
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.feature_name = resolve_feature_space(cfg.features, reference.is_image)
        self.space: FeatureSpace | None = None
        self.real: dict[str, Any] | None = None
        self.real_cached = False
        self.fake_cached = False
        self.last_samples: Tensor | None = None

    # --- set-up -----------------------------------------------------------------------------
    def prepare(self) -> FeatureSpace:
        """Build the feature space (training the classifier on first use); idempotent."""
        if self.space is None:
            self.space = build_feature_space(self.feature_name, self.reference, self.cfg, self.device)
        return self.space

    def to(self, device: str | torch.device) -> Evaluator:
        self.device = torch.device(device)
        if self.space is not None:
            self.space.to(self.device)
        return self

    def real_key(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "what": "real_stats", "data": ref.name, "fingerprint": ref.fingerprint, "split": ref.split,
            "n": ref.num_real, "features": self.prepare().cache_id(), "quantized": ref.is_image,
        }  # fmt: skip

    def real_statistics(self) -> dict[str, Any]:
        """Features (and FID moments) of the real reference, from the cache or computed and cached."""
        if self.real is None:
            self.real, self.real_cached = TensorCache("real_stats").get_or_compute(self.real_key(), self._compute_real)
        return self.real

    @torch.no_grad()
    def _compute_real(self) -> dict[str, Any]:
        space = self.prepare()
        x = self.reference.samples()
        feats, logits = [], []
        for i in range(0, len(x), self.cfg.batch_size):
            xb = x[i : i + self.cfg.batch_size].to(self.device)
            f, lg = space(quantize(xb) if self.reference.is_image else xb)
            feats.append(f.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
        features = torch.cat(feats)
        s, cov_s, n = moments(features)
        entry = {"features": features, "sum": s, "cov_sum": cov_s, "n": n}
        if n >= 2:
            entry["cov_sqrt"] = real_cov_sqrt(s, cov_s, n)  # Σ_r^½, FID's real-only eigendecomposition, done once
        if logits:
            entry["logits"] = torch.cat(logits)
        return entry

    # --- the loop ---------------------------------------------------------------------------
    def check_source(self, source: Any) -> None:
        """One clear error when the samples cannot be compared with the reference."""
        shape, ref = tuple(source.data_shape), tuple(self.reference.data_shape)
        what = f"{source.name} (shape {list(shape)})"
        if len(shape) != len(ref):
            raise ConfigError([f"{what}: cannot be compared with the real reference {self.reference.name} of shape {list(ref)}"])
        if len(shape) == 3 and shape[0] != ref[0]:
            raise ConfigError([
                f"{what}: images have {shape[0]} channel(s), the real reference {self.reference.name} has {ref[0]} "
                f"(shape {list(ref)}); evaluate samples of the same kind of images"
            ])
        if shape != ref and not (len(shape) == 3 and feature_space_spec(self.feature_name).resizes):
            raise ConfigError([
                f"{what}: does not match the real reference {self.reference.name} of shape {list(ref)}"
                + ("; only eval.features=inception resizes images" if len(shape) == 3 else "")
            ])

    def evaluate(self, source: Any, num_samples: int | None = None, nll_samples: int | None = None) -> dict[str, Any]:
        """Evaluate ``source``; every process of a ``torch.distributed`` group must call this.

        Args:
            source: :class:`~evaluation.sources.ModelSource` or :class:`~evaluation.sources.TensorSource`.
            num_samples: generated samples (default ``cfg.num_samples``); stored samples are all used.
            nll_samples: real examples of the bound ``nll_bpd`` (default ``cfg.nll_samples``; 0: none).
        Returns:
            the results dict: :data:`RESULT_KEYS`, plus ``nll_bpd`` (families with a likelihood),
            ``classifier_accuracy`` (classifier space), ``modes_covered``/``num_modes``/``high_quality_share``
            (2-D mixtures), the protocol (``num_real``, ``kid_subset_size``, ``is_splits``, ...) and ``notes``.
        """
        start_time = time.perf_counter()
        cfg, ref = self.cfg, self.reference
        n = source.length if source.length is not None else int(num_samples or cfg.num_samples)
        if n < 2:
            raise ConfigError([f"eval.num_samples={n}: must be an integer >= 2 (FID is undefined for fewer than 2 samples)"])
        self.check_source(source)
        space = self.prepare()
        real = self.real_statistics()
        rank, world = dist_info()
        notes: list[str] = []

        # Metric protocol, clipped to the sample counts (noted in the results).
        n_real = int(real["n"])
        kid_m = min(cfg.kid_subset_size, n, n_real)
        if kid_m < cfg.kid_subset_size:
            notes.append(f"kid_subset_size reduced from {cfg.kid_subset_size} to {kid_m} (samples: {n} generated, {n_real} real)")
        splits = min(cfg.is_splits, n)
        if splits < cfg.is_splits:
            notes.append(f"is_splits reduced from {cfg.is_splits} to {splits} ({n} samples)")
        k = max(1, min(cfg.nearest_k, n - 1, n_real - 1))
        if k < cfg.nearest_k:
            notes.append(f"nearest_k reduced from {cfg.nearest_k} to {k} ({n} generated, {n_real} real samples)")

        d = space.num_features
        fid = FID(d).to(self.device)
        kid = KID(d, subsets=cfg.kid_subsets, subset_size=kid_m, seed=cfg.metric_seed).to(self.device)
        manifold = ManifoldMetrics(nearest_k=k).to(self.device)
        inception_score = IS(space.num_classes, splits=splits, seed=cfg.metric_seed).to(self.device) if space.num_classes else None
        modes = ModeMetrics(ref.centers, ref.std).to(self.device) if ref.centers is not None else None
        sample_time = MaxMetric().to(self.device)
        nll = MeanMetric().to(self.device)

        # The real side enters on rank 0 only, so the cross-rank reduction counts it once; every rank
        # adds an empty block first, so every rank holds one tensor of the same rank per list state.
        empty_f = torch.zeros(0, d, device=self.device)
        real_f = real["features"].to(self.device) if rank == 0 else empty_f
        if rank == 0:
            fid.set_real_moments(real["sum"], real["cov_sum"], n_real, real.get("cov_sqrt"))
        fid.update(empty_f, real=True)
        for metric in (kid, manifold):
            metric.update(real_f, real=True)
            metric.update(empty_f, real=False)
        if inception_score is not None:
            inception_score.update(torch.zeros(0, space.num_classes, device=self.device))

        bs = cfg.batch_size
        n_batches = math.ceil(n / bs)
        mine = range(rank * n_batches // world, (rank + 1) * n_batches // world)
        # Stored samples (a folder, an .npz) keep their features in the cache, keyed by their content:
        # a re-run on the same files skips the feature extractor on both sides.
        fake_cache, fake_key, fake_entry, fake_parts = None, None, None, None
        if world == 1 and hasattr(source, "content_digest"):
            fake_cache = TensorCache("fake_features")
            fake_key = {"what": "fake_features", "content": source.content_digest, "n": n, "batch_size": bs,
                        "features": space.cache_id(), "quantized": ref.is_image, "device": self.device.type}  # fmt: skip
            fake_entry = fake_cache.load(fake_key)
            fake_parts = None if fake_entry is not None else {"features": [], "logits": []}
        self.fake_cached = fake_entry is not None
        grid: list[Tensor] = []  # a preview: images for the grid, or enough points for a scatter plot
        preview = cfg.grid_size if ref.is_image else max(cfg.grid_size, 2000)
        elapsed = 0.0
        with source, torch.no_grad(), torch.random.fork_rng(devices=self._rng_devices(source)):
            for b in mine:
                start, size = b * bs, min(bs, n - b * bs)
                shown = sum(len(t) for t in grid)
                # With cached features only the rows the sample grid shows are drawn (for a folder: decoded).
                drawn = size if fake_entry is None or modes is not None else max(0, min(size, preview - shown))
                if drawn > 0:
                    g = torch.Generator(device=source.device).manual_seed(batch_seed(cfg.seed, b))
                    _sync(source.device)
                    t0 = time.perf_counter()
                    x = source.draw(start, drawn, g)
                    _sync(source.device)
                    elapsed += time.perf_counter() - t0
                    x = self._checked(x, drawn, source)
                    if ref.is_image:
                        x = quantize(x)
                    if rank == 0 and shown < preview:
                        grid.append(x[: preview - shown].cpu())
                    if modes is not None:
                        modes.update(x)
                if fake_entry is not None:
                    f = fake_entry["features"][start : start + size].to(self.device)
                    logits = fake_entry["logits"][start : start + size].to(self.device) if "logits" in fake_entry else None
                else:
                    f, logits = space(x)
                    if fake_parts is not None:
                        fake_parts["features"].append(f.float().cpu())
                        if logits is not None:
                            fake_parts["logits"].append(logits.float().cpu())
                fid.update(f, real=False)
                kid.update(f, real=False)
                manifold.update(f, real=False)
                if inception_score is not None:
                    inception_score.update(logits)
            sample_time.update(torch.tensor(elapsed, dtype=torch.float64))
            if fake_parts is not None:
                fake_cache.store(fake_key, {k: torch.cat(v) for k, v in fake_parts.items() if v})
            n_nll = cfg.nll_samples if nll_samples is None else int(nll_samples)
            with_nll = source.has_likelihood and n_nll > 0
            if with_nll:
                self._nll(source, nll, n_nll, rank, world)

        results: dict[str, Any] = {"features": self.feature_name, "num_samples": n, "num_real": n_real}
        results["fid"] = float(fid.compute())
        if fid.clamped is not None:
            notes.append(f"fid was {fid.clamped:.3g} (floating-point error around 0) and is reported as 0")
        if inception_score is not None:
            is_mean, is_std = inception_score.compute()
            results.update(is_mean=float(is_mean), is_std=float(is_std))
        else:
            results.update(is_mean=None, is_std=None)
            notes.append("is: this feature space has no class posterior")
        kid_mean, kid_std = kid.compute()
        results.update(kid_mean=float(kid_mean), kid_std=float(kid_std))
        results.update(manifold.compute())
        seconds = float(sample_time.compute())
        results["sample_images_per_s"] = round(n / seconds, 2) if seconds > 0 and source.nfe is not None else None
        results["nfe"] = source.nfe
        if with_nll:
            results["nll_bpd"] = finite_or_none(nll.compute())
        if modes is not None:
            results.update(modes.compute())
        results.update(space.info())
        results.update(
            data=ref.name, split=ref.split, kid_subset_size=kid_m, kid_subsets=cfg.kid_subsets, is_splits=splits,
            nearest_k=k, real_stats_cached=self.real_cached, fake_features_cached=self.fake_cached, world_size=world,
            eval_time_s=round(time.perf_counter() - start_time, 3), notes=notes,
        )  # fmt: skip
        self.last_samples = torch.cat(grid) if grid else None
        return results

    def _rng_devices(self, source: Any) -> list[int]:
        device = source.device
        if device.type == "cuda":
            return [device.index if device.index is not None else torch.cuda.current_device()]
        return []

    def _checked(self, x: Tensor, size: int, source: Any) -> Tensor:
        expected = (size, *source.data_shape)
        if not isinstance(x, Tensor) or tuple(x.shape) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise EvaluationError(f"{source.name}: sample({size}) returned {got}, expected {expected}")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
            raise EvaluationError(f"{source.name}: {bad} of {size} samples contain NaN or inf; cannot evaluate them")
        return x.to(self.device, torch.float32)

    def _nll(self, source: Any, nll: MeanMetric, n: int, rank: int, world: int) -> None:
        """Mean ``nll_bpd`` over ``n`` real examples (a fixed subset), each batch with its own seed."""
        x = self.reference.samples(n)
        bs = self.cfg.batch_size
        n_batches = math.ceil(len(x) / bs)
        for b in range(rank * n_batches // world, (rank + 1) * n_batches // world):
            torch.manual_seed(batch_seed(self.cfg.seed + 1, b))
            nll.update(source.nll_bpd(x[b * bs : (b + 1) * bs]).double().to(self.device))
