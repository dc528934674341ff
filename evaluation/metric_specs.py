"""The built-in metrics: one spec and one registration each (see :mod:`evaluation.registry`).

FID, IS, KID, precision/recall/density/coverage, the likelihood bound and the 2-D mode metrics run in
every evaluation where they apply; FD∞, CMMD and the memorization metrics when ``eval.metrics`` names
them (they keep every generated feature, and memorization featurises the training split).

Every state wraps a torchmetrics ``Metric`` of :mod:`evaluation.metrics` or :mod:`evaluation.manifold`,
so the values are reduced across ``torch.distributed`` ranks and equal the single-process values. The
real side enters on rank 0 only (so the reduction counts it once); every rank adds an empty block first,
so every rank holds one tensor of the same rank per list state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.utilities import dim_zero_cat

from evaluation.cmmd import cmmd
from evaluation.evaluator import batch_seed
from evaluation.fd_infinity import fd_infinity
from evaluation.frechet import fid_of_resamples
from evaluation.manifold import ManifoldMetrics, manifold_resampled
from evaluation.memorization import memorization_metrics
from evaluation.metrics import (
    FID,
    IS,
    KID,
    ModeMetrics,
    centred_interval,
    finite_or_none,
    percentile_interval,
)
from evaluation.registry import (
    Batch,
    MetricContext,
    MetricSpec,
    MetricState,
    Resamples,
    ResultKey,
    register_metric,
    register_result_key,
)


def _real_features(ctx: MetricContext) -> tuple[Tensor, Tensor]:
    """(the real features on rank 0 / an empty block elsewhere, an empty block) on the evaluation device."""
    empty = torch.zeros(0, ctx.space.num_features, device=ctx.device)
    return (ctx.real["features"].to(ctx.device) if ctx.rank == 0 else empty), empty


class FakeFeatureList(Metric):
    """The generated features, concatenated across batches and ``torch.distributed`` ranks."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.features.append(features.float())

    def compute(self) -> Tensor:
        return dim_zero_cat(self.features)


# --- FID (Heusel et al. 2017) -----------------------------------------------------------------
class FIDState(MetricState):
    def __init__(self, ctx: MetricContext):
        self.ctx = ctx
        self.fid = FID(ctx.space.num_features).to(ctx.device)
        if ctx.rank == 0:  # the cached real moments (and Σ_r^½) instead of the real features
            r = ctx.real
            self.fid.set_real_moments(r["sum"], r["cov_sum"], r["n"], r.get("cov_sqrt"))
        self.fid.update(torch.zeros(0, ctx.space.num_features, device=ctx.device), real=True)  # moments only
        # the bootstrap resamples the generated features themselves (the evaluations during training keep moments only)
        self.fake = FakeFeatureList().to(ctx.device) if ctx.bootstrap > 0 else None
        if self.fake is not None:
            self.fake.update(torch.zeros(0, ctx.space.num_features, device=ctx.device))
        self.features: Tensor | None = None

    def update(self, batch: Batch) -> None:
        self.fid.update(batch.features, real=False)
        if self.fake is not None:
            self.fake.update(batch.features)

    def compute(self) -> dict[str, Any]:
        value = float(self.fid.compute())
        if self.fid.clamped is not None:
            self.ctx.notes.append(f"fid was {self.fid.clamped:.3g} (floating-point error around 0) and is reported as 0")
        if self.fake is not None:
            self.features = self.fake.compute()  # gathered across ranks (every rank calls compute)
        return {"fid": value}

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        r = self.ctx.real
        fids = fid_of_resamples(self.features, r["sum"], r["cov_sum"], int(r["n"]), resamples.counts(), r.get("cov_sqrt"))
        return {"fid": percentile_interval(fids)}


register_metric(MetricSpec(
    name="fid", build=FIDState, needs=frozenset({"features"}),
    keys=(ResultKey("fid", "val/fid", "FID", "{:.2f}", "lower", order=10),),
    description="Fréchet distance between Gaussians fitted to real and generated features",
))  # fmt: skip


# --- IS (Salimans et al. 2016) ----------------------------------------------------------------
class ISState(MetricState):
    def __init__(self, ctx: MetricContext, splits: int):
        k = ctx.space.num_classes
        self.inception_score = IS(k, splits=splits, seed=ctx.cfg.metric_seed).to(ctx.device)
        self.inception_score.update(torch.zeros(0, k, device=ctx.device))

    def update(self, batch: Batch) -> None:
        self.inception_score.update(batch.logits)

    def compute(self) -> dict[str, Any]:
        mean, std = self.inception_score.compute()
        return {"is_mean": float(mean), "is_std": float(std)}

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        return {"is_mean": percentile_interval(self.inception_score.resampled(resamples.indices))}


