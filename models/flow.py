"""Flow matching (Lipman et al. 2023) on the linear path, rectified flow (Liu et al. 2023), as a genbench family.

The path from data to noise is x_t = (1 − t) x_0 + t ε, t ∈ [0, 1], ε ~ N(0, I): Lipman et al.'s optimal-transport
path (eq. 22, σ_min = 0) and Liu et al.'s straight interpolation, with the data at t = 0 as in Esser et al. 2024
(SD3, §2). Its conditional velocity is dx_t/dt = ε − x_0, and training regresses a network on it, the
conditional flow-matching loss (Lipman et al. eq. 23, time reversed):

    L_CFM = E_{t, x_0, ε} ‖v_θ(x_t, t) − (ε − x_0)‖²,

whose minimiser is the marginal field v*(x, t) = E[ε − x_0 | x_t = x] = (x − E[x_0 | x_t = x]) / t. Sampling
integrates dx/dt = v_θ(x, t) from x_1 ~ N(0, I) at t = 1 to t = 0; the likelihood integrates the same ODE
from the data to the noise with the instantaneous change of variables (Chen et al. 2018, Theorem 1).
The networks are the DDPM's (a UNet for images, a time MLP for points), fed t · ``time_scale``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerStatus
from rich.progress import track
from torch import Tensor, nn

from genbench.checks import is_int
from genbench.schema import setting
from models.base import FamilyConfig, GenerativeModule, eval_mode, no_grad
from models.ddpm import DDPM
from models.distributions import LOG_2PI, nats_to_bits_per_dim
from models.ema import EMA
from models.registry import FigureRows, other_families_options

#: The sampling options of :meth:`FlowMatching.sample` an evaluation may set (``eval.sample_kwargs``).
SAMPLE_KWARGS = ("solver", "steps")
SOLVERS = ("euler", "midpoint", "heun")
NLL_SOLVERS = ("rk4", "heun")
DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
T_SAMPLINGS = ("uniform", "logit_normal")

VelocityFn = Callable[[Tensor, float], Tensor]


@dataclass
class FlowConfig(FamilyConfig):
    """The flow's settings (``model.*``); the velocity network comes from the ``net`` group."""

    t_sampling: str = setting("uniform", choices=T_SAMPLINGS, doc="training times: uniform on [0, 1], or logit_normal, "
                                                                  "t = sigmoid(m + s n), n ~ N(0, 1) (Esser et al. 2024, §3.1)")
    logit_mean: float = setting(0.0, doc="m of the logit-normal times (SD3: 0)")
    logit_std: float = setting(1.0, gt=0, doc="s of the logit-normal times (SD3: 1)")
    time_scale: float = setting(1000.0, gt=0, doc="the network sees t · time_scale: the DDPM's sinusoidal embedding "
                                                  "is made for timesteps 0…999")
    dequantize: bool = setting(True, doc="images: train on uniformly dequantised 8-bit data, (k + u)/256 mapped to "
                                         "[-1, 1], the density nll_bpd evaluates (no effect on points)")
    ema_decay: float | None = setting(0.9999, ge=0, lt=1, null="no EMA", doc="EMA of the weights, used to sample and "
                                                                            "for the likelihood (as the DDPM's)")
    ema_warmup_steps: int = setting(10, ge=0, doc="ramps the decay as min(decay, (1+k)/(ema_warmup_steps+k))")
    solver: str = setting("euler", choices=SOLVERS, doc="the default ODE solver of model.sample(): euler (steps NFE), "
                                                        "midpoint (2 steps) or heun (2 steps − 1)")
    sample_steps: int = setting(50, ge=1, doc="steps of the default solver, equal in t from 1 to 0")
    nll_solver: str = setting("rk4", choices=NLL_SOLVERS, doc="fixed-step integrator of the likelihood ODE: rk4 (4 NFE "
                                                              "a step) or heun (2)")
    nll_steps: int = setting(16, ge=1, doc="steps of the likelihood ODE from t = 0 to 1")
    nll_time_power: float = setting(3.0, ge=1, doc="times of the likelihood ODE t_i = (i / nll_steps)^p: p > 1 puts more "
                                                   "steps near the data, where the field is stiffest")
    nll_divergence: str = setting("auto", choices=DIVERGENCES, doc="div v_θ: exact (one backward pass per dimension), "
                                                                   "hutchinson (one per probe), auto: exact for points")
    hutchinson_probe: str = setting("rademacher", choices=PROBES, doc="probe of Hutchinson's estimator, drawn once "
                                                                      "per integration (FFJORD)")
    lr: float = setting(1e-3, gt=0, doc="Adam's learning rate after the warm-up")
    lr_warmup_steps: int = setting(100, ge=0, doc="linear warm-up of the learning rate")
    lr_decay: str = setting("none", choices=("none", "cosine"), doc="after the warm-up: none, or cosine to 0 at the end")
    grad_clip: float | None = setting(1.0, ge=0, doc="gradient-norm clip unless trainer.gradient_clip_val is set; "
                                                     "null or 0 disables it")


