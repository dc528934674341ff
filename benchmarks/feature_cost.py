"""What each feature space costs: images/s of every registered space on this CPU, at 1 and 2 threads.

Each space is built as the evaluator builds it, with seeded random weights of the right shape (the cost
of a network does not depend on its weights, and nothing is downloaded): ``raw`` on 2-D points (with the
mixture posterior of 8 modes), ``classifier`` (genbench's SmallCNN at its default width), ``inception``
(torch-fidelity's InceptionV3, ``evaluation.testing.write_random_inception``), ``dinov2`` ViT-S/B/L 14
and ``clip`` ViT-B-32 and ViT-L-14-336 (their test-only ``weights="random"``). DINOv2's ViT-g/14 (1.1 B
parameters) is left out: a few images would take minutes on two cores. Images are mnist5k-shaped
(1 x 28 x 28 in [-1, 1]); every space's own preprocessing (resize to 299, 224 or 336, normalisation)
is inside the timing, as in an evaluation. A registered space this script has no builder for (a
plug-in) is recorded as skipped.

One forward pass of a small batch per timing (``BATCH``, the same at both thread counts), 1 and 2 torch
threads interleaved, each timing after an untimed pass at its thread count (the first pass after a change
of thread count is 2-4x slower: oneDNN sets its kernels up again); medians of ``--repeats``. images/s are over the wall clock: with
2 threads the CPU time counts both cores, so it cannot show the speed-up. On a machine shared with other
jobs the wall clock includes their time slices: compare the spaces with each other (measured in the
same minutes) rather than the absolute numbers with another machine's.

    python benchmarks/feature_cost.py --quick
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

#: variant -> (registered space, images per timed batch)
BATCH = {"raw": ("raw", 4096), "classifier": ("classifier", 256), "inception": ("inception", 8),
         "dinov2-vits14": ("dinov2", 8), "dinov2-vitb14": ("dinov2", 4), "dinov2-vitl14": ("dinov2", 2),
         "clip-ViT-B-32": ("clip", 8), "clip-ViT-L-14-336": ("clip", 2)}  # fmt: skip
QUICK = ("raw", "classifier", "dinov2-vits14", "clip-ViT-B-32")


def builders(tmp: Path) -> dict[str, Callable[[], Any]]:
    """variant -> a function building that space with seeded random weights."""
    from evaluation.features import ClassifierFeatures, RawFeatures
    from evaluation.spaces.clip import CLIPFeatures
    from evaluation.spaces.dinov2 import DINOv2Features
    from evaluation.spaces.inception import InceptionFeatures

    def raw():
        return RawFeatures(2, torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), 0.05)

    def classifier():
        from evaluation.classifier import SmallCNN

        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = SmallCNN(in_channels=1, image_size=28, num_classes=10)
        return ClassifierFeatures(net.eval(), {"weights_sha1": "random", "accuracy": 0.0})

    def inception():
        from evaluation.testing import write_random_inception

        calibration = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return InceptionFeatures(write_random_inception(tmp / "inception_random.pth", calibration))

    out: dict[str, Callable[[], Any]] = {"raw": raw, "classifier": classifier, "inception": inception}
    for m in ("vits14", "vitb14", "vitl14"):
        out[f"dinov2-{m}"] = lambda m=m: DINOv2Features(m, "random")
    for m in ("ViT-B-32", "ViT-L-14-336"):
        out[f"clip-{m}"] = lambda m=m: CLIPFeatures(m, "random")
    return out


def inputs(space: str, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (n, 2) if space == "raw" else (n, 1, 28, 28)
    return torch.rand(shape, generator=g) * 2 - 1


def measure(variant: str, build: Callable[[], Any], threads: list[int], repeats: int, batch: int,
            device: torch.device) -> dict[str, Any]:  # fmt: skip
    """images/s of one space at each thread count, interleaved; its size and build time."""
    t_build, space = common.timed(build)
    space = space.to(device).eval()
    x = inputs(BATCH[variant][0], batch).to(device)

    def case(k: int):
        def run() -> dict[str, float]:
            torch.set_num_threads(k)
            with torch.no_grad():
                space(x)  # untimed: the first pass after a change of thread count sets up oneDNN's kernels again
                t = common.timed(lambda: space(x), device)[0]
            return {"wall": t["wall"], "cpu": t["cpu"]}

        return run

    saved = torch.get_num_threads()
    try:
        runs = common.interleaved({f"threads_{k}": case(k) for k in threads}, repeats=repeats, warmup=1)
    finally:
        torch.set_num_threads(saved)
    with torch.no_grad():
        dim = int(space(x[:2])[0].shape[1])
    out = {
        "space": BATCH[variant][0], "batch": batch, "feature_dim": dim,
        "parameters": sum(p.numel() for p in space.parameters()) + sum(b.numel() for b in space.buffers()),
        "build_s": round(t_build["wall"], 3),
        "images_per_s": {k: common.summary([batch / m["wall"] for m in v]) for k, v in runs.items()},
        "seconds_by_clock": {k: common.per_clock(v) for k, v in runs.items()},
    }  # fmt: skip
    if len(threads) > 1:
        out["speedup_2_vs_1_threads"] = common.ratio([m["wall"] for m in runs[f"threads_{threads[0]}"]],
                                                      [m["wall"] for m in runs[f"threads_{threads[-1]}"]])  # fmt: skip
    return out


# --- docs/performance.md -----------------------------------------------------------------------------
def detail_lines(rec: dict[str, Any]) -> list[str]:
    """The record's table (rendered by benchmarks/render_docs.py)."""
    from benchmarks.render_docs import _n, _x

    threads = rec["settings"]["thread_counts"]
    shape = "x".join(str(d) for d in rec["settings"]["image_shape"])
    out = ["", f"Feature-space cost (random weights, one forward pass of a small batch of {shape} images, their "
           "resize and normalisation included; images/s over the wall clock, "
           f"load {rec['machine']['load_average_at_start'].get('1min', '?')} on {rec['machine']['cpu_cores']} cores):", "",
           "| space | parameters | feature dim | batch | " + " | ".join(f"images/s, {k} thread{'s' * (k > 1)}" for k in threads)
           + (" | 2 vs 1 threads |" if len(threads) > 1 else " |"), "|---" * (4 + len(threads) + (len(threads) > 1)) + "|"]  # fmt: skip
    for name, s in rec["spaces"].items():
        if s.get("skipped"):
            out.append(f"| {name} | — | — | — | " + " | ".join("—" for _ in threads) + f" | {s['reason']} |")
            continue
        rates = " | ".join(_n(s["images_per_s"][f"threads_{k}"]["median"]) for k in threads)
        extra = f" | {_x(s['speedup_2_vs_1_threads'])} |" if len(threads) > 1 else " |"
        out.append(f"| {name} | {s['parameters'] / 1e6:.1f} M | {s['feature_dim']} | {s['batch']} | {rates}{extra}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--spaces", nargs="+", default=None, help=f"variants to time (default all: {list(BATCH)}; quick {list(QUICK)})")
    parser.add_argument("--thread-counts", type=int, nargs="+", default=None, help="torch threads (default 1 2; quick 1)")
    parser.add_argument("--batch-scale", type=float, default=None, help="multiplies every batch (quick 0.25, at least 1 image)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    variants = args.spaces or list(QUICK if args.quick else BATCH)
    unknown = sorted(set(variants) - set(BATCH))
    if unknown:
        parser.error(f"--spaces: {unknown} are not variants; allowed: {list(BATCH)}")
    threads = args.thread_counts or ([1] if args.quick else [1, 2])
    scale = args.batch_scale or (0.25 if args.quick else 1.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    from evaluation.features import feature_space_names

    registered = feature_space_names()[1:]
    record = common.start_record("feature_cost", args, thread_counts=threads, repeats=args.repeats,
                                 image_shape=[1, 28, 28], weights="random (seeded; timing only)")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="genbench-bench-"))
    try:
        build = builders(tmp)
        spaces: dict[str, Any] = {}
        for v in variants:
            batch = max(1, round(BATCH[v][1] * scale))
            spaces[v] = s = measure(v, build[v], threads, args.repeats, batch, device)
            rates = ", ".join(f"{k}: {r['median']:.3g}" for k, r in s["images_per_s"].items())
            print(f"{v}: images/s {rates} (batch {batch}, {s['parameters'] / 1e6:.1f} M parameters)", flush=True)
        for name in registered:  # a registered space without a builder here (a plug-in): say so
            if not any(BATCH[v][0] == name for v in BATCH):
                spaces[name] = common.skipped("no random-weight builder in benchmarks/feature_cost.py")
        record["spaces"] = spaces
        record["registered"] = list(registered)
        common.write_record(record, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
