"""The one evaluation loop of genbench.

:class:`Evaluator` compares a sample source (any family's model, through ``sample(n, generator)``
only, or stored samples) with a real reference, in one pass: every batch is drawn, quantised
to 8 bits (images), featurised once, and the same batch updates every registered metric
(:mod:`evaluation.registry`: FID, IS, KID, precision/recall/density/coverage, the mode metrics of
2-D mixtures, the likelihood bound, and any plug-in's). The real side comes
from the cache of real statistics. Under ``torch.distributed`` every rank draws a contiguous
share of the batches and the torchmetrics states are synchronised, which gives the
single-process result on the same samples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.aggregation import MaxMetric

from evaluation.cache import TensorCache
from evaluation.card import evaluation_card
from evaluation.config import EvalConfig
from evaluation.features import (
    FeatureSpace,
    build_feature_space,
    feature_space_names,
    feature_space_spec,
    resolve_feature_space,
    to_uint8,
)
from evaluation.frechet import moments, real_cov_sqrt
from evaluation.registry import Batch, MetricContext, Resamples, build_metric, in_space, metric_specs
from genbench.errors import ConfigError, GenbenchError

log = logging.getLogger("genbench.evaluation")


def resizing_spaces() -> list[str]:
    """The feature spaces that accept images of any size."""
    return [n for n in feature_space_names() if n != "auto" and feature_space_spec(n).resizes]


def always_result_keys() -> list[str]:
    """The keys of every result, whatever the family and data (values may be None where undefined,
    e.g. no NFE for stored samples): the evaluation's own and those of every always-reported metric."""
    keys = ["sample_images_per_s", "nfe", "features", "num_samples", "card"]
    return [k.key for spec in metric_specs() if spec.default and spec.always_reported for k in spec.keys] + keys


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


