"""The GAN objectives and penalties against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from models.losses import (
    GAN_LOSSES,
    bce_discriminator_loss,
    critic_generator_loss,
    gan_loss,
    gradient_penalty,
    hinge_discriminator_loss,
    minimax_generator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    wasserstein_critic_loss,
)

# softplus(a) = log(1 + e^a), by hand:
LOG2 = 0.6931471805599453  # softplus(0)
SP_M1 = 0.31326168751822286  # softplus(-1) = log(1 + e^-1)
SP_M2 = 0.1269280110429726  # softplus(-2) = log(1 + e^-2)
SP_P1 = 1.3132616875182228  # softplus(1) = log(1 + e)

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([0.0, -1.0])


def test_bce_discriminator_loss():
    # −½[log σ(0) + log σ(2)] − ½[log(1−σ(0)) + log(1−σ(−1))]
    expected = 0.5 * (LOG2 + SP_M2) + 0.5 * (LOG2 + SP_M1)
    assert bce_discriminator_loss(REAL, FAKE).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.913242, abs=1e-6)


def test_generator_losses():
    # nonsaturating: −½[log σ(0) + log σ(−1)] = ½[softplus(0) + softplus(1)]
    assert nonsaturating_generator_loss(FAKE).item() == pytest.approx(0.5 * (LOG2 + SP_P1), abs=1e-6)
    # minimax: ½[log(1−σ(0)) + log(1−σ(−1))] = −½[softplus(0) + softplus(−1)]
    assert minimax_generator_loss(FAKE).item() == pytest.approx(-0.5 * (LOG2 + SP_M1), abs=1e-6)
    assert critic_generator_loss(FAKE).item() == pytest.approx(0.5, abs=1e-7)


def test_hinge_and_wasserstein_losses():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, -3.0])
    # ½[max(0, 0.5) + max(0, −1)] + ½[max(0, 0.5) + max(0, −2)] = 0.25 + 0.25
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5, abs=1e-7)
    # E[D(fake)] − E[D(real)] = −1.75 − 1.25
    assert wasserstein_critic_loss(real, fake).item() == pytest.approx(-3.0, abs=1e-7)
    assert critic_generator_loss(fake).item() == pytest.approx(1.75, abs=1e-7)


def test_minimax_saturates_where_nonsaturating_does_not():
    """The reason for the lecture's loss: with D sure the fakes are fake (logit −10),
    ∂/∂D of the minimax loss is −σ(−10) ≈ −4.5e−5, the non-saturating one's −σ(10) ≈ −1."""
    logit = torch.tensor([-10.0], requires_grad=True)
    (g_minimax,) = torch.autograd.grad(minimax_generator_loss(logit), logit)
    (g_ns,) = torch.autograd.grad(nonsaturating_generator_loss(logit), logit)
    assert g_minimax.item() == pytest.approx(-4.5398e-5, rel=1e-3)
    assert g_ns.item() == pytest.approx(-0.9999546, abs=1e-6)


def test_losses_are_finite_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    for name, loss in GAN_LOSSES.items():
        assert torch.isfinite(loss.discriminator(big, -big)), name
        assert torch.isfinite(loss.generator(big)), name


def _linear_critic(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(1 * 4 * 4)
    w = w / w.norm()  # D(x) = w·x is 1-Lipschitz with ‖∇D‖ = 1 everywhere
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    assert gradient_penalty(_linear_critic(w), real, fake).item() == pytest.approx(0.0, abs=1e-6)
    # ‖∇D‖ = 3 everywhere: (3 − 1)² = 4
    assert gradient_penalty(_linear_critic(3 * w), real, fake).item() == pytest.approx(4.0, abs=1e-4)


def test_gradient_penalty_is_taken_at_the_interpolates():
    # D(x) = ½‖x‖² has ∇D(x̂) = x̂; with real = 2, fake = 0 and ε = (0.25, 1): x̂ = 0.5 and 2,
    # so the penalty is ½[(0.5 − 1)² + (2 − 1)²] = 0.625.
    critic = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731
    real, fake = torch.full((2, 1), 2.0), torch.zeros(2, 1)
    gp = gradient_penalty(critic, real, fake, eps=torch.tensor([0.25, 1.0]))
    assert gp.item() == pytest.approx(0.625, abs=1e-5)


def test_gradient_penalty_is_differentiable_in_the_critic():
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # ‖w‖ = 5: penalty (5 − 1)² = 16, ∂/∂w = 2·4·w/5
    gp = gradient_penalty(lambda x: x @ w, torch.randn(4, 2), torch.randn(4, 2))
    (grad,) = torch.autograd.grad(gp, w)
    assert gp.item() == pytest.approx(16.0, abs=1e-4)
    assert torch.allclose(grad, torch.tensor([4.8, 6.4]), atol=1e-4)


def test_r1_penalty_of_a_linear_critic_is_the_squared_weight_norm():
    w = torch.tensor([3.0, 4.0])
    r1, out = r1_penalty(lambda x: x @ w, torch.ones(5, 2))
    assert r1.item() == pytest.approx(25.0, abs=1e-5)
    assert torch.allclose(out, torch.full((5,), 7.0))


def test_unknown_loss_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'lsgan'.*\['hinge', 'minimax', 'nonsaturating', 'wgan-gp'\]"):
        gan_loss("lsgan")
    assert gan_loss("wgan-gp").gradient_penalty and not gan_loss("hinge").gradient_penalty
