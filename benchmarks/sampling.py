"""Sampling cost and the quality–speed curve of DDPM/DDIM.

1. **Speed**: images/s and network evaluations per sample (NFE) of ``model.sample(n)`` for the GAN,
   the VAE, DDPM with all T = 1000 steps (Algorithm 2) and DDIM with 10/20/50/100 steps (η = 0, the
   deterministic sampler, and η = 1, eq. 16 with the DDPM posterior's noise, on linearly spaced
   steps; and η = 0 on quadratically spaced ones, Song et al.'s CIFAR-10 setting), with each
   family's default mnist5k network, the variants interleaved after a warm-up. Sampling speed does
   not depend on the weights, so these networks are untrained. On the CPU, images/s are over this
   process's CPU time (one torch thread), which other jobs on a shared machine do not inflate.
2. **Quality–speed curve**: a DDPM trained here by ``genbench-train``'s own code, evaluated by the
   one evaluation loop (same samples count, seed and features for every sampler) with DDPM-1000
   and DDIM-10/20/50/100: FID against NFE, plotted to ``sampling_quality_speed[_quick].png``.
   ``rings`` (2-D, raw features, the default DDPM config) always; ``mnist5k`` (classifier features)
   in full mode, the default UNet (with ``--image-overrides``) trained for ``--image-train-steps``, or
   a checkpoint given with ``--image-ckpt``. The record says which model was used. The samplers get
   the same number of samples and the same seed, so their FIDs differ by the sampler only.

Target: DDIM-50 ≥ 15× faster than DDPM-1000 at ≤ 10 % worse FID, checked for each variant; a FID no
higher than that of as many real training samples (the estimator's floor at this n) also counts. The
FID of n = 300 samples varies by ~15 % from one sampling seed to the next (more than the 10 %
tolerance), so DDPM-1000, every DDIM-50 variant and the floor are evaluated with ``--fid-seeds`` seeds
(default 3) and the target is judged on their means; the record keeps each seed's FID and ratio. On the
small UNet trained here, deterministic DDIM (η = 0) is the worse of the two on images: its ODE follows
the ε-network's errors without the noise that lets Algorithm 2 correct them; η = 1 keeps DDPM's quality
at 1/20 of its cost. On rings η = 0 from 20 steps on is at the estimator's floor, and η = 1 scatters
around it (FID 0.0004-0.01 over the step counts: at ~1e-3 the FID is mostly estimator noise). Before the
2-D network had its linear skip, η = 0 carried the ~0.5 % of trajectories that start in the tail of
N(0, I) to radius 100+ and rings' DDIM-50 FID was 1.58 (see ``models.nets.time_mlp.TimeMLP``).

    python benchmarks/sampling.py --quick
    python benchmarks/sampling.py --image-ckpt outputs/mnist5k/ddpm/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common, plots  # noqa: E402
from models.registry import family_names, family_spec  # noqa: E402

SPEEDUP_TARGET, FID_TOLERANCE = 15.0, 0.10
DDIM_STEPS = (10, 20, 50, 100)
#: The DDIM variants: name suffix -> η (Song et al. 2021, eq. 16) and timestep spacing (their App. D.2).
#: ``ddim-50`` is η = 0 on linearly spaced steps, ``ddim-50-eta1`` η = 1, ``ddim-50-quad`` η = 0 on
#: quadratically spaced steps (their CIFAR-10 setting).
VARIANTS = {"": {"eta": 0.0, "spacing": "linear"}, "-eta1": {"eta": 1.0, "spacing": "linear"},
            "-quad": {"eta": 0.0, "spacing": "quadratic"}}  # fmt: skip


def samplers(T: int = 1000) -> dict[str, dict[str, Any]]:
    """The DDPM sampling variants: name -> ``model.sample`` keyword arguments (DDIM step counts up to T)."""
    out = {f"ddpm-{T}": {"sampler": "ddpm", "steps": T}}
    for suffix, v in VARIANTS.items():
        out.update({f"ddim-{s}{suffix}": {"sampler": "ddim", "steps": s, **v} for s in DDIM_STEPS if s <= T})
    return out


def variant_label(suffix: str) -> str:
    """``eta=0``, ``eta=1``, ``eta=0 quadratic``: the record's key of a DDIM variant."""
    v = VARIANTS[suffix]
    return f"eta={v['eta']:g}" + ("" if v["spacing"] == "linear" else f" {v['spacing']}")


