"""The contract every genbench family implements.

Evaluation, callbacks, the lecture report and the benchmarks only ever call what is
defined here, so GAN, VAE and DDPM are judged by exactly the same code. Every family also
inherits the divergence guard of :mod:`models.divergence`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from genbench import __version__
from genbench.errors import ConfigError
from genbench.schema import check, setting
from models.divergence import DivergenceGuard

CHECKPOINT_KEY = "genbench"
T = TypeVar("T")


@dataclass
class FamilyConfig:
    """The settings every family has (``model.*``); each family's typed config extends it.

    The dataclass holds the one default of each setting and its allowed values; the constructor takes
    the settings as keyword arguments and :meth:`GenerativeModule.settings` fills in and checks the rest.
    """

    lr: float = setting(1e-3, gt=0, doc="learning rate of the (main) optimizer")
    compile: Any = setting(False, doc="torch.compile the trained networks: false, true, or torch.compile options "
                                      "such as {mode: max-autotune}; checkpoints are the same either way")


def no_grad(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` with gradients off, as ``@torch.no_grad()``, for the calls a sampling loop makes once per batch.

    The grad mode is set with the C toggle ``torch.no_grad`` itself sets, without its Python context
    object: that object's enter and exit cost 16 µs inside a batch-1 sampling loop, where every line of
    Python runs on caches the network's kernels have just emptied (3 % of the VAE's 0.46 ms call), the
    toggle 1 µs (docs/performance.md).
    """

    @functools.wraps(fn)
    def without_grad(*args: Any, **kwargs: Any) -> T:
        previous = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            torch._C._set_grad_enabled(previous)

    return without_grad


def eval_call(net: torch.nn.Module, *args: Any) -> Any:
    """``net(*args)`` in eval mode (:class:`eval_mode`), for a sampling call that is one forward pass: a network
    already in eval mode is called directly, without a context's three Python calls."""
    if not net.training:
        return net(*args)
    with eval_mode(net):
        return net(*args)


class eval_mode:  # noqa: N801 (used as a context manager, like torch.no_grad)
    """``with eval_mode(net) as net:`` ``net`` in eval mode for the block (sampling), every module's own mode
    restored after.

    A network whose own flag says eval is taken as in eval mode throughout, as ``nn.Module.eval()`` leaves it,
    and left alone: checking each of the UNet's 136 modules cost 0.3 ms a call, 5 % of one batch-1 DDIM
    step. A training network is switched for the block, and each module's flag is put back after, a frozen
    submodule's too. A class rather than a generator context: fewer Python calls per sampling call.
    """

    __slots__ = ("net", "modes")

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.modes: list[tuple[torch.nn.Module, bool]] | None = None

    def __enter__(self) -> torch.nn.Module:
        if self.net.training:
            self.modes = [(m, m.training) for m in self.net.modules()]
            self.net.eval()
        return self.net

    def __exit__(self, *exc: Any) -> None:
        if self.modes is not None:
            for m, training in self.modes:
                m.training = training
            self.modes = None