# --- the ODE: pure functions of a velocity field v(x, t) ------------------------------------------
def interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 − t) x_0 + t ε (Lipman et al. 2023, eq. 22 with σ_min = 0, time reversed), ``t`` ``[B]``."""
    t = t.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * eps


def solver_nfe(solver: str, steps: int) -> int:
    """Network evaluations of ``steps`` steps of ``solver``."""
    return {"euler": steps, "midpoint": 2 * steps, "heun": 2 * steps - 1}[solver]


def integrate(v: VelocityFn, x: Tensor, steps: int, solver: str = "euler",
              t_start: float = 1.0, t_end: float = 0.0) -> Iterator[Tensor]:  # fmt: skip
    """Solve dx/dt = v(x, t) from ``t_start`` to ``t_end`` in ``steps`` equal steps; yield x after each.

    Euler (first order), the explicit midpoint rule and Heun's method (second order, Süli & Mayers 2003,
    §12). Heun's last step is an Euler step, as in EDM's Algorithm 1 (Karras et al. 2022): towards the
    data, v*(x, t) = (x − E[x_0 | x_t = x]) / t is singular at t = 0 away from the data, so its correction
    there is skipped (NFE 2 · steps − 1; still second order: one local error of O(h²)).
    """
    h = (t_end - t_start) / steps
    for i in range(steps):
        t = t_start + i * h
        k1 = v(x, t)
        if solver == "euler":
            x = x + h * k1
        elif solver == "midpoint":
            x = x + h * v(x + 0.5 * h * k1, t + 0.5 * h)
        elif solver == "heun":
            x_euler = x + h * k1
            x = x_euler if i == steps - 1 else x + 0.5 * h * (k1 + v(x_euler, t + h))
        else:
            raise ValueError(f"solver={solver!r}: must be one of {list(SOLVERS)}")
        yield x


def divergence(v: VelocityFn, x: Tensor, t: float, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """v(x, t) and its divergence tr(∂v/∂x) per example: exact (one backward pass per dimension) when
    ``probe`` is None, else Hutchinson's estimate εᵀ (∂v/∂x) ε with the probe ε (FFJORD, Grathwohl et al. 2019, §3.1)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = v(x, t)
        if probe is not None:
            (vjp,) = torch.autograd.grad(out, x, probe)  # εᵀ J
            div = (vjp * probe).flatten(1).sum(1)
        else:
            flat, d = out.flatten(1), out[0].numel()
            div = sum(torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < d - 1)[0].flatten(1)[:, i]
                      for i in range(d))  # fmt: skip
    return out.detach(), div.detach()


