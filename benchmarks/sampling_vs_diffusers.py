"""Sampling against diffusers, and what ``sample()`` costs over the bare network call.

1. **Same network, same solver, two loops.** The ε-network of ``common.build("ddpm", ["data=mnist5k"])``
   (genbench's UNet, its EMA copy in eval mode) sampled by genbench's ``model.sample(n, sampler=...)``
   and by the loop a diffusers user writes around it::

       scheduler.set_timesteps(...)
       for t in scheduler.timesteps:
           x = scheduler.step(net(x, t), t, x).prev_sample

   - DDIM-50 (η = 0) against ``DDIMScheduler(trained_betas=<the DDPM's β>, timestep_spacing="linspace",
     set_alpha_to_one=True)``: the network sees the same 50 timesteps as genbench's linear spacing,
     τ_i = round(999 i / 49). diffusers' step goes from t to t − T/S = t − 20 (its convention), genbench's
     to the previous τ (20 or 21 lower), so the two trajectories differ slightly; their cost does not.
   - DPM-Solver++(2M)-20 against ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
     solver_type="midpoint", final_sigmas_type="zero")`` with ``set_timesteps(timesteps=τ_S, …, τ_1)``,
     the configuration tests/test_samplers.py matches sample by sample.

   x̂_0 is not clipped on either side (``model.clip_denoised=false``; DPMSolverMultistepScheduler has no
   clipping), so both run the same maths. Both loops draw x_T from the same generator and clamp the
   result to the data range. Interleaved in one process, at batch 256 (throughput) and batch 1 (per-step
   overhead); the ratio is genbench images/s over diffusers images/s (target ≥ 1.0).
2. **Per-call overhead of ``sample()``**: GAN, VAE and DDPM (one DDIM step) at batch 1 and 256, against
   the calls ``sample()`` makes, written by hand: z = randn, G(z); z = randn, likelihood mean of the
   decoder(z); x_T = randn, ε = net(x_T, T − 1), x̂_0 = (x_T − √(1 − ᾱ) ε) / √ᾱ. Target: sample() within a
   few per cent of the bare calls: 3 % at batch 256, 5 % at batch 1, where one call takes 0.5–7 ms and
   every line of Python in ``sample()`` counts (the bare loop turns gradients off once, outside the loop).
   Batch 1 gets more, shorter timings (the per-call differences are tens of µs).

Sampling speed does not depend on the weights, so the networks are untrained. On the CPU the comparison
is decided on this process's CPU time (one torch thread): other jobs on a shared machine inflate the wall
clock of both sides, and the interleaving makes the ratio fair on either clock.

    python benchmarks/sampling_vs_diffusers.py --quick
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

RATIO_TARGET = 1.0  # genbench / diffusers images/s
OVERHEAD_TARGET, OVERHEAD_TARGET_BATCH_1 = 0.97, 0.95  # bare-call time / sample() time, at the largest batch and at 1


def timed(fn, device: torch.device) -> dict[str, float]:
    """Wall and CPU seconds of ``fn()`` (no child processes here)."""
    t = common.timed(fn, device)[0]
    return {"wall": t["wall"], "cpu": t["cpu"]}


# --- 1. genbench against diffusers ----------------------------------------------------------------
def diffusers_scheduler(solver: str, model: Any, steps: int):
    """The diffusers scheduler of ``solver`` configured to the DDPM's β and genbench's timesteps."""
    import diffusers

    betas = model.schedule.betas.tolist()
    if solver == "ddim":
        s = diffusers.DDIMScheduler(num_train_timesteps=model.T, trained_betas=betas, clip_sample=False,
                                    set_alpha_to_one=True, prediction_type="epsilon", timestep_spacing="linspace")  # fmt: skip
        return s, {"num_inference_steps": steps}
    s = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=model.T, trained_betas=betas, prediction_type="epsilon", algorithm_type="dpmsolver++",
        solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
    )  # fmt: skip
    return s, {"timesteps": model.schedule.timesteps(steps, "linear").flip(0).tolist()}


@torch.no_grad()
def diffusers_sample(model: Any, scheduler: Any, set_kwargs: dict[str, Any], n: int, generator: torch.Generator) -> torch.Tensor:
    """The diffusers user's loop around genbench's network, from x_T drawn as ``model.sample`` draws it."""
    net = model.eval_net
    x = torch.randn(n, *model.data_shape, generator=generator, device=generator.device).to(model.device)
    scheduler.set_timesteps(**set_kwargs)
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t.expand(n)), t, x).prev_sample
    return x.clamp(*model.data_range)


class NetworkClock:
    """CPU seconds spent inside ``net``'s forward calls (forward pre- and post-hooks), to split a chain into the
    network's time and the sampler's own: both loops call the same network, so what differs is the rest."""

    def __init__(self, net: torch.nn.Module):
        self.seconds, self._start = 0.0, 0.0
        self.handles = [net.register_forward_pre_hook(self._enter), net.register_forward_hook(self._exit)]

    def _enter(self, *_: Any) -> None:
        self._start = time.process_time()

    def _exit(self, *_: Any) -> None:
        self.seconds += time.process_time() - self._start

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def against_diffusers(model: Any, solvers: dict[str, int], batches: list[int], repeats: int,
                      device: torch.device) -> dict[str, Any]:  # fmt: skip
    """images/s of genbench's ``sample()`` and diffusers' loop per solver and batch, interleaved; their ratio; and
    each chain's CPU seconds outside the network's calls (the sampler's own work)."""
    out: dict[str, Any] = {}
    clock_net = NetworkClock(model.eval_net)  # two Python calls per network call, on both sides alike
    for solver, steps in solvers.items():
        name = f"{solver}-{steps}"
        scheduler, set_kwargs = diffusers_scheduler(solver, model, steps)
        out[name] = {"nfe": model.nfe(sampler=solver, steps=steps), "scheduler": type(scheduler).__name__,
                     "scheduler_set_timesteps": {k: (v if k != "timesteps" else f"{len(v)} timesteps, genbench's linear")
                                                 for k, v in set_kwargs.items()}}  # fmt: skip
        for n in batches:
            def ours(n=n, steps=steps, solver=solver):
                g = torch.Generator(device=device).manual_seed(0)
                return model.sample(n, generator=g, sampler=solver, steps=steps, spacing="linear", progress=False)

            def theirs(n=n, scheduler=scheduler, set_kwargs=set_kwargs):
                return diffusers_sample(model, scheduler, set_kwargs, n, torch.Generator(device=device).manual_seed(0))

            a, b = ours(), theirs()  # warm-up, and the two results from the same x_T
            outside: dict[str, list[float]] = {"genbench": [], "diffusers": []}

            def case(f, name, outside=outside):
                clock_net.seconds = 0.0
                t = timed(f, device)
                outside[name].append(t["cpu"] - clock_net.seconds)
                return t

            cases = {"genbench": lambda f=ours: case(f, "genbench"),
                     "diffusers": lambda f=theirs: case(f, "diffusers")}  # fmt: skip
            # small batches take a fraction of a second per call: more repeats for the same total time; large ones
            # at least 5, as their ratio moves by 2-3 % from one 10-second chain to the next on the same code
            runs = common.interleaved(cases, repeats=repeats * 3 if n < 64 else max(repeats, 5), warmup=0)
            ratio = common.ratio_per_clock(runs["diffusers"], runs["genbench"])  # seconds theirs / ours
            clock = common.primary_clock(device)
            out[name][f"batch_{n}"] = {
                "clock": clock,
                "images_per_s_by_clock": {k: common.per_clock(v, lambda s, n=n: n / s) for k, v in runs.items()},
                "ratio": ratio[clock], "ratio_by_clock": ratio, "target": RATIO_TARGET,
                "met": ratio[clock] >= RATIO_TARGET,
                "ratio_per_repeat": [round(d[clock] / g[clock], 4) for g, d in zip(runs["genbench"], runs["diffusers"], strict=True)],
                "max_abs_diff": float((a - b).abs().max()), "max_abs": float(b.abs().max()),
                "cpu_s_outside_network": {k: common.summary(v) for k, v in outside.items()},
            }  # fmt: skip
            print(f"{name} batch {n}: genbench/diffusers images/s {ratio[clock]:.3f} ({clock}), wall {ratio['wall']:.3f}; "
                  f"CPU s per chain outside the network {common.median(outside['genbench']):.4f} / "
                  f"{common.median(outside['diffusers']):.4f}", flush=True)  # fmt: skip
    clock_net.remove()
    return out


# --- 2. sample() against the bare calls -----------------------------------------------------------
def bare_call(family: str, model: Any):
    """``(n, generator) -> samples``: what ``model.sample(n)`` computes, written by hand with its networks."""
    if family == "gan":
        g = (model.ema.module if model.ema is not None else model.generator).eval()

        def gan(n, gen):
            return g(torch.randn(n, model.latent_dim, generator=gen)).view(-1, *model.data_shape).clamp(*model.data_range)

        return gan
    if family == "vae":
        model.decoder.eval()

        def vae(n, gen):
            z = torch.randn(n, model.latent_dim, generator=gen)
            return model.likelihood.mean(model.decoder(z).view(-1, *model.data_shape)).clamp(*model.data_range)

        return vae
    net, a = model.eval_net.eval(), model.schedule.alphas_cumprod[-1].double()
    s_x, s_eps = float(1 / a.sqrt()), float(((1 - a) / a).sqrt())

    def ddpm(n, gen):
        x = torch.randn(n, *model.data_shape, generator=gen)
        eps = net(x, torch.full((n,), model.T - 1))
        return (s_x * x - s_eps * eps).clamp(*model.data_range)  # x̂_0 (eq. 4 solved for x_0)

    return ddpm


def overhead_target(n: int) -> float:
    """The least bare-call time / ``sample()`` time allowed at batch ``n``."""
    return OVERHEAD_TARGET_BATCH_1 if n == 1 else OVERHEAD_TARGET


def per_call_overhead(models: dict[str, Any], batches: list[int], calls: dict[int, int], repeats: dict[int, int],
                      device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Seconds per ``sample(n)`` and per bare call for every family and batch (``calls[n]`` calls per timing,
    ``repeats[n]`` interleaved timings)."""
    out: dict[str, Any] = {}
    for family, model in models.items():
        kw = {"sampler": "ddim", "steps": 1, "progress": False} if family == "ddpm" else {}
        bare = bare_call(family, model)
        out[family] = {"sample_kwargs": kw}
        for n in batches:
            k = calls[n]

            def ours(n=n, k=k, model=model, kw=kw):
                g = torch.Generator(device=device).manual_seed(0)
                for _ in range(k):
                    x = model.sample(n, generator=g, **kw)
                return x

            @torch.no_grad()
            def theirs(n=n, k=k, bare=bare):
                g = torch.Generator(device=device).manual_seed(0)
                for _ in range(k):
                    x = bare(n, g)
                return x

            a, b = ours(n, 1), theirs(n, 1)  # the same z: the same samples (x̂_0's coefficients differ in rounding)
            same = torch.equal(a, b) if family != "ddpm" else bool(torch.allclose(a, b, rtol=0, atol=1e-4))
            cases = {"sample": lambda f=ours: timed(f, device), "bare": lambda f=theirs: timed(f, device)}
            runs = common.interleaved(cases, repeats=repeats[n], warmup=1)
            ratio = common.ratio_per_clock(runs["sample"], runs["bare"])  # sample() time / bare time
            clock = common.primary_clock(device)
            out[family][f"batch_{n}"] = {
                "clock": clock, "calls_per_timing": k,
                "ms_per_call_by_clock": {v: common.per_clock(r, lambda s, k=k: 1000 * s / k) for v, r in runs.items()},
                "sample_over_bare": ratio[clock], "sample_over_bare_by_clock": ratio,
                "same_samples": same, "target": overhead_target(n), "met": ratio[clock] <= 1 / overhead_target(n),
            }  # fmt: skip
            print(f"{family} batch {n}: sample() / bare {ratio[clock]:.3f} ({clock}), wall {ratio['wall']:.3f}", flush=True)
        out[family]["met"] = all(out[family][f"batch_{n}"]["met"] for n in batches)
    return out


# --- docs/performance.md -----------------------------------------------------------------------------
def _outside(d: dict[str, Any], n: int) -> str:
    """The CPU seconds per chain outside the network's calls, where the record has them."""
    o = d.get("cpu_s_outside_network")
    if not o:
        return ""
    return (f"; CPU time per chain outside the network at batch {n}: genbench {o['genbench']['median']:.3f} s, "
            f"diffusers {o['diffusers']['median']:.3f} s")


def target_rows(rec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The record's rows of the targets table (rendered by benchmarks/render_docs.py)."""
    from benchmarks.render_docs import _clock, _met, _n, _x

    rows = []
    batches = sorted(int(k.removeprefix("batch_")) for k in next(iter(rec["overhead"].values())) if k.startswith("batch_"))
    big, small = f"batch_{batches[-1]}", f"batch_{batches[0]}"
    for name, d in rec["against_diffusers"].items():
        b, s = d[big], d[small]
        ips = b["images_per_s_by_clock"]
        rows.append((
            f"Sampling vs diffusers, {name.upper()} (genbench's UNet, `{d['scheduler']}`, batch {batches[-1]}): "
            "genbench `sample()` / the diffusers loop",
            f"{_n(ips['genbench'][b['clock']]['median'])} / {_n(ips['diffusers'][b['clock']]['median'])} img/s "
            f"({_clock(b['clock'])}) = {_x(b['ratio'], 3)} (repeats {min(b['ratio_per_repeat']):.3f}–"
            f"{max(b['ratio_per_repeat']):.3f}); wall clock {_x(b['ratio_by_clock']['wall'], 3)}; batch {batches[0]} "
            f"{_x(s['ratio'], 3)} (wall {_x(s['ratio_by_clock']['wall'], 3)})" + _outside(b, batches[-1]),
            f"≥ {_x(b['target'])}", _met(b["met"])))  # fmt: skip
    for family, o in rec["overhead"].items():
        b, s = o[big], o[small]

        def ms(x: dict[str, Any]) -> str:
            m = x["ms_per_call_by_clock"]
            return f"`sample()` {m['sample'][x['clock']]['median']:.3g} ms, bare {m['bare'][x['clock']]['median']:.3g} ms"

        call = "one DDIM step" if family == "ddpm" else "one call"
        rows.append((
            f"Per-call overhead, {family.upper()} ({call}): `sample()` / the bare network call(s) it makes, images/s",
            f"batch {batches[-1]}: {ms(b)} = {_x(1 / b['sample_over_bare'], 3)}; batch {batches[0]}: {ms(s)} = "
            f"{_x(1 / s['sample_over_bare'], 3)} ({_clock(b['clock'])})",
            f"≥ {_x(b['target'])} at batch {batches[-1]}, ≥ {_x(s['target'])} at batch {batches[0]}",
            _met(o["met"])))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 256; quick 1 4)")
    parser.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps (default 50; quick 5)")
    parser.add_argument("--dpm-steps", type=int, default=None, help="DPM-Solver++(2M) steps (default 20; quick 4)")
    parser.add_argument("--ddpm-overrides", nargs="*", default=None,
                        help="extra overrides of the DDPM (quick: a narrow UNet, net.image.eps_net.ch=8)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    args.batches = args.batches or ([1, 4] if args.quick else [1, 256])
    args.ddim_steps = args.ddim_steps or (5 if args.quick else 50)
    args.dpm_steps = args.dpm_steps or (4 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.ddpm_overrides is None:
        args.ddpm_overrides = ["net.image.eps_net.ch=8", "net.image.eps_net.groups=4"] if args.quick else []
    per_timing = 16 if args.quick else 64  # calls at batch 1 per timing: 30-450 ms
    calls = {n: max(2, per_timing // n) for n in args.batches}
    overhead_repeats = {n: (8 if n == 1 else 3) * args.repeats for n in args.batches}
    import diffusers

    record = common.start_record("sampling_vs_diffusers", args, batches=args.batches, repeats=args.repeats,
                                 ddpm_overrides=args.ddpm_overrides, diffusers=diffusers.__version__)  # fmt: skip
    ddpm = common.build("ddpm", ["data=mnist5k", "model.clip_denoised=false", *args.ddpm_overrides])[0].to(device).eval()
    solvers = {"ddim": args.ddim_steps, "dpmpp_2m": args.dpm_steps}
    record["against_diffusers"] = against_diffusers(ddpm, solvers, args.batches, args.repeats, device)
    models = {f: common.build(f, ["data=mnist5k"])[0].to(device).eval() for f in ("gan", "vae")}
    models["ddpm"] = ddpm
    record["overhead"] = per_call_overhead(models, args.batches, calls, overhead_repeats, device)
    big = f"batch_{max(args.batches)}"
    record["targets"] = {
        "ratio_target": RATIO_TARGET,
        "ratio_met": {k: v[big]["met"] for k, v in record["against_diffusers"].items()},
        "overhead_target": f"sample() time <= bare time / {OVERHEAD_TARGET} at batch > 1, / {OVERHEAD_TARGET_BATCH_1} at batch 1",
        "overhead_met": {f: o["met"] for f, o in record["overhead"].items()},
    }
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
