"""The variational autoencoder (Kingma & Welling 2014) as a genbench family.

Gaussian encoder q(z|x) = N(μ(x), diag σ²(x)), prior p(z) = N(0, I), decoder p(x|z) chosen
by ``likelihood``. Training minimises the negative ELBO

    −ELBO(x) = E_q[−log p(x|z)] + β · KL(q(z|x) || p(z))

with one reparameterised sample z = μ + σ ⊙ ε, ε ~ N(0, I), and the analytic Gaussian KL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genbench.schema import setting
from models.base import FamilyConfig, GenerativeModule, no_grad
from models.distributions import gaussian_log_prob, nats_to_bits_per_dim, standard_normal_kl
from models.likelihoods import LIKELIHOODS, make_likelihood


@dataclass
class VAEConfig(FamilyConfig):
    """The VAE's settings (``model.*``); the networks come from the ``net`` group."""

    latent_dim: int = setting(16, ge=1, doc="size of z")
    beta: float = setting(1.0, ge=0, doc="weight of the KL term (β-VAE, Higgins et al. 2017); 1 gives the ELBO")
    likelihood: str = setting("bernoulli", choices=sorted(LIKELIHOODS),
                              doc="the decoder p(x|z): bernoulli, gaussian or discretized_gaussian (bits/dim)")
    sigma: float = setting(0.1, gt=0, doc="initial (learn_sigma) or fixed σ of the Gaussian likelihoods")
    learn_sigma: bool = setting(True, doc="learn σ of the Gaussian likelihoods")
    iw_samples: int = setting(64, ge=1, doc="importance samples of the IWAE bound of nll_bpd")
    lr: float = setting(1e-3, gt=0, doc="Adam's learning rate")


class VAE(GenerativeModule):
    """Args:
    encoder: network ``x -> h`` (any feature size; the μ and log σ² heads are added here).
    decoder: network ``z -> decoder output`` of the data's shape.
    data_shape: shape of one sample.
    latent_dim: size of z.
    beta: weight of the KL term (β-VAE, Higgins et al. 2017); 1 gives the ELBO.
    likelihood: ``bernoulli``, ``gaussian`` or ``discretized_gaussian``.
    sigma, learn_sigma: initial / fixed σ of the Gaussian likelihoods.
    iw_samples: importance samples of the IWAE bound used by :meth:`nll_bpd`.

    The settings and their defaults are :class:`VAEConfig`'s.
    """

    family = "vae"
    config_type = VAEConfig
    compiled_networks = ("encoder", "decoder")

    def __init__(self, encoder: nn.Module, decoder: nn.Module, data_shape: Sequence[int], optimizer: Any = None,
                 **settings: Any):  # fmt: skip
        hp = self.settings(settings)
        super().__init__(data_shape=data_shape, lr=hp.lr, optimizer=optimizer, compile=hp.compile)
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.beta, self.iw_samples = int(hp.latent_dim), float(hp.beta), int(hp.iw_samples)
        with torch.no_grad():
            features = encoder(torch.zeros(2, *self.data_shape)).shape[1]
        self.to_mean = nn.Linear(features, self.latent_dim)
        self.to_logvar = nn.Linear(features, self.latent_dim)
        self.likelihood = make_likelihood(hp.likelihood, self.data_shape, hp.sigma, hp.learn_sigma)

    # --- the model --------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): mean and log-variance."""
        h = self.encoder(x)
        return self.to_mean(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output (logits / Gaussian mean) of the data's shape."""
        return self.decoder(z).view(-1, *self.data_shape)

    @staticmethod
    def reparameterize(mean: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        """z = μ + σ ⊙ ε (the reparameterisation trick, Kingma & Welling 2014 §2.4)."""
        return mean + torch.exp(0.5 * logvar) * eps

    def negative_elbo(self, x: Tensor, beta: float | None = None) -> dict[str, Tensor]:
        """Per-example reconstruction term, KL and β-weighted loss (nats)."""
        beta = self.beta if beta is None else beta
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar, torch.randn_like(mean))
        recon = -self.likelihood.log_prob(self.decode(z), x)  # E_q[−log p(x|z)], one sample
        kl = standard_normal_kl(mean, logvar).sum(1)  # KL(q(z|x) || N(0, I)), analytic
        return {"recon": recon, "kl": kl, "loss": recon + beta * kl}

    # --- training ---------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self.batch_images(batch)
        terms = {k: v.mean() for k, v in self.negative_elbo(x).items()}
        self.log_train({f"train/{k}": v for k, v in terms.items()}, prog_bar={"train/loss", "train/recon", "train/kl"})
        return terms["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = self.batch_images(batch)
        with self.validation_rng(batch_idx):
            terms = self.negative_elbo(x, beta=1.0)
        elbo = -terms["loss"].mean()
        self.log("val/elbo", elbo, prog_bar=True)
        self.log("val/loss", terms["loss"].mean())
        if self.likelihood_is_discrete:
            self.log("val/elbo_bpd", nats_to_bits_per_dim(-elbo, self.num_dims))

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())

    # --- the contract -----------------------------------------------------------------
    @no_grad
    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """Decode z ~ N(0, I) and return the likelihood's mean in the data range."""
        z = self.randn(n, self.latent_dim, generator=generator)
        return self.to_data_range(self.likelihood.mean(self.decode(z)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean μ(x)."""
        mean, _ = self.encode(x)
        return self.to_data_range(self.likelihood.mean(self.decode(mean)))

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Tensor:
        """Decode ``steps`` points on the line between μ(x_a) and μ(x_b): ``[steps, *data_shape]``."""
        mean, _ = self.encode(torch.stack([x_a, x_b]).to(self.device))
        w = torch.linspace(0, 1, steps, device=self.device)[:, None]
        z = (1 - w) * mean[0] + w * mean[1]
        return self.to_data_range(self.likelihood.mean(self.decode(z)))

    @property
    def likelihood_is_discrete(self) -> bool:
        return self.likelihood.discrete

    @property
    def has_likelihood(self) -> bool:
        return self.likelihood_is_discrete

    @torch.no_grad()
    def log_likelihood_bound(self, x: Tensor, k: int | None = None) -> Tensor:
        """Importance-weighted bound (Burda et al. 2016) on log p(x), per example, in nats:

        log p(x) ≥ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x).  K = 1 is the ELBO.
        """
        k = self.iw_samples if k is None else int(k)
        mean, logvar = self.encode(x)
        log_scale = 0.5 * logvar
        log_w = []
        for _ in range(k):
            z = self.reparameterize(mean, logvar, torch.randn_like(mean))
            log_pxz = self.likelihood.log_prob(self.decode(z), x)
            log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
            log_qz = gaussian_log_prob(z, mean, log_scale).sum(1)
            log_w.append(log_pxz + log_pz - log_qz)
        return torch.logsumexp(torch.stack(log_w), dim=0) - math.log(k)

    def nll_bpd(self, x0: Tensor, k: int | None = None) -> Tensor:
        """−(IWAE bound) in bits/dim; only defined under the discretised likelihood."""
        if not self.likelihood_is_discrete:
            raise NotImplementedError(
                f"bits/dim need a likelihood of the 8-bit data; model.likelihood is "
                f"{type(self.likelihood).__name__}, use model.likelihood=discretized_gaussian"
            )
        return nats_to_bits_per_dim(-self.log_likelihood_bound(x0, k), self.num_dims)