def build_is(ctx: MetricContext) -> ISState | None:
    if not ctx.space.num_classes:
        ctx.notes.append("is: this feature space has no class posterior")
        return None
    splits = min(ctx.cfg.is_splits, ctx.num_samples)
    if splits < ctx.cfg.is_splits:
        ctx.notes.append(f"is_splits reduced from {ctx.cfg.is_splits} to {splits} ({ctx.num_samples} samples)")
    ctx.protocol["is_splits"] = splits
    return ISState(ctx, splits)


register_metric(MetricSpec(
    name="is", build=build_is, needs=frozenset({"logits"}), settings=("is_splits", "metric_seed"),
    keys=(ResultKey("is_mean", "val/is", "IS", "{:.2f}", "higher", order=20),
          ResultKey("is_std", None, None, "{:.2f}", None, order=21)),
    description="Inception Score, mean and std over splits (torch-fidelity's protocol)",
))  # fmt: skip


class RealAndFakeFeatures(MetricState):
    """A torchmetrics metric fed ``update(features, real=...)``: the real features first, then each batch."""

    def __init__(self, ctx: MetricContext, metric: Metric):
        self.metric = metric.to(ctx.device)
        real, empty = _real_features(ctx)
        self.metric.update(real, real=True)
        self.metric.update(empty, real=False)

    def update(self, batch: Batch) -> None:
        self.metric.update(batch.features, real=False)


# --- KID (Bińkowski et al. 2018) --------------------------------------------------------------
class KIDState(RealAndFakeFeatures):
    def __init__(self, ctx: MetricContext, subset_size: int):
        cfg = ctx.cfg
        super().__init__(ctx, KID(ctx.space.num_features, subsets=cfg.kid_subsets, subset_size=subset_size,
                                  seed=cfg.metric_seed))  # fmt: skip

    def compute(self) -> dict[str, Any]:
        mean, std = self.metric.compute()
        self.kid = float(mean)
        return {"kid_mean": float(mean), "kid_std": float(std)}

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        """KID + the change of the full-set MMD² on each resample (:meth:`KID.resampled_shift`)."""
        return {"kid_mean": percentile_interval(self.kid + self.metric.resampled_shift(resamples.counts()))}


def build_kid(ctx: MetricContext) -> KIDState:
    m = min(ctx.cfg.kid_subset_size, ctx.num_samples, ctx.num_real)
    if m < ctx.cfg.kid_subset_size:
        ctx.notes.append(f"kid_subset_size reduced from {ctx.cfg.kid_subset_size} to {m} "
                         f"(samples: {ctx.num_samples} generated, {ctx.num_real} real)")
    ctx.protocol.update(kid_subset_size=m, kid_subsets=ctx.cfg.kid_subsets)
    return KIDState(ctx, m)


register_metric(MetricSpec(
    name="kid", build=build_kid, needs=frozenset({"features", "real_features"}), settings=("kid_subsets", "kid_subset_size", "metric_seed"),
    keys=(ResultKey("kid_mean", "val/kid", "KID", "{:.4f}", "lower", order=30),
          ResultKey("kid_std", None, None, "{:.4f}", None, order=31)),
    description="Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel over subsets",
))  # fmt: skip


# --- precision / recall (Kynkäänniemi et al. 2019), density / coverage (Naeem et al. 2020) -------
class ManifoldState(RealAndFakeFeatures):
    def __init__(self, ctx: MetricContext, k: int):
        super().__init__(ctx, ManifoldMetrics(nearest_k=k))

    def compute(self) -> dict[str, Any]:
        return dict(self.metric.compute())

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        """precision, density: percentile intervals; recall, coverage (of the generated set, which a resample
        thins): centred on the estimate (:func:`~evaluation.metrics.centred_interval`)."""
        values = manifold_resampled(self.metric.parts, self.metric.nearest_k, resamples.counts())
        estimate = self.metric.compute_values()
        return {key: centred_interval(v, estimate[key]) if key in ("recall", "coverage") else percentile_interval(v)
                for key, v in values.items()}  # fmt: skip


