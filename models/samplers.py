"""Samplers of the reverse process for an ε-prediction network, one object per method.

A sampler turns x_T ~ N(0, I) into x_0 with a network ``eps_fn(x_t, t) -> ε`` (0-indexed long
timesteps ``[B]``) and a :class:`~models.diffusion.NoiseSchedule`; it knows nothing of the model
that owns the network, so any family with that parametrisation can use it. Adding one is one
class and one :func:`register_sampler`:

    @register_sampler
    class Euler(Sampler):
        name = "euler"
        def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None): ...

Every sampler runs on the timesteps τ_1 < … < τ_S of ``schedule.timesteps(steps, spacing)``
(both ends included, so the chain starts at T − 1 and its last network call is at code t = 0)
and ends on the clean data (ᾱ = 1, σ = 0). Notation of the ODE solvers: α_t = √ᾱ_t,
σ_t = √(1 − ᾱ_t) (DPM-Solver's VP form), λ_t = log(α_t / σ_t); EDM's noise level is
σ_t / α_t = √((1 − ᾱ_t) / ᾱ_t).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from genbench.checks import is_int, is_number
from models.diffusion import SPACINGS, VARIANCES, NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]

#: Every option a sampler may declare: its check (``True`` when the value is allowed) and what is allowed.
OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "spacing": (lambda v: v in SPACINGS, f"must be one of {list(SPACINGS)}"),
    "eta": (lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
    "variance": (lambda v: v in VARIANCES, f"must be one of {list(VARIANCES)}"),
}


def option_errors(options: dict[str, Any]) -> list[str]:
    """Problems with sampler options, one message each naming the option, the value and what is allowed."""
    return [f"{k}={v!r}: {OPTION_CHECKS[k][1]}" for k, v in options.items() if not OPTION_CHECKS[k][0](v)]


def steps_errors(steps: Any, T: int) -> list[str]:
    if is_int(steps, 1) and steps <= T:
        return []
    return [f"steps={steps!r}: must be an integer in [1, T] = [1, {T}]"]


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) shaped like ``x``, drawn where the generator lives (as GenerativeModule.randn does)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(*x.shape, generator=generator, device=device).to(x.device, x.dtype)


class Sampler:
    """A reverse-process sampler: its options (declared in ``defaults``), NFE and steps.

    Args:
        **options: the sampler's options (``defaults`` lists them with their defaults); an
            unknown or bad one raises a ``ValueError`` naming each problem.
    """

    name: ClassVar[str]
    #: The sampler's options and their defaults; every key is one of :data:`OPTION_CHECKS`.
    defaults: ClassVar[dict[str, Any]] = {"spacing": "linear"}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name} sampler: {unknown} are not its options; allowed: {list(self.defaults)}"
            )
        self.options = {**self.defaults, **options}
        errors = option_errors(self.options)
        if errors:
            raise ValueError("; ".join(errors))
        for key, value in self.options.items():
            setattr(self, key, value)

    def nfe(self, steps: int) -> int:
        """Network evaluations per sample for a chain of ``steps`` steps (one per step by default)."""
        return steps

    def timesteps(self, schedule: NoiseSchedule, steps: int) -> list[int]:
        """τ_1 < … < τ_S, 0-indexed (see :meth:`NoiseSchedule.timesteps`)."""
        errors = steps_errors(steps, schedule.T)
        if errors:
            raise ValueError(errors[0])
        return list(schedule.memo(("timesteps", steps, self.spacing),
                                  lambda: tuple(schedule.timesteps(steps, self.spacing).tolist())))  # fmt: skip

    def iterate(
        self, eps_fn: EpsFn, schedule: NoiseSchedule, x_T: Tensor, steps: int,
        generator: torch.Generator | None = None, clip: tuple[float, float] | None = None,
    ) -> Iterator[Tensor]:  # fmt: skip
        """Yield the state after each of the ``steps`` steps; the last one is x_0.

        Args:
            eps_fn: ε_θ(x_t, t) with 0-indexed long timesteps ``[B]``.
            schedule: the schedule the network was trained with.
            x_T: the starting noise, N(0, I).
            steps: number of steps S in [1, T].
            generator: the noise of stochastic samplers, drawn one ``randn`` per noisy step.
            clip: optional data range for the predicted x̂_0.
        """
        raise NotImplementedError

    def sample(
        self, eps_fn: EpsFn, schedule: NoiseSchedule, x_T: Tensor, steps: int,
        generator: torch.Generator | None = None, clip: tuple[float, float] | None = None,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:  # fmt: skip
        """x_0 from x_T (arguments as :meth:`iterate`); with ``return_trajectory`` also x_T, …, x_0 stacked."""
        trajectory, x = [x_T], x_T
        for x in self.iterate(eps_fn, schedule, x_T, steps, generator, clip):
            if return_trajectory:
                trajectory.append(x)
        return (x, torch.stack(trajectory)) if return_trajectory else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


#: Samplers by name; :func:`register_sampler` adds one.
SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Register a :class:`Sampler` subclass under its ``name`` (usable as a class decorator)."""
    if cls.name in SAMPLERS and SAMPLERS[cls.name] is not cls:
        raise ValueError(f"a sampler named {cls.name!r} is already registered: {SAMPLERS[cls.name].__name__}")
    unknown = sorted(set(cls.defaults) - set(OPTION_CHECKS))
    if unknown:
        raise ValueError(f"{cls.__name__}: options {unknown} have no check in OPTION_CHECKS")
    SAMPLERS[cls.name] = cls
    return cls


