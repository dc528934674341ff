"""``eval.*``: the evaluation settings shared by ``genbench-train`` and ``genbench-evaluate``.

``conf/eval/*.yaml`` instantiate :class:`EvalConfig`; :meth:`EvalConfig.config_errors` is run
by :mod:`genbench.validate` before any data is loaded, so a bad value stops the run at once
with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import ListConfig

from evaluation.classifier import ClassifierSettings
from evaluation.features import feature_space_names, feature_space_spec
from evaluation.spaces import clip, dinov2, inception
from genbench.checks import is_number
from genbench.devices import visible_cuda_gpus
from genbench.errors import ConfigError
from genbench.schema import check, setting


@dataclass
class EvalConfig:
    """The evaluation's settings (``eval.*``): each field holds its one default, its allowed values and
    what it is (generated into ``conf/schema/eval.yaml``). FID is biased at small ``n``: compare numbers
    only at equal ``num_samples`` (it is recorded in the results).
    """

    features: str = setting("auto", doc="feature space: auto (classifier for images, raw for 2-D points) or a registered one")
    num_samples: int = setting(5000, ge=2, hint="FID is undefined for fewer than 2 samples",
                               doc="generated samples of the final (and stand-alone) evaluation; compare FIDs only at equal n")
    val_num_samples: int = setting(500, ge=2, hint="FID is undefined for fewer than 2 samples",
                                   doc="generated samples of each evaluation during training")
    every_n_steps: int = setting(0, ge=0, hint="0 disables evaluation during training",
                                 doc="evaluation during training: every this many steps (0: never)")
    at_fractions: list = setting([], doc="more evaluations during training, at these fractions (0 < f < 1) of the run's "
                                         "planned steps (an images or FLOPs budget) and at its last step, with val_num_samples "
                                         "(the last step's from the final evaluation's first samples, when it runs): "
                                         "with budget.kind=flops every family is evaluated at the same training FLOPs")
    snapshot_step: int | None = setting(None, ge=1, null="none",
                                        doc="also evaluate with num_samples at this training step (results.json: "
                                            "eval_snapshot); the lecture's equal-images table")
    bootstrap: int = setting(200, ge=0, hint="0: no bootstrap intervals",
                             doc="bootstrap resamples of the generated samples behind each metric's 95 % interval "
                                 "(results.json: eval.ci), for a run with one seed")
    final: bool = setting(True, doc="evaluate with num_samples when training ends; the result goes into results.json")
    batch_size: int = setting(250, ge=1, doc="samples drawn (and featurised) per call")
    split: str = setting("val", choices=("train", "val"), allowed="'train' or 'val'",
                         doc="the real reference: the held-out split (val) or train")
    num_real: int | None = setting(None, ge=2, null="the whole split", doc="real samples of the reference; null: the whole split")
    inception_weights: str | None = setting(None, doc="InceptionV3 weights file (torch-fidelity's); null: torch's hub cache, "
                                                      "genbench's cache, else one download checked against its SHA-256")
    resize: str = setting("torch-fidelity", choices=inception.RESIZE_MODES,
                          doc="how features=inception resizes to 299: torch-fidelity (TF-1.x bilinear, as torch-fidelity and "
                              "the published FIDs) or clean (PIL bicubic, as clean-fid's mode=clean)")
    is_splits: int = setting(10, ge=1, doc="IS splits (torch-fidelity's protocol)")
    kid_subsets: int = setting(100, ge=1, doc="KID subsets")
    kid_subset_size: int = setting(1000, ge=2, doc="KID subset size (clipped to the sample counts)")
    nearest_k: int = setting(3, ge=1, doc="k of the k-NN manifolds (precision/recall: Kynkäänniemi et al. 2019; "
                                          "density/coverage: Naeem et al. 2020)")
    metric_seed: int = setting(2020, ge=0, doc="seed of the IS shuffling and the KID subsets (torch-fidelity's 2020)")
    seed: int = setting(0, ge=0, doc="seed of the sampling noise")
    nll_samples: int | None = setting(500, ge=0, doc="real examples for nll_bpd, where the family defines a likelihood (0: skip; "
                                                     "genbench-evaluate: null = as the checkpoint's run)")
    val_nll_samples: int = setting(0, ge=0, hint="0: no bound in the evaluations during training",
                                   doc="the same in each evaluation during training")
    grid_size: int = setting(64, ge=1, doc="samples in the logged image grid")
    device: str = setting("auto", doc="auto (the model's device / CUDA when available), cpu, cuda, cuda:N or mps")
    metrics: list = setting([], doc="opt-in metrics besides the default ones: fd_infinity, cmmd (eval.features=clip), "
                                    "memorization")
    sample_kwargs: dict = setting({}, doc="keyword arguments of model.sample / model.nfe, e.g. {sampler: ddim, steps: 50}; "
                                          "families ignore the ones they do not have")
    classifier: dict = setting(factory=lambda: asdict(ClassifierSettings()),
                               doc="the feature classifier (features=classifier); every value is part of its cache key")
    dinov2: dict = setting(factory=lambda: {"model": dinov2.DEFAULT_MODEL, "weights": None},
                           doc=f"features=dinov2: model {list(dinov2.MODELS)}, weights: PATH or null")
    clip: dict = setting(factory=lambda: {"model": clip.DEFAULT_MODEL, "weights": None},
                         doc=f"features=clip: model {list(clip.MODELS)}, weights: PATH or null")

    def __post_init__(self) -> None:
        errors = self.config_errors(self.__dict__)
        if errors:
            raise ConfigError(errors)

    @classmethod
    def from_node(cls, node: Any) -> EvalConfig:
        """From a (Dict)Config node or dict, ignoring ``_target_``."""
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        d.pop("_target_", None)
        return cls(**d)

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        """Every problem of an ``eval`` node, one message each."""
        errors: list[str] = []
        known = set(cls.__dataclass_fields__) | {"_target_"}
        for key in sorted(set(cfg.keys()) - known):
            errors.append(f"eval.{key}: unknown key; allowed: {sorted(known - {'_target_'})}")

        features = cfg.get("features", "auto")
        if features not in feature_space_names():
            errors.append(f"eval.features={features!r}: must be one of {list(feature_space_names())}")
        errors += check(cls, cfg, "eval.", keys=[k for k in cls.__dataclass_fields__ if k not in ("features", "device")])
        errors += device_errors(cfg.get("device", "auto"))
        errors += metrics_errors(cfg.get("metrics", []))
        errors += fractions_errors(cfg.get("at_fractions", []))
        kwargs = cfg.get("sample_kwargs") or {}
        if not hasattr(kwargs, "keys"):
            errors.append(f"eval.sample_kwargs={kwargs!r}: must be a mapping of keyword arguments of model.sample")
        errors += ClassifierSettings.errors(cfg.get("classifier"))
        resize = cfg.get("resize", "torch-fidelity")
        if resize != "torch-fidelity" and features != "inception" and resize in inception.RESIZE_MODES:
            errors.append(f"eval.resize={resize!r}: only eval.features=inception has resize modes (eval.features={features!r})")
        if features != "auto" and features in feature_space_names():
            errors += feature_space_spec(features).errors(cfg)  # its options and weights, before any work
        return errors


def metrics_errors(names: Any) -> list[str]:
    """``eval.metrics``: a list of registered opt-in metrics, each named once."""
    from evaluation.registry import metric_specs

    optional = [s.name for s in metric_specs() if not s.default]
    if not isinstance(names, (list, tuple, ListConfig)):
        return [f"eval.metrics={names!r}: must be a list of opt-in metrics from {optional} (the others always run)"]
    bad = [n for n in names if n not in optional]
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    errors = [f"eval.metrics={list(names)!r}: {n!r} is not an opt-in metric; allowed: {optional}" for n in bad]
    return errors + [f"eval.metrics={list(names)!r}: {n!r} is named more than once" for n in repeated]


def fractions_errors(fractions: Any) -> list[str]:
    """``eval.at_fractions``: a list of numbers strictly between 0 and 1."""
    if not isinstance(fractions, (list, tuple, ListConfig)):
        return [f"eval.at_fractions={fractions!r}: must be a list of fractions of the planned steps, each 0 < f < 1"]
    return [f"eval.at_fractions={list(fractions)!r}: {f!r} is not a number with 0 < f < 1"
            for f in fractions if not (is_number(f) and 0 < f < 1)]


def device_errors(device: Any) -> list[str]:
    """``eval.device``: ``auto``, ``cpu``, or a CUDA / MPS device that this machine has."""
    import torch

    allowed = f"eval.device={device!r}: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    if device == "auto":
        return []
    try:
        d = torch.device(device) if isinstance(device, str) and device else None
    except RuntimeError:
        d = None
    if d is None or d.type not in ("cpu", "cuda", "mps"):
        return [allowed]
    if d.type == "cuda":
        visible = visible_cuda_gpus()
        if visible == 0:
            return [f"eval.device={device!r}: no CUDA GPU is visible on this machine; use 'cpu' or 'auto'"]
        if d.index is not None and d.index >= visible:
            return [f"eval.device={device!r}: only {visible} CUDA GPU(s) are visible (cuda:0 to cuda:{visible - 1})"]
    if d.type == "mps" and not torch.backends.mps.is_available():
        return [f"eval.device={device!r}: MPS is not available on this machine; use 'cpu' or 'auto'"]
    return []
