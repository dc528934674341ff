"""The metric registry: one :class:`MetricSpec` per metric, one :func:`register_metric` call each.

The evaluator builds every registered metric that applies to a run, feeds each batch of generated
samples (and their features) to all of them, and collects their values; the W&B/CSV log names,
``genbench-compare``'s table columns, the report and ``genbench-evaluate``'s summary all read their
keys from here. A metric is therefore one spec (what it needs, its result keys, a ``build``) and one
registration; nothing else is edited to add one.

    register_metric(MetricSpec(
        name="mean_norm",
        keys=(ResultKey("mean_norm", log_name="val/mean_norm", column="mean ‖f‖", better="lower"),),
        needs=frozenset({"features"}),
        build=lambda ctx: MeanNorm(),          # a MetricState
    ))

A metric opts in to the 95 % intervals of the final evaluation (``eval.bootstrap``, results' ``ci``) in its
own state: ``MetricState.bootstrap(resamples)`` returns ``{result key: (low, high)}`` from the same
:class:`Resamples` of the generated samples that every metric sees.

Built-in metrics live in :mod:`evaluation.metric_specs`; plug-ins (``GENBENCH_PLUGINS``) register more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from genbench.errors import GenbenchError

#: What a metric can ask for (``MetricSpec.needs``); the evaluator provides these and skips a metric
#: whose needs the run cannot meet (e.g. IS in a feature space without class logits).
NEEDS = frozenset({
    "features",   # features of the generated samples, batch by batch; the real ones in ctx.real
    "logits",     # class logits of the feature space (IS)
    "samples",    # the raw generated samples, quantised as evaluated (images) or points
    "modes",      # the real reference is a mixture with known modes (2-D data)
    "likelihood",  # the source defines nll_bpd (ctx.source)
    "train_split",  # features of the data set's splits (ctx.split_features): memorization
    "real_features",  # the real features themselves (ctx.real["features"]); a real side given as statistics
                      # (real=stats.npz: μ and Σ only) has none, and such a metric does not apply
})  # fmt: skip


@dataclass(frozen=True)
class ResultKey:
    """One value a metric adds to the results.

    Args:
        key: its key in ``results.json`` (``eval.<key>``) and in ``genbench-compare``'s records.
        log_name: the name logged to W&B/CSV (shared by every family, so panels line up); None: not logged.
        column: the header of its column in the comparison table (None: not tabulated). An arrow
            for ``better`` is appended.
        fmt: how a table cell shows the value.
        better: ``lower``, ``higher`` or None (no direction, e.g. a count).
        order: columns and logs are sorted by it (a space's variant of a key sorts right after it).
        scale: the table shows ``value * scale`` (e.g. 100 for a share shown in per cent).
    """

    key: str
    log_name: str | None = None
    column: str | None = None
    fmt: str = "{:.3f}"
    better: str | None = "lower"
    order: float = 100
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher", None):
            raise ValueError(f"ResultKey {self.key!r}: better={self.better!r} must be 'lower', 'higher' or None")

    @property
    def header(self) -> str:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(self.better or "", "")
        return f"{self.column}{arrow}"


@dataclass
class Batch:
    """What every metric sees of one batch of generated samples."""

    features: Tensor
    logits: Tensor | None = None
    samples: Tensor | None = None


@dataclass
class MetricContext:
    """What ``MetricSpec.build`` may use: the settings, the feature space, the real side, the sizes.

    ``notes`` collects the protocol changes a metric makes (e.g. a subset size clipped to the sample
    count); they go into the results' ``notes``.
    """

    cfg: Any
    space: Any
    real: dict[str, Any]
    num_samples: int
    num_real: int
    reference: Any
    source: Any
    device: Any
    rank: int = 0
    world: int = 1
    #: real examples of the likelihood bound (0: none)
    nll_samples: int = 0
    #: ``split -> features`` of the data set's ``train`` / ``val`` split (cached); None for stored references
    split_features: Any = None
    notes: list[str] = field(default_factory=list)
    #: the protocol actually used (subset sizes, k, splits after clipping), recorded in the results
    protocol: dict[str, Any] = field(default_factory=dict)
    #: bootstrap resamples behind the 95 % intervals of this evaluation (0: none; the evaluations during
    #: training have none): a state that needs per-sample data for them keeps it only when this is > 0
    bootstrap: int = 0


@dataclass
class Resamples:
    """B bootstrap resamples of the n generated samples, drawn with replacement: ``indices`` ``[B, n]``
    (positions in the generated set, concatenated in rank order) and ``counts`` ``[B, n]`` (float64, how
    often each sample is drawn; Σ_i counts[b, i] = n). The real reference is never resampled."""

    indices: Tensor

    @staticmethod
    def draw(n: int, b: int, seed: int) -> Resamples:
        g = torch.Generator().manual_seed(int(seed))
        return Resamples(torch.randint(n, (b, n), generator=g))

    @property
    def n(self) -> int:
        return self.indices.shape[1]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def counts(self, device: Any = None) -> Tensor:
        c = torch.zeros(self.indices.shape, dtype=torch.float64)
        c.scatter_add_(1, self.indices, torch.ones_like(c))
        return c.to(device) if device is not None else c


class MetricState:
    """A metric during one evaluation: ``update`` per batch, ``finish`` once inside the sampling
    context (e.g. a likelihood pass over real data), then ``compute`` -> ``{result key: value}``.

    States built on torchmetrics ``Metric`` objects are reduced across ``torch.distributed`` ranks
    by torchmetrics in ``compute`` (every rank calls it, in the same order).
    """

    def update(self, batch: Batch) -> None:  # noqa: B027 - optional hook
        pass

    def finish(self, source: Any) -> None:  # noqa: B027 - optional hook
        pass

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def bootstrap(self, resamples: Resamples) -> dict[str, tuple[float, float]]:
        """``{result key: (low, high)}``, the 95 % intervals of this metric's values, called after ``compute``
        on rank 0 in the final evaluation only (``ctx.bootstrap`` > 0). A metric opts in by overriding this:
        typically its value on every resample of the generated samples (real side fixed) and
        :func:`~evaluation.metrics.percentile_interval` of those. Default: no interval."""
        return {}


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its name, its result keys, what it needs, and how to build its state.

    ``build(ctx)`` returns a :class:`MetricState`, or None when the metric does not apply to this
    run (it may say why in ``ctx.notes``; see ``always_reported``). ``settings`` names the ``eval.*`` keys it reads (documented
    on :class:`~evaluation.config.EvalConfig`).
    """

    name: str
    keys: tuple[ResultKey, ...]
    build: Callable[[MetricContext], MetricState | None]
    needs: frozenset[str] = frozenset({"features"})
    settings: tuple[str, ...] = ()
    description: str = ""
    #: Where the metric does not apply, its keys are still in the results, as None (False: left out,
    #: e.g. the bound of a family without a likelihood).
    always_reported: bool = True
    #: Runs in every evaluation (False: only when ``eval.metrics`` names it).
    default: bool = True
    #: Its keys name the feature space where the space asks for it (``fd_dinov2``): a metric of the features.
    #: False for a metric that exists in one space only (CMMD, on CLIP embeddings).
    space_named: bool = True

    def space_keyed(self) -> bool:
        return self.space_named and "features" in self.needs

    def __post_init__(self) -> None:
        unknown = sorted(set(self.needs) - NEEDS)
        if unknown:
            raise ValueError(f"metric {self.name!r}: needs {unknown} unknown; allowed: {sorted(NEEDS)}")


def build_metric(spec: MetricSpec, ctx: MetricContext) -> MetricState | None:
    """``spec.build(ctx)``, or None with a note when the run cannot meet a need the registry checks
    (``real_features`` of a real side given as statistics)."""
    if "real_features" in spec.needs and "features" not in ctx.real:
        keys = ", ".join(k.key for k in spec.keys)
        ctx.notes.append(f"{spec.name} ({keys}): needs the real features; the real side is given as statistics "
                         "(mu, sigma) only")
        return None
    return spec.build(ctx)


_METRICS: dict[str, MetricSpec] = {}
_RESULT_KEYS: dict[str, ResultKey] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` to the registry (replacing a spec of the same name); returns it."""
    for k in spec.keys:
        owner = next((s.name for s in _METRICS.values() if s.name != spec.name and k.key in {x.key for x in s.keys}), None)
        if owner is not None:
            raise GenbenchError(f"metric {spec.name!r}: result key {k.key!r} already belongs to metric {owner!r}")
    _METRICS[spec.name] = spec
    for k in spec.keys:
        _RESULT_KEYS[k.key] = k
    return spec


def register_result_key(key: ResultKey) -> ResultKey:
    """A value that is not computed by a metric but tabulated or logged like one (e.g. training time)."""
    _RESULT_KEYS[key.key] = key
    return key


def _load_builtins() -> None:
    import evaluation.metric_specs  # noqa: F401 - registers the built-in metrics


def metric_specs() -> list[MetricSpec]:
    """Every registered metric, built-in ones first."""
    _load_builtins()
    return list(_METRICS.values())


def metric_spec(name: str) -> MetricSpec:
    _load_builtins()
    if name not in _METRICS:
        raise GenbenchError(f"unknown metric {name!r}; registered: {sorted(_METRICS)}")
    return _METRICS[name]


def space_key(key: str, suffix: str | None) -> str:
    """``key`` in a feature space that names its keys: ``fid`` -> ``fd_dinov2``, ``kid_mean`` -> ``kid_mean_dinov2``."""
    if not suffix:
        return key
    return f"fd_{suffix}" if key == "fid" else f"{key}_{suffix}"


def in_space(spec: MetricSpec, values: dict[str, Any], suffix: str | None) -> dict[str, Any]:
    """``values`` of ``spec`` under the keys of a space with ``suffix`` (unchanged for metrics not keyed by space)."""
    if not suffix or not spec.space_keyed():
        return values
    return {space_key(k, suffix): v for k, v in values.items()}


def _space_suffixes() -> list[str]:
    from evaluation.features import feature_space_names, feature_space_spec

    return [s for s in (feature_space_spec(n).key_suffix for n in feature_space_names() if n != "auto") if s]


def _space_variant(key: ResultKey, suffix: str) -> ResultKey:
    column = None if key.column is None else f"{'FD' if key.key == 'fid' else key.column} ({suffix})"
    log_name = None if key.log_name is None else f"val/{space_key(key.key, suffix)}"
    return ResultKey(space_key(key.key, suffix), log_name, column, key.fmt, key.better, key.order + 0.5, key.scale)


def result_keys() -> list[ResultKey]:
    """Every registered result key, and its variant in each feature space that names its keys, in column order."""
    _load_builtins()
    keys = list(_RESULT_KEYS.values())
    for suffix in _space_suffixes():
        keys += [_space_variant(k, suffix) for spec in _METRICS.values() if spec.space_keyed() for k in spec.keys]
    return sorted(keys, key=lambda k: k.order)


def log_names() -> dict[str, str]:
    """result key -> logged name, for every key that is logged."""
    return {k.key: k.log_name for k in result_keys() if k.log_name}


def logged_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The logged values of an evaluation's results (``val/fid``, ...), numbers only."""
    return {name: float(results[key]) for key, name in log_names().items()
            if isinstance(results.get(key), (int, float)) and not isinstance(results.get(key), bool)}