def sampler_name_errors(name: Any) -> list[str]:
    return [] if name in SAMPLERS else [f"sampler={name!r}: must be one of {list(SAMPLERS)}"]


def make_sampler(name: str, **options: Any) -> Sampler:
    """The registered sampler ``name`` with ``options`` (its defaults for the rest)."""
    errors = sampler_name_errors(name)
    if errors:
        raise ValueError(errors[0])
    return SAMPLERS[name](**options)


def _timestep(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)


# --- Ho et al. 2020 and Song et al. 2021 ------------------------------------------------------------
@register_sampler
class DDPMSampler(Sampler):
    """Algorithm 2 of Ho et al. 2020, σ_t² = β_t or β̃_t (``variance``); with fewer than T steps on
    the respaced schedule β'_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}} (Nichol & Dhariwal 2021, §4)."""

    name = "ddpm"
    defaults = {"spacing": "linear", "variance": "beta"}

    def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None):
        timesteps = self.timesteps(schedule, steps)
        respaced = schedule if steps == schedule.T else schedule.respaced(torch.tensor(timesteps))
        x = x_T
        for i in reversed(range(steps)):
            eps = eps_fn(x, _timestep(timesteps[i], x))  # the network sees the original τ_i
            z = _randn_like(x, generator) if i > 0 else torch.zeros_like(x)  # line 3: z = 0 at the end
            x = respaced.p_sample(eps, i, x, z, self.variance, clip)  # line 4 (eq. 11)
            yield x


