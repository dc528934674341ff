"""The sampler objects of models/samplers.py: closed-form Gaussian data, diffusers, the registry, errors.

For x_0 ~ N(μ, s²) the Bayes-optimal ε(x_t, t) = √(1 − ᾱ_t)(x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t) is
affine in x_t, so every deterministic sampler is an affine map x_0 = a x_T + b: two runs (x_T = 0
and 1, float64) give its law N(b, a²) from x_T ~ N(0, 1) exactly, without sampling noise. The exact
probability-flow ODE maps N(0, 1) at t = T − 1 to N(μ − s√ᾱ_T μ / √v_T, s² / v_T), v_T = ᾱ_T s² + 1 − ᾱ_T.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.ddpm import DDPM
from models.diffusion import SPACINGS, NoiseSchedule
from models.nets.time_mlp import TimeMLP
from models.samplers import SAMPLERS, Sampler, make_sampler, register_sampler

MU, S = 0.3, 0.5
SCHEDULE = NoiseSchedule.linear()  # Ho et al.: T = 1000, β from 1e-4 to 0.02
AB = SCHEDULE.alphas_cumprod.double()


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[ε | x_t] for x_0 ~ N(μ, s²), computed in float64."""
    a = AB[t].view(-1, *[1] * (x.ndim - 1))
    return ((1 - a).sqrt() * (x.double() - a.sqrt() * MU) / (a * S * S + 1 - a)).to(x.dtype)


def affine_map(name: str, steps: int, **options) -> tuple[float, float]:
    """(a, b) of the sampler's map x_0 = a x_T + b under the Gaussian ε."""
    x = make_sampler(name, **options).sample(
        gaussian_eps, SCHEDULE, torch.tensor([[0.0], [1.0]], dtype=torch.float64), steps
    )
    return (x[1] - x[0]).item(), x[0].item()


def exact_flow(to_t0_then_denoise: bool = False) -> tuple[float, float]:
    """(a, b) of the exact ODE from t = T − 1 to σ = 0; or to code t = 0 followed by x̂_0 = E[x_0 | x_0's
    noisy version at t = 0], the last step every sampler here shares (so only the ODE error is left)."""
    a_T, a_0 = AB[-1].item(), AB[0].item()
    v_T, v_0 = a_T * S * S + 1 - a_T, a_0 * S * S + 1 - a_0
    a, b = S / math.sqrt(v_T), MU - S * math.sqrt(a_T) * MU / math.sqrt(v_T)
    if not to_t0_then_denoise:
        return a, b
    # x at t = 0: √ᾱ_0 μ + √v_0 z with z = (x_T − √ᾱ_T μ) / √v_T; E[x_0 | x] = μ + √ᾱ_0 s² / v_0 (x − √ᾱ_0 μ)
    k = math.sqrt(a_0) * S * S / v_0
    return k * math.sqrt(v_0 / v_T), MU - k * math.sqrt(v_0) * math.sqrt(a_T) * MU / math.sqrt(v_T)


# --- closed form: Gaussian data -------------------------------------------------------------------
@pytest.mark.parametrize("name, spacing, steps, std_tol", [
    ("dpmpp_2m", "quadratic", 20, 0.03),  # std/s 1.0231 measured (1.0043 at 40 steps)
    ("dpmpp_2m", "karras", 40, 0.015),  # 1.0115
    ("dpmpp_2m", "linear", 80, 0.03),  # 1.0219: linear steps end with a long stride into t = 0
    ("heun", "linear", 20, 0.025),  # 1.0195 (39 NFE)
    ("heun", "karras", 40, 0.015),  # 1.0108 (79 NFE)
    ("heun", "quadratic", 20, 0.02),  # 1.0140
])  # fmt: skip
def test_ode_samplers_reproduce_gaussian_data(name, spacing, steps, std_tol):
    a, b = affine_map(name, steps, spacing=spacing)
    assert abs(b - MU) < 2e-3  # −0.96e-3 measured, as the exact flow's: x_T ~ N(0, 1), not N(√ᾱ_T μ, v_T)
    assert abs(b - exact_flow()[1]) < 3e-4
    assert abs(a / S - 1) < std_tol, a / S


@pytest.mark.parametrize("name, spacing, order", [
    ("dpmpp_2m", "quadratic", (1.8, 2.6)),  # log2 error ratios 2.37, 2.19 measured (20 → 40 → 80 steps)
    ("dpmpp_2m", "karras", (1.8, 2.6)),  # 2.16, 2.14
    ("heun", "linear", (1.8, 2.3)),  # 2.05, 2.02
    ("heun", "karras", (1.8, 2.4)),  # 2.16, 2.08
    ("ddim", "linear", (0.9, 1.1)),  # 0.99, 0.99: first order
])  # fmt: skip
def test_ode_error_shrinks_at_the_solvers_order(name, spacing, order):
    a_ref, b_ref = exact_flow(to_t0_then_denoise=True)
    errors = []
    for steps in (20, 40, 80):
        a, b = affine_map(name, steps, spacing=spacing)
        errors.append(abs(a - a_ref) + abs(b - b_ref))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(order[0] < r < order[1] for r in rates), (errors, rates)


