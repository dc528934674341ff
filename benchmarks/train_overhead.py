"""Training-loop overhead: genbench's LightningModule under ``Trainer`` against a bare PyTorch loop.

For each family (GAN, VAE, DDPM on mnist5k, default networks) both loops get the same initial
weights, the same uint8 data tensors (gathered by index, mapped to [-1, 1] after the transfer),
the same optimizer settings, batch size and per-step extras (DDPM: gradient clipping, LR
warm-up, EMA; GAN: generator EMA). The bare loop is what one would write by hand: the same
maths in plain PyTorch, no hooks, no logging. The genbench side is ``genbench-train``'s Trainer
config with its genbench callbacks (``TrainStats``, ``RNGState``), minus what is not the
training loop: no validation, no checkpoints, no progress bar, no logger.

Only the steady state is timed: the clock starts at the end of the warm-up steps and stops
at the end of the last step (device synchronised), inside the same process, the two loops
interleaved. On the CPU the ratio is taken over this process's CPU time, which
other jobs on a shared machine do not inflate; the wall-clock ratio is recorded next to it.
Target: genbench ≥ 0.97× the bare loop's images/s, on mnist5k with the default networks. Two more
loops split the gap into Lightning's share and genbench's own: the bare step inside the same
``Trainer`` with manual optimisation (:class:`LightningFloor`, the GAN's mode) and, for the VAE and
DDPM, with Lightning's automatic optimisation (:class:`LightningAutoFloor`, their mode).

The same loops also run on a 2-D data set (``--toy-data``, rings by default, batch 256), where a bare
step takes 1–3 ms on the CPU, so Lightning's fixed cost per step (its hooks, the optimisation
closure, ``self.log``) is a visible share of it. They are recorded next to the mnist5k numbers, not
hidden by them.

Also measured: Adam's implementations (for-loop / foreach / fused) on each family's parameters,
genbench's EMA update against a bare ``torch._foreach_lerp_``, and, with CUDA only, bf16-mixed, channels_last,
``model.compile=true`` and fused AdamW, each on/off.

    python benchmarks/train_overhead.py --quick
    python benchmarks/train_overhead.py --families ddpm --batch-size 128 --steps 20
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch import Tensor  # noqa: E402

from benchmarks import common  # noqa: E402

FAMILIES = ("gan", "vae", "ddpm")
TARGET = 0.97
TOY_BATCH = 256  # the 2-D data sets' configured batch size


def overrides(family: str, batch_size: int, device: torch.device, extra: list[str] = ()) -> list[str]:
    """The run's config: mnist5k, default network of the family, the benchmark's batch size."""
    trainer = ["trainer=gpu", "trainer.precision=32-true"] if device.type == "cuda" else []
    return ["data=mnist5k", f"data.batch_size={batch_size}", "eval.final=false", *trainer, *extra]


def to_unit(x: Tensor) -> Tensor:
    """uint8 → [-1, 1], as genbench's data modules do after the transfer."""
    return x.float().div_(127.5).sub_(1.0)


# --- genbench: the LightningModule under Trainer ------------------------------------------------
class StepClock(L.Callback):
    """Times steps ``warmup`` … ``warmup + steps − 1``: from the end of the last warm-up batch to the
    end of the last batch, so every timed step includes the loop's work between batches."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.batches, self.images = 0, 0
        self.start = self.end = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        return common.clock(self.device), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = self._now()
        elif self.batches > self.warmup:
            self.images += len(batch[0])
            if self.batches == self.warmup + self.steps:
                self.end = self._now()
                trainer.should_stop = True  # manual optimisation without Lightning optimizers never counts steps

    @property
    def images_per_s(self) -> dict[str, float]:
        """Over the wall clock and over this process's CPU time."""
        return {"wall": self.images / (self.end[0] - self.start[0]), "cpu": self.images / (self.end[1] - self.start[1])}


