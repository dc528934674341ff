"""The generative adversarial network (Goodfellow et al. 2014) as a genbench family.

The lecture's picture: a random vector z ~ N(0, I) goes through a generator G to give a
sample G(z); a discriminator D judges real data against G(z), and both are trained against
each other. The objectives are chosen by name from :data:`models.losses.GAN_LOSSES`
(``nonsaturating`` — the lecture's — ``minimax``, ``hinge``, ``wgan-gp``); the usual
stabilisers are options: spectral normalisation of D (Miyato et al. 2018), the R1 penalty
(Mescheder et al. 2018), an exponential moving average of G's weights used for sampling
(Karras et al. 2018) and separate learning rates for G and D (TTUR, Heusel et al. 2017).

**Steps.** One training step takes one real batch and makes one discriminator update; the
generator is updated after every ``n_critic``-th discriminator update (Gulrajani et al. 2017,
Algorithm 1, with a fresh real batch per critic update). Only the discriminator updates count
as Lightning's ``global_step``, so ``trainer.max_steps × data.batch_size`` is the number of real
images seen, the budget unit shared with the VAE and DDPM; the generator makes
``max_steps // n_critic`` updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genbench.schema import setting
from models.base import FamilyConfig, GenerativeModule, eval_call, no_grad
from models.ema import EMA
from models.losses import GAN_LOSSES, gan_loss, gradient_penalty, r1_penalty


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Divide the weight of every linear and convolutional layer by its largest singular value,
    estimated by one power iteration per forward pass (Miyato et al. 2018, Algorithm 1)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.utils.parametrizations.spectral_norm(m)
    return module


def _do_nothing() -> None:
    return None


@dataclass
class GANConfig(FamilyConfig):
    """The GAN's settings (``model.*``); the networks come from the ``net`` group."""

    latent_dim: int = setting(64, ge=1, doc="size of z")
    loss: str = setting("nonsaturating", choices=list(GAN_LOSSES), doc="nonsaturating (the lecture's) | minimax | hinge | wgan-gp")
    n_critic: int = setting(1, ge=1, doc="discriminator updates per generator update")
    gp_weight: float = setting(10.0, ge=0, hint="a penalty weight",
                               doc="λ of the WGAN-GP gradient penalty (Gulrajani et al. 2017); used with loss=wgan-gp only")
    r1_gamma: float = setting(0.0, ge=0, hint="a penalty weight",
                              doc="γ of the R1 penalty γ/2·E‖∇D(x)‖² on real data (Mescheder et al. 2018); 0 = off")
    spectral_norm: bool = setting(False, doc="spectral normalisation on every layer of the discriminator")
    ema: bool = setting(True, doc="sample with an exponential moving average of the generator's weights")
    ema_decay: float = setting(0.999, ge=0, lt=1, doc="the EMA's decay")
    ema_warmup_steps: int = setting(10, ge=0, doc="the decay ramps up as min(ema_decay, (1 + k) / (ema_warmup_steps + k)) "
                                                  "over the k generator updates so far")
    lr: float = setting(2e-4, gt=0, doc="generator learning rate")
    lr_d: float | None = setting(None, gt=0, null="same as model.lr",
                                 doc="discriminator learning rate (TTUR, Heusel et al. 2017); null = lr")
    n_fixed_samples: int = setting(64, ge=1, doc="samples of one fixed z, comparable across a run")
    fixed_grid_every_n_steps: int = setting(500, ge=0, hint="0: never",
                                            doc="write the fixed-z grid to <run_dir>/samples/ every this many steps and at the end")


