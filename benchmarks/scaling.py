"""Scaling: evaluation time and peak memory against the number of samples, train images/s against batch size.

1. **Evaluation time vs n** (1k, 2k, 4k, 8k generated samples): the one evaluation loop on a VAE
   (its sampling is cheap, so the loop itself is what is timed) against mnist5k's cached real
   statistics in the classifier space, the sizes interleaved. Linear means a constant cost per
   sample: the record holds a least-squares fit t = a + b·n, its R², and the marginal seconds per
   1k samples between consecutive sizes (equal for a linear loop). On the CPU the fit uses this
   process's CPU time (one torch thread), which other jobs on a shared machine do not inflate.
2. **Peak memory vs n**: each size evaluated in a fresh process (the same set-up before it), its
   peak resident memory sampled by a thread during the evaluation (GPU: also
   ``torch.cuda.max_memory_allocated``). Samples are streamed in batches, so only what the metrics
   keep per sample may grow with n (features: n × 128 floats, 0.5 MiB per 1k): the record holds
   the least-squares slope of the peak (median of ``--memory-repeats`` processes per size) against n;
   target: at most twice that.
3. **Training memory vs data set size** (full mode): a VAE fit on ``rings`` with 10k, 100k and 1M
   points, each in a fresh process: the peak resident memory during its first 21 steps, less the
   data set itself (in memory by design); target: it grows by less than one copy of the data set.
4. **Train images/s vs batch size**: genbench's Trainer loop (as in ``train_overhead.py``) per family.

    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from models.registry import family_names, family_spec  # noqa: E402

SIZES = (1000, 2000, 4000, 8000)


def evaluator_and_source(device: torch.device, batch_size: int = 250):
    """The evaluation loop on mnist5k (classifier features, cached) and an untrained default VAE as the source."""
    from hydra.utils import instantiate

    from evaluation import DataReference, EvalConfig, Evaluator, ModelSource

    model, _, cfg = common.build("vae", ["data=mnist5k", f"eval.batch_size={batch_size}", "eval.nll_samples=0"])
    eval_cfg = EvalConfig.from_node(cfg.eval)
    evaluator = Evaluator(eval_cfg, DataReference(instantiate(cfg.data), eval_cfg.split, eval_cfg.num_real), device=device)
    evaluator.real_statistics()  # trains / loads the classifier, caches the real side
    return evaluator, ModelSource(model.to(device).eval())


def eval_time(sizes: list[int], repeats: int, device: torch.device) -> dict[str, Any]:
    evaluator, source = evaluator_and_source(device)
    runs = common.interleaved({str(n): (lambda n=n: common.timed(lambda: evaluator.evaluate(source, n), device)[0])
                               for n in sizes}, repeats=repeats, warmup=1)  # fmt: skip
    # The fit uses CPU time on the CPU (this process's own work, not the other jobs' time slices), the
    # wall clock on a GPU.
    clock = common.primary_clock(device)
    med = [common.median(m[clock] for m in runs[str(n)]) for n in sizes]
    fit = linear_fit(sizes, med)
    marginal = [(med[i + 1] - med[i]) / (sizes[i + 1] - sizes[i]) * 1000 for i in range(len(sizes) - 1)]
    return {
        "sizes": sizes, "clock": clock, "fit_on": "process CPU time" if clock == "cpu" else "wall clock",
        "seconds": {str(n): common.per_clock(runs[str(n)]) for n in sizes},
        "fit": fit, "marginal_s_per_1k": marginal,
        "marginal_max_over_min": max(marginal) / min(marginal) if min(marginal) > 0 else None,
        "source": "default VAE (untrained), classifier features, real statistics cached",
    }  # fmt: skip


def linear_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least squares y = a + b·x and its R²."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    b = sum((a - mx) * (c - my) for a, c in zip(x, y, strict=True)) / sxx
    a = my - b * mx
    ss_res = sum((c - a - b * xi) ** 2 for xi, c in zip(x, y, strict=True))
    ss_tot = sum((c - my) ** 2 for c in y)
    return {"intercept_s": a, "s_per_1k_samples": b * 1000, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


# --- peak memory, one process per size ----------------------------------------------------------
def memory_probe(n: int, device: torch.device) -> dict[str, Any]:
    """Runs in a fresh process: the peak memory of one evaluation of n samples over the memory before it."""
    evaluator, source = evaluator_and_source(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    with common.PeakRSS() as rss:
        evaluator.evaluate(source, n)
    out = {"n": n, "rss_before_mib": rss.before_mib, "rss_peak_mib": rss.peak_mib, "rss_growth_mib": rss.growth_mib}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        out.update(cuda_before_mib=base, cuda_peak_mib=peak, cuda_growth_mib=peak - base)
    return out


def train_memory_probe(n_train: int, device: torch.device, steps: int = 20) -> dict[str, Any]:
    """Runs in a fresh process: peak memory of a short VAE fit on ``rings`` with ``n_train`` points, over the
    memory before it (the data set is loaded before, so what grows is the training loop's own memory)."""
    from benchmarks.train_loops import GenbenchLoop, overrides

    model, dm, cfg = common.build("vae", [*overrides("vae", 256, device), "data=rings", f"data.n_train={n_train}",
                                          "data.n_val=1000"])  # fmt: skip
    loop = GenbenchLoop(model, dm, cfg, device)
    with common.PeakRSS() as rss:  # the whole first fit: its constant set-up costs cancel between sizes
        loop(steps, 1)
    data_mib = (dm.x_train.nbytes + dm.y_train.nbytes) / 2**20
    return {"n": n_train, "data_mib": data_mib, "rss_before_mib": rss.before_mib, "rss_peak_mib": rss.peak_mib,
            "rss_growth_mib": rss.growth_mib}  # fmt: skip


#: glibc's malloc serves blocks above its mmap threshold with mmap (returned to the system when freed), but it
#: raises that threshold to the largest block freed so far, after which freed blocks stay in its heap: resident
#: memory then also counts what the allocator keeps, which grows with the sizes a run happened to free. The
#: evaluation probes run twice: as is, and with the threshold fixed (64 KiB), which shows genbench's own peak.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _probe(flag: str, n: int, args, env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, flag, str(n), "--device", str(args.device)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probes(flag: str, sizes: list[int], args, env: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``args.memory_repeats`` fresh processes per size, the sizes interleaved: {size: [probe, …]}.

    One process's peak resident memory varies by tens of MiB with what the allocator keeps of freed
    blocks, so each size is probed repeatedly and its median used."""
    out: dict[str, list[dict[str, Any]]] = {str(n): [] for n in sizes}
    for r in range(args.memory_repeats):
        for n in sizes[r % len(sizes):] + sizes[: r % len(sizes)]:
            out[str(n)].append(_probe(flag, n, args, env))
    return out


def _median_of(probes: list[dict[str, Any]], key: str) -> float:
    return common.median(p[key] for p in probes)


def train_memory(sizes: list[int], args) -> dict[str, Any]:
    probes = _probes("--train-memory-probe", sizes, args)
    # The data set itself is in memory by design (in-memory data modules): what must not grow is the rest.
    rows = [{"n": n, "data_mib": probes[str(n)][0]["data_mib"], "rss_peak_mib": _median_of(probes[str(n)], "rss_peak_mib"),
             "rss_growth_mib": _median_of(probes[str(n)], "rss_growth_mib"),
             "rss_peak_mib_raw": [p["rss_peak_mib"] for p in probes[str(n)]]} for n in sizes]  # fmt: skip
    peak_less_data = [r["rss_peak_mib"] - r["data_mib"] for r in rows]
    slope = linear_fit(sizes, peak_less_data)["s_per_1k_samples"] * 1000  # MiB per 1M points
    data_per_1m = rows[-1]["data_mib"] / sizes[-1] * 1e6
    # genbench's own peak: glibc keeps every freed block (genbench.runtime.keep_freed_memory), so as is the
    # resident memory also holds blocks the fit has freed, e.g. the data's set-up copies
    fixed = _probes("--train-memory-probe", sizes, args, FIXED_MMAP_THRESHOLD)
    fixed_less_data = [_median_of(fixed[str(n)], "rss_peak_mib") - r["data_mib"] for n, r in zip(sizes, rows, strict=True)]
    fixed_slope = linear_fit(sizes, fixed_less_data)["s_per_1k_samples"] * 1000
    return {"sizes": sizes, "rows": rows, "peak_less_data_mib": peak_less_data, "rss_growth_mib": [r["rss_growth_mib"] for r in rows],
            "peak_less_data_per_1m_points_mib": slope, "data_per_1m_points_mib": data_per_1m,
            "fixed_mmap_threshold": {"env": FIXED_MMAP_THRESHOLD, "peak_less_data_mib": fixed_less_data,
                                     "peak_less_data_per_1m_points_mib": fixed_slope},
            "met": fixed_slope < data_per_1m,
            "target": "peak resident memory (allocator threshold fixed), less the data set, grows by less than one copy "
                      "of the data set",
            "note": "VAE on rings (2-D points, batch 256), a fresh process per size: resident memory sampled during a first fit "
                    "of 21 steps; the least-squares slope of its peak less the data set (12 bytes per point with its label, "
                    "loaded before the fit) against the number of points"}  # fmt: skip


def peak_memory(sizes: list[int], args) -> dict[str, Any]:
    probes = _probes("--memory-probe", sizes, args)
    rows = [{"n": n, "rss_peak_mib": _median_of(probes[str(n)], "rss_peak_mib"),
             "rss_growth_mib": _median_of(probes[str(n)], "rss_growth_mib"),
             "rss_peak_mib_raw": [p["rss_peak_mib"] for p in probes[str(n)]]} for n in sizes]  # fmt: skip
    if args.device != "cpu" and "cuda_peak_mib" in probes[str(sizes[0])][0]:
        for row, n in zip(rows, sizes, strict=True):
            row["cuda_peak_mib"] = _median_of(probes[str(n)], "cuda_peak_mib")
    peak = [r["rss_peak_mib"] for r in rows]
    slope = linear_fit(sizes, peak)["s_per_1k_samples"]  # MiB per 1k samples
    fixed = _probes("--memory-probe", sizes, args, FIXED_MMAP_THRESHOLD)
    fixed_peak = [_median_of(fixed[str(n)], "rss_peak_mib") for n in sizes]
    fixed_slope = linear_fit(sizes, fixed_peak)["s_per_1k_samples"]
    # The metrics must hold every generated sample's features: KID and the k-NN metrics each keep a list of
    # n x 128 float32 and concatenate it once (4 copies); anything beyond a few copies would be a leak or an n^2 term.
    features_per_1k = 1000 * 128 * 4 / 2**20
    copies = 4
    return {
        "sizes": sizes, "rows": rows, "rss_peak_mib": peak, "rss_growth_mib": [r["rss_growth_mib"] for r in rows],
        "peak_per_1k_samples_mib": slope, "features_kept_per_1k_mib": features_per_1k, "feature_copies": copies,
        "fixed_mmap_threshold": {"env": FIXED_MMAP_THRESHOLD, "rss_peak_mib": fixed_peak, "peak_per_1k_samples_mib": fixed_slope},
        "met": fixed_slope <= 2 * copies * features_per_1k,
        "target": f"peak resident memory (allocator threshold fixed) grows by at most 2x the {copies} copies of the "
                  "generated features (n x 128 float32) that KID and the k-NN metrics hold: no n^2 or per-batch term",
        "note": "a fresh process per size (the same set-up before the evaluation), resident memory sampled every 2 ms "
                "during one evaluation, the median of --memory-repeats processes; the least-squares slope of its peak "
                "against n, as is and with glibc's mmap threshold fixed (FIXED_MMAP_THRESHOLD). The metrics keep "
                "n x 128 float32 features; KID and the k-NN metrics work in fixed tiles; samples are streamed in batches",
    }  # fmt: skip


# --- train images/s vs batch size ---------------------------------------------------------------------
def train_vs_batch(families: list[str], batch_sizes: dict[str, list[int]], steps: int, warmup: int, repeats: int,
                   device: torch.device) -> dict[str, Any]:  # fmt: skip
    from benchmarks.train_loops import GenbenchLoop, overrides

    clock = common.primary_clock(device)
    out, by_clock = {}, {}
    for family in families:
        loops = {}
        for bs in batch_sizes[family]:
            model, dm, cfg = common.build(family, overrides(family, bs, device))
            loops[str(bs)] = GenbenchLoop(model, dm, cfg, device)
        n = max(2, steps // 3) if family == "ddpm" else steps  # a DDPM step takes ~1 s on a CPU
        runs = common.interleaved({bs: (lambda loop=loop, n=n: loop(n, warmup)) for bs, loop in loops.items()}, repeats)
        by_clock[family] = {bs: common.per_clock(ms) for bs, ms in runs.items()}
        out[family] = {bs: s[clock] for bs, s in by_clock[family].items()}
        print(f"{family}: " + ", ".join(f"bs {bs}: {s['median']:.0f} img/s" for bs, s in out[family].items()), flush=True)
    return {"clock": clock, "images_per_s": out, "images_per_s_by_clock": by_clock}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-memory-sizes", type=int, nargs="*", default=None,
                        help="data set sizes (points) of the training-memory probe (default 10k 100k 1M; quick: none)")
    parser.add_argument("--memory-repeats", type=int, default=None, help="fresh processes per size (default 3, quick 2)")
    parser.add_argument("--families", nargs="+", default=family_names())
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="train images/s at these (all families)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe, device)))
        return 0
    if args.train_memory_probe is not None:
        print(json.dumps(train_memory_probe(args.train_memory_probe, device)))
        return 0
    quick = args.quick
    repeats = args.repeats or 3
    args.memory_repeats = args.memory_repeats or (2 if quick else 3)
    # Diffusion steps cost ~4x a GAN's or VAE's at mnist5k size: half the batch sizes for a family with samplers.
    slow = {f for f in args.families if f in family_names() and "sampler" in family_spec(f).sample_options}
    batch_sizes = {f: ([16, 32, 64, 128] if f in slow else [32, 64, 128, 256]) for f in args.families}
    if quick:
        batch_sizes = {f: ([8, 16] if f in slow else [32, 128]) for f in args.families}
    if args.batch_sizes:
        batch_sizes = {f: args.batch_sizes for f in batch_sizes}
    steps, warmup = (3, 1) if quick else (10, 2)
    record = common.start_record("scaling", args, sizes=args.sizes, repeats=repeats, train_steps=steps,
                                 train_warmup=warmup, batch_sizes=batch_sizes, memory_repeats=args.memory_repeats)  # fmt: skip
    record["eval_time"] = e = eval_time(args.sizes, repeats, device)
    print(f"eval time: {[round(e['seconds'][str(n)]['wall']['median'], 2) for n in args.sizes]} s wall, R² {e['fit']['r2']:.4f} "
          f"({e['fit_on']}), "
          f"marginal s/1k {[round(m, 3) for m in e['marginal_s_per_1k']]}", flush=True)  # fmt: skip
    # A fresh process per size: the quick mode probes the two ends only.
    record["peak_memory"] = m = peak_memory([args.sizes[0], args.sizes[-1]] if quick else args.sizes, args)
    print(f"peak memory: {[round(g, 1) for g in m['rss_peak_mib']]} MiB ({m['peak_per_1k_samples_mib']:+.2f} MiB per 1k)", flush=True)
    train_sizes = args.train_memory_sizes if args.train_memory_sizes is not None else ([] if quick else [10_000, 100_000, 1_000_000])
    if train_sizes:
        record["train_memory"] = t = train_memory(train_sizes, args)
        print(f"training memory, peak less the data: {[round(g, 1) for g in t['peak_less_data_mib']]} MiB for {train_sizes} "
              f"points ({t['peak_less_data_per_1m_points_mib']:+.2f} MiB per 1M)", flush=True)
    else:
        record["train_memory"] = common.skipped("quick mode (run without --quick, or give --train-memory-sizes)")
    record["train_vs_batch_size"] = train_vs_batch(args.families, batch_sizes, steps, warmup, 2 if quick else repeats, device)
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
