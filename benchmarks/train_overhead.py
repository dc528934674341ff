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

import copy
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.train_loops import (  # noqa: E402
    BareLoop,
    GenbenchLoop,
    LightningAutoFloor,
    LightningFloor,
    bare_parts,
    bare_step,
    ema_lerp_,
    overrides,
)

FAMILIES = ("gan", "vae", "ddpm")
TARGET = 0.97
TOY_BATCH = 256  # the 2-D data sets' configured batch size


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