def build_manifold(ctx: MetricContext) -> ManifoldState:
    k = max(1, min(ctx.cfg.nearest_k, ctx.num_samples - 1, ctx.num_real - 1))
    if k < ctx.cfg.nearest_k:
        ctx.notes.append(f"nearest_k reduced from {ctx.cfg.nearest_k} to {k} "
                         f"({ctx.num_samples} generated, {ctx.num_real} real samples)")
    ctx.protocol["nearest_k"] = k
    return ManifoldState(ctx, k)


register_metric(MetricSpec(
    name="manifold", build=build_manifold, needs=frozenset({"features", "real_features"}), settings=("nearest_k",),
    keys=(ResultKey("precision", "val/precision", "precision", "{:.3f}", "higher", order=40),
          ResultKey("recall", "val/recall", "recall", "{:.3f}", "higher", order=41),
          ResultKey("density", "val/density", None, "{:.3f}", "higher", order=42),
          ResultKey("coverage", "val/coverage", None, "{:.3f}", "higher", order=43)),
    description="k-NN manifold precision/recall and density/coverage",
))  # fmt: skip


# --- the negative log-likelihood bound, bits/dim --------------------------------------------------
class NLLState(MetricState):
    def __init__(self, ctx: MetricContext, n: int):
        self.ctx, self.n = ctx, n
        self.nll = MeanMetric().to(ctx.device)
        self.values = FakeFeatureList().to(ctx.device)  # the per-example bounds, for the interval
        self.values.update(torch.zeros(0, 1, device=ctx.device))

    def finish(self, source: Any) -> None:
        """Mean ``nll_bpd`` over ``n`` real examples (a fixed subset), each batch with its own seed."""
        ctx = self.ctx
        x = ctx.reference.samples(self.n)
        bs = ctx.cfg.batch_size
        n_batches = math.ceil(len(x) / bs)
        for b in range(ctx.rank * n_batches // ctx.world, (ctx.rank + 1) * n_batches // ctx.world):
            torch.manual_seed(batch_seed(ctx.cfg.seed + 1, b))
            values = source.nll_bpd(x[b * bs : (b + 1) * bs]).double().to(ctx.device)
            self.nll.update(values)
            self.values.update(values.reshape(-1, 1))

    def compute(self) -> dict[str, Any]:
        self.per_example = self.values.compute().double().flatten()
        return {"nll_bpd": finite_or_none(self.nll.compute())}

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        """Not a bootstrap of the generated samples: the bound is a mean over real examples, and its interval
        is the normal one over them, x̄ ± 1.96 s/√n (s: their sample standard deviation)."""
        v = self.per_example
        if len(v) < 2 or not bool(torch.isfinite(v).all()):
            return {}
        half = 1.96 * float(v.std()) / math.sqrt(len(v))
        return {"nll_bpd": (float(v.mean()) - half, float(v.mean()) + half)}


def build_nll(ctx: MetricContext) -> NLLState | None:
    return NLLState(ctx, ctx.nll_samples) if ctx.source.has_likelihood and ctx.nll_samples > 0 else None


register_metric(MetricSpec(
    name="nll", build=build_nll, needs=frozenset({"likelihood"}), settings=("nll_samples", "val_nll_samples"),
    keys=(ResultKey("nll_bpd", "val/nll_bpd", "NLL bits/dim", "{:.3f}", "lower", order=50),), always_reported=False,
    description="the family's negative log-likelihood bound on held-out examples, bits per dimension",
))  # fmt: skip


# --- modes of a 2-D mixture (Srivastava et al. 2017) ---------------------------------------------
class ModeState(MetricState):
    def __init__(self, ctx: MetricContext):
        self.modes = ModeMetrics(ctx.reference.centers, ctx.reference.std).to(ctx.device)
        self.modes.update(torch.zeros(0, self.modes.centers.shape[1], device=ctx.device))

    def update(self, batch: Batch) -> None:
        self.modes.update(batch.samples)

    def compute(self) -> dict[str, Any]:
        return dict(self.modes.compute())

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        return {key: percentile_interval(v) for key, v in self.modes.resampled(resamples.counts()).items()}


register_metric(MetricSpec(
    name="modes", build=lambda ctx: ModeState(ctx) if ctx.reference.centers is not None else None,
    needs=frozenset({"samples", "modes"}), always_reported=False,
    keys=(ResultKey("modes_covered", "val/modes_covered", "modes", "{:.1f}", "higher", order=60),
          ResultKey("num_modes", None, None, "{:.0f}", None, order=61),
          ResultKey("high_quality_share", "val/high_quality_share", "high-quality %", "{:.1f}", "higher", order=62,
                    scale=100.0)),
    description="modes hit by a sample within 3σ, and the share of such samples",
))  # fmt: skip


# --- values tabulated and logged like metrics, measured by the evaluator or the trainer -------------
for _key in (
    ResultKey("params_m", None, "params (M)", "{:.3f}", None, order=900),
    ResultKey("train_time_s", None, "train time (s)", "{:.1f}", None, order=910),
    ResultKey("train_images_per_s", None, "train img/s", "{:.0f}", "higher", order=920),
    ResultKey("sample_images_per_s", "perf/sample_images_per_s", "sample img/s", "{:.1f}", "higher", order=930),
    ResultKey("nfe", None, "NFE", "{:.0f}", None, order=940),
):
    register_result_key(_key)


# --- opt-in metrics: named in eval.metrics ------------------------------------------------------------
class CollectingState(MetricState):
    """A metric of all generated features at once (``compute_from(fake)``)."""

    def __init__(self, ctx: MetricContext):
        self.ctx = ctx
        self.fake = FakeFeatureList().to(ctx.device)

    def update(self, batch: Batch) -> None:
        self.fake.update(batch.features)

    def compute(self) -> dict[str, Any]:
        return self.compute_from(self.fake.compute().cpu())

    def compute_from(self, fake: Tensor) -> dict[str, Any]:
        raise NotImplementedError


class FDInfinityState(CollectingState):
    def compute_from(self, fake: Tensor) -> dict[str, Any]:
        result = fd_infinity(self.ctx.real["features"], fake, seed=self.ctx.cfg.metric_seed)
        self.ctx.protocol["fd_inf_ns"] = list(result.ns)
        return {"fd_inf": float(result.value)}


register_metric(MetricSpec(
    name="fd_infinity", build=FDInfinityState, needs=frozenset({"features", "real_features"}), default=False, settings=("metric_seed",),
    keys=(ResultKey("fd_inf", "val/fd_inf", "FD∞", "{:.2f}", "lower", order=12),),
    description="Fréchet distance extrapolated to infinitely many samples (Chong & Forsyth 2020): a linear fit "
                "of FD against 1/n over 15 subset sizes",
))  # fmt: skip


class CMMDState(CollectingState):
    def compute_from(self, fake: Tensor) -> dict[str, Any]:
        return {"cmmd": cmmd(self.ctx.real["features"], fake)}


def build_cmmd(ctx: MetricContext) -> CMMDState | None:
    if ctx.space.name != "clip":
        ctx.notes.append(f"cmmd: defined on CLIP embeddings (eval.features=clip), not on {ctx.space.name} features")
        return None
    return CMMDState(ctx)


register_metric(MetricSpec(
    name="cmmd", build=build_cmmd, needs=frozenset({"features", "real_features"}), default=False, always_reported=False,
    space_named=False,
    keys=(ResultKey("cmmd", "val/cmmd", "CMMD", "{:.3f}", "lower", order=14),),
    description="MMD² with a Gaussian RBF kernel (σ = 10) on CLIP embeddings, ×1000 (Jayasumana et al. 2024)",
))  # fmt: skip


class MemorizationState(CollectingState):
    def compute_from(self, fake: Tensor) -> dict[str, Any]:
        train = self.ctx.split_features("train")
        heldout = self.ctx.split_features("val")
        return memorization_metrics(train, heldout, fake, seed=self.ctx.cfg.metric_seed, notes=self.ctx.notes)


def build_memorization(ctx: MetricContext) -> MemorizationState | None:
    if ctx.split_features is None:
        ctx.notes.append("memorization: needs the data set's training split (data=NAME or a checkpoint), not real=FILES")
        return None
    return MemorizationState(ctx)


register_metric(MetricSpec(
    name="memorization", build=build_memorization, default=False, always_reported=False,
    needs=frozenset({"features", "train_split"}),
    keys=(ResultKey("copy_rate", "val/copy_rate", "copy rate", "{:.3f}", "lower", order=80),
          ResultKey("copy_rate_heldout", None, None, "{:.3f}", None, order=81),
          ResultKey("authenticity", "val/authenticity", "authenticity", "{:.3f}", "higher", order=82),
          ResultKey("authenticity_heldout", None, None, "{:.3f}", None, order=83),
          ResultKey("ct", "val/ct", "C_T", "{:.2f}", "higher", order=84)),
    description="copies of training examples: the nearest/second-nearest ratio test (d1/d2 < 1/3), authenticity "
                "(Alaa et al. 2022) and C_T (Meehan et al. 2020), with the held-out split as control",
))  # fmt: skip
