"""Decoder likelihoods p(x | z) of the VAE, chosen with ``model.likelihood``.

Each turns the decoder's output into a per-example log-likelihood (summed over dimensions,
in nats) and into a mean in the data range for samples and reconstructions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.distributions import discretized_gaussian_log_likelihood, gaussian_log_prob


def _per_example_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


class Likelihood(nn.Module):
    #: True when ``log_prob`` is a probability of the 8-bit data (comparable in bits/dim).
    discrete: bool = False

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Bernoulli on intensities mapped from [-1, 1] to [0, 1] (the classic MNIST VAE of Kingma & Welling).

    For grey-level data this is the usual cross-entropy; it is not a density of 8-bit data, so
    no bits/dim are reported under it.
    """

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        target = (x + 1) / 2
        return -_per_example_sum(F.binary_cross_entropy_with_logits(out, target, reduction="none"))

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) * 2 - 1


class Gaussian(Likelihood):
    """N(x; decoder(z), σ²) with σ fixed or learned (one σ per channel, as in σ-VAE, Rybkin et al. 2021)."""

    def __init__(self, data_shape: Sequence[int], sigma: float = 0.1, learn_sigma: bool = True):
        super().__init__()
        shape = [data_shape[0]] + [1] * (len(data_shape) - 1)
        log_sigma = torch.full(shape, math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return _per_example_sum(gaussian_log_prob(x, out, self.log_sigma.expand_as(out)))

    def mean(self, out: Tensor) -> Tensor:
        return out


class DiscretizedGaussian(Gaussian):
    """The Gaussian integrated over each 8-bit level: the same decoder as DDPM's L_0 (Ho et al. §3.3)."""

    discrete = True

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return _per_example_sum(discretized_gaussian_log_likelihood(x, out, self.log_sigma.expand_as(out)))

    def mean(self, out: Tensor) -> Tensor:
        return out.clamp(-1, 1)


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian, "discretized_gaussian": DiscretizedGaussian}


def make_likelihood(name: str, data_shape: Sequence[int], sigma: float, learn_sigma: bool) -> Likelihood:
    if name not in LIKELIHOODS:
        raise ValueError(f"model.likelihood={name!r}: must be one of {sorted(LIKELIHOODS)}")
    if name == "bernoulli":
        return Bernoulli()
    return LIKELIHOODS[name](data_shape, sigma=sigma, learn_sigma=learn_sigma)