class FakeFeatures:
    """Features of the generated side, batch by batch: computed by the feature space, or read from
    the cache when the source is stored samples (a folder, an .npz) whose features were computed
    before, keyed by their content: a re-run on the same files skips the feature extractor."""

    def __init__(self, source: Any, space: FeatureSpace, n: int, batch_size: int, quantized: bool,
                 device: torch.device, world: int):  # fmt: skip
        self.space, self.device = space, device
        self.cache, self.key, self.entry, self.parts = None, None, None, None
        if world == 1 and hasattr(source, "content_digest"):
            self.cache = TensorCache("fake_features")
            self.key = {"what": "fake_features", "content": source.content_digest, "n": n, "batch_size": batch_size,
                        "features": space.cache_id(), "quantized": quantized, "device": device.type}  # fmt: skip
            self.entry = self.cache.load(self.key)
            self.parts = None if self.entry is not None else {"features": [], "logits": []}

    @property
    def cached(self) -> bool:
        return self.entry is not None

    def features(self, start: int, size: int, x: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(features, logits) of the rows ``start:start + size``; ``x`` holds them unless cached."""
        if self.entry is not None:
            f = self.entry["features"][start : start + size].to(self.device)
            logits = self.entry["logits"][start : start + size].to(self.device) if "logits" in self.entry else None
            return f, logits
        f, logits = self.space(x)
        if self.parts is not None:
            self.parts["features"].append(f.float().cpu())
            if logits is not None:
                self.parts["logits"].append(logits.float().cpu())
        return f, logits

    def store(self) -> None:
        if self.parts is not None:
            self.cache.store(self.key, {k: torch.cat(v) for k, v in self.parts.items() if v})


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
        self.prefix_results: dict[str, Any] | None = None  # evaluate(prefix=...)'s results of the first samples

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
        """Features (and FID moments) of the real reference, from the cache or computed and cached; a
        reference given as statistics (:class:`~evaluation.ref_stats.StatsReference`) gives its moments only."""
        if self.real is None and hasattr(self.reference, "statistics"):
            self.real = self.reference.statistics(self.prepare())
        if self.real is None:
            self.real, self.real_cached = TensorCache("real_stats").get_or_compute(self.real_key(), self._compute_real)
        return self.real

    def split_features(self, split: str) -> Tensor:
        """Features of the whole ``split`` (``train`` / ``val``) of the reference's data set, from the cache or
        computed and cached (memorization compares generated samples with the training split)."""
        if split == self.reference.split and self.reference.num_real == len(self.reference.samples()):
            return self.real_statistics()["features"]
        from evaluation.sources import DataReference

        ref = DataReference(self.reference.datamodule, split)
        key = {**self.real_key(), "what": "split_features", "split": split, "n": ref.num_real}
        entry, _ = TensorCache("real_stats").get_or_compute(key, lambda: {"features": self._features_of(ref)[0]})
        return entry["features"]

    @torch.no_grad()
    def _features_of(self, reference: Any) -> tuple[Tensor, list[Tensor]]:
        """(features, logits per batch; empty where the space has none) of every sample of ``reference``."""
        space, x, feats, logits = self.prepare(), reference.samples(), [], []
        for i in range(0, len(x), self.cfg.batch_size):
            xb = x[i : i + self.cfg.batch_size].to(self.device)
            f, lg = space(quantize(xb) if reference.is_image else xb)
            feats.append(f.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
        return torch.cat(feats), logits

    def _compute_real(self) -> dict[str, Any]:
        features, logits = self._features_of(self.reference)
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
                + (f"; only eval.features in {resizing_spaces()} resize images" if len(shape) == 3 else "")
            ])

    def evaluate(self, source: Any, num_samples: int | None = None, nll_samples: int | None = None,
                 bootstrap: int | None = None, prefix: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Evaluate ``source`` with every registered metric; every process of a ``torch.distributed``
        group must call this.

        Args:
            source: :class:`~evaluation.sources.ModelSource` or :class:`~evaluation.sources.TensorSource`.
            num_samples: generated samples (default ``cfg.num_samples``); stored samples are all used.
            nll_samples: real examples of the bound ``nll_bpd`` (default ``cfg.nll_samples``; 0: none).
            bootstrap: resamples behind the 95 % intervals (``ci``); default: ``cfg.bootstrap`` in an
                evaluation of ``cfg.num_samples`` (the final one, genbench-evaluate's), 0 in one of another
                size (those during training, of ``val_num_samples``).
            prefix: also score the first ``prefix`` generated samples on their own, from the same draws (no
                intervals, no bound), into :attr:`prefix_results`: an evaluation of ``prefix`` samples without
                drawing them again. They are the samples such an evaluation draws when ``prefix`` is a multiple
                of ``cfg.batch_size`` (each batch has its own seed), so the results are the same.
        Returns:
            the results dict: the keys of :func:`always_result_keys`, the keys of the metrics that apply
            (``nll_bpd`` for families with a likelihood, the mode metrics of 2-D mixtures, ...), the
            feature space's extras (``classifier_accuracy``), the protocol (``num_real``, ``kid_subset_size``,
            ``is_splits``, ...), ``bootstrap`` (the resamples, 0: none), with resamples ``ci``
            (``{result key: [low, high]}``, the 95 % intervals of the metrics that define one) and ``notes``.
        """
        start_time = time.perf_counter()
        cfg, ref = self.cfg, self.reference
        n = source.length if source.length is not None else int(num_samples or cfg.num_samples)
        if n < 2:
            raise ConfigError([f"eval.num_samples={n}: must be an integer >= 2 (FID is undefined for fewer than 2 samples)"])
        self.prefix_results = None
        prefix = min(int(prefix), n) if prefix else 0
        if prefix and prefix < 2:
            raise ConfigError([f"prefix={prefix}: must be an integer >= 2 (FID is undefined for fewer than 2 samples)"])
        if bootstrap is None:
            bootstrap = cfg.bootstrap if int(num_samples or cfg.num_samples) == cfg.num_samples else 0
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ConfigError([f"bootstrap={bootstrap!r}: must be an integer >= 0 (0: no intervals)"])
        self.check_source(source)
        space = self.prepare()
        real = self.real_statistics()
        rank, world = dist_info()
        ctx = MetricContext(
            cfg=cfg, space=space, real=real, num_samples=n, num_real=real.get("num_real", int(real["n"])), reference=ref, source=source,
            device=self.device, rank=rank, world=world,
            nll_samples=int(cfg.nll_samples if nll_samples is None else nll_samples),
            split_features=self.split_features if hasattr(ref, "datamodule") else None, bootstrap=bootstrap,
        )  # fmt: skip
        states, skipped = self._states(ctx)
        prefix_states, prefix_skipped, pctx = [], [], None
        if prefix:  # its own states over the same batches' first rows: no intervals, no bound
            pctx = dataclasses.replace(ctx, num_samples=prefix, nll_samples=0, bootstrap=0, notes=[], protocol={})
            prefix_states, prefix_skipped = self._states(pctx)
        needs_samples = any("samples" in spec.needs for spec, _ in states + prefix_states)

        bs = cfg.batch_size
        n_batches = math.ceil(n / bs)
        mine = range(rank * n_batches // world, (rank + 1) * n_batches // world)
        fake = FakeFeatures(source, space, n, bs, ref.is_image, self.device, world)
        self.fake_cached = fake.cached
        grid: list[Tensor] = []  # a preview: images for the grid, or enough points for a scatter plot
        preview = cfg.grid_size if ref.is_image else max(cfg.grid_size, 2000)
        elapsed = 0.0
        with source, torch.no_grad(), torch.random.fork_rng(devices=self._rng_devices(source)):
            for b in mine:
                start, size = b * bs, min(bs, n - b * bs)
                shown = sum(len(t) for t in grid)
                # With cached features only the rows the sample grid shows are drawn (for a folder: decoded).
                drawn = size if not fake.cached or needs_samples else max(0, min(size, preview - shown))
                x = None
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
                features, logits = fake.features(start, size, x)
                batch = Batch(features=features, logits=logits, samples=x)
                for _, state in states:
                    state.update(batch)
                if start < prefix:  # the rows of the first `prefix` samples
                    k = min(size, prefix - start)
                    head = Batch(features=features[:k], logits=None if logits is None else logits[:k],
                                 samples=None if x is None else x[:k])  # fmt: skip
                    for _, state in prefix_states:
                        state.update(head)
            fake.store()
            for _, state in states + prefix_states:
                state.finish(source)
            seconds = self._max_over_ranks(elapsed)

        if pctx is not None:
            pctx.notes.append(f"the first {prefix} of the {n} samples of an evaluation of {n} (its eval_time_s)")
            self.prefix_results = self._results(prefix_states, prefix_skipped, pctx, source, prefix, 0, seconds * prefix / n,
                                                start_time)  # fmt: skip
        results = self._results(states, skipped, ctx, source, n, bootstrap, seconds, start_time)
        self.last_samples = torch.cat(grid) if grid else None
        return results

    def _states(self, ctx: MetricContext) -> tuple[list[tuple[Any, Any]], list[Any]]:
        """(spec, state) of the metrics that apply in ``ctx``; the specs of those that do not."""
        states, skipped = [], []
        for spec in metric_specs():
            if not (spec.default or spec.name in self.cfg.metrics):
                continue
            state = build_metric(spec, ctx)
            if state is None:
                skipped.append(spec)
            else:
                states.append((spec, state))
        return states, skipped

    def _results(self, states: list[tuple[Any, Any]], skipped: list[Any], ctx: MetricContext, source: Any, n: int,
                 bootstrap: int, seconds: float, start_time: float) -> dict[str, Any]:  # fmt: skip
        """The results dict of one evaluation's finished metric states (see :meth:`evaluate`)."""
        cfg, ref, rank = self.cfg, self.reference, ctx.rank
        results: dict[str, Any] = {"features": self.feature_name, "num_samples": n, "num_real": ctx.num_real}
        suffix = feature_space_spec(self.feature_name).key_suffix  # e.g. fd_dinov2 for FID in the DINOv2 space
        for spec in skipped:
            if spec.always_reported:
                results.update(in_space(spec, {k.key: None for k in spec.keys}, suffix))
        for spec, state in states:
            results.update(in_space(spec, state.compute(), suffix))
        results["bootstrap"] = bootstrap
        if bootstrap > 0 and rank == 0:  # after every state gathered its samples in compute
            results["ci"] = self._intervals(states, Resamples.draw(n, bootstrap, cfg.metric_seed), suffix)
        results["sample_images_per_s"] = round(n / seconds, 2) if seconds > 0 and source.nfe is not None else None
        results["nfe"] = source.nfe
        results["card"] = evaluation_card(cfg, ctx.space, ref, source, n, ctx.num_real)
        results.update(ctx.space.info())
        results.update(
            data=ref.name, split=ref.split, **ctx.protocol, real_stats_cached=self.real_cached,
            fake_features_cached=self.fake_cached, world_size=ctx.world,
            eval_time_s=round(time.perf_counter() - start_time, 3), notes=ctx.notes,
        )  # fmt: skip
        return results

    def _intervals(self, states: list[tuple[Any, Any]], resamples: Resamples, suffix: str | None) -> dict[str, list[float]]:
        """``{result key: [low, high]}`` of every metric that defines an interval (``MetricState.bootstrap``);
        every metric sees the same resamples of the generated samples."""
        started = time.perf_counter()
        ci: dict[str, list[float]] = {}
        for spec, state in states:
            t0 = time.perf_counter()
            intervals = state.bootstrap(resamples)
            ci.update({k: [float(low), float(high)] for k, (low, high) in in_space(spec, intervals, suffix).items()})
            log.debug("bootstrap of %s: %.3f s", spec.name, time.perf_counter() - t0)
        log.info("bootstrap intervals (%d resamples): %.2f s", len(resamples), time.perf_counter() - started)
        return ci

    def _max_over_ranks(self, seconds: float) -> float:
        """The slowest rank's sampling time (the ranks sample in parallel)."""
        longest = MaxMetric().to(self.device)
        longest.update(torch.tensor(seconds, dtype=torch.float64))
        return float(longest.compute())

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
