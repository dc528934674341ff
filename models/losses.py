"""Pure loss functions of the families (no modules, no state).

GAN losses take the discriminator's raw outputs (logits / critic values), one per example,
and return the scalar mean over the batch. ``D(x)`` below is the logit, ``σ`` the sigmoid, so
the probability "x is real" of Goodfellow et al. (2014) is ``σ(D(x))``; ``log σ(a) = −softplus(−a)``
and ``log(1 − σ(a)) = −softplus(a)`` keep every loss finite for any logit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# --- the discriminator objectives ---------------------------------------------------------


def bce_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """−E[log σ(D(x))] − E[log(1 − σ(D(G(z))))] (Goodfellow et al. 2014, eq. 1, negated)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[max(0, 1 − D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018, eq. 16)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def wasserstein_critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[D(G(z))] − E[D(x)]: the negated Kantorovich–Rubinstein estimate of W₁ (Arjovsky et al. 2017, eq. 3)."""
    return fake_logits.mean() - real_logits.mean()


# --- the generator objectives -------------------------------------------------------------


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """E[log(1 − σ(D(G(z))))]: the generator's side of the minimax game (Goodfellow et al. 2014, eq. 1).

    Its gradient vanishes when the discriminator confidently rejects the fakes (σ(D) → 0).
    """
    return -F.softplus(fake_logits).mean()


def nonsaturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """−E[log σ(D(G(z)))]: maximise log D(G(z)) instead (Goodfellow et al. 2014, §3), strong early gradients."""
    return F.softplus(-fake_logits).mean()


def critic_generator_loss(fake_logits: Tensor) -> Tensor:
    """−E[D(G(z))]: the generator loss of the hinge GAN (Miyato et al. 2018, eq. 17) and of WGAN."""
    return -fake_logits.mean()


@dataclass(frozen=True)
class GANLoss:
    """A discriminator objective and the generator objective played against it."""

    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    #: WGAN-GP's critic needs the gradient penalty (Gulrajani et al. 2017, Algorithm 1).
    gradient_penalty: bool = False


GAN_LOSSES: dict[str, GANLoss] = {
    "nonsaturating": GANLoss(bce_discriminator_loss, nonsaturating_generator_loss),
    "minimax": GANLoss(bce_discriminator_loss, minimax_generator_loss),
    "hinge": GANLoss(hinge_discriminator_loss, critic_generator_loss),
    "wgan-gp": GANLoss(wasserstein_critic_loss, critic_generator_loss, gradient_penalty=True),
}


def gan_loss(name: str) -> GANLoss:
    """The pair of objectives called ``name`` (one of :data:`GAN_LOSSES`)."""
    if name not in GAN_LOSSES:
        raise ValueError(f"GAN loss {name!r}: must be one of {sorted(GAN_LOSSES)}")
    return GAN_LOSSES[name]


# --- the penalties ------------------------------------------------------------------------


def _input_gradient_norm_sq(critic: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """‖∇ₓ D(x)‖² per example (differentiable: ``create_graph=True``) and D(x)."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1), out


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, eps: Tensor | None = None
) -> Tensor:
    """E[(‖∇ D(x̂)‖₂ − 1)²] at x̂ = ε x + (1 − ε) x̃, ε ~ U[0, 1] per example (Gulrajani et al. 2017, eq. 3).

    Args:
        critic: maps a batch to one value per example.
        real, fake: batches of the same shape.
        eps: the mixing weights ``[B]`` (drawn uniformly when ``None``).

    Returns the unweighted penalty; the caller multiplies by λ (10 in the paper).
    """
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.view(-1, *([1] * (real.dim() - 1)))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    norm_sq, _ = _input_gradient_norm_sq(critic, x_hat)
    # sqrt has an infinite derivative at 0; the tiny offset keeps the penalty's gradient finite.
    return (torch.sqrt(norm_sq + 1e-12) - 1).pow(2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> tuple[Tensor, Tensor]:
    """E[‖∇ₓ D(x)‖²] on real data (Mescheder et al. 2018, eq. 9, without the γ/2).

    Returns the penalty and the critic's outputs on ``real`` (so they can be reused for the loss).
    """
    norm_sq, out = _input_gradient_norm_sq(critic, real)
    return norm_sq.mean(), out