def test_samplers_at_equal_budget_against_the_closed_form():
    """DPM-Solver++(2M) at 20 steps lands nearer the data's spread than DDIM at 20 steps (std/s 0.861)
    and, with quadratic steps, nearer than Algorithm 2 at 100 steps (1.01-1.03 with σ² = β, see
    tests/test_diffusion.py); with the default linear steps its last, long stride into t = 0 overshoots."""
    ratio = lambda name, spacing="linear", steps=20: affine_map(name, steps, spacing=spacing)[0] / S  # noqa: E731
    assert 0.85 < ratio("ddim") < 0.87  # 0.8609
    assert 1.02 < ratio("dpmpp_2m", "quadratic") < 1.025  # 1.0231
    assert 1.23 < ratio("dpmpp_2m") < 1.25  # 1.2411
    assert 1.015 < ratio("heun") < 1.025  # 1.0195 with 39 NFE


def test_nfe_counts_network_calls():
    for name in SAMPLERS:
        for steps in (1, 2, 7):
            calls = []

            def counting_eps(x, t, calls=calls):
                calls.append(t)
                return gaussian_eps(x, t)

            make_sampler(name).sample(counting_eps, SCHEDULE, torch.zeros(3, 1, dtype=torch.float64), steps)
            assert len(calls) == make_sampler(name).nfe(steps), name
    assert make_sampler("heun").nfe(10) == 19 and make_sampler("dpmpp_2m").nfe(10) == 10


def test_karras_timesteps_are_eq5_snapped_to_the_nearest_log_sigma():
    sigma = SCHEDULE.sqrt_recipm1_alphas_cumprod.double()
    lo, hi = sigma[0] ** (1 / 7), sigma[-1] ** (1 / 7)
    want = [int((sigma.log() - math.log((hi + i / 9 * (lo - hi)) ** 7)).abs().argmin()) for i in range(10)]
    assert (
        SCHEDULE.timesteps(10, "karras").tolist()
        == want[::-1]
        == [0, 18, 102, 301, 511, 663, 775, 864, 937, 999]
    )
    for T in (2, 7, 50, 1000):
        small = NoiseSchedule.linear(T=T)
        for steps in sorted({1, 2, T // 2 + 1, T}):
            tau = small.timesteps(steps, "karras")  # strictly increasing, T − 1 always, 0 when steps > 1
            assert (
                len(tau) == steps
                and tau[-1] == T - 1
                and (tau[1:] > tau[:-1]).all()
                and (steps == 1 or tau[0] == 0)
            )


# --- the DDPM delegates to the registry -------------------------------------------------------------
def test_ddpm_samples_with_every_registered_sampler():
    torch.manual_seed(0)
    model = DDPM(TimeMLP(2, 16, 1), [2], T=30, ema_decay=None)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    for name in ("dpmpp_2m", "heun"):
        x, chain = model.sample(5, generator=g(), sampler=name, steps=8, return_trajectory=True)
        assert chain.shape == (9, 5, 2) and torch.equal(chain[-1], x)
        assert torch.equal(
            chain[0], model.sample(5, generator=g(), sampler="ddim", return_trajectory=True)[1][0]
        )
        x_T = torch.randn(5, 2, generator=g())  # the model draws x_T first, as Algorithm 2 does
        with torch.no_grad():
            assert torch.equal(x, make_sampler(name).sample(model.net, model.schedule, x_T, 8))
        assert model.sample_kwargs_errors({"sampler": name, "steps": 8}) == []
    assert model.nfe(sampler="heun", steps=8) == 15 and model.nfe(sampler="dpmpp_2m", steps=8) == 8
    assert model.nfe(sampler="heun") == 59  # all T = 30 steps
    assert model.sample_kwargs_errors({"sampler": "euler", "steps": 0}) == [
        "eval.sample_kwargs.sampler='euler': must be one of ['ddpm', 'ddim', 'dpmpp_2m', 'sde_dpmpp_2m', 'heun']",
        "eval.sample_kwargs.steps=0: must be an integer in [1, T] = [1, 30]",
    ]
    assert DDPM.setting_errors({"sampler": "heun", "sample_spacing": "karras"}) == []


def test_a_new_sampler_is_one_class_and_one_registration():
    class Euler(Sampler):  # Euler's method in λ for x̂_0: the DDIM step, written from scratch
        name = "euler_test"

        def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None):
            tau = self.timesteps(schedule, steps)
            x = x_T
            for i in reversed(range(steps)):
                x = schedule.ddim_step(
                    eps_fn(x, torch.full((len(x),), tau[i])), tau[i], tau[i - 1] if i else -1, x
                )
                yield x

    register_sampler(Euler)
    try:
        model = DDPM(TimeMLP(2, 16, 1), [2], T=30, ema_decay=None)
        g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
        assert torch.equal(
            model.sample(4, g(), sampler="euler_test", steps=6), model.sample(4, g(), sampler="ddim", steps=6)
        )
        assert model.nfe(sampler="euler_test", steps=6) == 6
        with pytest.raises(ValueError, match="a sampler named 'ddim' is already registered"):
            register_sampler(type("Other", (Euler,), {"name": "ddim"}))
    finally:
        SAMPLERS.pop("euler_test")


# --- agreement with diffusers ---------------------------------------------------------------------------
class PerturbedOracle(nn.Module):
    """A nonlinear ε-network whose samples stay at data scale: the Gaussian ε plus a random-weight TimeMLP
    (a random network alone makes x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t of order 1/√ᾱ_T ≈ 150)."""

    def __init__(self):
        super().__init__()
        self.mlp = TimeMLP(2, 32, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gaussian_eps(x, t) + 0.3 * self.mlp(x, t)


@pytest.mark.parametrize(
    "steps, spacing", [(10, "linear"), (20, "linear"), (20, "quadratic"), (10, "karras")]
)
def test_dpmpp_2m_matches_diffusers_dpmsolver_multistep(steps, spacing):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = DDPM(PerturbedOracle(), [2], T=1000, ema_decay=None)
    x = model.sample(
        64, generator=torch.Generator().manual_seed(1), sampler="dpmpp_2m", steps=steps, spacing=spacing
    )
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=model.schedule.betas.tolist(), prediction_type="epsilon",
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
    )  # fmt: skip
    scheduler.set_timesteps(timesteps=model.schedule.timesteps(steps, spacing).flip(0).tolist())
    ref = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))  # the same x_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            ref = scheduler.step(model.net(ref, t.expand(64)), t, ref).prev_sample
    assert 0.5 < x.abs().max() < 5  # samples of data scale, where 1e-4 is a strict bound
    # 1e-6 to 2.2e-6 measured: diffusers' coefficients are float32, these float64
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps, spacing", [(20, "linear"), (10, "karras")])
def test_sde_dpmpp_2m_matches_diffusers_sde_dpmsolver_multistep(steps, spacing):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = DDPM(PerturbedOracle(), [2], T=1000, ema_decay=None)
    g = torch.Generator().manual_seed(1)
    x = model.sample(64, generator=g, sampler="sde_dpmpp_2m", steps=steps, spacing=spacing)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=model.schedule.betas.tolist(), prediction_type="epsilon",
        algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
    )  # fmt: skip
    scheduler.set_timesteps(timesteps=model.schedule.timesteps(steps, spacing).flip(0).tolist())
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(64, 2, generator=g)  # the same x_T, then the same z per step from the same generator
    with torch.no_grad():
        for t in scheduler.timesteps:
            ref = scheduler.step(model.net(ref, t.expand(64)), t, ref, generator=g).prev_sample
    assert 0.5 < x.abs().max() < 5
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-4)
    ode = model.sample(64, generator=torch.Generator().manual_seed(1), sampler="dpmpp_2m", steps=steps, spacing=spacing)
    assert (x - ode).abs().max() > 0.1  # the noise is really injected: not the ODE's samples