# --- 1. speed ---------------------------------------------------------------------------------------
def speed(n: int, repeats: int, device: torch.device, ddpm_overrides: list[str] = ()) -> dict[str, Any]:
    """images/s and NFE of every family's ``sample(n)`` on mnist5k-shaped networks."""
    extra = {"ddpm": list(ddpm_overrides)}
    models = {f: common.build(f, ["data=mnist5k", *extra.get(f, [])])[0].to(device).eval() for f in family_names()}
    variants: dict[str, tuple[Any, dict[str, Any]]] = {}
    for f, model in models.items():  # a family with samplers: one variant per sampler setting
        chains = samplers(model.T) if "sampler" in family_spec(f).sample_options else {f: {}}
        variants.update({name: (model, kw) for name, kw in chains.items()})

    def case(model, kw) -> Any:
        def run() -> dict[str, float]:
            g = torch.Generator(device=device).manual_seed(0)
            t, _ = common.timed(lambda: model.sample(n, generator=g, progress=False, **kw) if kw else model.sample(n, generator=g),
                                device)  # fmt: skip
            return {"wall": n / t["wall"], "cpu": n / t["cpu"]}

        return run

    # Warm-up: one short call per model (the 1000-step chain runs the same code as DDIM-10's net calls).
    for family, model in models.items():
        if "sampler" in family_spec(family).sample_options:
            model.sample(n, sampler="ddim", steps=10, progress=False)
        else:
            model.sample(n)
    runs = common.interleaved({name: case(m, kw) for name, (m, kw) in variants.items()}, repeats=repeats, warmup=0)
    clock = common.primary_clock(device)
    out: dict[str, Any] = {"clock": clock}
    for name, (model, kw) in variants.items():
        by_clock = common.per_clock(runs[name])
        out[name] = {"images_per_s": by_clock[clock], "images_per_s_by_clock": by_clock, "nfe": int(model.nfe(**kw))}
    ddpm, ddim50 = f"ddpm-{models['ddpm'].T}", "ddim-50"
    speedup = common.ratio_per_clock(runs[ddim50], runs[ddpm]) if ddim50 in runs else None
    out["ddim50_vs_ddpm1000_speedup"] = speedup[clock] if speedup else None
    out["ddim50_vs_ddpm1000_speedup_by_clock"] = speedup
    out["batch"] = n
    out["parameters"] = {f: sum(p.numel() for p in m.parameters() if p.requires_grad) for f, m in models.items()}
    return out