@register_sampler
class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, eq. 12 and 16): deterministic at η = 0; one z per step when η > 0."""

    name = "ddim"
    defaults = {"spacing": "linear", "eta": 0.0}

    def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None):
        timesteps = self.timesteps(schedule, steps)
        coefficients = schedule.memo(("ddim", tuple(timesteps), self.eta, x_T.dtype),
                                     lambda: ddim_coefficients(schedule, timesteps, self.eta, x_T.dtype))  # fmt: skip
        x = x_T
        for i in reversed(range(steps)):
            eps = eps_fn(x, _timestep(timesteps[i], x))
            z = _randn_like(x, generator) if self.eta > 0 else None
            # NoiseSchedule.ddim_step from t = τ_i to τ_{i−1} (−1: ᾱ = 1, the clean data), on the same
            # values in the same order, so the samples are bitwise those of ddim_step
            c_x, c_eps, c_x0, c_dir, sigma = coefficients[i]
            scaled = c_x * x
            x0 = scaled - c_eps * eps  # x̂_0 (eq. 4 solved for x_0)
            if clip is not None:
                x0 = x0.clamp(*clip)
                eps = (scaled - x0) / c_eps  # ε of the clipped x̂_0
            x = c_x0 * x0 + c_dir * eps  # eq. 12
            if self.eta > 0:
                x = x + sigma * z
            yield x


def ddim_coefficients(schedule: NoiseSchedule, timesteps: list[int], eta: float, dtype: torch.dtype) -> tuple[tuple[float, ...], ...]:
    """Per step i (from τ_i to τ_{i−1}, τ_{−1} = −1): 1/√ᾱ_t, √(1/ᾱ_t − 1), √ᾱ_prev, √(1 − ᾱ_prev − σ²), σ.

    Computed once per chain, for all steps together, as :meth:`NoiseSchedule.ddim_step` computes them
    (float32 buffers cast to ``dtype``, eq. 16 in ``dtype``), and read as Python numbers: the loop then
    pays only the image-sized operations, not ~20 small tensor ops per step (a product with a Python
    number equals the product with the same value in a tensor, bit for bit).
    """
    def at(buffer: Tensor, t: Tensor) -> Tensor:
        return buffer[t].to(dtype)

    device = schedule.alphas_cumprod.device
    t = torch.tensor(timesteps, device=device, dtype=torch.long)
    t_prev = torch.tensor([-1, *timesteps[:-1]], device=device, dtype=torch.long)
    a_t = at(schedule.alphas_cumprod, t)
    ones = torch.ones_like(schedule.alphas_cumprod[:1])
    a_prev = torch.where(t_prev >= 0, schedule.alphas_cumprod[t_prev.clamp(min=0)], ones).to(dtype)  # ᾱ_{−1} := 1
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()  # eq. 16
    rows = [at(schedule.sqrt_recip_alphas_cumprod, t), at(schedule.sqrt_recipm1_alphas_cumprod, t),
            a_prev.sqrt(), (1 - a_prev - sigma**2).clamp(min=0).sqrt(), sigma]  # fmt: skip
    return tuple(map(tuple, torch.stack(rows, 1).tolist()))


# --- ODE solvers ------------------------------------------------------------------------------------
def _alpha_sigma(schedule: NoiseSchedule, timesteps: list[int]) -> dict[int, tuple[float, float]]:
    """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) in float64 for each of ``timesteps`` and t = −1, the clean data (1, 0)."""

    def compute() -> dict[int, tuple[float, float]]:
        a = schedule.alphas_cumprod[torch.tensor(timesteps, device=schedule.alphas_cumprod.device)].double().tolist()
        return {-1: (1.0, 0.0), **{t: (math.sqrt(a_t), math.sqrt(1.0 - a_t)) for t, a_t in zip(timesteps, a, strict=True)}}

    return schedule.memo(("alpha_sigma", tuple(timesteps)), compute)


@register_sampler
class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++", Algorithm 2 (multistep, second order,
    data prediction x_θ = x̂_0), on the DDPM's discrete ᾱ with λ_t = log(α_t / σ_t).

    It runs on the timesteps of ``spacing`` (those DDIM uses, so both cost the same NFE) and then
    to σ = 0. The first step has no history and the last one lands on σ = 0, where λ = ∞ and the
    second-order correction is undefined; both are first order (the DDIM step), and the last one
    returns x̂_0 at code t = 0. This equals diffusers' ``DPMSolverMultistepScheduler(
    algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", prediction_type="epsilon",
    final_sigmas_type="zero")`` with ``set_timesteps(timesteps=τ_S, …, τ_1)`` (its own
    ``timestep_spacing`` options never include t = 0 and T − 1 both, so the grid is passed in).
    """

    name = "dpmpp_2m"
    #: whether each step draws z ~ N(0, I) (the SDE form)
    stochastic: ClassVar[bool] = False

    def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None):
        timesteps = self.timesteps(schedule, steps)
        alpha_sigma = _alpha_sigma(schedule, timesteps)
        x, x0_prev, h_prev = x_T, None, None
        for i in reversed(range(steps)):
            t, t_next = timesteps[i], (timesteps[i - 1] if i > 0 else -1)
            alpha_s, sigma_s = alpha_sigma[t]
            alpha_t, sigma_t = alpha_sigma[t_next]
            eps = eps_fn(x, _timestep(t, x))
            x0 = (x - sigma_s * eps) / alpha_s  # data prediction x_θ(x_s, s) (eq. 4 solved for x_0)
            if clip is not None:
                x0 = x0.clamp(*clip)
            z = _randn_like(x, generator) if self.stochastic else None
            if t_next < 0:
                x = x0  # first order to σ = 0: σ_t / σ_s = 0, e^{−h} = 0
            else:
                h = math.log(alpha_t / sigma_t) - math.log(alpha_s / sigma_s)  # h_i = λ_{t_i} − λ_{t_{i−1}}
                if x0_prev is None:
                    d = x0  # first step: DPM-Solver++(1) = DDIM
                else:
                    r = h_prev / h  # r_i = h_{i−1} / h_i
                    d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev  # D_i (Algorithm 2, line 5)
                x = self.step(x, d, h, alpha_t, sigma_t / sigma_s, sigma_t, z)
                h_prev = h
            x0_prev = x0
            yield x

    def step(self, x: Tensor, d: Tensor, h: float, alpha_t: float, sigma_ratio: float, sigma_t: float,
             z: Tensor | None) -> Tensor:  # fmt: skip
        """x_t from x_s and D_i (``sigma_ratio`` = σ_t / σ_s): Algorithm 2, line 6."""
        return sigma_ratio * x - alpha_t * math.expm1(-h) * d


