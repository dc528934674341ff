"""VAE math against hand-computed values, and learning."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from datamodules.mnist5k import MNIST5kDataModule
from models.distributions import discretized_gaussian_log_likelihood, gaussian_kl, standard_normal_kl
from tests.conftest import compose_config


def test_standard_normal_kl_by_hand():
    # KL(N(μ, σ²) || N(0, 1)) = ½(μ² + σ² − log σ² − 1)
    assert standard_normal_kl(torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0
    assert standard_normal_kl(torch.tensor(1.0), torch.tensor(0.0)).item() == pytest.approx(0.5)
    assert standard_normal_kl(torch.tensor(0.0), torch.tensor(math.log(2.0))).item() == pytest.approx(
        0.5 * (2 - math.log(2) - 1)
    )


def test_general_gaussian_kl_by_hand():
    # KL(N(1, 1) || N(0, 4)) = ½(log 4 − 0 + (1 + 1)/4 − 1) = 0.4431...
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(math.log(4.0)))
    assert kl.item() == pytest.approx(0.5 * (math.log(4) + 0.5 - 1))
    # with p = N(0, I) it equals the standard-normal special case
    m, lv = torch.randn(100), torch.randn(100)
    assert torch.allclose(gaussian_kl(m, lv), standard_normal_kl(m, lv), atol=1e-6)


def test_discretized_gaussian_sums_to_one_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in [(0.0, -2.0), (0.7, -4.0), (-1.3, 0.5), (0.99, -6.0)]:
        logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                                   torch.tensor(log_scale, dtype=torch.float64))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # a sharp Gaussian centred on a level puts (almost) all mass on it
    x = torch.tensor([0.2 * 127.5 // 1 / 127.5], dtype=torch.float64)
    assert discretized_gaussian_log_likelihood(x, x, torch.tensor(-8.0, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-9)


def _vae(tmp_path, *overrides):
    cfg = compose_config(["model=vae", "data=mnist5k", "logger=none", *overrides], run_dir=tmp_path)
    return instantiate(cfg.model, _convert_="all")


def test_vae_overfits_a_tiny_batch(tmp_path):
    torch.manual_seed(0)
    model = _vae(tmp_path)
    dm = MNIST5kDataModule()
    x = dm.real_samples("train", n=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = model.negative_elbo(x)["loss"].mean().item()
    for _ in range(300):
        loss = model.negative_elbo(x)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = model.negative_elbo(x)["loss"].mean().item()
    # an untrained Bernoulli decoder costs ≈ 784·ln 2 ≈ 543 nats; 300 steps on 16 digits cut that by 3×
    assert first > 450 and last < first / 3


def test_vae_sample_reconstruct_interpolate_shapes_and_range(tmp_path):
    model = _vae(tmp_path).eval()
    g = torch.Generator().manual_seed(0)
    s = model.sample(8, generator=g)
    assert s.shape == (8, 1, 28, 28) and s.min() >= -1 and s.max() <= 1
    x = MNIST5kDataModule().real_samples("val", n=4)
    assert model.reconstruct(x).shape == x.shape
    path = model.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 1, 28, 28)
    # the end points decode the posterior means of the two inputs
    assert torch.allclose(path[0], model.reconstruct(x[:1])[0], atol=1e-5)
    assert torch.allclose(path[-1], model.reconstruct(x[1:2])[0], atol=1e-5)


def test_iwae_bound_is_tighter_than_the_elbo_and_bpd_needs_a_discrete_likelihood(tmp_path):
    torch.manual_seed(0)
    model = _vae(tmp_path, "model.likelihood=discretized_gaussian").eval()
    x = MNIST5kDataModule().real_samples("val", n=8)
    elbo = model.log_likelihood_bound(x, k=1)
    torch.manual_seed(0)
    iwae = model.log_likelihood_bound(x, k=32)
    assert (iwae.mean() > elbo.mean()).item()
    bpd = model.nll_bpd(x, k=4)
    assert bpd.shape == (8,) and (bpd > 0).all()
    with pytest.raises(NotImplementedError, match="discretized_gaussian"):
        _vae(tmp_path).nll_bpd(x)