class GAN(GenerativeModule):
    """Args:
    generator: network ``z [B, latent_dim] -> x`` (any output of the data's size).
    discriminator: network ``x -> [B, 1]`` of raw scores (logits / critic values).
    data_shape: shape of one sample.
    latent_dim: size of z.
    loss: one of :data:`models.losses.GAN_LOSSES`.
    n_critic: discriminator updates per generator update.
    gp_weight: λ of the WGAN-GP gradient penalty (used with ``loss=wgan-gp`` only).
    r1_gamma: γ of the R1 penalty γ/2 · E‖∇D(x)‖² on real data; 0 turns it off.
    spectral_norm: spectral normalisation on every layer of the discriminator.
    ema, ema_decay, ema_warmup_steps: sample with an EMA of the generator's weights.
    lr: generator learning rate; lr_d: discriminator learning rate (``None``: same as ``lr``).
    n_fixed_samples: size of the fixed validation z, so sample grids are comparable across epochs.
    fixed_grid_every_n_steps: write the fixed-z grid to ``<run_dir>/samples/`` at the first
        validation at least this many steps after the last one, and when training ends (0: never).

    The settings and their defaults are :class:`GANConfig`'s.
    """

    family = "gan"
    config_type = GANConfig
    compiled_networks = ("generator", "discriminator")
    ddp_find_unused_parameters = True  # D's backward leaves G's parameters unused, and G's D's
    divergence_hint = "Try a lower model.lr / model.lr_d, model.spectral_norm=true or model.r1_gamma > 0"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, data_shape: Sequence[int], optimizer: Any = None,
                 **settings: Any):  # fmt: skip
        hp = self.settings(settings)
        super().__init__(data_shape=data_shape, lr=hp.lr, optimizer=optimizer, compile=hp.compile)
        self.automatic_optimization = False  # two optimizers, stepped by hand (Lightning 2.x)
        self.generator = generator
        self.discriminator = apply_spectral_norm(discriminator) if hp.spectral_norm else discriminator
        self.latent_dim = int(hp.latent_dim)
        self.loss_name = hp.loss
        self.objective = gan_loss(hp.loss)
        self.n_critic = int(hp.n_critic)
        self.steps_per_period = self.n_critic  # one generator update per n_critic steps
        self.gp_weight, self.r1_gamma = float(hp.gp_weight), float(hp.r1_gamma)
        self.lr_d = self.lr if hp.lr_d is None else float(hp.lr_d)
        # The averaged generator: its weights are buffers, so they live in the state_dict.
        self.ema = EMA(generator, decay=hp.ema_decay, warmup_steps=hp.ema_warmup_steps) if hp.ema else None
        # A fixed z (seeded independently of the run's seed): the same latents every validation.
        fixed = torch.Generator().manual_seed(0)
        self.register_buffer("fixed_z", torch.randn(int(hp.n_fixed_samples), self.latent_dim, generator=fixed))
        self.fixed_grid_every_n_steps = int(hp.fixed_grid_every_n_steps)
        self._last_fixed_grid_step: int | None = None

    # --- the two players --------------------------------------------------------------
    def discriminate(self, x: Tensor) -> Tensor:
        """D(x): one raw score per example, ``[B]``."""
        return self.discriminator(x).reshape(x.shape[0])

    def generate(self, z: Tensor) -> Tensor:
        """G(z) with the training generator, in its current mode: ``[B, *data_shape]``."""
        return self.generator(z).view(-1, *self.data_shape)

    def _sampling_generator(self, ema: bool | None) -> nn.Module:
        """The generator used for samples: the EMA copy if kept (run it with :func:`eval_call`: batch-norm
        running statistics)."""
        average = self.ema  # a submodule: each read is a Python lookup, paid on every sampling call
        if ema is None or ema:
            if average is not None:
                return average.module
            if ema:
                raise ValueError("sample(ema=True): this GAN keeps no EMA generator (model.ema=false)")
        return self.generator

    # --- training ---------------------------------------------------------------------
    def discriminator_terms(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """The discriminator's loss on a real and a fake batch, with its penalties."""
        terms: dict[str, Tensor] = {}
        if self.r1_gamma > 0:
            r1, real_out = r1_penalty(self.discriminate, real)
            terms["r1"] = r1
        else:
            real_out = self.discriminate(real)
        fake_out = self.discriminate(fake)
        d_loss = self.objective.discriminator(real_out, fake_out)
        if self.objective.gradient_penalty:
            terms["gp"] = gradient_penalty(self.discriminate, real, fake)
            d_loss = d_loss + self.gp_weight * terms["gp"]  # Gulrajani et al. 2017, eq. 3
        if self.r1_gamma > 0:
            d_loss = d_loss + 0.5 * self.r1_gamma * terms["r1"]  # Mescheder et al. 2018, eq. 9
        terms.update(d_loss=d_loss, d_real=real_out.detach().mean(), d_fake=fake_out.detach().mean())
        return terms

    def discriminator_step(self, real: Tensor, opt_d) -> dict[str, Tensor]:
        """One discriminator update on ``real`` and as many fakes (G is not updated)."""
        with self._toggled(opt_d):  # only D's parameters take gradients
            with torch.no_grad():
                fake = self.generate(self.randn(real.shape[0], self.latent_dim))
            terms = self.discriminator_terms(real, fake)
            self.check_finite("train/d_loss", terms["d_loss"])  # this update will be step global_step + 1
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(terms["d_loss"])
            opt_d.step()  # counted by Lightning: global_step += 1
        return terms

    def generator_step(self, batch_size: int, opt_g) -> dict[str, Tensor]:
        """One generator update against the current discriminator (D is not updated)."""
        with self._toggled(opt_g):  # D's parameters take no gradients from the generator loss
            fake_out = self.discriminate(self.generate(self.randn(batch_size, self.latent_dim)))
            g_loss = self.objective.generator(fake_out)
            self.check_finite("train/g_loss", g_loss, step=self.global_step)  # after D's update of this step
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            # Not counted as a Lightning step (see the module docstring): the strategy's step is
            # exactly LightningOptimizer.step without the step counter (precision plugin, AMP included).
            self.trainer.strategy.optimizer_step(opt_g.optimizer, closure=_do_nothing)
        if self.ema is not None:
            self.ema.update(self.generator)
        return {"g_loss": g_loss}

    @contextmanager
    def _toggled(self, optimizer):
        """``toggle_optimizer`` … ``untoggle_optimizer``, restored even when a step raises."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = self.batch_images(batch)
        opt_g, opt_d = self.optimizers()
        terms = self.discriminator_step(real, opt_d)
        if self.global_step % self.n_critic == 0:  # global_step now counts this update too
            terms.update(self.generator_step(real.shape[0], opt_g))
        self.log_train({f"train/{name}": value for name, value in terms.items()}, prog_bar={"train/d_loss", "train/g_loss"})

    def divergence_context(self) -> str:
        return f" (model.loss={self.loss_name})"

    def configure_optimizers(self):
        # Order matters for the checkpoint's optimizer states: [generator, discriminator].
        opt_g = self.make_optimizer(self.generator.parameters(), lr=self.lr)
        opt_d = self.make_optimizer(self.discriminator.parameters(), lr=self.lr_d)
        return [opt_g, opt_d]

    # --- validation: mean scores on held-out data and a grid from the fixed z ---------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """D's mean score on held-out data and on the samples ``sample()`` returns (EMA, eval mode).

        The latents are seeded by the batch index: the same z at every validation, and the
        training noise stream is left untouched.
        """
        real = self.batch_images(batch)
        z = self.randn(real.shape[0], self.latent_dim, generator=torch.Generator().manual_seed(batch_idx))
        fake = eval_call(self._sampling_generator(ema=None), z).view_as(real)
        self.log("val/d_real", self.discriminate(real).mean())
        self.log("val/d_fake", self.discriminate(fake).mean())

    def on_validation_epoch_end(self) -> None:
        every, last = self.fixed_grid_every_n_steps, self._last_fixed_grid_step
        if self.trainer.sanity_checking or every <= 0:
            return
        if last is None or self.global_step - last >= every:
            self.write_fixed_grid()

    def on_train_end(self) -> None:
        if self.fixed_grid_every_n_steps > 0 and self._last_fixed_grid_step != self.global_step:
            self.write_fixed_grid()

    def write_fixed_grid(self) -> Path | None:
        """Save the fixed-z samples as ``<run_dir>/samples/gan_fixed_z_step<N>.png`` (and to W&B)."""
        self._last_fixed_grid_step = self.global_step
        if not self.trainer.is_global_zero:
            return None
        path = Path(self.trainer.default_root_dir) / "samples" / f"gan_fixed_z_step{self.global_step:06d}.png"
        save_sample_figure(self.fixed_samples().cpu(), path)
        for lg in self.loggers:
            if hasattr(lg, "log_image"):  # W&B: the same latents at every step
                lg.log_image(key="val/fixed_z_samples", images=[str(path)], step=self.global_step)
        return path

    # --- the contract -----------------------------------------------------------------
    @no_grad
    def sample(
        self, n: int, generator: torch.Generator | None = None, ema: bool | None = None, **kwargs: Any
    ) -> Tensor:
        """G(z), z ~ N(0, I), in the data range; with the EMA generator when one is kept (``ema=None``)."""
        return self._generate(self.randn(n, self.latent_dim, generator=generator), ema)

    @no_grad
    def decode(self, z: Tensor, ema: bool | None = None) -> Tensor:
        """The sampling generator (EMA, eval mode) applied to given latents, in the data range."""
        return self._generate(z.to(self.device), ema)

    def _generate(self, z: Tensor, ema: bool | None) -> Tensor:
        """G(z) on the model's device, with the sampling generator in eval mode, in the data range."""
        return self.to_data_range(eval_call(self._sampling_generator(ema), z).view(-1, *self.data_shape))

    @torch.no_grad()
    def fixed_samples(self) -> Tensor:
        """Samples of the fixed validation z: the same latents at every call, comparable across epochs."""
        return self.decode(self.fixed_z)

    @torch.no_grad()
    def interpolate(self, z_a: Tensor, z_b: Tensor, steps: int = 8, ema: bool | None = None) -> Tensor:
        """The lecture's latent walk: G at ``steps`` points on the line from z_a to z_b, ``[steps, *data_shape]``."""
        z_a, z_b = z_a.reshape(-1).to(self.device), z_b.reshape(-1).to(self.device)
        if z_a.numel() != self.latent_dim or z_b.numel() != self.latent_dim:
            raise ValueError(
                f"interpolate: z_a and z_b must have {self.latent_dim} entries, got {z_a.numel()} and {z_b.numel()}"
            )
        w = torch.linspace(0, 1, int(steps), device=self.device)[:, None]
        return self.decode((1 - w) * z_a + w * z_b, ema=ema)

    # --- configuration checks ---------------------------------------------------------
    @classmethod
    def trainer_errors(cls, trainer: Any) -> list[str]:
        """The GAN steps its two optimizers by hand, and Lightning clips and accumulates gradients only
        for automatic optimisation (it would stop at ``fit`` with a traceback)."""
        errors = []
        clip = trainer.get("gradient_clip_val")
        if clip not in (None, 0, 0.0):
            errors.append(f"trainer.gradient_clip_val={clip!r}: model=gan steps its two optimizers by hand, which "
                          "Lightning's clipping does not support; leave it null and stabilise with model.spectral_norm=true, "
                          "model.r1_gamma > 0 or model.loss=wgan-gp")  # fmt: skip
        acc = trainer.get("accumulate_grad_batches", 1)
        if acc != 1:
            errors.append(f"trainer.accumulate_grad_batches={acc!r}: model=gan steps its two optimizers by hand, which "
                          "Lightning's gradient accumulation does not support; leave it at 1 and raise data.batch_size")  # fmt: skip
        return errors

    @classmethod
    def config_errors(cls, cfg: Any) -> list[str]:
        """The settings (:class:`GANConfig`), and the one rule that involves the discriminator's network."""
        errors = super().config_errors(cfg)
        loss = cfg.get("loss", "nonsaturating")
        disc = cfg.get("discriminator") or {}
        if loss == "wgan-gp" and hasattr(disc, "get") and disc.get("norm") == "batch":
            errors.append(
                "model.discriminator.norm='batch' with model.loss='wgan-gp': the gradient penalty is per example "
                "and batch norm mixes examples; use norm 'layer' or 'none' (Gulrajani et al. 2017, §4)"
            )
        return errors


def save_sample_figure(x: Tensor, path: Path) -> Path:
    """Images as one grid PNG; 2-D points as a scatter plot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        from torchvision.utils import save_image

        save_image((x + 1) / 2, path, nrow=int(len(x) ** 0.5), padding=1)
        return path
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot()
    ax.scatter(x[:, 0], x[:, 1], s=4)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
