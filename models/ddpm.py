"""Denoising diffusion probabilistic models (Ho et al. 2020) as a genbench family.

Training is Algorithm 1 — x_0 ~ data, t ~ Uniform({1, …, T}), ε ~ N(0, I), a gradient step on
‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² (L_simple, eq. 14) — and sampling is Algorithm 2 (or DDIM,
DPM-Solver++(2M), EDM's Heun: the samplers of :mod:`models.samplers`), with an exponential moving
average of the weights as in the paper.
The variational bound L_T + Σ L_{t−1} + L_0 (eq. 5) is :meth:`DDPM.nll_bpd`, in bits/dim like
the VAE's. The process itself lives in :mod:`models.diffusion`; timesteps are 0-indexed in
code (code t is the paper's t + 1).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerStatus
from rich.progress import track
from torch import Tensor, nn

from genbench.checks import is_int, is_number
from genbench.schema import setting
from models.base import FamilyConfig, GenerativeModule, eval_mode, no_grad
from models.diffusion import SPACINGS, VARIANCES, NoiseSchedule
from models.distributions import nats_to_bits_per_dim
from models.ema import EMA
from models.registry import other_families_options
from models.samplers import SAMPLERS, Sampler, make_sampler, option_errors, sampler_name_errors, steps_errors
from models.schedules import SCHEDULES

#: The sampling options of :meth:`DDPM.sample` an evaluation may set (``eval.sample_kwargs``).
SAMPLE_KWARGS = ("sampler", "steps", "eta", "spacing")
LR_DECAYS = ("none", "cosine")


@dataclass
class DDPMConfig(FamilyConfig):
    """The DDPM's settings (``model.*``); the ε-network comes from the ``net`` group."""

    T: int = setting(1000, ge=1, doc="diffusion steps (1000 in the paper)")
    schedule: str = setting("linear", choices=SCHEDULES, doc="β_t linear from beta_start to beta_end (§4) or cosine "
                                                             "(Nichol & Dhariwal 2021)")
    beta_start: float = setting(1e-4, gt=0, lt=1, doc="β_1 of the linear schedule")
    beta_end: float = setting(0.02, gt=0, lt=1, doc="β_T of the linear schedule")
    cosine_s: float = setting(0.008, gt=0, hint="the cosine schedule's offset", doc="offset s of the cosine schedule")
    variance: str = setting("beta", choices=VARIANCES, doc="σ_t² of p_θ(x_{t-1}|x_t): beta (β_t) or posterior (β̃_t); "
                                                           "§3.2 finds both work")
    ema_decay: float | None = setting(0.9999, ge=0, lt=1, null="no EMA",
                                      doc="EMA of the weights, used to sample and for the bound (paper: 0.9999)")
    ema_warmup_steps: int = setting(10, ge=0, doc="ramps the decay as min(decay, (1+k)/(ema_warmup_steps+k)), so short "
                                                  "CPU runs still get a useful average")
    sampler: str = setting("ddpm", choices=list(SAMPLERS), doc="the default sampler of model.sample(): one of "
                                                               "models/samplers.py's registry (ddpm: Algorithm 2)")
    sample_steps: int | None = setting(None, ge=1, null="all T steps", doc="steps of the default chain; null = all T")
    eta: float = setting(0.0, ge=0, hint="DDIM's η", doc="DDIM's η (0: deterministic)")
    sample_spacing: str = setting("linear", choices=SPACINGS, doc="timesteps of a shorter chain: linear, quadratic "
                                                                  "(Song et al. 2021, App. D.2) or karras (EDM eq. 5)")
    clip_denoised: bool = setting(True, doc="clip x̂_0 to the data range while sampling images")
    nll_strata: int | None = setting(100, ge=1, null="every term", doc="the bound's Σ L_{t−1} from one t per example "
                                     "in each of at most this many log-spaced strata of t, weighted by their sizes "
                                     "(unbiased; L_0 and L_T exact); null: all T terms (NoiseSchedule.bound_timesteps)")
    nll_batch_size: int = setting(4, ge=0, doc="held-out examples whose bound is logged as val/nll_bpd, every "
                                               "nll_every_n_val validations (0 = off)")
    nll_every_n_val: int = setting(10, ge=1, doc="validations between two val/nll_bpd")
    nll_chunk: int = setting(256, ge=1, doc="rows of the bound that go through the network at once")
    lr: float = setting(2e-4, gt=0, doc="Adam's learning rate after the warm-up (appendix B: 2e-4)")
    lr_warmup_steps: int = setting(100, ge=0, doc="linear warm-up of the learning rate (appendix B: 5000 steps of an "
                                                  "800k-step run; the CPU default warms up over 100 of 2000)")
    lr_decay: str = setting("none", choices=LR_DECAYS, doc="after the warm-up: none (the paper) or cosine to 0 at the end")
    grad_clip: float | None = setting(1.0, ge=0, doc="gradient-norm clip (paper: 1.0), unless trainer.gradient_clip_val "
                                                     "is set; null or 0 disables it")


