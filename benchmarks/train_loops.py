"""The training loops that ``train_overhead.py`` times, reused by ``flops.py``, ``scaling.py`` and ``gpu_check.py``.

Two sides of one comparison, each fed the same uint8 data tensors (mapped to [-1, 1] after the transfer):

- genbench's side: a LightningModule under genbench's ``Trainer`` config (:class:`GenbenchLoop`), timed by
  :class:`StepClock`; and the bare step inside the same ``Trainer``, with manual optimisation
  (:class:`LightningFloor`) and with Lightning's automatic optimisation (:class:`LightningAutoFloor`);
- the bare side: each family's step written by hand in plain PyTorch (:func:`bare_step`, :func:`bare_parts`),
  the same maths with no hooks and no logging, run by :class:`BareLoop`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor

from benchmarks import common


def overrides(family: str, batch_size: int, device: torch.device, extra: list[str] = ()) -> list[str]:
    """The run's config: mnist5k, default network of the family, the benchmark's batch size."""
    trainer = ["trainer=gpu", "trainer.precision=32-true"] if device.type == "cuda" else []
    return ["data=mnist5k", f"data.batch_size={batch_size}", "eval.final=false", *trainer, *extra]


def to_unit(x: Tensor) -> Tensor:
    """uint8 → [-1, 1], as genbench's data modules do after the transfer."""
    return x.float().div_(127.5).sub_(1.0)


# --- genbench: the LightningModule under Trainer ------------------------------------------------
class StepClock(L.Callback):
    """Times steps ``warmup`` … ``warmup + steps − 1``: from the end of the last warm-up batch to the
    end of the last batch, so every timed step includes the loop's work between batches."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.batches, self.images = 0, 0
        self.start = self.end = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        return common.clock(self.device), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = self._now()
        elif self.batches > self.warmup:
            self.images += len(batch[0])
            if self.batches == self.warmup + self.steps:
                self.end = self._now()
                trainer.should_stop = True  # manual optimisation without Lightning optimizers never counts steps

    @property
    def images_per_s(self) -> dict[str, float]:
        """Over the wall clock and over this process's CPU time."""
        return {"wall": self.images / (self.end[0] - self.start[0]), "cpu": self.images / (self.end[1] - self.start[1])}


class GenbenchLoop:
    """``trainer.fit`` of ``model`` for ``warmup + steps`` steps with genbench's Trainer config, data module
    and (``genbench_callbacks``) its callbacks; returns the timed images/s (``{"wall": …, "cpu": …}``)."""

    def __init__(self, model: L.LightningModule, dm: L.LightningDataModule, cfg: Any, device: torch.device,
                 trainer_kwargs: dict[str, Any] | None = None, genbench_callbacks: bool = True):  # fmt: skip
        self.model, self.dm, self.cfg, self.device = model, dm, cfg, device
        self.trainer_kwargs = trainer_kwargs or {}
        self.genbench_callbacks = genbench_callbacks

    def __call__(self, steps: int, warmup: int) -> dict[str, float]:
        from genbench.callbacks import RNGState, TrainStats

        clock = StepClock(warmup, steps, self.device)
        callbacks = [TrainStats(), RNGState(), clock] if self.genbench_callbacks else [clock]
        trainer = instantiate(
            self.cfg.trainer, max_steps=warmup + steps, logger=False, callbacks=callbacks,
            enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0, default_root_dir=self.cfg.run_dir,
            **self.trainer_kwargs,
        )  # fmt: skip
        trainer.fit(self.model, datamodule=self.dm)
        return clock.images_per_s


class LightningFloor(L.LightningModule):
    """The bare step inside Lightning's ``Trainer``: what Lightning's loop costs before genbench adds anything.

    Manual optimisation, so the bare step keeps its own ``zero_grad`` / ``backward`` / ``step`` (and its
    EMA, clipping, warm-up); the batches come from the same genbench data module, mapped to [-1, 1] by its
    ``on_after_batch_transfer``. Lightning counts no steps without its optimizers: :class:`StepClock` stops the fit.
    """

    def __init__(self, step: Callable[[Tensor], None], nets: list[torch.nn.Module]):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)  # registered, so the Trainer moves them to the device
        self.step = step
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch[0])

    def configure_optimizers(self) -> None:
        return None  # the bare step owns its optimizers