def test_sde_dpmpp_2m_reproduces_gaussian_data():
    """Under the Bayes-optimal ε the reverse SDE's samples follow N(μ, s²): their mean and std, 20,000
    samples at 50 steps, within a few standard errors (std. error of the mean s/√n = 0.0035)."""
    x = make_sampler("sde_dpmpp_2m", spacing="quadratic").sample(
        gaussian_eps, SCHEDULE, torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        50, generator=torch.Generator().manual_seed(1),
    )
    assert abs(x.mean().item() - MU) < 0.015 and abs(x.std().item() / S - 1) < 0.03


# --- bad options: one clear error each ------------------------------------------------------------
BAD_VALUES = {"spacing": ("cubic", f"must be one of {list(SPACINGS)}"), "eta": (-0.5, "must be a number >= 0"),
              "variance": ("learned", "must be one of ['beta', 'posterior']")}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_sampler_options_give_one_clear_error(name):
    cls = SAMPLERS[name]
    assert make_sampler(name).options == cls.defaults and "spacing" in cls.defaults
    for key in cls.defaults:
        value, allowed = BAD_VALUES[key]
        with pytest.raises(ValueError) as err:
            make_sampler(name, **{key: value})
        assert str(err.value) == f"{key}={value!r}: {allowed}"
    with pytest.raises(ValueError, match=rf"{name} sampler: \['rho'\] are not its options; allowed: "):
        make_sampler(name, rho=7)
    with pytest.raises(ValueError, match=r"steps=0: must be an integer in \[1, T\] = \[1, 1000\]"):
        make_sampler(name).sample(gaussian_eps, SCHEDULE, torch.zeros(2, 1), 0)
    with pytest.raises(
        ValueError, match=r"sampler='euler': must be one of \['ddpm', 'ddim', 'dpmpp_2m', 'sde_dpmpp_2m', 'heun'\]"
    ):
        make_sampler("euler")