class GenbenchLoop:
    """``trainer.fit`` of ``model`` for ``warmup + steps`` steps with genbench's Trainer config, data module
    and (``genbench_callbacks``) its callbacks; returns the timed images/s (``{"wall": …, "cpu": …}``)."""

    def __init__(self, model: L.LightningModule, dm: L.LightningDataModule, cfg: Any, device: torch.device,
                 trainer_kwargs: dict[str, Any] | None = None, genbench_callbacks: bool = True):  # fmt: skip
        self.model, self.dm, self.cfg, self.device = model, dm, cfg, device
        self.trainer_kwargs = trainer_kwargs or {}
        self.genbench_callbacks = genbench_callbacks

    def __call__(self, steps: int, warmup: int) -> dict[str, float]:
        from genbench.callbacks import RNGState, TrainStats

        clock = StepClock(warmup, steps, self.device)
        callbacks = [TrainStats(), RNGState(), clock] if self.genbench_callbacks else [clock]
        trainer = instantiate(
            self.cfg.trainer, max_steps=warmup + steps, logger=False, callbacks=callbacks,
            enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0, default_root_dir=self.cfg.run_dir,
            **self.trainer_kwargs,
        )  # fmt: skip
        trainer.fit(self.model, datamodule=self.dm)
        return clock.images_per_s


class LightningFloor(L.LightningModule):
    """The bare step inside Lightning's ``Trainer``: what Lightning's loop costs before genbench adds anything.

    Manual optimisation, so the bare step keeps its own ``zero_grad`` / ``backward`` / ``step`` (and its
    EMA, clipping, warm-up); the batches come from the same genbench data module, mapped to [-1, 1] by its
    ``on_after_batch_transfer``. Lightning counts no steps without its optimizers: :class:`StepClock` stops the fit.
    """

    def __init__(self, step: Callable[[Tensor], None], nets: list[torch.nn.Module]):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)  # registered, so the Trainer moves them to the device
        self.step = step
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch[0])

    def configure_optimizers(self) -> None:
        return None  # the bare step owns its optimizers


class LightningAutoFloor(L.LightningModule):
    """The bare step's pieces (:class:`BareParts`) under Lightning's automatic optimisation: the loss from
    ``training_step``, Lightning's closure does ``zero_grad`` / ``backward`` / ``step``, the clipping in
    ``configure_gradient_clipping`` and the rest after the step. What genbench's one-optimizer families
    (VAE, DDPM) cost before genbench adds anything: genbench's module over this floor is genbench's own share.
    """

    def __init__(self, parts: BareParts, nets: list[torch.nn.Module]):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)
        self.parts = parts

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.parts.loss(batch[0])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.parts.before_step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.parts.after_step()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.parts.optimizer


# --- the bare PyTorch loops ---------------------------------------------------------------------
def ema_lerp_(ema: list[Tensor], params: list[Tensor], decay: float) -> None:
    """θ_ema ← d θ_ema + (1 − d) θ, one fused call (what a hand-written loop would do)."""
    torch._foreach_lerp_(ema, params, 1.0 - decay)


class BareParts(NamedTuple):
    """A one-optimizer family's hand-written step in pieces, so that Lightning can also run it (:class:`LightningAutoFloor`)."""

    loss: Callable[[Tensor], Tensor]
    optimizer: torch.optim.Optimizer
    before_step: Callable[[], None]  # between backward and the optimizer step (DDPM: gradient clipping)
    after_step: Callable[[], None]  # after the optimizer step (DDPM: LR warm-up, EMA)


def _nothing() -> None:
    return None


