"""``make gpu-check``: what a short slot on one GPU must measure, in one command, under 8 minutes.

1. ``train``: every family the lecture trains, 300 steps on mnist5k at batch 128 from one seed, in fp32 and in
   bf16-mixed with ``model.compile=true`` (genbench's ``Trainer`` config); the loss curves smoothed
   (trailing means over 30 steps) and compared: largest relative difference, final values;
2. ``mfu``: ``net=unet_cifar10`` at batch 128: FLOPs of a training step counted once (:func:`benchmarks.flops.count_flops`),
   FLOP/s of the bare loop (:mod:`benchmarks.train_overhead`) under bf16 autocast, eager and compiled,
   after warm-up, over the GPU's bf16 dense peak (:data:`PEAK_BF16_DENSE`; target 40 %);
3. ``eval``: the evaluator with InceptionV3 (random weights: the real ones' cost) on 10,000 CIFAR-shaped images;
4. ``ddp``: ``genbench-train trainer=ddp trainer.devices=2`` per family when 2 GPUs are present.

Each part runs in its own process, killed at its cap (:data:`CAPS`); it saves what it has measured after
each unit of work and starts none in its last ``SOFT_MARGIN`` seconds. Without CUDA: "skipped: no CUDA
device", exit 0. ``--cpu-dry-run``: every part's CPU path in this process at tiny sizes (no compile, no
DDP launch), as the tests run it. :func:`render` writes the record as markdown.

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --cpu-dry-run --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.gpu_check_report import MFU_TARGET, compare_curves, mfu, peak_bf16, render  # noqa: E402

Emit = Callable[[dict[str, Any]], None]  # a part hands over what it has so far: a part killed at its cap keeps it

FULL = {"steps": 300, "batch_size": 128, "smooth": 30, "clock_warmup": 20, "compile": True,
        "mfu_batch_size": 128, "mfu_warmup": 5, "mfu_steps": 50, "mfu_repeats": 3,
        "eval_n": 10_000, "eval_batch_size": 500, "ddp_steps": 100}  # fmt: skip
DRY = {"steps": 3, "batch_size": 8, "smooth": 2, "clock_warmup": 1, "compile": False,
       "mfu_batch_size": 1, "mfu_warmup": 0, "mfu_steps": 1, "mfu_repeats": 1,
       "eval_n": 2, "eval_batch_size": 2, "ddp_steps": 2}  # fmt: skip
#: Seconds each part's process may run (killed after); the sum stays under 8 minutes with start-up.
CAPS = {"train": 200, "mfu": 130, "eval": 60, "ddp": 50}
#: A part stops starting new work this many seconds before its cap (its process start and record included).
SOFT_MARGIN = 25


# --- the parts -----------------------------------------------------------------------------------
def train_runs(compile: bool) -> dict[str, list[str]]:
    """The compared runs' config overrides: the fp32 reference and bf16-mixed (compiled when ``compile``)."""
    return {"fp32": ["trainer.precision=32-true", "model.compile=false"],
            "bf16": ["trainer.precision=bf16-mixed", f"model.compile={str(compile).lower()}"]}  # fmt: skip


def _curve_callback(deadline: float):
    import lightning as L

    class LossCurve(L.Callback):
        """Every step's logged ``train/*loss`` values (``log_every_n_steps=1``); stops the fit at the deadline."""

        def __init__(self) -> None:
            self.values: dict[str, list[torch.Tensor]] = {}
            self.stopped_at: int | None = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            for k, v in trainer.callback_metrics.items():
                if k.startswith("train/") and k.endswith("loss"):
                    self.values.setdefault(k, []).append(v.detach().float().clone())  # no sync per step
            if time.perf_counter() > deadline and not trainer.should_stop:
                trainer.should_stop, self.stopped_at = True, trainer.global_step

    return LossCurve()