class GenerativeModule(DivergenceGuard):
    """Base class of the three families.

    Args:
        data_shape: shape of one sample, e.g. ``[1, 28, 28]`` or ``[2]``.
        lr: learning rate of the (main) optimizer.
        optimizer: a ``functools.partial`` of a ``torch.optim`` class (Hydra ``_partial_``),
            completed with the parameters in ``configure_optimizers``. ``None`` means Adam.

    Subclasses set ``family`` and implement ``sample``; they may implement ``nll_bpd``.
    """

    family: ClassVar[str] = "base"
    #: Images live in [-1, 1]; 2-D points are unbounded.
    data_range: tuple[float, float] | None = (-1.0, 1.0)
    #: True for families whose backward passes each leave some parameters unused (the GAN's two
    #: players): ``trainer.strategy=ddp`` then runs as ``ddp_find_unused_parameters_true``.
    ddp_find_unused_parameters: ClassVar[bool] = False

    #: The trained networks (attribute names) that ``compile`` compiles.
    compiled_networks: ClassVar[tuple[str, ...]] = ()
    #: Training steps after which the step's cost repeats (the GAN updates G every n_critic-th step): a FLOPs
    #: budget charges the average over such a period.
    steps_per_period: int = 1
    #: The family's typed config: its settings, their defaults and allowed values.
    config_type: ClassVar[type] = FamilyConfig

    @classmethod
    def settings(cls, given: dict[str, Any]) -> Any:
        """The typed config of the settings ``given`` to the constructor (the rest at their defaults), checked;
        also saved as the module's hyperparameters. Raises ``ConfigError`` naming every bad or unknown setting."""
        known = {f for f in cls.config_type.__dataclass_fields__}
        unknown = sorted(set(given) - known)
        errors = [f"model.{k}: not a setting of {cls.__name__}; allowed: {sorted(known)}" for k in unknown]
        errors += cls.setting_errors({k: v for k, v in given.items() if k in known})
        if errors:
            raise ConfigError(errors)
        return cls.config_type(**{k: v for k, v in given.items() if k in known})

    def __init__(self, data_shape: Sequence[int], lr: float = 1e-3, optimizer: Any = None,
                 compile: bool | dict[str, Any] = False):  # fmt: skip
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.lr = float(lr)
        self.optimizer_factory = optimizer
        #: ``model.compile``: false, true, or ``torch.compile`` options (e.g. ``{mode: max-autotune}``).
        self.compile_options: dict[str, Any] | None = (
            dict(compile) if isinstance(compile, Mapping) else ({} if compile else None)
        )
        #: Resolved run configuration, stored in every checkpoint so the model can be
        #: rebuilt by ``genbench-evaluate`` without the original command line.
        self.run_config: dict | None = None
        if len(self.data_shape) == 1:
            self.data_range = None

    def setup(self, stage: str) -> None:
        """``model.compile``: compile the trained networks in place before training starts.

        ``nn.Module.compile`` keeps the modules and their ``state_dict`` keys, so checkpoints of a
        compiled run load into an uncompiled model and back. Sampling copies (EMA) stay eager.
        """
        if self.compile_options is not None and stage == "fit":
            for name in self.compiled_networks:
                getattr(self, name).compile(**self.compile_options)

    # --- the contract -------------------------------------------------------------
    @no_grad
    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """Draw ``n`` samples of shape ``[n, *data_shape]`` in the data range."""
        raise NotImplementedError

    def nfe(self, **sample_kwargs: Any) -> int:
        """Network evaluations per sample for ``sample(**sample_kwargs)``."""
        return 1

    def sample_kwargs_errors(self, sample_kwargs: dict[str, Any], option: str = "eval.sample_kwargs") -> list[str]:
        """Problems with ``sample(**sample_kwargs)``, one message each, found before any sampling.

        ``None`` values leave the model's default. Families ignore the keywords they do not have
        (the same ``eval.sample_kwargs`` then serves a sweep over families); the DDPM checks its own.
        """
        return []

    def nll_bpd(self, x0: Tensor) -> Tensor:
        """Negative log-likelihood bound in bits per dimension, one value per example.

        Families without a likelihood (GAN) raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{self.family} does not define a likelihood")

    @property
    def has_likelihood(self) -> bool:
        return type(self).nll_bpd is not GenerativeModule.nll_bpd

    # --- helpers shared by the families -------------------------------------------
    @property
    def num_dims(self) -> int:
        return math.prod(self.data_shape)

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise on the module's device, reproducible with ``generator``.

        The generator may live on another device than the model (e.g. a CPU generator for
        device-independent samples); the noise is drawn where the generator lives.
        """
        device = self.device  # read once: Lightning's property costs 3.5 µs inside a batch-1 sampling loop
        if generator is None or generator.device == device:
            return torch.randn(*shape, generator=generator, device=device)
        return torch.randn(*shape, generator=generator, device=generator.device).to(device)

    @contextmanager
    def validation_rng(self, batch_idx: int) -> Iterator[None]:
        """Validation draws its own noise (seeded by the batch index) and restores the RNG after.

        So validation neither perturbs the training noise stream (a resumed run stays bitwise equal
        to an uninterrupted one) nor gives different numbers from one validation to the next.
        """
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(1_000_003 + batch_idx)
            yield

    def to_data_range(self, x: Tensor) -> Tensor:
        if self.data_range is None:
            return x
        return x.clamp(*self.data_range)

    def make_optimizer(self, params, lr: float | None = None, **overrides: Any) -> torch.optim.Optimizer:
        """The configured optimizer (Adam by default) over ``params``.

        ``fused: null`` in the config (the default) picks the fused kernel where it is allowed
        (:meth:`fused_allowed`): one kernel for all parameters instead of one per tensor and per
        operation. Measured on 2 CPU cores, batch 128: Adam's step 2.5-4.2x faster, training
        images/s +4 % (VAE), +2 % (GAN), +1 % (DDPM). ``fused: false`` or any ``foreach`` setting
        keeps PyTorch's own choice; optimizers without a fused kernel (RMSprop, ...) ignore ``null``.
        """
        factory = self.optimizer_factory or functools.partial(torch.optim.Adam)
        cls = getattr(factory, "func", factory)
        kwargs = {**(getattr(factory, "keywords", None) or {}), **overrides, "lr": self.lr if lr is None else lr}
        if kwargs.get("fused") is None:  # null or absent: fused where allowed
            kwargs.pop("fused", None)
            if kwargs.get("foreach") is None and self.fused_allowed(cls):
                kwargs["fused"] = True
        return cls(params, *getattr(factory, "args", ()), **kwargs)

    def fused_allowed(self, optimizer_class: Any) -> bool:
        """Whether ``optimizer_class`` can run its fused kernel in this run.

        It must take ``fused=`` (Adam, AdamW, SGD, Adagrad), the weights must be on the CPU or a
        CUDA GPU, and the run must not use Lightning's mixed precision, whose gradient clipping
        refuses fused optimizers (they unscale gradients inside ``step``).
        """
        try:
            takes_fused = "fused" in inspect.signature(optimizer_class).parameters
        except (TypeError, ValueError):
            return False
        trainer = self._trainer
        mixed = trainer is not None and isinstance(trainer.precision_plugin, MixedPrecision)
        return takes_fused and self.device.type in ("cpu", "cuda") and not mixed

    def log_train(self, metrics: dict[str, Tensor], prog_bar: Collection[str] = ()) -> None:
        """Log per-step training metrics (``train/...``) on the steps Lightning writes to the loggers.

        Lightning sends on-step values to the loggers only every ``trainer.log_every_n_steps``
        steps, but each ``self.log`` call costs about 0.5-0.7 ms of Python on every step (measured:
        the VAE's three calls were 2.1 ms of its 35 ms step on 2 CPU cores, 6 %). So the values are
        logged on exactly the steps that reach the loggers, and on the last batch of each epoch and
        of training (so ``results.json`` holds the final values); the progress bar shows the latest
        logged values.
        """
        if not self._logs_this_step():
            return
        for name, value in metrics.items():
            self.log(name, value.detach(), prog_bar=name in prog_bar)

    def batch_images(self, batch: Any) -> Tensor:
        """Data modules yield ``(x, y)``; models only need ``x``."""
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    # --- checkpoints ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the guard: no checkpoint of diverged weights
        checkpoint[CHECKPOINT_KEY] = {
            "version": __version__,
            "family": self.family,
            "data_shape": list(self.data_shape),
            "config": self.run_config,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            raise ValueError("not a genbench checkpoint: it has no 'genbench' entry")
        if meta.get("family") != self.family:
            raise ValueError(
                f"checkpoint holds a {meta.get('family')!r} model, cannot load it into a {self.family!r} model"
            )
        self.run_config = meta.get("config")

    # --- configuration checks ---------------------------------------------------------
    @classmethod
    def trainer_errors(cls, trainer: Any) -> list[str]:
        """Trainer settings (``cfg.trainer``) this family cannot train with, one message each."""
        return []

    @classmethod
    def setting_errors(cls, values: Any) -> list[str]:
        """Problems of the settings in ``values`` (absent ones take their defaults), one message each: the
        typed config's declared ranges and choices, then the rules between fields (:meth:`cross_field_errors`)."""
        errors = check(cls.config_type, values, "model.")
        comp = values.get("compile", False)
        if not isinstance(comp, (bool, Mapping)):
            errors.append(f"model.compile={comp!r}: must be true, false or a mapping of torch.compile options "
                          f"(e.g. {{mode: max-autotune}})")
        elif isinstance(comp, Mapping):
            takes = set(inspect.signature(torch.compile).parameters) - {"model"}
            errors += [f"model.compile.{k}: not a torch.compile option; allowed: {sorted(takes)}" for k in comp if k not in takes]
        return errors + cls.cross_field_errors(values)

    @classmethod
    def cross_field_errors(cls, values: Any) -> list[str]:
        """Rules between settings that a field's range cannot state (e.g. ``sample_steps <= T``); families extend it."""
        return []

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        """Problems in this family's config node (``cfg.model``), one message each.

        Called by :mod:`genbench.validate` before any data is loaded: the settings and the optimizer.
        """
        settings = {k: cfg.get(k) for k in cfg if k in cls.config_type.__dataclass_fields__}
        return cls.setting_errors(settings) + optimizer_errors(cfg.get("optimizer"))


def optimizer_errors(node: Any) -> list[str]:
    """Problems in ``model.optimizer``: an importable optimizer class that takes every key given."""
    if node is None:
        return []
    from hydra.utils import get_class

    target = node.get("_target_")
    try:
        cls = get_class(target)
    except Exception as e:  # noqa: BLE001 - any import failure is a config problem here
        return [f"model.optimizer._target_={target!r}: cannot be imported ({e})"]
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        return [f"model.optimizer._target_={target!r}: must be a torch.optim.Optimizer class"]
    takes = set(inspect.signature(cls).parameters) - {"params", "lr"}
    given = [k for k in node if not str(k).startswith("_") and not (k == "fused" and node[k] is None)]  # null = auto
    return [f"model.optimizer.{k}={node[k]!r}: {target} takes no {k!r} argument; it takes {sorted(takes)}"
            for k in given if k not in takes]