def log_likelihood(v: VelocityFn, x0: Tensor, steps: int, solver: str = "rk4", probe: Tensor | None = None,
                   power: float = 1.0) -> Tensor:  # fmt: skip
    """log p_0(x_0) in nats per example by the instantaneous change of variables (Chen et al. 2018, Theorem 1):

        d log p(x_t) / dt = −tr(∂v/∂x)  ⇒  log p_0(x_0) = log N(x_1; 0, I) + ∫_0^1 tr(∂v/∂x)(x_t, t) dt,

    the augmented state (x_t, ∫ div) integrated from t = 0 to 1 with ``steps`` classical RK4 or Heun steps on
    the times t_i = (i / steps)^power: a power > 1 puts more of them near the data, where the field of
    concentrated data is stiffest (v* = (x − E[x_0 | x_t = x]) / t). Bias: the fixed-step solver's error, O(h⁴)
    (RK4) or O(h²) (Heun) in both x_1 and the integral; with a ``probe`` (Hutchinson) the estimate of the
    integral is unbiased for the discretised path, its variance set by the probe.
    """
    def f(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        vel, div = divergence(v, x, t, probe)
        return vel, div.double()

    x, integral = x0, torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    times = [(i / steps) ** power for i in range(steps + 1)]
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        h = t_next - t
        k1, d1 = f(x, t)
        if solver == "rk4":  # Runge–Kutta 4: (k1 + 2 k2 + 2 k3 + k4) / 6
            k2, d2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3, d3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4, d4 = f(x + h * k3, t_next)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        elif solver == "heun":
            k2, d2 = f(x + h * k1, t_next)
            x, integral = x + h / 2 * (k1 + k2), integral + h / 2 * (d1 + d2)
        else:
            raise ValueError(f"nll_solver={solver!r}: must be one of {list(NLL_SOLVERS)}")
    x1 = x.flatten(1).double()
    log_prior = -0.5 * (LOG_2PI * x1.shape[1] + (x1**2).sum(1))  # log N(x_1; 0, I)
    return log_prior + integral


class FlowMatching(GenerativeModule):
    """Args:
    net: v_θ(x_t, t · time_scale), called as ``net(x_t, t)`` with float times ``[B]``
        (:class:`models.nets.unet.UNet` for images, :class:`models.nets.time_mlp.TimeMLP` for points).
    data_shape: shape of one sample.
    optimizer: a ``_partial_`` torch.optim factory (Adam by default).

    The settings and their defaults are :class:`FlowConfig`'s; the optimiser, its warm-up and decay,
    gradient clipping and the EMA are the DDPM's.
    """

    family = "flow"
    config_type = FlowConfig
    compiled_networks = ("net",)
    divergence_hint = "Try a lower model.lr, a longer model.lr_warmup_steps or model.grad_clip=1.0"

    def __init__(self, net: nn.Module, data_shape: Sequence[int], optimizer: Any = None, **settings: Any):
        hp = self.settings(settings)
        super().__init__(data_shape=data_shape, lr=hp.lr, optimizer=optimizer, compile=hp.compile)
        self.net = net
        self.hp = hp
        self.ema = EMA(net, hp.ema_decay, hp.ema_warmup_steps) if hp.ema_decay is not None else None
        self.lr_warmup_steps, self.lr_decay = int(hp.lr_warmup_steps), hp.lr_decay
        self.grad_clip = float(hp.grad_clip) if hp.grad_clip else None

    @property
    def eval_net(self) -> nn.Module:
        """The network that samples and is evaluated: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def velocity(self, net: nn.Module) -> VelocityFn:
        """v(x, t) = net(x, t · time_scale) for one time t shared by the batch."""
        return lambda x, t: net(x, torch.full((x.shape[0],), t * self.hp.time_scale, device=x.device))

    # --- training: conditional flow matching ------------------------------------------------------
    def sample_t(self, n: int, device: torch.device) -> Tensor:
        """t ~ U(0, 1), or logit-normal: t = σ(m + s n), n ~ N(0, 1) (Esser et al. 2024, §3.1)."""
        if self.hp.t_sampling == "logit_normal":
            return torch.sigmoid(self.hp.logit_mean + self.hp.logit_std * torch.randn(n, device=device))
        return torch.rand(n, device=device)

    def dequantize(self, x: Tensor) -> Tensor:
        """Images k/127.5 − 1 → (k + u)/256 mapped to [-1, 1], u ~ U(0, 1)ᴰ: uniform dequantisation (Theis et al.
        2016), so the flow models a density on the 8-bit bins; points unchanged."""
        if self.data_range is None:
            return x
        k = ((x + 1) * 127.5).round().clamp(0, 255)
        return (k + torch.rand_like(x)) / 128 - 1

    def flow_loss(self, x0: Tensor, net: nn.Module | None = None) -> Tensor:
        """L_CFM = E ‖v_θ(x_t, t) − (ε − x_0)‖² (Lipman et al. 2023, eq. 23), averaged over dims."""
        net = self.net if net is None else net
        if self.hp.dequantize:
            x0 = self.dequantize(x0)
        t = self.sample_t(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        x_t = interpolate(x0, eps, t)
        return F.mse_loss(net(x_t, t * self.hp.time_scale), eps - x0)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.flow_loss(self.batch_images(batch))
        self.log_train({"train/loss": loss}, prog_bar={"train/loss"})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self.validation_rng(batch_idx):
            self.log("val/loss", self.flow_loss(self.batch_images(batch), self.eval_net))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # here, as the DDPM's: before ModelCheckpoint saves the step
            self.ema.update(self.net)

    # The DDPM's optimiser (warm-up, then constant or cosine) and gradient clip, read from the same attributes.
    configure_optimizers = DDPM.configure_optimizers
    configure_gradient_clipping = DDPM.configure_gradient_clipping

    # --- sampling -------------------------------------------------------------------------------------
    def resolve_sampling(self, solver: str | None = None, steps: int | None = None) -> tuple[str, int]:
        """The solver and number of steps :meth:`sample` will use; one ``ValueError`` listing every problem."""
        solver = self.hp.solver if solver is None else solver
        steps = self.hp.sample_steps if steps is None else steps
        errors = [] if solver in SOLVERS else [f"solver={solver!r}: must be one of {list(SOLVERS)}"]
        errors += [] if is_int(steps, 1) else [f"steps={steps!r}: must be an integer >= 1"]
        if errors:
            raise ValueError("; ".join(errors))
        return solver, int(steps)

    def nfe(self, solver: str | None = None, steps: int | None = None, **_: Any) -> int:
        """Network evaluations per sample: Euler ``steps``, midpoint 2 · steps, Heun 2 · steps − 1."""
        return solver_nfe(*self.resolve_sampling(solver, steps))

    def sample_kwargs_errors(self, sample_kwargs: dict[str, Any], option: str = "eval.sample_kwargs") -> list[str]:
        """Problems with ``sample(**sample_kwargs)``: bad solver or steps, and options no family has.

        The other families' options (the DDPM's ``sampler``, ``eta``, ...) are ignored, so one
        ``eval.sample_kwargs`` serves a sweep over families (``experiment=lecture_2d`` sets ``sampler: ddpm``)."""
        given = {k: v for k, v in sample_kwargs.items() if v is not None}
        unknown = sorted(set(given) - set(SAMPLE_KWARGS) - other_families_options("flow"))
        if unknown:
            return [f"{option}: {unknown} are options of no family's sample(); the flow's: {list(SAMPLE_KWARGS)}"]
        try:
            self.resolve_sampling(given.get("solver"), given.get("steps"))
        except ValueError as e:
            return [f"{option}.{message}" for message in str(e).split("; ")]
        return []

    @no_grad
    def sample(
        self, n: int, generator: torch.Generator | None = None, steps: int | None = None, solver: str | None = None,
        return_trajectory: bool = False, progress: bool | None = None, use_ema: bool = True, **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:  # fmt: skip
        """Draw ``n`` samples: x_1 ~ N(0, I), then dx/dt = v_θ(x, t) from t = 1 to t = 0.

        Args:
            n: number of samples.
            generator: makes the draw reproducible (may live on another device than the model).
            steps: solver steps, equal in t; ``None``: ``sample_steps``.
            solver: ``euler``, ``midpoint`` or ``heun`` (:func:`integrate`); ``None``: ``model.solver``.
            return_trajectory: also return x_1, …, x_0 as ``[steps + 1, n, *data_shape]``.
            progress: show a progress bar; ``None`` shows one on a terminal outside training.
            use_ema: sample with the EMA weights (the default) when the model keeps them.
            **kwargs: the other families' sampling options (``sampler``, ``eta``, ...), ignored.

        Returns:
            ``[n, *data_shape]`` in the data range (images clipped to [-1, 1]), and the trajectory if asked for.
        """
        unknown = sorted(set(kwargs) - other_families_options("flow"))
        if unknown:
            raise TypeError(f"FlowMatching.sample got unexpected arguments {unknown}")
        solver, steps = self.resolve_sampling(solver, steps)
        if progress is None:
            in_fit = self._trainer is not None and self._trainer.state.status == TrainerStatus.RUNNING
            progress = sys.stderr.isatty() and not in_fit
        x = self.randn(n, *self.data_shape, generator=generator)  # x_1 ~ N(0, I)
        trajectory = [x] if return_trajectory else None
        net = self.eval_net if use_ema else self.net
        with eval_mode(net):
            chain = integrate(self.velocity(net), x, steps, solver)
            if progress:  # rich's track starts (and joins) a refresh thread even when disabled: ~0.5 ms a call
                chain = track(chain, total=steps, description=f"{solver} sampling")
            for x in chain:
                if trajectory is not None:
                    trajectory.append(x)
        x = self.to_data_range(x)
        return (x, torch.stack(trajectory)) if return_trajectory else x

    # --- the likelihood ------------------------------------------------------------------------------
    @torch.no_grad()
    def nll_bpd(self, x0: Tensor, generator: torch.Generator | None = None, use_ema: bool = True) -> Tensor:
        """−log p(x_0) in bits/dim by the ODE (:func:`log_likelihood`), one value per example.

        Images: x = k/127.5 − 1 is dequantised to y = (k + u)/256 mapped to [-1, 1] (one u ~ U(0, 1)ᴰ per
        call), and P(k) = ∫_bin p(y) dy ≥ (2/256)ᴰ exp E_u[log p(y)] (Jensen), so
        −log₂ P(k)/D ≤ −log₂ p(y)/D − log₂(2/256) = −log₂ p(y)/D + 7: a bound on the 8-bit data's bits/dim, the
        same quantity as the VAE's and the DDPM's discretised bounds. Points: the density itself, whose
        −log₂ p/D bounds the differential entropy as the DDPM's does there. Divergence: ``nll_divergence``
        (``auto``: exact for points, Hutchinson with one ``hutchinson_probe`` per example for images).
        """
        if not x0.is_floating_point():
            raise TypeError(f"nll_bpd expects float data in the data range (images in [-1, 1]), got {x0.dtype} tensor")
        x0 = x0.to(self.device)
        log_volume = 0.0
        if self.data_range is not None:
            k = ((x0 + 1) * 127.5).round().clamp(0, 255)
            x0 = (k + self._rand(x0.shape, generator)) / 128 - 1
            log_volume = self.num_dims * math.log(2 / 256)  # log of a bin's volume in [-1, 1]ᴰ
        method = self.hp.nll_divergence
        exact = method == "exact" or (method == "auto" and self.data_range is None)
        probe = None if exact else self._probe(x0.shape, generator)
        net = self.eval_net if use_ema else self.net
        with eval_mode(net):
            log_p = log_likelihood(self.velocity(net), x0, self.hp.nll_steps, self.hp.nll_solver, probe, self.hp.nll_time_power)
        return nats_to_bits_per_dim(-(log_p + log_volume), self.num_dims)

    def _rand(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else self.device
        return torch.rand(*shape, generator=generator, device=device).to(self.device)

    def _probe(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        """Hutchinson's probe: Rademacher ±1 (the lower-variance choice, Hutchinson 1990) or N(0, I)."""
        if self.hp.hutchinson_probe == "gaussian":
            return self.randn(*shape, generator=generator)
        return torch.where(self._rand(shape, generator) < 0.5, -1.0, 1.0)