# --- 2. quality–speed curve -------------------------------------------------------------------------------
def train_ddpm(overrides: list[str], run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Train a DDPM with genbench-train's code (no logger, no evaluation); returns the model and results."""
    from genbench.checkpoint import load_model
    from genbench.train import train

    cfg = common.compose(["model=ddpm", "logger=none", "eval.final=false", "trainer.enable_progress_bar=false",
                          "~callbacks.progress_bar", *overrides], run_dir=run_dir)  # fmt: skip
    results = train(cfg)
    return load_model(results["checkpoint"]), results


def curve(model: Any, data: str, num_samples: int, batch_size: int, device: torch.device,
          eval_overrides: list[str] = (), seeds: int = 1) -> dict[str, Any]:  # fmt: skip
    """FID (and the other metrics) of every sampler on the same samples count, seed and features.

    ``seeds > 1`` evaluates the points the target compares (DDPM-T, every DDIM-50 variant and the
    real-sample floor) again with other sampling seeds (other real training samples for the floor): at
    n = 300 one draw's FID varies by ~15 % from seed to seed, more than the target's 10 % tolerance,
    so the target is judged on the seeds' mean. The other points (the plotted curve) use the first seed.
    """
    from hydra.utils import instantiate

    from evaluation import DataReference, EvalConfig, Evaluator, ModelSource, TensorSource

    cfg = common.compose([f"data={data}", f"eval.num_samples={num_samples}", f"eval.batch_size={batch_size}",
                          "eval.nll_samples=0", *eval_overrides])  # fmt: skip
    eval_cfg = EvalConfig.from_node(cfg.eval)
    evaluator = Evaluator(eval_cfg, DataReference(instantiate(cfg.data), eval_cfg.split, eval_cfg.num_real), device=device)
    model = model.to(device).eval()
    kwargs = samplers(model.T)
    points = {}
    for name, kw in kwargs.items():
        r = evaluator.evaluate(ModelSource(model, kw), num_samples)
        points[name] = {k: r.get(k) for k in ("nfe", "fid", "kid_mean", "precision", "recall", "sample_images_per_s",
                                               "high_quality_share", "modes_covered", "eval_time_s")}  # fmt: skip
        print(f"  {data} {name}: FID {r['fid']:.4g}, {r['sample_images_per_s']} img/s, NFE {r['nfe']}", flush=True)
    ddpm_name = f"ddpm-{model.T}"
    # The estimator's floor at this n: FID of as many *real* training samples against the same reference.
    # A sampler at or below it cannot be told from the data with n samples, whatever the ratio of two
    # such FIDs (on rings both are ~1e-3 and their ratio is noise). Seed k takes the k-th n training samples.
    train = evaluator.reference.datamodule.real_samples("train")
    floor_seeds = min(seeds, len(train) // num_samples)

    def floor(k: int) -> float:
        real = train[k * num_samples : (k + 1) * num_samples]
        return evaluator.evaluate(TensorSource(real, f"{data} train split [{k * num_samples}:{(k + 1) * num_samples}]"))["fid"]

    floors = [floor(0)]
    print(f"  {data} real training samples (the floor): FID {floors[0]:.4g}", flush=True)
    compared = [ddpm_name, *(f"ddim-50{suffix}" for suffix in VARIANTS if f"ddim-50{suffix}" in points)]
    by_seed = {name: [points[name]["fid"]] for name in compared}
    for k in range(1, seeds):
        evaluator.cfg = dataclasses.replace(eval_cfg, seed=eval_cfg.seed + k)
        for name in compared:
            by_seed[name].append(evaluator.evaluate(ModelSource(model, kwargs[name]), num_samples)["fid"])
        if k < floor_seeds:
            floors.append(floor(k))
        print(f"  {data} seed {eval_cfg.seed + k}: " + ", ".join(f"{name} FID {v[-1]:.4g}" for name, v in by_seed.items())
              + (f", real {floors[-1]:.4g}" if k < floor_seeds else ""), flush=True)  # fmt: skip
    evaluator.cfg = eval_cfg
    for name, fids in by_seed.items():
        points[name].update(fid_by_seed=fids, fid_mean=statistics.fmean(fids),
                            fid_std=statistics.stdev(fids) if len(fids) > 1 else None)  # fmt: skip
    floor_mean = statistics.fmean(floors)
    out = {"num_samples": num_samples, "features": evaluator.feature_name, "eval_overrides": list(eval_overrides),
           "seeds": [eval_cfg.seed + k for k in range(seeds)], "points": points, "real_floor_fid": floors[0],
           "real_floor_fid_by_seed": floors, "real_floor_fid_mean": floor_mean, "ddim50_fid_vs_ddpm1000": {},
           "ddim50_fid_vs_ddpm1000_by_seed": {}, "ddim50_vs_ddpm1000_speedup_in_eval": {}, "ddim50_at_floor": {}}  # fmt: skip
    ddpm = points[ddpm_name]
    for suffix in VARIANTS:
        ddim50, label = points.get(f"ddim-50{suffix}"), variant_label(suffix)
        # the ratio of the seeds' mean FIDs; each seed's own ratio shows its spread
        out["ddim50_fid_vs_ddpm1000"][label] = ddim50["fid_mean"] / ddpm["fid_mean"] if ddim50 and ddpm["fid_mean"] else None
        out["ddim50_fid_vs_ddpm1000_by_seed"][label] = (
            [a / b if b else None for a, b in zip(ddim50["fid_by_seed"], ddpm["fid_by_seed"], strict=True)] if ddim50 else None)
        out["ddim50_at_floor"][label] = bool(ddim50 and ddim50["fid_mean"] <= floor_mean)
        out["ddim50_vs_ddpm1000_speedup_in_eval"][label] = (
            ddim50["sample_images_per_s"] / ddpm["sample_images_per_s"] if ddim50 and ddpm["sample_images_per_s"] else None)
    return out


def plot(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """FID against NFE (log scale), one panel per data set: DDIM as a line per variant, DDPM-1000 as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (data, c) in zip(axes[0], curves.items(), strict=True):
        pts = c["points"]
        for (suffix, v), style in zip(VARIANTS.items(), ("o-", "s--", "^-."), strict=True):
            ddim = [(pts[f"ddim-{s}{suffix}"]["nfe"], pts[f"ddim-{s}{suffix}"]["fid"]) for s in DDIM_STEPS
                    if f"ddim-{s}{suffix}" in pts]  # fmt: skip
            if ddim:
                spacing = "" if v["spacing"] == "linear" else f", {v['spacing']} steps"
                ax.plot(*zip(*ddim, strict=True), style, label=f"DDIM (η = {v['eta']:g}{spacing})")
        for name, p in pts.items():
            if name.startswith("ddpm"):
                ax.plot(p["nfe"], p["fid"], "*", ms=12, color="tab:red", label=name.upper())
        plots.style_fid_nfe_axes(ax, c, f"{data}: {c['model']['description']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--n", type=int, default=None, help="images per sample() call in the speed table (default 8, quick 4)")
    parser.add_argument("--rings-train-steps", type=int, default=None, help="default 2000 (the config's), quick 600")
    parser.add_argument("--rings-samples", type=int, default=None, help="samples per FID on rings (default 2000, quick 500)")
    parser.add_argument("--image-curve", action=argparse.BooleanOptionalAction, default=None, help="mnist5k curve (default: on in full mode)")
    parser.add_argument("--image-ckpt", default=None, help="a trained mnist5k DDPM checkpoint for the image curve")
    parser.add_argument("--image-train-steps", type=int, default=1000)
    parser.add_argument("--image-overrides", nargs="*", default=["data.batch_size=64"],
                        help="config overrides of the DDPM trained for the image curve (default: the default UNet, batch 64)")
    parser.add_argument("--image-samples", type=int, default=300)
    parser.add_argument("--fid-seeds", type=int, default=None,
                        help="sampling seeds of the points the FID target compares (default 3, quick 1)")
    parser.add_argument("--ddpm-overrides", nargs="*", default=[],
                        help="config overrides of every DDPM built here, e.g. model.T=100 (tests)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    quick = args.quick
    n = args.n or (4 if quick else 8)
    repeats = args.repeats or (1 if quick else 3)
    rings_steps = args.rings_train_steps or (600 if quick else 2000)
    rings_samples = args.rings_samples or (500 if quick else 2000)
    image_curve = (not quick) if args.image_curve is None else args.image_curve
    fid_seeds = args.fid_seeds or (1 if quick else 3)
    record = common.start_record("sampling", args, speed_batch=n, repeats=repeats,
                                 ddim_variants={variant_label(k): {"suffix": k, **v} for k, v in VARIANTS.items()},
                                 ddpm_overrides=args.ddpm_overrides, fid_seeds=fid_seeds)  # fmt: skip
    record["speed"] = s = speed(n, repeats, device, args.ddpm_overrides)
    print(f"speed (n={n}): " + ", ".join(f"{k} {v['images_per_s']['median']:.3g} img/s" for k, v in s.items()
                                        if isinstance(v, dict) and "nfe" in v), flush=True)  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="genbench-sampling-"))
    try:  # the DDPMs trained here (checkpoints) are deleted afterwards
        curves: dict[str, Any] = {}
        model, res = train_ddpm(["data=rings", f"trainer.max_steps={rings_steps}", *args.ddpm_overrides], tmp / "rings")
        # KID's 100 subsets of 1000 cost ~4 s per evaluation on a loaded CPU, whatever n: 10 in quick mode.
        curves["rings"] = curve(model, "rings", rings_samples, 500, device, ["eval.kid_subsets=10"] if quick else [],
                                fid_seeds)
        curves["rings"]["model"] = {"description": f"default DDPM config, {rings_steps} steps of 256", "train_steps": rings_steps,
                                    "train_time_s": res["train_time_s"], "parameters": res["parameters"]}  # fmt: skip
        if image_curve:
            if args.image_ckpt:
                from genbench.checkpoint import load_model

                model = load_model(args.image_ckpt)
                info = {"description": f"checkpoint {args.image_ckpt}", "checkpoint": args.image_ckpt}
            else:
                model, res = train_ddpm(["data=mnist5k", f"trainer.max_steps={args.image_train_steps}", *args.image_overrides,
                                         *args.ddpm_overrides], tmp / "mnist5k")  # fmt: skip
                info = {"description": f"default UNet, {' '.join(args.image_overrides)}, {args.image_train_steps} steps",
                        "train_steps": args.image_train_steps, "overrides": args.image_overrides,
                        "train_time_s": res["train_time_s"], "parameters": res["parameters"]}  # fmt: skip
            curves["mnist5k"] = curve(model, "mnist5k", args.image_samples, 128, device, seeds=fid_seeds)
            curves["mnist5k"]["model"] = info
        else:
            curves["mnist5k"] = common.skipped("quick mode: the image DDPM is too slow to train and sample on a CPU in CI "
                                               "(run without --quick, or with --image-curve)")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["curves"] = curves
    plotted = {k: v for k, v in curves.items() if not v.get("skipped")}
    png = plot(plotted, common.record_path("sampling", args).with_name(f"sampling_quality_speed{'_quick' if quick else ''}.png"))
    record["plot"] = str(png.relative_to(common.ROOT)) if png.is_relative_to(common.ROOT) else str(png)
    speedup = s["ddim50_vs_ddpm1000_speedup"]
    fid_ratios = {k: v["ddim50_fid_vs_ddpm1000"] for k, v in plotted.items()}  # data -> {variant label: ratio}
    record["targets"] = {
        "ddim50_speedup": speedup, "speedup_target": SPEEDUP_TARGET,
        "speedup_met": speedup is not None and speedup >= SPEEDUP_TARGET,
        "ddim50_fid_ratio": fid_ratios, "fid_ratio_target": 1 + FID_TOLERANCE,
        # met: within 10 % of DDPM-1000, or no worse than real samples of the same n (the estimator's floor)
        "fid_met": {k: {eta: (r is not None and r <= 1 + FID_TOLERANCE) or plotted[k]["ddim50_at_floor"][eta]
                        for eta, r in by_eta.items()} for k, by_eta in fid_ratios.items()},
    }  # fmt: skip
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