class DDPM(GenerativeModule):
    """Args:
    net: ε_θ(x_t, t), called as ``net(x_t, t)`` with 0-indexed timesteps ``[B]``
        (:class:`models.nets.unet.UNet` for images, :class:`models.nets.time_mlp.TimeMLP` for points).
    data_shape: shape of one sample.
    T: number of diffusion steps (1000 in the paper).
    schedule: ``linear`` (Ho et al., β from ``beta_start`` to ``beta_end``) or ``cosine``
        (Nichol & Dhariwal 2021, offset ``cosine_s``).
    variance: σ_t² of the reverse process, ``beta`` (β_t) or ``posterior`` (β̃_t) (§3.2).
    ema_decay: decay of the EMA of the weights used for sampling and the bound; ``null``
        samples with the raw weights. ``ema_warmup_steps`` ramps it up (see :class:`models.ema.EMA`).
    sampler, sample_steps, eta, sample_spacing: defaults of :meth:`sample` (``sample_steps: null`` = all T;
        ``sample_spacing``: ``linear`` or ``quadratic`` timesteps of a shorter chain, see
        :meth:`~models.diffusion.NoiseSchedule.timesteps`).
    clip_denoised: clip x̂_0 to the data range while sampling images (no effect on points).
    nll_strata: the bound's timesteps: ``null`` evaluates all T terms, an integer estimates their sum
        from that many log-spaced strata, one draw each (:meth:`~models.diffusion.NoiseSchedule.bound_timesteps`).
    nll_batch_size: held-out examples whose bound is logged as ``val/nll_bpd`` (0 = off),
        every ``nll_every_n_val`` validations; ``nll_chunk`` rows go through the net at once.
    lr, lr_warmup_steps: learning rate, reached linearly over the warm-up (paper: 2e-4, 5000).
    lr_decay: ``none`` keeps it constant afterwards (the paper); ``cosine`` multiplies it by
        ½(1 + cos(π · step / total steps)), reaching 0 at the end of training, which lets
        short runs settle (the 2-D default).
    grad_clip: gradient-norm clip (paper: 1.0), used unless ``trainer.gradient_clip_val`` is set;
        ``null`` or 0 disables it.
    optimizer: a ``_partial_`` torch.optim factory (Adam in the paper).
    """

    family = "ddpm"
    config_type = DDPMConfig
    compiled_networks = ("net",)
    divergence_hint = "Try a lower model.lr, a longer model.lr_warmup_steps or model.grad_clip=1.0"

    def __init__(self, net: nn.Module, data_shape: Sequence[int], optimizer: Any = None, **settings: Any):
        hp = self.settings(settings)
        super().__init__(data_shape=data_shape, lr=hp.lr, optimizer=optimizer, compile=hp.compile)
        self.net = net
        self.schedule = NoiseSchedule.from_config(hp.schedule, hp.T, hp.beta_start, hp.beta_end, hp.cosine_s)
        self.T, self.variance = int(hp.T), hp.variance
        self.ema = EMA(net, hp.ema_decay, hp.ema_warmup_steps) if hp.ema_decay is not None else None
        self.sampler, self.sample_steps, self.eta = hp.sampler, hp.sample_steps, float(hp.eta)
        self.sample_spacing = hp.sample_spacing
        self.clip_denoised = bool(hp.clip_denoised)
        self.nll_batch_size, self.nll_every_n_val, self.nll_chunk = int(hp.nll_batch_size), int(hp.nll_every_n_val), int(hp.nll_chunk)
        self.nll_strata = int(hp.nll_strata) if hp.nll_strata is not None else None
        self.lr_warmup_steps, self.lr_decay = int(hp.lr_warmup_steps), hp.lr_decay
        self.grad_clip = float(hp.grad_clip) if hp.grad_clip else None
        self._validations = 0

    # --- the networks -------------------------------------------------------------------
    @property
    def eval_net(self) -> nn.Module:
        """The network that samples and is evaluated: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.net

    # --- training: Algorithm 1 ----------------------------------------------------------
    def simple_loss(self, x0: Tensor, net: nn.Module | None = None) -> Tensor:
        """L_simple = E_{t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² (eq. 14), averaged over dims."""
        net = self.net if net is None else net
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device)  # line 3 (0-indexed)
        noise = torch.randn_like(x0)  # line 4
        x_t = self.schedule.q_sample(x0, t, noise)  # eq. 4
        return F.mse_loss(net(x_t, t), noise)  # line 5

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.simple_loss(self.batch_images(batch))
        self.log_train({"train/loss": loss}, prog_bar={"train/loss"})
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: ModelCheckpoint saves in the callbacks' on_train_batch_end,
        # which Lightning runs before the module's, so a checkpoint would miss this step's update.
        if self.ema is not None:
            self.ema.update(self.net)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x0 = self.batch_images(batch)
        with self.validation_rng(batch_idx):
            self.log("val/loss", self.simple_loss(x0, self.eval_net))
            if batch_idx == 0 and self.nll_batch_size > 0 and self._validations % self.nll_every_n_val == 0:
                self.log(
                    "val/nll_bpd",
                    self.nll_bpd(x0[: self.nll_batch_size]).mean(),
                    batch_size=min(len(x0), self.nll_batch_size),
                )

    def on_validation_epoch_end(self) -> None:
        self._validations += 1

    def configure_optimizers(self):
        opt = self.make_optimizer(self.net.parameters())
        if self.lr_warmup_steps <= 0 and self.lr_decay == "none":
            return opt
        warmup = self.lr_warmup_steps
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self.lr_decay == "cosine" else None

        def factor(step: int) -> float:
            # Linear warm-up to lr (Ho et al. 2020, appendix B), then constant or cosine decay.
            f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            if total is not None:
                f *= 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
            return f

        schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if gradient_clip_val is None and self.grad_clip:
            gradient_clip_val, gradient_clip_algorithm = self.grad_clip, "norm"
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    # --- sampling: the registered samplers (models.samplers) --------------------------------
    def resolve_sampling(
        self, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
        spacing: str | None = None,
    ) -> tuple[str, int, float, str]:
        """The sampler, number of steps, η and timestep spacing that :meth:`sample` will use (config defaults filled in).

        Raises one ``ValueError`` listing every problem (``sampler=…: must be one of …`` etc.).
        """
        sampler = self.sampler if sampler is None else sampler
        steps = (self.sample_steps or self.T) if steps is None else steps
        eta = self.eta if eta is None else eta
        spacing = self.sample_spacing if spacing is None else spacing
        errors = option_errors({"spacing": spacing}) + sampler_name_errors(sampler) + steps_errors(steps, self.T)
        errors += option_errors({"eta": eta})  # checked for every sampler; only those with an η use it
        if errors:
            raise ValueError("; ".join(errors))
        return sampler, steps, float(eta), spacing

    def make_sampler(self, sampler: str, eta: float, spacing: str) -> Sampler:
        """The registered sampler with the options it has among η, the spacing and the model's σ_t²."""
        given = {"eta": eta, "spacing": spacing, "variance": self.variance}
        return make_sampler(sampler, **{k: v for k, v in given.items() if k in SAMPLERS[sampler].defaults})

    def nfe(
        self, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
        spacing: str | None = None, **_: Any,
    ) -> int:
        """Network evaluations per sample: one per step, two per step but the last for ``heun``."""
        sampler, steps, eta, spacing = self.resolve_sampling(sampler, steps, eta, spacing)
        return self.make_sampler(sampler, eta, spacing).nfe(steps)

    def sample_kwargs_errors(self, sample_kwargs: dict[str, Any], option: str = "eval.sample_kwargs") -> list[str]:
        given = {k: v for k, v in sample_kwargs.items() if v is not None and k not in other_families_options("ddpm")}
        unknown = sorted(set(given) - set(SAMPLE_KWARGS))
        if unknown:
            return [f"{option}: {unknown} are not options of the DDPM's sample(); allowed: {list(SAMPLE_KWARGS)}"]
        try:
            self.resolve_sampling(**given)
        except ValueError as e:
            # e.g. eval.sample_kwargs.steps=2000: must be an integer in [1, T] = [1, 1000]
            return [f"{option}.{message}" for message in str(e).split("; ")]
        return []

    @no_grad
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: str | None = None,
        return_trajectory: bool = False,
        progress: bool | None = None,
        use_ema: bool = True,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples by running the reverse chain from x_T ~ N(0, I).

        Args:
            n: number of samples.
            generator: makes the draw reproducible (may live on another device than the model).
            steps: number of steps; ``None`` uses ``sample_steps`` from the config (default T).
                DDPM with fewer than T steps runs Algorithm 2 on the respaced schedule
                (Nichol & Dhariwal 2021, §4); the others stride over the same timesteps.
            sampler: a name in :data:`models.samplers.SAMPLERS`: ``ddpm`` (Algorithm 2), ``ddim``
                (Song et al. 2021, eq. 12), ``dpmpp_2m`` (DPM-Solver++(2M), Lu et al. 2022), ``sde_dpmpp_2m`` (its SDE form) or
                ``heun`` (Karras et al. 2022, Algorithm 1; 2 · steps − 1 network calls).
            eta: DDIM's η (0: deterministic); the other samplers have none.
            spacing: ``linear``, ``quadratic`` or ``karras`` timesteps when ``steps < T``
                (``None``: ``sample_spacing``; see :meth:`~models.diffusion.NoiseSchedule.timesteps`).
            return_trajectory: also return the chain x_T, …, x_0 as ``[steps + 1, n, *data_shape]``.
            progress: show a progress bar; ``None`` shows one on a terminal outside training.
            use_ema: sample with the EMA weights (the default) when the model keeps them.

        Returns:
            ``[n, *data_shape]`` in the data range, and the trajectory if asked for.
        """
        # null: unset; another family's option (eval.sample_kwargs serves a sweep over families): not ours
        unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in other_families_options("ddpm"))
        if unknown:
            raise TypeError(f"DDPM.sample got unexpected arguments {unknown}")
        sampler, steps, eta, spacing = self.resolve_sampling(sampler, steps, eta, spacing)
        method = self.make_sampler(sampler, eta, spacing)
        if progress is None:
            in_fit = self._trainer is not None and self._trainer.state.status == TrainerStatus.RUNNING
            progress = sys.stderr.isatty() and not in_fit
        clip = self.data_range if self.clip_denoised else None

        x = self.randn(n, *self.data_shape, generator=generator)  # x_T ~ N(0, I) (Algorithm 2, line 1)
        trajectory = [x] if return_trajectory else None
        net = self.eval_net if use_ema else self.net
        with eval_mode(net):
            chain = method.iterate(net, self.schedule, x, steps, generator, clip)
            if progress:  # rich's track starts (and joins) a refresh thread even when disabled: ~0.5 ms a call
                chain = track(chain, total=steps, description=f"{sampler} sampling")
            for x in chain:
                if trajectory is not None:
                    trajectory.append(x)
        x = self.to_data_range(x)
        if return_trajectory:
            return x, torch.stack(trajectory)
        return x

    # --- the variational bound, eq. 5 ---------------------------------------------------
    @torch.no_grad()
    def nll_bpd(self, x0: Tensor, generator: torch.Generator | None = None, use_ema: bool = True) -> Tensor:
        """The variational bound −log p_θ(x_0) ≤ L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (eq. 5), in bits/dim.

        Each term is evaluated with one draw x_t ~ q(x_t | x_0) (the bound is an expectation over those
        draws). ``nll_strata: null`` evaluates all T terms; an integer estimates Σ L_{t−1} without bias
        from one t per example in each log-spaced stratum (:meth:`NoiseSchedule.bound_timesteps`), whose
        extra spread lands in the per-example values and so in their interval. Rows go through the
        network ``nll_chunk`` at a time. Images use the discretised decoder of §3.3 for L_0, so the result
        is comparable to the VAE's bits/dim on the same 8-bit data; for 2-D points L_0 is a Gaussian
        density and the value bounds the differential entropy instead.

        Returns:
            ``[B]`` bits/dim, one per example.
        """
        if not x0.is_floating_point():
            raise TypeError(
                f"nll_bpd expects float data in the data range (images in [-1, 1]), got {x0.dtype} tensor"
            )
        x0 = x0.to(self.device)
        b = x0.shape[0]
        net = self.eval_net if use_ema else self.net
        rows, weights = self.schedule.bound_timesteps(b, self.nll_strata, generator)  # [R, B], [R]
        total = self.schedule.prior_kl(x0).flatten(1).sum(1)  # L_T
        per_forward = max(1, self.nll_chunk // b)
        with eval_mode(net):
            for start in range(0, len(rows), per_forward):
                stop = min(start + per_forward, len(rows))
                t = rows[start:stop].flatten()
                x = x0.repeat(stop - start, *([1] * (x0.ndim - 1)))
                x_t = self.schedule.q_sample(x, t, self.randn(*x.shape, generator=generator))
                terms = self.schedule.vb_terms(
                    net(x_t, t), x, x_t, t, self.variance, discrete=self.data_range is not None
                )
                # Σ L_{t−1} + L_0, each row weighted by the timesteps it stands for
                total = total + (terms.flatten(1).sum(1).view(stop - start, b) * weights[start:stop, None]).sum(0)
        return nats_to_bits_per_dim(total, self.num_dims)

    # --- configuration checks -----------------------------------------------------------
    @classmethod
    def cross_field_errors(cls, values: Any) -> list[str]:
        """The rules between settings: an increasing linear schedule, and a sampling chain no longer than T."""
        g = values.get
        start, end, T, steps = g("beta_start", 1e-4), g("beta_end", 0.02), g("T", 1000), g("sample_steps")
        errors = []
        if g("schedule", "linear") == "linear" and is_number(start) and is_number(end) and 0 < start < 1 and 0 < end < 1 \
                and not start < end:  # fmt: skip
            errors.append(f"model.beta_start={start!r}, model.beta_end={end!r}: the linear schedule must be increasing, "
                          "beta_start < beta_end")
        if is_int(steps, 1) and is_int(T, 1) and steps > T:
            errors.append(f"model.sample_steps={steps!r}: must be null (all T steps) or an integer in [1, T={T}]")
        return errors