# --- the report's figures --------------------------------------------------------------------------
def flow_figures(flow: FlowMatching, real: Tensor, g: torch.Generator, sample_kwargs: dict[str, Any]) -> list[FigureRows]:
    """The probability path x_t = (1 − t) x_0 + t ε on validation images, and the ODE x_1 → x_0 of sampling."""
    ts = torch.linspace(0, 1, 9)
    x0, noise = real[:4], torch.randn(real[:4].shape, generator=g)
    frames = [interpolate(x0[i].expand(len(ts), *x0.shape[1:]), noise[i].expand(len(ts), *x0.shape[1:]), ts)
              for i in range(len(x0))]  # fmt: skip
    times = ", ".join(f"{t:.3g}" for t in ts.tolist())
    path = FigureRows("flow_path", "The probability path", f"x_t = (1 − t) x_0 + t ε on validation digits, t = {times}.",
                      [(f"digit {i + 1}", f.clamp(-1, 1)) for i, f in enumerate(frames)])
    _, chain = flow.sample(4, generator=torch.Generator().manual_seed(int(g.initial_seed())), return_trajectory=True,
                           **sample_kwargs)  # [steps + 1, n, C, H, W], x_1 first
    idx = torch.linspace(0, len(chain) - 1, 10).round().long()
    solver, steps = flow.resolve_sampling(sample_kwargs.get("solver"), sample_kwargs.get("steps"))
    caption = f"dx/dt = v_θ(x, t) from x_1 ~ N(0, I) at t = 1 to x_0 at t = 0 ({solver}, {steps} steps)."
    trajectory = FigureRows("flow_trajectory", "The flow's sampling ODE", caption,
                            [(f"path {i + 1}", chain[idx, i].clamp(-1, 1)) for i in range(chain.shape[1])])
    return [path, trajectory]