class LightningAutoFloor(L.LightningModule):
    """The bare step's pieces (:class:`BareParts`) under Lightning's automatic optimisation: the loss from
    ``training_step``, Lightning's closure does ``zero_grad`` / ``backward`` / ``step``, the clipping in
    ``configure_gradient_clipping`` and the rest after the step. What genbench's one-optimizer families
    (VAE, DDPM) cost before genbench adds anything: genbench's module over this floor is genbench's own share.
    """

    def __init__(self, parts: BareParts, nets: list[torch.nn.Module]):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)
        self.parts = parts

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.parts.loss(batch[0])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.parts.before_step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.parts.after_step()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.parts.optimizer


# --- the bare PyTorch loops ---------------------------------------------------------------------
def ema_lerp_(ema: list[Tensor], params: list[Tensor], decay: float) -> None:
    """θ_ema ← d θ_ema + (1 − d) θ, one fused call (what a hand-written loop would do)."""
    torch._foreach_lerp_(ema, params, 1.0 - decay)


class BareParts(NamedTuple):
    """A one-optimizer family's hand-written step in pieces, so that Lightning can also run it (:class:`LightningAutoFloor`)."""

    loss: Callable[[Tensor], Tensor]
    optimizer: torch.optim.Optimizer
    before_step: Callable[[], None]  # between backward and the optimizer step (DDPM: gradient clipping)
    after_step: Callable[[], None]  # after the optimizer step (DDPM: LR warm-up, EMA)


def _nothing() -> None:
    return None


def bare_parts(family: str, model: Any, cfg: Any, device: torch.device, fused: bool | None = None) -> BareParts:
    """The VAE's or DDPM's hand-written step on the networks of ``model`` (a private copy), in pieces.

    The optimizer is ``cfg.model.optimizer`` built by genbench's ``make_optimizer`` (the same class,
    settings and kernel choice as genbench's); ``fused`` passes ``fused=`` to it when not None.
    """
    optimizer = _optimizer_factory(model, cfg, device, fused)
    if family == "vae":
        opt = optimizer(model.parameters(), model.lr)
        likelihood = type(model.likelihood).__name__

        def vae_loss(x: Tensor) -> Tensor:
            h = model.encoder(x)
            mean, logvar = model.to_mean(h), model.to_logvar(h)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            out = model.decoder(z).view_as(x)
            if likelihood == "Bernoulli":  # images
                recon = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
            elif likelihood == "Gaussian":  # points: −log N(x; out, σ²) with a learned σ per dimension
                log_sigma = model.likelihood.log_sigma
                recon = 0.5 * ((x - out) * torch.exp(-log_sigma)).square() + log_sigma + 0.5 * math.log(2 * math.pi)
            else:
                raise ValueError(f"no bare VAE step for the {likelihood} likelihood")
            kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1)
            return (recon.flatten(1).sum(1) + model.beta * kl).mean()

        return BareParts(vae_loss, opt, _nothing, _nothing)

    if family == "ddpm":
        net, sched = model.net, model.schedule
        opt = optimizer(net.parameters(), model.lr)
        warmup = model.lr_warmup_steps
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        sqrt_ab, sqrt_1mab = sched.sqrt_alphas_cumprod, sched.sqrt_one_minus_alphas_cumprod
        params = list(net.parameters())
        ema = [p.detach().clone() for p in params]
        k = [0]

        def ddpm_loss(x: Tensor) -> Tensor:
            t = torch.randint(0, model.T, (x.shape[0],), device=x.device)
            noise = torch.randn_like(x)
            shape = (-1,) + (1,) * (x.ndim - 1)
            x_t = sqrt_ab[t].view(shape) * x + sqrt_1mab[t].view(shape) * noise  # eq. 4
            return F.mse_loss(net(x_t, t), noise)

        def clip() -> None:
            torch.nn.utils.clip_grad_norm_(params, model.grad_clip)

        def schedule_and_average() -> None:
            lr_sched.step()
            d = min(model.ema.decay, (1 + k[0]) / (model.ema.warmup_steps + k[0]))
            ema_lerp_(ema, [p.detach() for p in params], d)
            k[0] += 1

        return BareParts(ddpm_loss, opt, clip, schedule_and_average)

    raise ValueError(f"no one-optimizer bare step for {family!r}")


