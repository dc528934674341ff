"""What ``gpu_check.py`` makes of its measurements: MFU against the data sheet's bf16 peak, the fp32 and
bf16 loss curves compared, and the record as markdown (:func:`render`, which ``render_docs.py`` also calls).
Plain arithmetic on numbers and records, tested on the CPU.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

from benchmarks import common

MFU_TARGET = 0.40
#: Dense (no sparsity) bf16 tensor-core peaks of NVIDIA's data sheets, FLOP/s: (label, substrings the
#: device name must contain, substrings it must not, peak). Case-insensitive, first match wins.
PEAK_BF16_DENSE = (
    ("H100 PCIe", ("H100", "PCIe"), (), 756e12),
    ("H100 SXM", ("H100",), ("PCIe", "NVL"), 989e12),  # "NVIDIA H100 80GB HBM3"
    ("H200", ("H200",), ("NVL",), 989e12),
    ("A100", ("A100",), (), 312e12),
)


# --- arithmetic (tested on the CPU) ------------------------------------------------------------
def peak_bf16(device_name: str) -> tuple[str, float] | None:
    """``(label, FLOP/s)`` of :data:`PEAK_BF16_DENSE` for a CUDA device name; None when not listed."""
    name = device_name.lower()
    for label, need, refuse, peak in PEAK_BF16_DENSE:
        if all(s.lower() in name for s in need) and not any(s.lower() in name for s in refuse):
            return label, peak
    return None


def mfu(flops_per_image: float, images_per_s: float, peak_flop_per_s: float | None) -> dict[str, float | None]:
    """Model FLOPs utilisation: achieved FLOP/s (FLOPs of one training image × images/s) over the peak."""
    achieved = flops_per_image * images_per_s
    return {"achieved_flop_per_s": achieved, "mfu": achieved / peak_flop_per_s if peak_flop_per_s else None}


def smooth(xs: list[float], window: int) -> list[float]:
    """Trailing means over ``window`` values, from the first full window on (``len(xs) - window + 1`` values)."""
    window = max(1, min(window, len(xs)))
    c = [0.0, *itertools.accumulate(xs)]
    return [(c[i + window] - c[i]) / window for i in range(len(xs) - window + 1)]


def compare_curves(ref: list[float], test: list[float], window: int) -> dict[str, Any]:
    """The two curves smoothed over their common steps: largest |test − ref| over the reference curve's scale
    (its largest |value|: a loss that crosses zero, such as the GAN's hinge loss, has no pointwise relative
    difference there), where, and final values.

    ``noise``: the relative standard error of the reference's last smoothed value (stdev of its last ``window``
    steps / √window / |their mean|): what two runs that differ only in their random draws would differ by
    (compiled dropout draws other random numbers than eager's, and bf16 rounds: the runs part after step 1).
    """
    m = min(len(ref), len(test))
    if m == 0:
        return common.skipped("no logged steps to compare")
    a, b = smooth(ref[:m], window), smooth(test[:m], window)
    scale = max(max(abs(x) for x in a), 1e-12)
    rel = [abs(y - x) / scale for x, y in zip(a, b, strict=True)]
    i = max(range(len(rel)), key=rel.__getitem__)
    w = m - len(a) + 1
    last = ref[m - w : m]
    noise = statistics.stdev(last) / math.sqrt(w) / max(abs(a[-1]), 1e-12) if w > 1 else None
    return {"max_rel_diff": rel[i], "at_step": i + w, "final_ref": a[-1], "final_test": b[-1], "noise": noise,
            "steps": m, "window": w}  # fmt: skip


# --- markdown --------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def render(record: dict[str, Any]) -> str:
    """The record as markdown: a table of the parts, then one of the loss curves per family."""
    m, s = record["machine"], record["settings"]
    gpu = f"{m.get('gpu_count', 0)}× {m['gpu']}" if m.get("gpu") else "no GPU (a CPU dry run: its numbers mean nothing)"
    rows = []
    r = record["mfu"]
    peak = r.get("peak", {})
    peak = (f"of the {peak['device']}'s bf16 dense peak, {peak['bf16_dense_flop_per_s'] / 1e12:.0f} TFLOP/s" if "device" in peak
            else "(MFU unknown: no bf16 peak listed for this device)")  # fmt: skip
    for variant in ("eager", "compiled"):
        v = r if r.get("skipped") else r.get(variant, common.skipped("not run"))
        met = "" if v.get("mfu") is None else (", met" if v["mfu"] >= MFU_TARGET else ", **missed**")
        rows.append((f"MFU, `net=unet_cifar10` batch {s['mfu_batch_size']}, bf16 autocast, {variant}",
                     f"skipped: {v['reason']}" if v.get("skipped") else
                     f"{_pct(v['mfu'])}{met}: {v['achieved_flop_per_s'] / 1e12:.1f} TFLOP/s {peak} "
                     f"({v['images_per_s']['median']:,.0f} img/s × {r['train_flops_per_image'] / 1e9:.1f} GFLOP)",
                     f"≥ {MFU_TARGET:.0%}"))  # fmt: skip
    r = record["eval"]
    rows.append((f"Evaluator, InceptionV3 (random weights), {s['eval_n']:,} CIFAR-shaped images",
                 f"skipped: {r['reason']}" if r.get("skipped") else f"{r['evaluate_images_per_s']:,.0f} img/s "
                 f"(real statistics {r['real_statistics_images_per_s']:,.0f} img/s)", ""))  # fmt: skip
    r = record["ddp"]
    runs = {} if r.get("skipped") else {f: v for f, v in r.items() if isinstance(v, dict)}
    rows.append((f"DDP, 2 processes, {s['ddp_steps']} steps", f"skipped: {r['reason']}" if r.get("skipped") else "; ".join(
        f"{f}: skipped: {v['reason']}" if v.get("skipped") else f"{f}: exit {v['returncode']}, {v['train_images_per_s']} img/s"
        for f, v in runs.items()), "exit 0"))  # fmt: skip
    lines = [f"GPU check of {record['date']}: {gpu}, torch {m['torch']}, {record.get('wall_s', 0):.0f} s in all.", "",
             "| part | result | target |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows), "",
             f"bf16-mixed{' with `model.compile=true`' if s['compile'] else ''} against fp32, {s['steps']} steps at batch "
             f"{s['batch_size']}, curves smoothed over {s['smooth']} steps; noise: the fp32 curve's relative standard error "
             "at its end:", "",
             "| family | loss | fp32 final | bf16 final | max rel. diff (at step) | noise | img/s fp32, bf16 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    train = record["train"]
    for family, v in ({} if train.get("skipped") else train).items():
        ips = ", ".join(f"{x['images_per_s_after_warmup']:,.0f}" if "images_per_s_after_warmup" in x else "—" for x in v["runs"].values())
        for key, c in v.get("comparison", {"—": common.skipped("a run did not finish")}).items():
            lines.append(f"| {family} | {key} | | | {c['reason']} | | {ips} |" if c.get("skipped") else
                         f"| {family} | `{key}` | {c['final_ref']:.4g} | {c['final_test']:.4g} | "
                         f"{_pct(c['max_rel_diff'])} ({c['at_step']}) | {_pct(c['noise'])} | {ips} |")  # fmt: skip
    if train.get("skipped"):
        lines.append(f"| — | skipped: {train['reason']} | | | | | |")
    return "\n".join(lines) + "\n"
