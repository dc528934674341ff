"""The diffusion process of models/diffusion.py against hand-computed values (Ho et al. 2020).

Code timesteps are 0-indexed: code t is the paper's t + 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.ddpm import DDPM
from models.diffusion import NoiseSchedule
from models.schedules import cosine_betas, linear_betas

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_linear_alpha_bar(t: int, T: int = 1000, b0: float = 1e-4, b1: float = 0.02) -> float:
    """ᾱ at code t of the linear schedule, with a plain Python loop."""
    prod = 1.0
    for s in range(t + 1):
        prod *= 1.0 - (b0 + (b1 - b0) * s / (T - 1))
    return prod


# --- the schedules ---------------------------------------------------------------------------
def test_linear_alpha_bar_matches_hand_computation():
    s = NoiseSchedule.linear(1000, 1e-4, 0.02)
    assert s.T == 1000
    assert s.betas.shape == s.alphas.shape == s.alphas_cumprod.shape == (1000,)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    for t in (0, 499, 999):
        assert s.alphas_cumprod[t].item() == pytest.approx(hand_linear_alpha_bar(t), rel=1e-5)
    # the numbers themselves: ᾱ_1 = 1 − β_1, ᾱ at the middle and at T (≈ 4e-5: x_T is nearly pure noise)
    assert s.alphas_cumprod[0].item() == pytest.approx(0.9999, rel=1e-7)
    assert s.alphas_cumprod[499].item() == pytest.approx(0.078587, rel=1e-4)
    assert s.alphas_cumprod[999].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_schedule_buffers_are_float32_computed_in_float64():
    s = NoiseSchedule.linear()
    assert all(b.dtype == torch.float32 for b in s.buffers())
    assert {"betas", "alphas_cumprod", "posterior_variance"} <= set(s.state_dict())
    # ᾱ_T in float32 arithmetic drifts; the float64 product rounded once does not
    exact = torch.cumprod(1 - linear_betas(1000), 0)[-1].item()
    assert s.alphas_cumprod[-1].item() == pytest.approx(exact, rel=1e-6)
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert (s.betas[1:] > s.betas[:-1]).all()


def test_cosine_schedule_is_nichol_dhariwal_eq17():
    T, s_off = 1000, 0.008
    s = NoiseSchedule.cosine(T, s_off)

    def f(t):
        return math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2

    for t in (0, 250, 500, 900):  # code t is ᾱ at time (t + 1) / T
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert s.betas.max().item() <= 0.999 + 1e-7  # clipped near t = T
    assert (cosine_betas(T) > 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(T=0), "T=0: must be an integer >= 1"),
        (dict(beta_start=0.0), r"beta_start=0.0: must be a number in the open interval \(0, 1\)"),
        (dict(beta_end=1.0), r"beta_end=1.0: must be a number in the open interval \(0, 1\)"),
        (dict(beta_start=0.02, beta_end=1e-4), "must be increasing"),
    ],
)
def test_bad_linear_schedules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule.linear(**kwargs)


def test_bad_betas_are_refused():
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="unknown|must be one of"):
        NoiseSchedule.from_config("quadratic")


# --- the forward process ----------------------------------------------------------------------
def test_q_sample_statistics_match_eq4():
    s = NoiseSchedule.linear()
    x0 = torch.tensor([[0.7, -0.3]]).expand(200_000, 2)
    g = torch.Generator().manual_seed(0)
    for t in (10, 300, 999):
        x_t = s.q_sample(x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g))
        a_bar = s.alphas_cumprod[t].item()
        assert torch.allclose(x_t.mean(0), math.sqrt(a_bar) * x0[0], atol=0.01)
        assert torch.allclose(x_t.var(0), torch.full((2,), 1 - a_bar), rtol=0.02, atol=1e-4)


def test_q_posterior_is_eq7():
    s = NoiseSchedule.linear()
    b = linear_betas(1000)
    a_bar = torch.cumprod(1 - b, 0)
    x0, x_t = torch.randn(3, 4), torch.randn(3, 4)
    t = torch.tensor([0, 1, 700])
    mean, var = s.q_posterior(x0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        ab, ab_prev, beta = a_bar[ti].item(), (a_bar[ti - 1].item() if ti > 0 else 1.0), b[ti].item()
        want_mean = (
            math.sqrt(ab_prev) * beta / (1 - ab) * x0[i]
            + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x_t[i]
        )
        want_var = (1 - ab_prev) / (1 - ab) * beta
        assert torch.allclose(mean[i], want_mean, atol=1e-5)
        assert var[i].item() == pytest.approx(want_var, rel=1e-5, abs=1e-12)
    assert var[0].item() == 0.0  # x_0 is known at the last step


def test_q_posterior_mean_is_the_mean_of_the_forward_chain():
    """Monte Carlo: given x_0, sample x_{t−1} ~ q(x_{t−1}|x_0), x_t ~ q(x_t|x_{t−1}); regress x_{t−1} on x_t."""
    s = NoiseSchedule.linear()
    t, n = 200, 400_000
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((n, 1), 0.5)
    x_prev = s.q_sample(x0, t - 1, torch.randn(n, 1, generator=g))
    x_t = (1 - s.betas[t]).sqrt() * x_prev + s.betas[t].sqrt() * torch.randn(n, 1, generator=g)  # eq. 2
    mean, var = s.q_posterior(x0, x_t, t)
    resid = x_prev - mean
    assert resid.mean().abs().item() < 2e-4
    assert resid.var().item() == pytest.approx(var[0].item(), rel=0.02)


# --- the reverse process ------------------------------------------------------------------------
@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_p_sample_is_algorithm2_line4(variance):
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(2)
    x_t, eps, z = (torch.randn(4, 3, 5, 5, generator=g) for _ in range(3))
    t = torch.tensor([999, 500, 1, 0])
    out = s.p_sample(eps, t, x_t, z, variance=variance)
    b = linear_betas(1000)
    a_bar = torch.cumprod(1 - b, 0)
    for i, ti in enumerate(t.tolist()):
        alpha, ab = 1 - b[ti].item(), a_bar[ti].item()
        sigma2 = (
            b[ti].item()
            if variance == "beta"
            else (1 - (a_bar[ti - 1].item() if ti else 1.0)) / (1 - ab) * b[ti].item()
        )
        sigma = math.sqrt(sigma2) if ti > 0 else 0.0  # line 3: z = 0 at the paper's t = 1
        want = 1 / math.sqrt(alpha) * (x_t[i] - (1 - alpha) / math.sqrt(1 - ab) * eps[i]) + sigma * z[i]
        assert torch.allclose(out[i], want, atol=1e-5), ti


def test_p_sample_clipping_uses_clipped_x0():
    s = NoiseSchedule.linear()
    x_t = torch.full((1, 2), 3.0)
    eps = torch.zeros(1, 2)  # x̂_0 = x_t / √ᾱ_t ≫ 1
    t = torch.tensor([100])
    clipped = s.p_sample(eps, t, x_t, torch.zeros(1, 2), clip=(-1.0, 1.0))
    want = s.q_posterior(torch.ones(1, 2), x_t, t)[0]
    assert torch.allclose(clipped, want)
    # without clipping eq. 11 and the posterior mean of the unclipped x̂_0 agree
    x0_hat = s.predict_x0(x_t, t, eps)
    assert torch.allclose(s.p_mean(eps, t, x_t), s.q_posterior(x0_hat, x_t, t)[0], atol=1e-5)


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.cosine()
    x0, eps = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.tensor([0, 10, 400, 800, 990])
    x_t = s.q_sample(x0, t, eps)
    assert torch.allclose(s.predict_x0(x_t, t, eps), x0, atol=1e-3)
    assert torch.allclose(s.predict_eps(x_t, t, x0), eps, atol=1e-3)


def test_ddim_eta0_is_deterministic():
    s = NoiseSchedule.linear()
    x_t, eps = torch.randn(6, 2), torch.randn(6, 2)
    a = s.ddim_step(eps, 700, 650, x_t, eta=0.0)
    b = s.ddim_step(eps, 700, 650, x_t, eta=0.0, noise=torch.randn(6, 2))
    assert torch.equal(a, b)
    # eq. 12 with σ = 0: √ᾱ_prev x̂_0 + √(1 − ᾱ_prev) ε
    ab, ab_prev = s.alphas_cumprod[700], s.alphas_cumprod[650]
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert torch.allclose(a, ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps, atol=1e-5)
    # the last step (t_prev = −1) lands on x̂_0
    assert torch.allclose(s.ddim_step(eps, 0, -1, x_t), s.predict_x0(x_t, 0, eps))


def test_ddim_eta1_all_steps_is_ddpm_with_posterior_variance():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(3)
    x_t, eps, z = (torch.randn(5, 4, generator=g) for _ in range(3))
    for t in (999, 500, 10, 1, 0):
        ddim = s.ddim_step(eps, t, t - 1, x_t, eta=1.0, noise=z)
        ddpm = s.p_sample(eps, t, x_t, z, variance="posterior")
        assert torch.allclose(ddim, ddpm, atol=1e-4), t


def test_ddim_needs_noise_for_eta():
    with pytest.raises(ValueError, match="needs noise"):
        NoiseSchedule.linear().ddim_step(torch.zeros(1, 2), 5, 4, torch.zeros(1, 2), eta=0.5)


def test_quadratic_timesteps_by_hand():
    """τ_i = round(999 (i / (S − 1))²) (Song et al. 2021, App. D.2), ties at the low end moved up by one."""
    s = NoiseSchedule.linear()
    assert s.timesteps(10, "quadratic").tolist() == [0, 12, 49, 111, 197, 308, 444, 604, 789, 999]
    # S = 50: 999 (1/49)² = 0.42 rounds to 0, a repeat of τ_0, so it becomes 1; then 1.66 -> 2, 3.74 -> 4, 6.66 -> 7
    assert s.timesteps(50, "quadratic")[:5].tolist() == [0, 1, 2, 4, 7]
    assert s.timesteps(100, "quadratic")[:3].tolist() == [0, 1, 2] and s.timesteps(100, "quadratic")[-1] == 999
    assert torch.equal(s.timesteps(1000, "quadratic"), torch.arange(1000))
    for T in (2, 7, 50):
        small = NoiseSchedule.linear(T=T)
        for steps in range(2, T + 1):
            for spacing in ("linear", "quadratic"):
                tau = small.timesteps(steps, spacing)
                assert len(tau) == steps and tau[0] == 0 and tau[-1] == T - 1 and (tau[1:] > tau[:-1]).all()
    with pytest.raises(ValueError, match=r"spacing='cubic': must be one of \['linear', 'quadratic', 'karras'\]"):
        s.timesteps(10, "cubic")


def test_strided_timesteps_and_respacing():
    s = NoiseSchedule.linear()
    tau = s.timesteps(50)
    assert len(tau) == 50 and tau[0] == 0 and tau[-1] == 999
    assert (tau[1:] > tau[:-1]).all()
    assert torch.equal(s.timesteps(), torch.arange(1000))
    assert s.timesteps(1).tolist() == [999]
    with pytest.raises(ValueError, match=r"steps=1001: must be an integer in \[1, T\] = \[1, 1000\]"):
        s.timesteps(1001)
    r = s.respaced(tau)  # Nichol & Dhariwal §4: ᾱ'_i = ᾱ_{τ_i}
    assert r.T == 50
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[tau], rtol=1e-5)


# --- the variational bound --------------------------------------------------------------------
class GaussianOracle(nn.Module):
    """The Bayes-optimal ε-predictor E[ε | x_t] for 1-D data x_0 ~ N(μ, s²) (everything is Gaussian)."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float):
        super().__init__()
        self.schedule, self.mu, self.s2 = schedule, mu, s * s

    def forward(self, x_t, t):
        ab = self.schedule.alphas_cumprod[t].view(-1, 1).double()
        return ((1 - ab).sqrt() * (x_t.double() - ab.sqrt() * self.mu) / (ab * self.s2 + 1 - ab)).float()