def _optimizer_factory(model: Any, cfg: Any, device: torch.device,
                       fused: bool | None) -> Callable[[Any, float], torch.optim.Optimizer]:  # fmt: skip
    """Puts ``model`` on ``device`` in training mode; returns ``(params, lr) -> optimizer``: ``cfg.model.optimizer``
    built by genbench's ``make_optimizer``, with ``fused=`` when ``fused`` is not None."""
    model.to(device).train()
    model.optimizer_factory = instantiate(cfg.model.optimizer)
    kwargs = {} if fused is None else {"fused": fused}
    return lambda params, lr: model.make_optimizer(list(params), lr=lr, **kwargs)


def parts_step(parts: Any, autocast: tuple[str, torch.dtype] | None = None) -> Callable[[Tensor], None]:
    """One optimizer step of a one-optimizer family's :func:`bare_parts`; with ``autocast=(device type, dtype)``,
    the forward and the loss run under autocast (what Lightning's ``bf16-mixed`` does)."""

    def step(x: Tensor) -> None:
        with torch.autocast(autocast[0], dtype=autocast[1]) if autocast is not None else contextlib.nullcontext():
            loss = parts.loss(x)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.before_step()
        parts.optimizer.step()
        parts.after_step()

    return step


def bare_step(family: str, model: Any, cfg: Any, device: torch.device, fused: bool | None = None) -> Callable[[Tensor], None]:
    """One hand-written training step of ``family`` on the networks of ``model`` (a private copy);
    the optimizer as in :func:`bare_parts`."""
    if family in ("vae", "ddpm"):
        return parts_step(bare_parts(family, model, cfg, device, fused))

    if family == "gan":
        return _gan_step(model, cfg, device, fused)
    raise ValueError(f"unknown family {family!r}")


def _gan_step(model: Any, cfg: Any, device: torch.device, fused: bool | None) -> Callable[[Tensor], None]:
    """The non-saturating GAN's step: one discriminator and one generator update, each with its own optimizer."""
    optimizer = _optimizer_factory(model, cfg, device, fused)
    G, D = model.generator, model.discriminator
    opt_g = optimizer(G.parameters(), model.lr)
    opt_d = optimizer(D.parameters(), model.lr_d)
    g_params = list(G.parameters())
    ema = [p.detach().clone() for p in g_params]
    ema_buffers = [b.detach().clone() for b in G.buffers()]
    ema_decay = model.ema.decay if model.ema is not None else None
    latent = model.latent_dim

    def step(x: Tensor) -> None:
        b = x.shape[0]
        with torch.no_grad():
            fake = G(torch.randn(b, latent, device=x.device)).view_as(x)
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(fake)).mean()  # non-saturating GAN, D side
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = F.softplus(-D(G(torch.randn(b, latent, device=x.device)).view_as(x))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema_decay is not None:
            ema_lerp_(ema, [p.detach() for p in g_params], ema_decay)
            torch._foreach_copy_(ema_buffers, list(G.buffers()))

    return step


class BareLoop:
    """The hand-written loop over a seeded permutation of the same uint8 tensors; returns the timed images/s
    (``{"wall": …, "cpu": …}``)."""

    def __init__(self, step: Callable[[Tensor], None], x: Tensor, batch_size: int, device: torch.device,
                 prepare: Callable[[Tensor], Tensor] | None = None):  # fmt: skip
        self.step, self.x, self.batch_size, self.device = step, x, batch_size, device
        self.prepare = prepare or (lambda xb: xb)
        self.g = torch.Generator().manual_seed(0)
        self.order = torch.empty(0, dtype=torch.long)

    def batch(self) -> Tensor:
        if len(self.order) < self.batch_size:  # a new epoch (the last, partial batch is dropped, as genbench does)
            self.order = torch.randperm(len(self.x), generator=self.g)
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        xb = self.x[idx].to(self.device, non_blocking=True)
        return self.prepare(to_unit(xb) if xb.dtype == torch.uint8 else xb)

    def __call__(self, steps: int, warmup: int) -> dict[str, float]:
        for _ in range(warmup):
            self.step(self.batch())
        cpu, start = time.process_time(), common.clock(self.device)
        for _ in range(steps):
            self.step(self.batch())
        wall, cpu = common.clock(self.device) - start, time.process_time() - cpu
        return {"wall": steps * self.batch_size / wall, "cpu": steps * self.batch_size / cpu}