@register_sampler
class SDEDPMSolverPP2M(DPMSolverPP2M):
    """SDE-DPM-Solver++(2M): DPM-Solver++(2M)'s data prediction and multistep correction (Lu et al. 2022)
    applied to the reverse SDE instead of the probability-flow ODE (diffusers' ``sde-dpmsolver++``,
    k-diffusion's ``dpmpp_2m_sde``), on the same timesteps and with the same D_i. Each step solves the
    SDE's linear part exactly in λ and adds fresh noise:

        x_t = (σ_t / σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) D_i + σ_t √(1 − e^{−2h}) z,   z ~ N(0, I).

    The noise re-injected at every step corrects the errors of an imperfect ε-network, as Algorithm 2's
    does, which the deterministic ODE cannot. The last step lands on σ = 0 and returns x̂_0. One ``randn``
    is drawn per step, the last one included (scaled by σ = 0), as diffusers'
    ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` draws it, which this equals sample
    by sample for the same generator (tests/test_samplers.py).
    """

    name = "sde_dpmpp_2m"
    stochastic = True

    def step(self, x, d, h, alpha_t, sigma_ratio, sigma_t, z):
        decay = math.exp(-2 * h)  # e^{−2h}
        return (sigma_ratio * math.exp(-h)) * x + alpha_t * (1 - decay) * d + sigma_t * math.sqrt(1 - decay) * z


@register_sampler
class EDMHeun(Sampler):
    """Heun's second-order method of EDM (Karras et al. 2022, Algorithm 1, deterministic, S_churn = 0)
    in the σ parametrisation σ_t = √((1 − ᾱ_t) / ᾱ_t), x = x_t / √ᾱ_t, where the ODE is
    dx/dσ = (x − D(x; σ)) / σ (eq. 3 with s = 1) and the denoiser is D(x; σ) = x − σ ε_θ(x √ᾱ_t, t).

    The σ_i are the noise levels σ_{τ_i} of the ``spacing`` timesteps and then σ = 0: with
    ``spacing="karras"`` EDM's eq. 5 (ρ = 7), each σ snapped to the timestep with the nearest log σ
    (:meth:`NoiseSchedule.timesteps`). Snapping the σ itself, not only the t fed to the network,
    keeps the step's σ and the network's noise level equal; genbench's networks take integer t and
    were trained on those T noise levels only (EDM rounds σ the same way for discrete models).
    Every step costs two network calls except the last, an Euler step to σ = 0: NFE = 2S − 1.
    States are yielded in the VP form x_t = x √ᾱ_t, as the other samplers'.
    """

    name = "heun"

    def nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def iterate(self, eps_fn, schedule, x_T, steps, generator=None, clip=None):
        timesteps = self.timesteps(schedule, steps)

        def d_of(x: Tensor, t: int, sigma: float) -> Tensor:
            """(x − D(x; σ)) / σ: with D from ε (eq. 4), this is ε_θ itself unless x̂_0 is clipped."""
            eps = eps_fn(x / math.sqrt(1 + sigma * sigma), _timestep(t, x))  # x_t = √ᾱ_t x
            if clip is None:
                return eps
            return (x - (x - sigma * eps).clamp(*clip)) / sigma

        sigma_of = lambda t: float(schedule.sqrt_recipm1_alphas_cumprod[t].double()) if t >= 0 else 0.0  # noqa: E731
        # line 2: x = x_T / √ᾱ_T, of variance 1 + σ_max² ≈ σ_max²
        x = x_T * math.sqrt(1 + sigma_of(timesteps[-1]) ** 2)
        for i in reversed(range(steps)):
            t, t_next = timesteps[i], (timesteps[i - 1] if i > 0 else -1)
            sigma, sigma_next = sigma_of(t), sigma_of(t_next)
            d = d_of(x, t, sigma)  # line 4: d_i = (x_i − D(x_i; σ_i)) / σ_i
            x_next = x + (sigma_next - sigma) * d  # line 5: Euler step
            if sigma_next > 0:  # lines 6-8: second-order correction, skipped on the step to σ = 0
                d_next = d_of(x_next, t_next, sigma_next)
                x_next = x + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)
            x = x_next
            yield x / math.sqrt(1 + sigma_next * sigma_next)