def bare_parts(family: str, model: Any, cfg: Any, device: torch.device, fused: bool | None = None) -> BareParts:
    """The VAE's or DDPM's hand-written step on the networks of ``model`` (a private copy), in pieces.

    The optimizer is ``cfg.model.optimizer`` built by genbench's ``make_optimizer`` (the same class,
    settings and kernel choice as genbench's); ``fused`` passes ``fused=`` to it when not None.
    """
    optimizer = _optimizer_factory(model, cfg, device, fused)
    if family == "vae":
        opt = optimizer(model.parameters(), model.lr)
        likelihood = type(model.likelihood).__name__

        def vae_loss(x: Tensor) -> Tensor:
            h = model.encoder(x)
            mean, logvar = model.to_mean(h), model.to_logvar(h)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            out = model.decoder(z).view_as(x)
            if likelihood == "Bernoulli":  # images
                recon = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
            elif likelihood == "Gaussian":  # points: −log N(x; out, σ²) with a learned σ per dimension
                log_sigma = model.likelihood.log_sigma
                recon = 0.5 * ((x - out) * torch.exp(-log_sigma)).square() + log_sigma + 0.5 * math.log(2 * math.pi)
            else:
                raise ValueError(f"no bare VAE step for the {likelihood} likelihood")
            kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1)
            return (recon.flatten(1).sum(1) + model.beta * kl).mean()

        return BareParts(vae_loss, opt, _nothing, _nothing)

    if family == "ddpm":
        net, sched = model.net, model.schedule
        opt = optimizer(net.parameters(), model.lr)
        warmup = model.lr_warmup_steps
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        sqrt_ab, sqrt_1mab = sched.sqrt_alphas_cumprod, sched.sqrt_one_minus_alphas_cumprod
        params = list(net.parameters())
        ema = [p.detach().clone() for p in params]
        k = [0]

        def ddpm_loss(x: Tensor) -> Tensor:
            t = torch.randint(0, model.T, (x.shape[0],), device=x.device)
            noise = torch.randn_like(x)
            shape = (-1,) + (1,) * (x.ndim - 1)
            x_t = sqrt_ab[t].view(shape) * x + sqrt_1mab[t].view(shape) * noise  # eq. 4
            return F.mse_loss(net(x_t, t), noise)

        def clip() -> None:
            torch.nn.utils.clip_grad_norm_(params, model.grad_clip)

        def schedule_and_average() -> None:
            lr_sched.step()
            d = min(model.ema.decay, (1 + k[0]) / (model.ema.warmup_steps + k[0]))
            ema_lerp_(ema, [p.detach() for p in params], d)
            k[0] += 1

        return BareParts(ddpm_loss, opt, clip, schedule_and_average)

    raise ValueError(f"no one-optimizer bare step for {family!r}")


def _optimizer_factory(model: Any, cfg: Any, device: torch.device,
                       fused: bool | None) -> Callable[[Any, float], torch.optim.Optimizer]:  # fmt: skip
    """Puts ``model`` on ``device`` in training mode; returns ``(params, lr) -> optimizer``: ``cfg.model.optimizer``
    built by genbench's ``make_optimizer``, with ``fused=`` when ``fused`` is not None."""
    model.to(device).train()
    model.optimizer_factory = instantiate(cfg.model.optimizer)
    kwargs = {} if fused is None else {"fused": fused}
    return lambda params, lr: model.make_optimizer(list(params), lr=lr, **kwargs)


def parts_step(parts: Any, autocast: tuple[str, torch.dtype] | None = None) -> Callable[[Tensor], None]:
    """One optimizer step of a one-optimizer family's :func:`bare_parts`; with ``autocast=(device type, dtype)``,
    the forward and the loss run under autocast (what Lightning's ``bf16-mixed`` does)."""

    def step(x: Tensor) -> None:
        with torch.autocast(autocast[0], dtype=autocast[1]) if autocast is not None else contextlib.nullcontext():
            loss = parts.loss(x)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.before_step()
        parts.optimizer.step()
        parts.after_step()

    return step


def bare_step(family: str, model: Any, cfg: Any, device: torch.device, fused: bool | None = None) -> Callable[[Tensor], None]:
    """One hand-written training step of ``family`` on the networks of ``model`` (a private copy);
    the optimizer as in :func:`bare_parts`."""
    if family in ("vae", "ddpm"):
        return parts_step(bare_parts(family, model, cfg, device, fused))

    if family == "gan":
        return _gan_step(model, cfg, device, fused)
    raise ValueError(f"unknown family {family!r}")


