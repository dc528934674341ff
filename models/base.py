"""The contract every genbench family implements.

Evaluation, callbacks, the lecture report and the benchmarks only ever call what is
defined here, so GAN, VAE and DDPM are judged by exactly the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from genbench import __version__

CHECKPOINT_KEY = "genbench"


@contextmanager
def eval_mode(net: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``net`` in eval mode for the block (sampling), its previous mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


class GenerativeModule(L.LightningModule):
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

    def __init__(self, data_shape: Sequence[int], lr: float = 1e-3, optimizer: Any = None):
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.lr = float(lr)
        self.optimizer_factory = optimizer
        #: Resolved run configuration, stored in every checkpoint so the model can be
        #: rebuilt by ``genbench-evaluate`` without the original command line.
        self.run_config: dict | None = None
        if len(self.data_shape) == 1:
            self.data_range = None

    # --- the contract -------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """Draw ``n`` samples of shape ``[n, *data_shape]`` in the data range."""
        raise NotImplementedError

    def nfe(self, **sample_kwargs: Any) -> int:
        """Network evaluations per sample for ``sample(**sample_kwargs)``."""
        return 1

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
        device = generator.device if generator is not None else self.device
        return torch.randn(*shape, generator=generator, device=device).to(self.device)

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
        lr = self.lr if lr is None else lr
        if self.optimizer_factory is None:
            return torch.optim.Adam(params, lr=lr, **overrides)
        return self.optimizer_factory(params, lr=lr, **overrides)

    def batch_images(self, batch: Any) -> Tensor:
        """Data modules yield ``(x, y)``; models only need ``x``."""
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    # --- checkpoints ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
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
    def config_errors(cls, cfg: Any) -> list[str]:
        """Problems in this family's config node (``cfg.model``), one message each.

        Called by :mod:`genbench.validate` before any data is loaded. Subclasses extend it.
        """
        errors = []
        lr = cfg.get("lr", 1e-3)
        if not isinstance(lr, (int, float)) or not lr > 0:
            errors.append(f"model.lr={lr!r}: must be a number > 0")
        return errors