class PointOracle(nn.Module):
    """ε_θ(x_t, t) = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t) for one known x_0: a perfect predictor."""

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor):
        super().__init__()
        self.schedule, self.x0 = schedule, x0

    def forward(self, x_t, t):
        return self.schedule.predict_eps(x_t, t, self.x0.expand_as(x_t))


def ddpm(net, data_shape, T, variance="beta", nll_strata=None):
    model = DDPM(
        nn.Identity(),
        data_shape,
        T=T,
        beta_start=1e-3,
        beta_end=0.2,
        variance=variance,
        ema_decay=None,
        nll_strata=nll_strata,
        nll_chunk=4096,
    )
    model.net = net(model.schedule)
    return model


@pytest.mark.parametrize("variance,strata", [("beta", None), ("posterior", None), ("beta", 10)])
def test_vlb_of_perfect_predictor_on_1d_gaussian_is_analytic(variance, strata):
    """E[L_T + Σ L_{t−1} + L_0] for x_0 ~ N(μ, s²) and ε_θ = E[ε | x_t], in closed form.

    With x̂_0 = E[x_0 | x_t] the model mean misses μ̃_t by coef1_t (x_0 − x̂_0), whose mean square is
    Var(x_0 | x_t) = s² (1 − ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t); each KL is then ½[log σ²/β̃ + β̃/σ² − 1 + coef1² Var / σ²].
    The stratified estimate (10 strata for the 99 terms) has the same expectation.
    """
    mu, s_, T = 0.5, 0.3, 100
    model = ddpm(lambda sch: GaussianOracle(sch, mu, s_), [1], T, variance, nll_strata=strata)
    sch = model.schedule
    b = linear_betas(T, 1e-3, 0.2)
    ab = torch.cumprod(1 - b, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    post_var = b * (1 - ab_prev) / (1 - ab)
    var_x0 = s_**2 * (1 - ab) / (ab * s_**2 + 1 - ab)  # Var(x_0 | x_t)
    coef1 = b * ab_prev.sqrt() / (1 - ab)
    sigma2 = (b if variance == "beta" else post_var).clone()
    sigma2[0] = post_var[1]  # the decoder's scale at code t = 0 (Ho et al.'s code)
    prior = 0.5 * (
        ab[-1] * (mu**2 + s_**2) + (1 - ab[-1]) - math.log(1 - ab[-1]) - 1
    )  # E KL(q(x_T|x_0) || N(0,1))
    kls = 0.5 * (torch.log(sigma2 / post_var) + post_var / sigma2 - 1 + coef1**2 * var_x0 / sigma2)[1:]
    decoder = 0.5 * math.log(2 * math.pi * sigma2[0]) + var_x0[0] / (2 * sigma2[0])  # −E log N(x_0; x̂_0, σ²)
    analytic_nats = (prior + kls.sum() + decoder).item()

    g = torch.Generator().manual_seed(0)
    x0 = mu + s_ * torch.randn(4000, 1, generator=g)
    bpd = model.nll_bpd(x0, generator=g)
    assert bpd.shape == (4000,)
    assert bpd.mean().item() * math.log(2) == pytest.approx(analytic_nats, abs=0.02)
    # and it bounds the true negative log-likelihood E[−log N(x_0; μ, s²)] = ½ log(2πe s²)
    assert analytic_nats > 0.5 * math.log(2 * math.pi * math.e * s_**2)
    assert sch.T == T


def test_vlb_of_exact_predictor_on_8bit_images_is_analytic():
    """With ε_θ exact for a known x_0 only the variances mismatch: L_{t−1} = ½[log σ²/β̃ + β̃/σ² − 1],
    and L_0 is the discretised Gaussian (eq. 13) mass of x_0's bin around x_0 itself."""
    T = 50
    x0 = (torch.tensor([[[[0, 100], [255, 128]]]]) / 127.5 - 1.0).float()  # 8-bit levels, both edges
    model = ddpm(lambda sch: PointOracle(sch, x0), [1, 2, 2], T, "beta")
    b = linear_betas(T, 1e-3, 0.2)
    ab = torch.cumprod(1 - b, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    post_var = b * (1 - ab_prev) / (1 - ab)
    kl_per_dim = (0.5 * (torch.log(b / post_var) + post_var / b - 1))[1:].sum().item()
    sd0 = math.sqrt(post_var[1].item())
    h = 1 / 255 / sd0

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    decoder = -2 * math.log(phi(h)) - 2 * math.log(phi(h) - phi(-h))  # two edge pixels, two interior ones
    prior = sum(
        0.5 * (ab[-1].item() * v**2 + (1 - ab[-1].item()) - math.log(1 - ab[-1].item()) - 1)
        for v in x0.flatten().tolist()
    )
    analytic_bpd = (prior + 4 * kl_per_dim + decoder) / (4 * math.log(2))
    assert model.nll_bpd(x0).item() == pytest.approx(analytic_bpd, rel=1e-3)

    # Stratified (nll_strata): each term here is a function of t alone, so an estimate varies only with the
    # drawn timesteps; over 4,000 examples its mean is the sum (unbiased), one estimate is not.
    model.nll_strata = 8
    estimates = model.nll_bpd(x0.expand(4000, -1, -1, -1), generator=torch.Generator().manual_seed(0))
    assert estimates.std() > 0.01 * analytic_bpd  # the timesteps were drawn, not all taken
    assert estimates.mean().item() == pytest.approx(analytic_bpd, abs=4 * estimates.std().item() / math.sqrt(4000))
    assert estimates.mean().item() == pytest.approx(analytic_bpd, rel=5e-3)
    model.nll_strata = T - 1  # strata of one timestep each: the sum itself
    assert model.nll_bpd(x0).item() == pytest.approx(analytic_bpd, rel=1e-3)


@pytest.mark.parametrize("strata", [1, 7, 100, 1000])
def test_bound_timesteps_draw_one_t_per_stratum_with_the_strata_sizes_as_weights(strata):
    """Row 0 is L_0 (code t = 0, weight 1); the strata partition code t = 1 … T−1, so the weights sum to T,
    every drawn t lies in its own stratum, and the first, narrow strata are single exact timesteps."""
    sch = NoiseSchedule.linear(1000)
    t, w = sch.bound_timesteps(64, strata, torch.Generator().manual_seed(0))
    assert t.shape == (len(w), 64) and w.sum().item() == 1000
    assert (t[0] == 0).all() and w[0] == 1
    hi = 1 + w[1:].cumsum(0)  # each stratum [lo, hi)
    lo = hi - w[1:]
    assert ((t[1:] >= lo[:, None]) & (t[1:] < hi[:, None])).all()
    assert len(w) - 1 <= strata
    if strata == 100:
        assert len(w) == 76 and (w[1:11] == 1).all()  # 75 strata; t = 1 … 10 exactly
        assert t[-1].unique().numel() > 1  # the widest stratum, [871, 1000), draws per example


# --- the samplers, end to end, against the closed-form chain of Gaussian data ---------------------------
def _oracle_steps(timesteps: list[int], mu: float, s: float, sampler: str, eta: float = 0.0, variance: str = "beta"):
    """The sampler's steps x' = c x_t + d + σ z, as ``[(c, d, σ²)]`` from x_T down to x_0, under
    ε_θ = E[ε | x_t] for x_0 ~ N(μ, s²) on the paper's linear schedule: in float64, written from the
    papers' formulas without the library (every step is affine in x_t for Gaussian data)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)

    def eps_hat(x, A):  # E[ε | x_t]: x_t = √A x_0 + √(1 − A) ε, all Gaussian
        return math.sqrt(1 - A) * (x - math.sqrt(A) * mu) / (A * s * s + 1 - A)

    steps = []
    for i in reversed(range(len(timesteps))):
        t = timesteps[i]
        A = ab[t].item()
        if sampler == "ddpm":  # Algorithm 2, line 4, σ² = β (or β̃), z = 0 at the end; on strided timesteps
            # the respaced chain's β'_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}} (Nichol & Dhariwal §4), β_t itself for all T
            a_prev = ab[timesteps[i - 1]].item() if i > 0 else 1.0
            beta = 1 - A / a_prev
            sigma2 = 0.0 if i == 0 else beta if variance == "beta" else beta * (1 - a_prev) / (1 - A)
            f = lambda x, A=A, beta=beta: (x - beta / math.sqrt(1 - A) * eps_hat(x, A)) / math.sqrt(1 - beta)  # noqa: E731
        else:  # DDIM, Song et al. eq. 12 and 16, ᾱ_prev = 1 after the last step
            Ap = ab[timesteps[i - 1]].item() if i > 0 else 1.0
            sigma2 = eta**2 * (1 - Ap) / (1 - A) * (1 - A / Ap)

            def f(x, A=A, Ap=Ap, sigma2=sigma2):
                e = eps_hat(x, A)
                x0 = (x - math.sqrt(1 - A) * e) / math.sqrt(A)
                return math.sqrt(Ap) * x0 + math.sqrt(1 - Ap - sigma2) * e

        d = f(0.0)
        steps.append((f(1.0) - d, d, sigma2))
    return steps


def _oracle_ddpm(mu: float, s: float, variance: str = "beta") -> DDPM:
    model = DDPM(nn.Identity(), [1], T=1000, variance=variance, ema_decay=None)
    model.net = GaussianOracle(model.schedule, mu, s)
    return model


@pytest.mark.parametrize("steps, spacing", [(10, "linear"), (50, "linear"), (50, "quadratic"), (1000, "linear")])
def test_deterministic_ddim_is_the_closed_form_affine_map_of_x_T(steps, spacing):
    # With the Bayes-optimal ε of Gaussian data every DDIM (η = 0) step is affine, so the whole sampler is
    # x_0 = a x_T + b: each sample must land where the hand-derived chain sends its own x_T.
    mu, s = 0.3, 0.5
    model = _oracle_ddpm(mu, s)
    x0, chain = model.sample(64, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=steps,
                             spacing=spacing, return_trajectory=True)  # fmt: skip
    x, a = chain[0].double(), 1.0
    for c, d, _ in _oracle_steps(model.schedule.timesteps(steps, spacing).tolist(), mu, s, "ddim"):
        x, a = c * x + d, c * a
    torch.testing.assert_close(x0.double(), x, rtol=0, atol=2e-4)
    # the map contracts: with a finite number of steps DDIM (η = 0) returns a narrower Gaussian than the data
    assert 0.7 * s < a < s


@pytest.mark.parametrize("sampler, steps, eta, variance, std_ratio", [
    ("ddpm", 1000, 0.0, "beta", (0.99, 1.01)), ("ddpm", 1000, 0.0, "posterior", (0.99, 1.01)),
    ("ddpm", 100, 0.0, "beta", (1.01, 1.03)),  # σ² = β'_i > β̃'_i on long strides: wider than the data
    ("ddpm", 100, 0.0, "posterior", (0.9, 0.99)), ("ddim", 50, 1.0, "beta", (0.85, 0.92)),  # Var(x_0 | x_t) left out
])  # fmt: skip
def test_stochastic_samplers_are_the_closed_form_chain(sampler, steps, eta, variance, std_ratio):
    # Algorithm 2 (all T steps, or respaced) and DDIM with η = 1 under the Bayes-optimal ε: replaying the
    # generator's draws (x_T, then one z per step; Algorithm 2 draws none at its last step), every sample
    # is the hand-derived chain's. Its law N(m, v) from x_T ~ N(0, 1) is the data's for T steps; strides
    # widen or narrow it by the variance they choose.
    mu, s, n = 0.3, 0.5, 2_000
    model = _oracle_ddpm(mu, s, variance)
    x0 = model.sample(n, generator=torch.Generator().manual_seed(1), sampler=sampler, steps=steps, eta=eta).double()
    g = torch.Generator().manual_seed(1)
    x, m, v = torch.randn(n, 1, generator=g).double(), 0.0, 1.0
    for k, (c, d, sigma2) in enumerate(_oracle_steps(model.schedule.timesteps(steps).tolist(), mu, s, sampler, eta, variance)):
        last = k == steps - 1
        z = torch.randn(n, 1, generator=g).double() if (sampler == "ddim" or not last) else 0.0
        x, m, v = c * x + d + math.sqrt(sigma2) * z, c * m + d, c * c * v + sigma2
    torch.testing.assert_close(x0, x, rtol=0, atol=2e-4)
    assert abs(m - mu) < 0.01
    assert std_ratio[0] < math.sqrt(v) / s < std_ratio[1], math.sqrt(v) / s
