"""One line on how fast this machine is right now, printed by ``make lecture`` before it trains.

A slow machine (or one shared with other jobs) can then be told apart from a slow genbench: the
lecture's time is quoted next to this line. Two fixed kernels on the CPU, each the median of 3 runs
after 2 warm-up runs on the wall clock (:func:`benchmarks.common.matmul_peak`, :func:`~benchmarks.common.conv_peak`),
with torch's default threads, as the lecture's training processes get them:

- a 1024×1024 float32 matmul, 2·1024³ FLOPs;
- a 3×3 convolution of a batch of 64 images of 32 channels at 32×32 to 32 channels, 2·64·32²·32·32·9 FLOPs.

The kernels take about 0.7 s on 2 cores at load 7.6 (less when idle), after torch's import (about
5 s at that load). Also printed: the 1-minute load average (runnable processes: above the core count,
other jobs share the CPU).

    python benchmarks/speed_probe.py
    speed probe: matmul 45.1 GFLOP/s, conv 12.3 GFLOP/s (2 threads, load 0.52, 2026-12-06 02:40)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402


def probe(repeats: int = 3) -> dict[str, Any]:
    """GFLOP/s of the two kernels (medians of ``repeats``), torch's threads, the load average and the time."""
    cpu = torch.device("cpu")
    matmul = common.matmul_peak(cpu, n=1024, repeats=repeats)
    conv = common.conv_peak(cpu, channels=32, batch=64, repeats=repeats)
    return {"matmul_gflop_per_s": matmul["flop_per_s"] / 1e9, "conv_gflop_per_s": conv["flop_per_s"] / 1e9,
            "threads": torch.get_num_threads(), "load_1min": common.load_average().get("1min"),
            "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def line(r: dict[str, Any]) -> str:
    """``speed probe: matmul … GFLOP/s, conv … GFLOP/s (N threads, load L, date)``."""
    load = "" if r.get("load_1min") is None else f", load {r['load_1min']:.2f}"
    return (f"speed probe: matmul {r['matmul_gflop_per_s']:.1f} GFLOP/s, conv {r['conv_gflop_per_s']:.1f} GFLOP/s "
            f"({r['threads']} threads{load}, {r['date']})")  # fmt: skip


def main() -> int:
    try:
        print(line(probe()), flush=True)
    except Exception as e:  # the probe only informs: it never stops the lecture
        print(f"speed probe: failed ({type(e).__name__}: {e})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