def train_one(family: str, run: list[str], s: dict[str, Any], device: torch.device, deadline: float) -> dict[str, Any]:
    import lightning as L
    from hydra.utils import instantiate

    from benchmarks.train_loops import StepClock, overrides

    model, dm, cfg = common.build(family, overrides(family, s["batch_size"], device, run))
    curve, clock = _curve_callback(deadline), StepClock(s["clock_warmup"], s["steps"] - s["clock_warmup"], device)
    trainer = instantiate(cfg.trainer, max_steps=s["steps"], logger=False, callbacks=[curve, clock], log_every_n_steps=1,
                          enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    L.seed_everything(0, verbose=False)
    t, _ = common.timed(lambda: trainer.fit(model, datamodule=dm), device)
    out = {"overrides": run, "precision": str(trainer.precision), "steps": trainer.global_step, "fit_s": t["wall"],
           "stopped_at_cap": curve.stopped_at, "curves": {k: [float(v) for v in vs] for k, vs in curve.values.items()}}  # fmt: skip
    if clock.end[0] > 0:
        out["images_per_s_after_warmup"] = clock.images_per_s["wall"]
    return out


def part_train(s: dict[str, Any], device: torch.device, deadline: float, emit: Emit) -> dict[str, Any]:
    from genbench.lecture import available_families

    out: dict[str, Any] = {}
    for family in available_families():
        runs: dict[str, Any] = {}
        out[family] = {"runs": runs}
        for name, run in train_runs(s["compile"]).items():
            if time.perf_counter() > deadline:
                runs[name] = common.skipped("time cap reached before this run")
                continue
            runs[name] = train_one(family, run, s, device, deadline)
            print(f"  train {family} {name}: {runs[name]['steps']} steps in {runs[name]['fit_s']:.1f} s", flush=True)
            emit(out)
        if all("curves" in r for r in runs.values()):
            ref, test = runs["fp32"]["curves"], runs["bf16"]["curves"]
            out[family]["comparison"] = {k: compare_curves(ref[k], test[k], s["smooth"]) for k in ref if k in test}
            emit(out)
    return out


def unet_loop(s: dict[str, Any], device: torch.device, compiled: bool):
    """The bare training loop of ``net=unet_cifar10`` on random CIFAR-shaped uint8 images, under bf16 autocast."""
    from hydra.utils import instantiate

    from benchmarks import flops
    from benchmarks.train_loops import BareLoop, bare_parts, parts_step

    family, cfg = flops.config("ddpm_unet_cifar10", s["mfu_batch_size"], device)
    model = instantiate(cfg.model, _convert_="all")
    if compiled:
        model.net.compile()  # what model.compile=true does (GenerativeModule.setup)
    step = parts_step(bare_parts(family, model, cfg, device), autocast=(device.type, torch.bfloat16))  # as bf16-mixed

    x = torch.randint(0, 256, (4 * s["mfu_batch_size"], *model.data_shape), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    return BareLoop(step, x, s["mfu_batch_size"], device)


def part_mfu(s: dict[str, Any], device: torch.device, deadline: float, emit: Emit) -> dict[str, Any]:
    from benchmarks import flops

    counted = flops.count_flops("ddpm_unet_cifar10")  # meta tensors: counted once, costs nothing
    per_image, bs = counted["train_flops_per_image"], s["mfu_batch_size"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    found = peak_bf16(name)
    peak = found[1] if found else None
    out: dict[str, Any] = {"network": "net=unet_cifar10", "parameters": counted["parameters"], "batch_size": bs,
                           "train_flops_per_image": per_image, "train_flops_per_step": per_image * bs, "target": MFU_TARGET,
                           "loop": "bare (train_overhead.bare_parts), bf16 autocast",
                           "peak": {"device": found[0], "bf16_dense_flop_per_s": peak} if found
                           else common.skipped(f"none listed for {name}")}  # fmt: skip
    if device.type == "cuda":
        out["matmul_bf16"] = common.matmul_peak(device, torch.bfloat16, n=8192)
    for variant, compiled in (("eager", False), ("compiled", True)):
        if compiled and not s["compile"]:
            out[variant] = common.skipped("cpu dry run: no torch.compile")
            continue
        if time.perf_counter() > deadline:
            out[variant] = common.skipped("time cap reached before this variant")
            continue
        loop = unet_loop(s, device, compiled)
        ips = [loop(s["mfu_steps"], s["mfu_warmup"] if r == 0 else 0)["wall"] for r in range(s["mfu_repeats"])]
        out[variant] = {"images_per_s": common.summary(ips), **mfu(per_image, common.median(ips), peak)}
        if "matmul_bf16" in out:
            out[variant]["fraction_of_measured_matmul"] = out[variant]["achieved_flop_per_s"] / out["matmul_bf16"]["flop_per_s"]
        print(f"  mfu {variant}: {common.median(ips):.0f} img/s, {out[variant]['achieved_flop_per_s'] / 1e12:.2f} TFLOP/s", flush=True)
        emit(out)
    return out


def part_eval(s: dict[str, Any], device: torch.device, deadline: float, emit: Emit) -> dict[str, Any]:
    from evaluation import EvalConfig, Evaluator, TensorReference, TensorSource
    from evaluation.testing import write_random_inception

    n, g = s["eval_n"], torch.Generator().manual_seed(0)
    real, fake = (torch.rand(n, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    with tempfile.TemporaryDirectory(prefix="genbench-gpu-check-") as tmp, \
            mock.patch.dict(os.environ, {"GENBENCH_CACHE": str(Path(tmp) / "cache")}):  # cold: nothing cached
        weights = write_random_inception(Path(tmp) / "inception_random.pth", real[: min(8, n)])
        cfg = EvalConfig(features="inception", inception_weights=str(weights), batch_size=s["eval_batch_size"],
                         num_samples=n, kid_subset_size=min(1000, n), is_splits=min(10, n), nll_samples=0,
                         device=str(device))  # fmt: skip
        evaluator = Evaluator(cfg, TensorReference(real, "uniform_3x32x32"))
        t_prep, _ = common.timed(evaluator.prepare, device)
        t_real, _ = common.timed(evaluator.real_statistics, device)
        t_eval, res = common.timed(lambda: evaluator.evaluate(TensorSource(fake, "uniform_3x32x32")), device)
    return {"images": n, "batch_size": s["eval_batch_size"], "weights": "random (timing only)", "prepare_s": t_prep["wall"],
            "real_statistics_images_per_s": n / t_real["wall"], "evaluate_images_per_s": n / t_eval["wall"],
            "evaluate_s": t_eval["wall"], "metrics": {k: res.get(k) for k in ("fid", "is_mean", "kid_mean", "precision")}}  # fmt: skip


def ddp_overrides(family: str, s: dict[str, Any], run_dir: str) -> list[str]:
    """``genbench-train``'s overrides of the 2-process DDP run."""
    return [f"model={family}", "trainer=ddp", "trainer.devices=2", f"data.batch_size={s['batch_size']}",
            f"trainer.max_steps={s['ddp_steps']}", "logger=none", "eval.final=false", "+trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", "~callbacks.progress_bar", f"hydra.run.dir={run_dir}"]  # fmt: skip


def part_ddp(s: dict[str, Any], device: torch.device, deadline: float, emit: Emit) -> dict[str, Any]:
    from genbench.lecture import available_families

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        for family in available_families():  # the runs' configs still compose, so they cannot rot before 2 GPUs arrive
            common.compose(ddp_overrides(family, s, tempfile.gettempdir()))
        return common.skipped(f"{gpus} GPU")
    out: dict[str, Any] = {"gpus": gpus, "steps": s["ddp_steps"], "batch_size_per_process": s["batch_size"]}
    for family in available_families():
        left = deadline - time.perf_counter()
        if left < 10:
            out[family] = common.skipped("time cap reached before this run")
            continue
        with tempfile.TemporaryDirectory(prefix="genbench-gpu-check-ddp-") as run:
            cmd = [str(Path(sys.executable).parent / "genbench-train"), *ddp_overrides(family, s, run)]
            rc, wall, text = run_capped(cmd, left, capture=True)
            res = json.loads((Path(run) / "results.json").read_text()) if (Path(run) / "results.json").is_file() else {}
        out[family] = {"returncode": rc, "wall_s": wall, "status": res.get("status"), "steps": res.get("steps"),
                       "train_images_per_s": res.get("train_images_per_s"), "rank_1_ran": "GLOBAL_RANK: 1" in text,
                       "tail": text[-1500:] if rc else ""}  # fmt: skip
        print(f"  ddp {family}: exit {rc}, {res.get('train_images_per_s')} img/s in {wall:.0f} s", flush=True)
        emit(out)
    return out


PARTS = {"train": part_train, "mfu": part_mfu, "eval": part_eval, "ddp": part_ddp}


# --- running the parts -----------------------------------------------------------------------------
def run_capped(cmd: list[str], timeout: float, capture: bool = False) -> tuple[int | None, float, str]:
    """Exit status (None: killed), seconds and output (``capture``) of ``cmd`` in its own process group,
    killed after ``timeout`` s with all it started (DDP ranks, compile workers)."""
    start = time.perf_counter()
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, stdout=pipe, stderr=subprocess.STDOUT if capture else None, text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        rc = None
    return rc, time.perf_counter() - start, text or ""


def run_part(name: str, cap: float) -> dict[str, Any]:
    """Part ``name`` in a child process with the full sizes; its result, or why there is none."""
    with tempfile.TemporaryDirectory(prefix="genbench-gpu-check-") as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-out", str(out),
               "--deadline-s", str(cap - SOFT_MARGIN)]  # fmt: skip
        rc, wall, _ = run_capped(cmd, cap)
        result = json.loads(out.read_text()) if out.is_file() else None
    why = f"killed at its cap of {cap} s" if rc is None else f"failed with exit status {rc} (see its output above)"
    if result is None or result.get("skipped"):
        return result or common.skipped(why)
    return {**result, "part_wall_s": round(wall, 1), **({} if rc == 0 else {"incomplete": why})}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--cpu-dry-run", action="store_true", help="every part's CPU path, tiny sizes, on the CPU")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--part-out", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-s", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    if args.cpu_dry_run:
        args.device = "cpu"
    device = common.setup(args)
    settings = DRY if args.cpu_dry_run else FULL
    if args.part:  # a child process of run_part

        def emit(result: dict[str, Any]) -> None:  # atomic: a kill never leaves half a file
            tmp = Path(args.part_out + ".tmp")
            tmp.write_text(json.dumps(result, default=str))
            tmp.replace(args.part_out)

        emit(PARTS[args.part](settings, device, time.perf_counter() + (args.deadline_s or CAPS[args.part]), emit))
        return 0
    if args.cpu_dry_run and not args.out:
        args.out = str(Path(tempfile.mkdtemp(prefix="genbench-gpu-check-")) / "gpu_check.json")
    record = common.start_record("gpu_check", args, **settings, caps=CAPS)
    record["mode"] = "cpu_dry_run" if args.cpu_dry_run else "full"
    for name, cap in CAPS.items():
        print(f"gpu-check: {name} (at most {cap} s) ...", flush=True)
        start = time.perf_counter()
        if args.cpu_dry_run:
            record[name] = PARTS[name](settings, device, start + cap - SOFT_MARGIN, lambda r: None)
        else:
            record[name] = run_part(name, cap)
        r = record[name]
        print(f"gpu-check: {name}: " + (f"skipped: {r['reason']}" if r.get("skipped") else
                                        f"{r.get('incomplete', 'done')} ({time.perf_counter() - start:.0f} s)"), flush=True)  # fmt: skip
    common.write_record(record, args)
    print(render(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
