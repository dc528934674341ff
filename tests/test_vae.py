"""VAE math against hand-computed values, and learning."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from datamodules.mnist5k import MNIST5kDataModule
from models.distributions import (
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    log_ndtr,
    standard_normal_kl,
)
from models.vae import VAE
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


def _bin_mass_by_hand(offset: float, sigma: float, half_bin: float = 1 / 255) -> tuple[float, float]:
    """log P and d log P / d mean of an interior pixel at ``x − mean = offset``, in float64 with
    math.erfc on the lower tail (Φ(b) − Φ(a) = Φ(−a) − Φ(−b) above the mean)."""
    a, b = (offset - half_bin) / sigma, (offset + half_bin) / sigma
    if a > 0:
        a, b = -b, -a
    cdf = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mass = cdf(b) - cdf(a)
    slope = (pdf(a) - pdf(b)) / sigma / mass  # d/dmean: both edges move by −1/σ
    return math.log(mass), slope if offset - half_bin <= 0 else -slope


@pytest.mark.parametrize("sigma", [math.sqrt(5.45e-5), 0.02, 0.3, 5.0])  # DDPM's L_0 scale (√β̃₂) to a wide VAE decoder
def test_discretized_gaussian_is_exact_in_float32_far_into_both_tails(sigma):
    # Φ(b) − Φ(a) in float32 is 0 beyond about 6σ: the old log(max(·, 1e-12)) read −27.6 nats with
    # zero gradient there (−17.6 is right at 6σ). Offsets up to 12σ, both sides of the mean.
    for k in [0.0, 0.5, 3.0, 6.0, 7.0, 9.0, 12.0]:
        for sign in (1, -1):
            offset = sign * k * sigma
            if abs(offset) > 1.5:
                continue  # keep x = 0 an interior level and the mean inside a plausible range
            mean = torch.tensor(-offset, dtype=torch.float32, requires_grad=True)
            logp = discretized_gaussian_log_likelihood(torch.zeros(1), mean, torch.tensor(math.log(sigma)))
            logp.sum().backward()
            want, slope = _bin_mass_by_hand(offset, sigma)
            assert logp.item() == pytest.approx(want, rel=1e-5, abs=1e-5), (k, sign)
            assert mean.grad.item() == pytest.approx(slope, rel=1e-3, abs=1e-3), (k, sign)


def test_discretized_gaussian_narrow_bins_and_gradients_stay_finite():
    # σ = 100: the bin is 8e-5 σ wide and takes the midpoint rule, width · φ(centre)
    sigma = 100.0
    logp = discretized_gaussian_log_likelihood(torch.tensor([0.0, 0.5]), torch.tensor(0.25), torch.tensor(math.log(sigma)))
    for got, offset in zip(logp.tolist(), [-0.25, 0.25], strict=True):
        assert got == pytest.approx(_bin_mass_by_hand(offset, sigma)[0], rel=1e-6)
    # no NaN reaches the gradient from the branch torch.where discards, at any scale or offset
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    for log_scale in [-12.0, -5.0, 0.0, 5.0, 12.0]:
        mean = torch.linspace(-3, 3, 256, requires_grad=True)
        log_scale_t = torch.tensor(log_scale, requires_grad=True)
        discretized_gaussian_log_likelihood(levels, mean, log_scale_t).sum().backward()
        assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale_t.grad), log_scale


def test_log_ndtr_value_and_gradient_far_into_the_lower_tail():
    # d/dz log Φ(z) = φ(z)/Φ(z); torch's float32 log_ndtr gradient reads 64,930 at z = −10⁴
    z = torch.tensor([-5.0, -19.9, -20.1, -30.0, -35.0, -1e3, -1e4, -1e6], requires_grad=True)
    log_ndtr(z).sum().backward()
    for zi, value, grad in zip(z.tolist(), log_ndtr(z.detach()).tolist(), z.grad.tolist(), strict=True):
        if zi >= -35:
            cdf, pdf = 0.5 * math.erfc(-zi / math.sqrt(2)), math.exp(-zi * zi / 2) / math.sqrt(2 * math.pi)
            want_value, want_grad = math.log(cdf), pdf / cdf
        else:  # Mills ratio: φ/Φ = −z − 1/z + 2/z³ − …; log Φ = −z²/2 − log(−z) − ½ log 2π − 1/z² + …
            want_value = -zi * zi / 2 - math.log(-zi) - 0.5 * math.log(2 * math.pi) - zi**-2
            want_grad = -zi - 1 / zi
        assert value == pytest.approx(want_value, rel=1e-6), zi
        assert grad == pytest.approx(want_grad, rel=1e-5), zi


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
    assert (iwae.mean() > elbo.mean()).item()  # Jensen; the exact values are the test below
    bpd = model.nll_bpd(x, k=4)
    assert bpd.shape == (8,) and (bpd > 0).all()
    with pytest.raises(NotImplementedError, match="discretized_gaussian"):
        _vae(tmp_path).nll_bpd(x)


def test_elbo_and_iwae_equal_log_px_exactly_when_q_is_the_true_posterior():
    # Linear-Gaussian VAE: z ~ N(0, I₂), x | z ~ N(Wz, σ²I₄), so p(x) = N(0, WWᵀ + σ²I) and the
    # posterior is N(A x, S) with S = (I + WᵀW/σ²)⁻¹, A = S Wᵀ/σ² (diagonal here: W's columns are
    # orthogonal). With the encoder set to it, log p(x, z) − log q(z|x) = log p(x) for every z,
    # so every importance-weighted bound equals log p(x) exactly, and the ELBO does in expectation.
    torch.manual_seed(0)
    sigma = 0.5
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0], [0.0, -1.0]], dtype=torch.float64)
    S = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + W.T @ W / sigma**2)
    A = S @ W.T / sigma**2
    decoder = torch.nn.Linear(2, 4, bias=False).double()
    model = VAE(torch.nn.Flatten(), decoder, data_shape=(1, 2, 2), latent_dim=2, likelihood="gaussian", sigma=sigma,
                learn_sigma=False).double()  # fmt: skip
    with torch.no_grad():
        decoder.weight.copy_(W)
        model.to_mean.weight.copy_(A)
        model.to_mean.bias.zero_()
        model.to_logvar.weight.zero_()
        model.to_logvar.bias.copy_(S.diagonal().log())
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), W @ W.T + sigma**2 * torch.eye(4))
    log_px = marginal.log_prob(x.flatten(1))
    for k in (1, 8):
        assert torch.allclose(model.log_likelihood_bound(x, k=k), log_px, atol=1e-10), k
    # the ELBO: its KL term is KL(N(Ax, S) || N(0, I)) by hand; −(recon + KL) averages to log p(x)
    mean = x.flatten(1) @ A.T
    kl = 0.5 * (mean.pow(2).sum(1) + S.trace() - S.diagonal().log().sum() - 2)
    terms = model.negative_elbo(x.repeat(20_000, 1, 1, 1))
    assert torch.allclose(terms["kl"][:3], kl, atol=1e-10)
    elbo = -terms["loss"].view(20_000, 3)
    stderr = elbo.std(0) / 20_000**0.5
    assert ((elbo.mean(0) - log_px).abs() < 5 * stderr).all(), (elbo.mean(0), log_px, stderr)