def _gan_step(model: Any, cfg: Any, device: torch.device, fused: bool | None) -> Callable[[Tensor], None]:
    """The non-saturating GAN's step: one discriminator and one generator update, each with its own optimizer."""
    optimizer = _optimizer_factory(model, cfg, device, fused)
    G, D = model.generator, model.discriminator
    opt_g = optimizer(G.parameters(), model.lr)
    opt_d = optimizer(D.parameters(), model.lr_d)
    g_params = list(G.parameters())
    ema = [p.detach().clone() for p in g_params]
    ema_buffers = [b.detach().clone() for b in G.buffers()]
    ema_decay = model.ema.decay if model.ema is not None else None
    latent = model.latent_dim

    def step(x: Tensor) -> None:
        b = x.shape[0]
        with torch.no_grad():
            fake = G(torch.randn(b, latent, device=x.device)).view_as(x)
        d_loss = F.softplus(-D(x)).mean() + F.softplus(D(fake)).mean()  # non-saturating GAN, D side
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = F.softplus(-D(G(torch.randn(b, latent, device=x.device)).view_as(x))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema_decay is not None:
            ema_lerp_(ema, [p.detach() for p in g_params], ema_decay)
            torch._foreach_copy_(ema_buffers, list(G.buffers()))

    return step


class BareLoop:
    """The hand-written loop over a seeded permutation of the same uint8 tensors; returns the timed images/s
    (``{"wall": …, "cpu": …}``)."""

    def __init__(self, step: Callable[[Tensor], None], x: Tensor, batch_size: int, device: torch.device,
                 prepare: Callable[[Tensor], Tensor] | None = None):  # fmt: skip
        self.step, self.x, self.batch_size, self.device = step, x, batch_size, device
        self.prepare = prepare or (lambda xb: xb)
        self.g = torch.Generator().manual_seed(0)
        self.order = torch.empty(0, dtype=torch.long)

    def batch(self) -> Tensor:
        if len(self.order) < self.batch_size:  # a new epoch (the last, partial batch is dropped, as genbench does)
            self.order = torch.randperm(len(self.x), generator=self.g)
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        xb = self.x[idx].to(self.device, non_blocking=True)
        return self.prepare(to_unit(xb) if xb.dtype == torch.uint8 else xb)

    def __call__(self, steps: int, warmup: int) -> dict[str, float]:
        for _ in range(warmup):
            self.step(self.batch())
        cpu, start = time.process_time(), common.clock(self.device)
        for _ in range(steps):
            self.step(self.batch())
        wall, cpu = common.clock(self.device) - start, time.process_time() - cpu
        return {"wall": steps * self.batch_size / wall, "cpu": steps * self.batch_size / cpu}


# --- measurements ---------------------------------------------------------------------------------
def overhead(family: str, batch_size: int, steps: int, warmup: int, repeats: int, device: torch.device,
             data: str = "mnist5k") -> dict[str, Any]:  # fmt: skip
    """images/s of genbench (Trainer) and of the bare loop, interleaved; their ratio per repeat. Also the
    bare step inside the Trainer, with manual optimisation and (one-optimizer families) automatic."""
    model, dm, cfg = common.build(family, overrides(family, batch_size, device, [f"data={data}"]))
    loops: dict[str, Callable[[int, int], dict[str, float]]] = {
        "genbench": GenbenchLoop(model, dm, cfg, device),
        # private copies: the same initial weights, trained apart
        "bare": BareLoop(bare_step(family, copy.deepcopy(model), cfg, device), dm.x_train, batch_size, device),
    }
    floor_model = copy.deepcopy(model)
    loops["lightning_floor"] = GenbenchLoop(LightningFloor(bare_step(family, floor_model, cfg, device), [floor_model]),
                                            dm, cfg, device, genbench_callbacks=False)  # fmt: skip
    if family != "gan":  # the GAN steps its two optimizers by hand in genbench too: its floor is the one above
        auto_model = copy.deepcopy(model)
        auto = LightningAutoFloor(bare_parts(family, auto_model, cfg, device), [auto_model])
        loops["lightning_auto_floor"] = GenbenchLoop(auto, dm, cfg, device, genbench_callbacks=False)
    runs = common.interleaved({k: (lambda f=f: f(steps, warmup)) for k, f in loops.items()}, repeats=repeats, warmup=1)
    clock = common.primary_clock(device)
    by_clock = {k: common.per_clock(v) for k, v in runs.items()}
    ratios = common.ratio_per_clock(runs["genbench"], runs["bare"])
    out = {
        "data": data, "batch_size": batch_size, "steps_timed": steps, "warmup_steps": warmup, "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()), "clock": clock,
        "genbench_images_per_s": by_clock["genbench"][clock], "bare_images_per_s": by_clock["bare"][clock],
        "bare_ms_per_step": batch_size / by_clock["bare"][clock]["median"] * 1e3,
        "ratio": ratios[clock], "target": TARGET, "met": ratios[clock] >= TARGET,
        # The spread says how far one run's verdict can be trusted (repeats move by a few % on a shared machine).
        "ratio_per_repeat": [g[clock] / b[clock] for g, b in zip(runs["genbench"], runs["bare"], strict=True)],
        "images_per_s_by_clock": by_clock, "ratio_by_clock": ratios,
    }  # fmt: skip
    # Lightning's share and genbench's share of the gap: each floor against the bare loop, and genbench over it.
    for floor in ("lightning_floor", "lightning_auto_floor"):
        if floor not in runs:
            out[floor] = common.skipped("model=gan optimises by hand (two optimizers): lightning_floor is its floor")
            continue
        out[f"{floor}_images_per_s"] = by_clock[floor][clock]
        out[f"{floor}_vs_bare"] = common.ratio_per_clock(runs[floor], runs["bare"])[clock]
        out[f"genbench_vs_{floor}"] = common.ratio_per_clock(runs["genbench"], runs[floor])[clock]
    return out


def optimizer_impls(family: str, device: torch.device, repeats: int, steps: int = 20) -> dict[str, Any]:
    """Seconds per ``opt.step()`` on the family's trained parameters: Adam for-loop vs foreach vs fused."""
    model, _, cfg = common.build(family, overrides(family, 8, device))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    factory = instantiate(cfg.model.optimizer)
    variants = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {}
    for name, kw in variants.items():
        try:
            opts[name] = factory([p.detach().clone().requires_grad_() for p in params], lr=1e-4, **kw)
        except (RuntimeError, TypeError, ValueError) as e:
            opts[name] = str(e)
    for opt in (o for o in opts.values() if not isinstance(o, str)):
        for p, q in zip(opt.param_groups[0]["params"], params, strict=True):
            p.grad = q.grad.clone()

    def case(opt: torch.optim.Optimizer) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            t, _ = common.timed(lambda: [opt.step() for _ in range(steps)], device)
            return {"wall": t["wall"] / steps, "cpu": t["cpu"] / steps}

        return run

    runs = common.interleaved({n: case(o) for n, o in opts.items() if not isinstance(o, str)}, repeats=repeats)
    clock = common.primary_clock(device)
    out: dict[str, Any] = {"parameter_tensors": len(params), "parameters": sum(p.numel() for p in params),
                           "optimizer": cfg.model.optimizer._target_, "clock": clock}  # fmt: skip
    for name, o in opts.items():
        out[f"{name}_s_per_step"] = common.skipped(o) if isinstance(o, str) else common.per_clock(runs[name])[clock]
        if name in runs:
            out[f"{name}_s_per_step_by_clock"] = common.per_clock(runs[name])
    if "for_loop" in runs:
        for name in ("foreach", "fused"):
            if name in runs:
                out[f"{name}_speedup"] = common.ratio_per_clock(runs["for_loop"], runs[name])[clock]
    return out


#: The network each family averages with models.ema.EMA (the VAE keeps no average).
AVERAGED = {"ddpm": "net", "gan": "generator"}


def ema_update(family: str, device: torch.device, repeats: int, calls: int = 50) -> dict[str, Any]:
    """Seconds per ``EMA.update`` (genbench) against one ``torch._foreach_lerp_`` over the same tensors."""
    if family not in AVERAGED:
        return common.skipped(f"model={family} keeps no EMA")
    model, _, _ = common.build(family, overrides(family, 8, device))
    model = model.to(device)
    net = getattr(model, AVERAGED[family])
    ema, params = model.ema, [p.detach() for p in net.parameters()]
    shadow = [p.clone() for p in params]

    def per_call(fn: Callable[[], Any]) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            t, _ = common.timed(lambda: [fn() for _ in range(calls)], device)
            return {"wall": t["wall"] / calls, "cpu": t["cpu"] / calls}

        return run

    runs = common.interleaved({"genbench": per_call(lambda: ema.update(net)),
                               "bare": per_call(lambda: ema_lerp_(shadow, params, 0.999))}, repeats)  # fmt: skip
    clock = common.primary_clock(device)
    by_clock = {k: common.per_clock(v) for k, v in runs.items()}
    return {"tensors": len(params), "clock": clock, "genbench_s": by_clock["genbench"][clock], "bare_s": by_clock["bare"][clock],
            "genbench_over_bare": common.ratio_per_clock(runs["genbench"], runs["bare"])[clock],
            "s_by_clock": by_clock}  # fmt: skip


def gpu_options(family: str, batch_size: int, steps: int, warmup: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """bf16-mixed, channels_last, torch.compile and fused AdamW, each on/off (CUDA only)."""
    if device.type != "cuda":
        reason = "no CUDA device on this machine"
        return {k: common.skipped(reason) for k in ("bf16_mixed", "channels_last", "torch_compile", "fused_adamw")}
    out: dict[str, Any] = {}
    base_model, dm, cfg = common.build(family, overrides(family, batch_size, device))

    def genbench(model, **trainer_kwargs) -> Callable[[], float]:
        loop = GenbenchLoop(model, dm, cfg, device, trainer_kwargs)
        return lambda: loop(steps, warmup)["wall"]

    # bf16-mixed: the Trainer's precision plugin (trainer=gpu's default)
    times = common.interleaved({"off": genbench(copy.deepcopy(base_model)),
                                "on": genbench(copy.deepcopy(base_model), precision="bf16-mixed")}, repeats)  # fmt: skip
    out["bf16_mixed"] = _on_off(times)

    # channels_last: weights and inputs in NHWC (bare loop, so the layout is the only change)
    def bare(channels_last: bool, fused: bool | None = None, run_cfg: Any = cfg) -> Callable[[], float]:
        model = copy.deepcopy(base_model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = bare_step(family, model, run_cfg, device, fused=fused)
        prep = (lambda x: x.contiguous(memory_format=torch.channels_last)) if channels_last else None
        loop = BareLoop(step, dm.x_train, batch_size, device, prep)
        return lambda: loop(steps, warmup)["wall"]

    out["channels_last"] = _on_off(common.interleaved({"off": bare(False), "on": bare(True)}, repeats))
    try:
        compiled = copy.deepcopy(base_model)
        compiled.compile_options = {}  # model.compile=true
        out["torch_compile"] = _on_off(common.interleaved({"off": genbench(copy.deepcopy(base_model)), "on": genbench(compiled)},
                                                          repeats, warmup=2))  # fmt: skip
        out["torch_compile"]["note"] = "model.compile=true (inductor) under the Trainer, against the same model eager"
    except Exception as e:  # a missing compiler toolchain must not lose the rest of the record
        out["torch_compile"] = common.skipped(f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}")
    adamw = copy.deepcopy(cfg)  # DictConfig.copy() is shallow: the nested optimizer node would be shared
    adamw.model.optimizer._target_ = "torch.optim.AdamW"
    out["fused_adamw"] = _on_off(common.interleaved({"off": bare(False, fused=False, run_cfg=adamw),
                                                     "on": bare(False, fused=True, run_cfg=adamw)}, repeats))  # fmt: skip
    return out


def _on_off(times: dict[str, list[float]]) -> dict[str, Any]:
    return {"off_images_per_s": common.summary(times["off"]), "on_images_per_s": common.summary(times["on"]),
            "speedup": common.ratio(times["on"], times["off"])}  # fmt: skip


def _summary(r: dict[str, Any]) -> str:
    floors = ", ".join(f"{k.removesuffix('_images_per_s').replace('_', ' ')} {r[k]['median']:.0f}"
                       for k in ("lightning_floor_images_per_s", "lightning_auto_floor_images_per_s") if k in r)  # fmt: skip
    return (f"genbench {r['genbench_images_per_s']['median']:.0f} img/s, bare {r['bare_images_per_s']['median']:.0f} img/s "
            f"({r['bare_ms_per_step']:.2f} ms/step), {floors}; ratio {r['ratio']:.3f} (target {TARGET})")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 (the configs'), quick: 32")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per repeat (default 60, DDPM 10; quick 6, DDPM 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per repeat (default 3, quick 2)")
    parser.add_argument("--toy-data", default="rings", choices=("rings", "grid", "none"),
                        help="also measure the loops on this 2-D data set (small steps: Lightning's fixed cost per step shows)")
    parser.add_argument("--toy-steps", type=int, default=None, help="timed steps per repeat on it (default 300, DDPM 60; quick 10, DDPM 3)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    bs = args.batch_size or (32 if args.quick else 128)
    steps = {f: args.steps or ((3 if f == "ddpm" else 6) if args.quick else (10 if f == "ddpm" else 60)) for f in args.families}
    warmup = args.warmup or (2 if args.quick else 3)
    repeats = args.repeats or (3 if args.quick else 7)  # the ratios move by ~1 % from run to run: more steps, more repeats
    toy = None if args.toy_data == "none" else args.toy_data
    toy_steps = {f: args.toy_steps or ((3 if f == "ddpm" else 10) if args.quick else (60 if f == "ddpm" else 300))
                 for f in args.families}  # fmt: skip
    record = common.start_record("train_overhead", args, families=args.families, batch_size=bs, steps=steps,
                                 warmup=warmup, repeats=repeats, data="mnist5k", toy_data=toy, toy_batch_size=TOY_BATCH,
                                 toy_steps=toy_steps)  # fmt: skip
    record.update(overhead={}, overhead_toy={}, adam_implementations={}, ema_update={}, gpu_options={})
    for family in args.families:
        record["overhead"][family] = r = overhead(family, bs, steps[family], warmup, repeats, device)
        print(f"{family}: {_summary(r)}", flush=True)
        if toy:
            record["overhead_toy"][family] = r = overhead(family, TOY_BATCH, toy_steps[family], warmup, repeats, device, toy)
            print(f"{family} on {toy}: {_summary(r)}", flush=True)
        record["adam_implementations"][family] = optimizer_impls(family, device, repeats)
        record["ema_update"][family] = ema_update(family, device, repeats)
        record["gpu_options"][family] = gpu_options(family, bs, steps[family], warmup, repeats, device)
    ratios = [r["ratio"] for r in record["overhead"].values()]
    record["summary"] = {"min_ratio": min(ratios), "all_met": all(r >= TARGET for r in ratios), "target_data": "mnist5k",
                         "geomean_ratio": math.exp(sum(math.log(r) for r in ratios) / len(ratios)),
                         "toy_min_ratio": min((r["ratio"] for r in record["overhead_toy"].values()), default=None)}  # fmt: skip
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
