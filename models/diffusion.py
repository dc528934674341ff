"""The diffusion process of DDPM (Ho et al. 2020), written to be read next to the paper.

Forward process, a fixed Markov chain that adds Gaussian noise with variances β_1 … β_T:

    q(x_t | x_{t−1}) = N(x_t; √(1 − β_t) x_{t−1}, β_t I)                      (eq. 2)
    q(x_t | x_0)     = N(x_t; √ᾱ_t x_0, (1 − ᾱ_t) I),  α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s   (eq. 4)

Reverse process p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I) with the ε-parametrisation

    μ_θ(x_t, t) = (x_t − β_t / √(1 − ᾱ_t) · ε_θ(x_t, t)) / √α_t               (eq. 11)

and σ_t² = β_t or β̃_t (the posterior variance, eq. 7); both are "fixed" choices of §3.2.

**Timesteps are 0-indexed in code**: code ``t`` ∈ {0, …, T−1} is the paper's t + 1, so
``betas[0]`` is β_1, ``alphas_cumprod[t]`` is ᾱ_{t+1}, ``q_sample(x0, t=0)`` draws x_1 and
``p_sample(…, t=0)`` returns x_0 (the last step of Algorithm 2, without noise).

The β schedules themselves (linear, cosine) are in :mod:`models.schedules`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from genbench.checks import is_int
from models.distributions import LOG_2PI, discretized_gaussian_log_likelihood, gaussian_kl
from models.schedules import cosine_betas, linear_betas, schedule_errors

VARIANCES = ("beta", "posterior")
#: How the timesteps of a shorter sampling chain are picked: linear or quadratic in t (Song et al.
#: 2021, App. D.2), or uniform in σ^{1/ρ} (Karras et al. 2022, eq. 5), see NoiseSchedule.timesteps.
SPACINGS = ("linear", "quadratic", "karras")
#: ρ of the ``karras`` spacing (Karras et al. 2022, eq. 5 and Table 1).
KARRAS_RHO = 7.0


class NoiseSchedule(nn.Module):
    """A fixed variance schedule β_1 … β_T and every quantity derived from it.

    All coefficients are computed in float64 and stored as float32 buffers, so they move with
    ``.to(device)`` and are saved in checkpoints. Methods take a batch of 0-indexed timesteps
    ``t`` (long tensor ``[B]``, or an int) and broadcast the coefficients over ``x``'s other dims.

    Args:
        betas: ``[T]`` variances, each in (0, 1). Use :meth:`linear` or :meth:`cosine` to build one.

    Attributes:
        T: number of diffusion steps.
        betas, alphas, alphas_cumprod: β_t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, each ``[T]``.
        alphas_cumprod_prev: ᾱ_{t−1}, with ᾱ_0 = 1 for code t = 0.
        posterior_variance: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (eq. 7); 0 at code t = 0.
    """

    def __init__(self, betas: Tensor | Sequence[float]):
        super().__init__()
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a 1-D sequence of length T >= 1, got shape {tuple(betas.shape)}")
        if not ((betas > 0) & (betas < 1)).all():
            raise ValueError(
                f"betas must lie in the open interval (0, 1); got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.T = len(betas)
        self._betas64 = betas  # kept in float64 (not a buffer) to respace exactly
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)  # ᾱ_t (eq. 4)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (eq. 6-7)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃ is 0 at code t = 0 (x_0 is known); its log is clipped to β̃ at code t = 1 there, as in
        # Ho et al.'s code, so the decoder's L_0 has a finite scale.
        first = posterior_variance[1] if self.T > 1 else betas[0]
        posterior_log_variance_clipped = torch.log(torch.cat([first.view(1), posterior_variance[1:]]))
        # σ_t² = β_t ("fixed large"), with the same scale for the decoder at code t = 0.
        beta_log_variance = torch.log(torch.cat([first.view(1), betas[1:]]))
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "sqrt_recip_alphas": (1.0 / alphas).sqrt(),
            # (1 − α_t) / √(1 − ᾱ_t): ε's coefficient in Algorithm 2, line 4 (eq. 11)
            "eps_coef": betas / (1.0 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "beta_log_variance": beta_log_variance,
            # μ̃_t(x_t, x_0) = coef1 · x_0 + coef2 · x_t (eq. 7)
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32))

    # --- what sampling chains derive from the schedule ---------------------------------------
    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per ``key`` for as long as the buffers are the same tensors with the
        same values (ᾱ stands for them all: they are made, moved and loaded together). The memo holds ᾱ by a
        weak reference, so a tensor that merely reuses a freed ᾱ's memory is not taken for it.

        A chain's timesteps and per-step coefficients depend only on its settings, so every ``sample()``
        call with the same settings reuses them: computing them took 0.6 ms of small tensor operations per
        call, 9 % of a one-step DDIM call at batch 1 (docs/performance.md). ``.to()``, ``.double()`` and
        ``load_state_dict`` give ᾱ new storage or a new version, and the memo starts afresh.
        """
        a = self.alphas_cumprod
        stamped = self.__dict__.get("_memo")  # (a weak reference to ᾱ, its version, the values)
        if stamped is None or stamped[0]() is not a or stamped[1] != a._version:
            stamped = self.__dict__["_memo"] = (weakref.ref(a), a._version, {})
        values = stamped[2]
        if key not in values:
            values[key] = compute()
        return values[key]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the memo (it holds a weak reference; a copy computes its own)."""
        state = self.__dict__.copy()
        state.pop("_memo", None)
        return state

    # --- constructors ---------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """β_t linear from 1e-4 to 0.02 over T = 1000 steps: Ho et al. 2020 §4."""
        return cls(linear_betas(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> NoiseSchedule:
        """The cosine schedule of Nichol & Dhariwal 2021, eq. 17."""
        return cls(cosine_betas(T, s))

    @classmethod
    def from_config(
        cls,
        schedule: str = "linear",
        T: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        s: float = 0.008,
    ) -> NoiseSchedule:
        """Build a schedule by name (``linear`` or ``cosine``), raising one error that lists every problem."""
        errors = schedule_errors(schedule, T, beta_start, beta_end, s)
        if errors:
            raise ValueError("; ".join(errors))
        if schedule == "linear":
            return cls.linear(T, beta_start, beta_end)
        return cls.cosine(T, s)

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _gather(coef: Tensor, t: Tensor | int, x: Tensor) -> Tensor:
        """``coef[t]`` shaped ``[B, 1, …, 1]`` to broadcast against ``x`` of shape ``[B, …]``."""
        t = torch.as_tensor(t, device=coef.device, dtype=torch.long)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return coef[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def _check_timesteps(self, t: Tensor | int) -> None:
        t = torch.as_tensor(t)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(
                f"timesteps must lie in [0, T-1] = [0, {self.T - 1}] (0-indexed), got {t.min()}..{t.max()}"
            )

    def model_log_variance(self, variance: str) -> Tensor:
        """log σ_t² of p_θ(x_{t−1} | x_t): ``beta`` (σ² = β_t) or ``posterior`` (σ² = β̃_t), ``[T]``."""
        if variance == "beta":
            return self.beta_log_variance
        if variance == "posterior":
            return self.posterior_log_variance_clipped
        raise ValueError(f"variance={variance!r}: must be one of {list(VARIANCES)}")

    # --- forward process ------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) in closed form: √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4).

        Args:
            x0: clean data ``[B, …]``.
            t: 0-indexed timesteps ``[B]`` (code t is the paper's t + 1).
            noise: ε ~ N(0, I), same shape as ``x0``.
        """
        return (
            self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (eq. 6-7).

        μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
        β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t. Returns ``(mean, variance)``, the variance
        shaped ``[B, 1, …]`` to broadcast.
        """
        mean = (
            self._gather(self.posterior_mean_coef1, t, x_t) * x0
            + self._gather(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, self._gather(self.posterior_variance, t, x_t)

    def predict_x0(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t: eq. 4 solved for x_0."""
        return (
            self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps(self, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
        """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t): eq. 4 solved for ε."""
        return (self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # --- reverse process ------------------------------------------------------------------------
    def p_mean(
        self, eps: Tensor, t: Tensor | int, x_t: Tensor, clip: tuple[float, float] | None = None
    ) -> Tensor:
        """μ_θ(x_t, t) = (x_t − β_t / √(1 − ᾱ_t) · ε_θ) / √α_t (eq. 11).

        With ``clip = (lo, hi)`` the prediction x̂_0 is clipped to the data range first and
        μ_θ = μ̃_t(x_t, x̂_0) (eq. 7); without clipping the two forms are identical.
        """
        if clip is not None:
            x0 = self.predict_x0(x_t, t, eps).clamp(*clip)
            return self.q_posterior(x0, x_t, t)[0]
        return self._gather(self.sqrt_recip_alphas, t, x_t) * (
            x_t - self._gather(self.eps_coef, t, x_t) * eps
        )

    def p_sample(
        self,
        eps: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        noise: Tensor,
        variance: str = "beta",
        clip: tuple[float, float] | None = None,
    ) -> Tensor:
        """One step of Algorithm 2, line 4:

            x_{t−1} = (x_t − (1 − α_t) / √(1 − ᾱ_t) · ε_θ(x_t, t)) / √α_t + σ_t z,

        with σ_t² = β_t (``variance="beta"``) or β̃_t (``"posterior"``), and z = 0 at the last
        step (code t = 0, the paper's t = 1; line 3).

        Args:
            eps: the network's prediction ε_θ(x_t, t).
            t: 0-indexed timesteps ``[B]`` or an int.
            x_t: the current state.
            noise: z ~ N(0, I), same shape as ``x_t`` (ignored where t = 0).
            variance: ``beta`` or ``posterior``.
            clip: optional data range for x̂_0 (see :meth:`p_mean`).
        """
        mean = self.p_mean(eps, t, x_t, clip)
        log_var = self._gather(self.model_log_variance(variance), t, x_t)
        t = torch.as_tensor(t, device=x_t.device)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))  # line 3: z = 0 if t = 1
        return mean + nonzero * torch.exp(0.5 * log_var) * noise

    def ddim_step(
        self,
        eps: Tensor,
        t: Tensor | int,
        t_prev: Tensor | int,
        x_t: Tensor,
        eta: float = 0.0,
        noise: Tensor | None = None,
        clip: tuple[float, float] | None = None,
    ) -> Tensor:
        """One DDIM step from ``t`` to ``t_prev < t`` (Song et al. 2021, eq. 12):

            x_{t_prev} = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ²) · ε_θ + σ z,
            σ = η √((1 − ᾱ_prev) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_prev)        (eq. 16)

        η = 0 is deterministic; η = 1 with ``t_prev = t − 1`` is DDPM with σ_t² = β̃_t.
        ``t_prev = −1`` means the end of the chain (ᾱ_prev = 1, returns x̂_0).

        Args:
            eps: ε_θ(x_t, t).
            t, t_prev: 0-indexed timesteps (tensors ``[B]`` or ints), ``t_prev`` in [−1, t).
            x_t: the current state.
            eta: η ≥ 0, the amount of noise.
            noise: z ~ N(0, I); required when ``eta > 0``.
            clip: optional data range for x̂_0 (ε is then recomputed from the clipped x̂_0).
        """
        if eta < 0:
            raise ValueError(f"eta={eta!r}: must be >= 0")
        if eta > 0 and noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        x0 = self.predict_x0(x_t, t, eps)
        if clip is not None:
            x0 = x0.clamp(*clip)
            eps = self.predict_eps(x_t, t, x0)
        a_t = self._gather(self.alphas_cumprod, t, x_t)
        t_prev = torch.as_tensor(t_prev, device=x_t.device, dtype=torch.long)
        if t_prev.ndim == 0:
            t_prev = t_prev.expand(x_t.shape[0])
        ones = torch.ones_like(self.alphas_cumprod[:1])
        a_prev = torch.where(t_prev >= 0, self.alphas_cumprod[t_prev.clamp(min=0)], ones)  # ᾱ_{-1} := 1
        a_prev = a_prev.to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()  # eq. 16
        x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps  # eq. 12
        if eta > 0:
            x_prev = x_prev + sigma * noise
        return x_prev

    def timesteps(self, steps: int | None = None, spacing: str = "linear") -> Tensor:
        """A subsequence τ of ``steps`` 0-indexed timesteps, ascending, for DDIM / respaced sampling.

        Every spacing includes both ends, so the first step starts from pure noise at T − 1 and
        the last one lands on code t = 0; ``steps = T`` (or ``None``) gives every timestep.

        - ``linear``: spread evenly over [0, T − 1], τ_i = round((T − 1) · i / (S − 1)).
        - ``quadratic``: τ_i = round((T − 1) · (i / (S − 1))²), denser at low noise. Song et al. 2021,
          App. D.2, pick τ_i = ⌊c i²⌋ for CIFAR-10 (Table 1) and linear steps for the other data sets.
        - ``karras``: the noise levels σ_t = √((1 − ᾱ_t) / ᾱ_t) evenly spaced in σ^{1/ρ}, ρ = 7, from
          σ_max = σ_{T−1} down to σ_min = σ_0 (Karras et al. 2022, eq. 5), each snapped to the timestep
          with the nearest log σ_t: a network trained on T discrete timesteps has seen only those
          noise levels (Karras et al. round σ the same way for their discrete-time models, App. C.3).

        Where rounding repeats a timestep at the low end, it is moved up by one
        (τ_i = max_{j ≤ i} (τ_j + i − j)), so the chain never repeats a step.
        """
        steps = self.T if steps is None else steps
        if not (is_int(steps, 1) and steps <= self.T):
            raise ValueError(f"steps={steps!r}: must be an integer in [1, T] = [1, {self.T}]")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing={spacing!r}: must be one of {list(SPACINGS)}")
        if steps == 1:
            return torch.tensor([self.T - 1], dtype=torch.long)
        u = torch.linspace(0, 1, steps, dtype=torch.float64)
        i = torch.arange(steps)
        if spacing == "karras":
            alphas_cumprod = torch.cumprod(1.0 - self._betas64, 0)
            log_sigma = 0.5 * torch.log((1.0 - alphas_cumprod) / alphas_cumprod)  # increasing in t
            lo, hi = log_sigma[[0, -1]].div(KARRAS_RHO).exp()  # σ_min^{1/ρ}, σ_max^{1/ρ}
            log_target = KARRAS_RHO * torch.log(lo + u * (hi - lo))  # eq. 5
            above = torch.searchsorted(log_sigma, log_target).clamp(1, self.T - 1)
            nearer_below = (log_target - log_sigma[above - 1]) < (log_sigma[above] - log_target)
            tau = torch.where(nearer_below, above - 1, above)
            tau = torch.minimum(torch.maximum(tau, i), self.T - steps + i)  # leaves room for S distinct steps
        else:
            tau = ((self.T - 1) * (u if spacing == "linear" else u.square())).round().long()
        return torch.cummax(tau - i, dim=0).values + i  # strictly increasing (a no-op for linear spacing)

    def respaced(self, timesteps: Tensor) -> NoiseSchedule:
        """The schedule of the sub-chain through ``timesteps`` (Nichol & Dhariwal 2021, §4):
        β'_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}}, so ᾱ'_i = ᾱ_{τ_i}. DDPM sampling with fewer steps runs
        Algorithm 2 on this schedule and feeds the network the original timesteps τ_i.
        """
        alphas_cumprod = torch.cumprod(1.0 - self._betas64, 0)[timesteps.cpu()]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        return NoiseSchedule(1.0 - alphas_cumprod / prev).to(self.betas.device)

    # --- the variational bound (eq. 5) ------------------------------------------------------------
    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)), elementwise, in nats (eq. 5)."""
        t = torch.full((x0.shape[0],), self.T - 1, device=x0.device, dtype=torch.long)
        mean = self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
        logvar = torch.log(self._gather(1.0 - self.alphas_cumprod, t, x0)).expand_as(x0)
        return gaussian_kl(mean, logvar, 0.0, 0.0)

    def bound_timesteps(
        self, batch: int, strata: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The rows of the bound's sum Σ_{t=2}^{T} L_{t−1} + L_0 (eq. 5): code timesteps ``[R, batch]``
        and their weights ``[R]``, so that Σ_r w_r L(t_r) estimates the sum for every example.

        ``strata: null`` (or ≥ T − 1): every term once, R = T, weights 1 — the sum itself. Otherwise
        stratified sampling: L_0 (code t = 0) exactly, and code t = 1 … T−1 cut into at most ``strata``
        log-spaced strata [e_j, e_{j+1}) (e_j = round(T^{j/strata}); strata narrower than a step merge,
        so the first ones hold a single, exact term); in each, one t ~ Uniform per example, its term
        weighted by the stratum's size. Every term is then counted with probability × weight = 1, so
        the estimate is unbiased, and log spacing puts the draws where the terms are large and
        change fast (they fall off about as 1/t).
        """
        device = self.betas.device
        if strata is None or strata >= self.T - 1:
            ts = torch.arange(self.T, device=device)
            return ts[:, None].expand(self.T, batch), torch.ones(self.T, device=device)
        edges = torch.logspace(0, math.log10(self.T), strata + 1, dtype=torch.float64).round().long().unique()
        lo, size = edges[:-1], edges.diff()
        u = torch.rand(len(lo), batch, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else device).cpu()  # fmt: skip
        t = lo[:, None] + (u * size[:, None]).long().clamp(max=size[:, None] - 1)  # uniform in each stratum
        t = torch.cat([torch.zeros(1, batch, dtype=torch.long), t])  # code t = 0: L_0, exact
        return t.to(device), torch.cat([torch.ones(1, dtype=torch.long), size]).to(device, torch.get_default_dtype())

    def vb_terms(
        self, eps: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, variance: str = "beta", discrete: bool = True
    ) -> Tensor:
        """The terms L_{t−1} of the bound (eq. 5), elementwise, in nats, at 0-indexed ``t``:

        - code t ≥ 1: L_{t−1} = KL(q(x_{t−1} | x_t, x_0) || p_θ(x_{t−1} | x_t)), two Gaussians;
        - code t = 0: L_0 = −log p_θ(x_0 | x_1), the discretised Gaussian decoder of §3.3
          (eq. 13) for 8-bit data in [−1, 1], or a Gaussian density when ``discrete=False``.

        The model's mean is eq. 11 (no clipping: the bound is of the model as defined).
        """
        true_mean, _ = self.q_posterior(x0, x_t, t)
        true_logvar = self._gather(self.posterior_log_variance_clipped, t, x_t)
        model_mean = self.p_mean(eps, t, x_t)
        model_logvar = self._gather(self.model_log_variance(variance), t, x_t)
        kl = gaussian_kl(true_mean, true_logvar.expand_as(x0), model_mean, model_logvar.expand_as(x0))
        # L_0 only on the rows at code t = 0: the tail-exact discretised decoder costs about nine times
        # the KL per element, and the bound's chunks hold one such row per example in T.
        rows = (t == 0).nonzero().squeeze(1)
        if len(rows) == 0:
            return kl
        x0, mean = x0[rows], model_mean[rows]
        log_scale = (0.5 * model_logvar[rows]).expand_as(x0)
        if discrete:
            decoder_nll = -discretized_gaussian_log_likelihood(x0, mean, log_scale)  # eq. 13
        else:
            decoder_nll = 0.5 * (LOG_2PI + 2 * log_scale + ((x0 - mean) * torch.exp(-log_scale)) ** 2)
        return kl.index_copy(0, rows, decoder_nll)

    def extra_repr(self) -> str:
        return f"T={self.T}"
