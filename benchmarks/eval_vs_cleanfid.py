"""Evaluation throughput: ``genbench-evaluate`` against clean-fid (the PyPI package) on the same folders.

Both read the same two folders of PNGs (mnist5k digits: generated = training digits, real = the
held-out ones), resize them the same way (clean-fid's ``mode="clean"``: PIL bicubic to 299 x 299;
genbench's ``eval.resize=clean``) and featurise them with the same InceptionV3: torch-fidelity's
architecture with seeded random weights (``evaluation.testing.write_random_inception``; the cost is
that of the real network, the metric's value means nothing), passed to clean-fid as
``custom_feat_extractor`` (genbench's own ``InceptionFeatures.forward_resized``, as
tests/test_interop.py does). clean-fid's download and weight-building functions are replaced by ones
that raise, so it never reaches the network.

- genbench: ``genbench-evaluate`` end to end, cold (an empty cache for every run), computing FID, IS,
  KID, precision/recall and density/coverage: more than clean-fid's FID, so the comparison is
  conservative for genbench.
- clean-fid: ``cleanfid.fid.compute_fid(fake, real, mode="clean", custom_feat_extractor=...)`` with its
  default DataLoader workers (12) and with ``num_workers=0``; genbench is compared with the faster of
  the two in each repeat.

Interleaved after an untimed warm-up, medians of ``--repeats``; decided on the wall clock (an
evaluation's cost to its user is end to end, clean-fid's parallel decoding included), the CPU time of
this process and its workers recorded beside it. Target: genbench ≥ 1.2× clean-fid's images/s. The FIDs
must agree (the same features and resize: relative difference < 1e-3).

    python benchmarks/eval_vs_cleanfid.py --quick
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.eval_throughput import genbench_evaluate, set_cache  # noqa: E402
from evaluation.testing import write_pngs, write_random_inception  # noqa: E402

SPEEDUP_TARGET = 1.2


@contextlib.contextmanager
def clean_fid_offline():
    """clean-fid with every function that downloads or builds its own Inception replaced by one that raises."""
    from cleanfid import downloads_helper, features, fid

    def refuse(*args: Any, **kwargs: Any):
        raise RuntimeError("clean-fid tried to download or build its own network in a benchmark that passes its extractor")

    targets = [(downloads_helper, "check_download_url"), (downloads_helper, "check_download_inception"),
               (downloads_helper, "download_google_drive"), (features, "check_download_url"),
               (features, "build_feature_extractor"), (features, "get_reference_statistics"),
               (fid, "build_feature_extractor"), (fid, "get_reference_statistics")]  # fmt: skip
    saved = [(m, name, getattr(m, name)) for m, name in targets if hasattr(m, name)]
    for m, name, _ in saved:
        setattr(m, name, refuse)
    try:
        yield fid
    finally:
        for m, name, fn in saved:
            setattr(m, name, fn)


def compare(fake_dir: Path, real_dir: Path, n: int, weights: Path, args: Any, tmp: Path,
            device: torch.device) -> dict[str, Any]:  # fmt: skip
    from evaluation.spaces.inception import InceptionFeatures

    space = InceptionFeatures(weights, resize="clean").to(device).eval()

    def extractor(x: torch.Tensor) -> torch.Tensor:  # clean-fid's batches: [B, 3, 299, 299] floats in [0, 255]
        with torch.no_grad():
            return space.forward_resized(x.to(device))[0]

    splits, n_kid = min(10, n), min(1000, n)
    ours = [f"fake={fake_dir}", f"real={real_dir}", "eval=inception", f"eval.inception_weights={weights}",
            "eval.resize=clean", f"eval.device={device}", f"eval.batch_size={args.batch_size}",
            f"eval.is_splits={splits}", f"eval.kid_subset_size={n_kid}"]  # fmt: skip
    results: dict[str, Any] = {}
    runs = [0]

    def measure(fn) -> dict[str, float]:
        t, out = common.timed(fn, device)
        t["cpu_total"] = t["cpu"] + t["cpu_children"]  # clean-fid decodes and resizes in worker processes
        return t, out

    def genbench() -> dict[str, float]:
        runs[0] += 1
        set_cache(tmp / f"cache_{runs[0]}")  # cold: nothing cached
        t, results["genbench"] = measure(lambda: genbench_evaluate(ours, tmp / "out"))
        assert not results["genbench"]["real_stats_cached"] and results["genbench"]["card"]["resize"] == "clean"
        return t

    def clean_fid(workers: int):
        def run() -> dict[str, float]:
            with clean_fid_offline() as fid:
                t, results[f"clean_fid_{workers}"] = measure(lambda: fid.compute_fid(
                    str(fake_dir), str(real_dir), mode="clean", custom_feat_extractor=extractor, num_workers=workers,
                    batch_size=args.batch_size, device=device, verbose=False))  # fmt: skip
            return t

        return run

    cases = {"genbench": genbench, **{f"clean_fid_workers_{w}": clean_fid(w) for w in args.workers}}
    times = common.interleaved(cases, repeats=args.repeats, warmup=1)
    theirs = [f"clean_fid_workers_{w}" for w in args.workers]
    fastest = [min((times[k][r] for k in theirs), key=lambda m: m["wall"]) for r in range(args.repeats)]
    speedup = common.ratio_per_clock(fastest, times["genbench"])
    fid_gb, fid_cf = results["genbench"]["fid"], results[f"clean_fid_{args.workers[0]}"]
    return {
        "clock": "wall",
        "seconds": {k: common.per_clock(v) for k, v in times.items()},
        "images_per_s": {k: {c: common.summary([2 * n / m[c] for m in v]) for c in ("wall", "cpu_total")}
                         for k, v in times.items()},
        "speedup_vs_fastest_clean_fid": speedup["wall"], "speedup_vs_fastest_clean_fid_by_clock": speedup,
        "speedup_by_workers": {k: common.ratio_per_clock(times[k], times["genbench"]) for k in theirs},
        "speedup_target": SPEEDUP_TARGET, "speedup_met": speedup["wall"] >= SPEEDUP_TARGET,
        "fid": {"genbench": fid_gb, "clean_fid": float(fid_cf)},
        "fid_rel_diff": abs(fid_gb / float(fid_cf) - 1),
    }  # fmt: skip


# --- docs/performance.md -----------------------------------------------------------------------------
def target_rows(rec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The record's row of the targets table (rendered by benchmarks/render_docs.py)."""
    from benchmarks.render_docs import _met, _x

    c, st = rec["inception"], rec["settings"]
    sec = {k: v["wall"]["median"] for k, v in c["seconds"].items()}
    cpu = {k: v["cpu_total"]["median"] for k, v in c["seconds"].items()}
    theirs = ", ".join(f"{w} workers {sec[f'clean_fid_workers_{w}']:.2f} s (CPU {cpu[f'clean_fid_workers_{w}']:.2f} s)"
                       for w in st["clean_fid_workers"])  # fmt: skip
    return [(
        f"Evaluation vs clean-fid, InceptionV3 with `resize=clean` ({st['generated_images']} + {st['real_images']} PNGs, "
        "genbench FID/IS/KID/P&R/D&C cold, clean-fid `compute_fid` with the same extractor passed in)",
        f"wall: genbench {sec['genbench']:.2f} s (CPU {cpu['genbench']:.2f} s), clean-fid {theirs}: images/s "
        f"{_x(c['speedup_vs_fastest_clean_fid'])} the faster clean-fid (CPU with workers "
        f"{_x(c['speedup_vs_fastest_clean_fid_by_clock']['cpu_total'])}); FID agrees to {c['fid_rel_diff']:.1e}; "
        "random weights: the timing is valid, the metric's value means nothing",
        f"≥ {_x(c['speedup_target'], 1)}", _met(c["speedup_met"]))]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--n", type=int, default=None, help="generated and as many real images (default 100; quick 8)")
    parser.add_argument("--batch-size", type=int, default=50, help="of both implementations")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="clean-fid DataLoader workers to time (default: 12, its default, and 0; quick: 0)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    args.n = args.n or (8 if args.quick else 100)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.workers = args.workers or ([0] if args.quick else [12, 0])
    import cleanfid

    from datamodules.mnist5k import MNIST5kDataModule

    with common.scratch_dir() as tmp:  # a private GENBENCH_CACHE may be set inside; restored after
        dm = MNIST5kDataModule(kind="image", shape=[1, 28, 28])
        real = dm.real_samples("val")[: args.n]
        fake = dm.real_samples("train")[torch.randperm(4500, generator=torch.Generator().manual_seed(0))[: args.n]]
        fake_dir, real_dir = write_pngs(tmp / "fake", fake), write_pngs(tmp / "real", real)
        record = common.start_record("eval_vs_cleanfid", args, generated_images=args.n, real_images=args.n,
                                     repeats=args.repeats, batch_size=args.batch_size, clean_fid_workers=args.workers,
                                     inception="random weights (timing only)")  # fmt: skip
        record["machine"]["clean_fid"] = getattr(cleanfid, "__version__", None) or _version("clean-fid")
        weights = write_random_inception(tmp / "inception_random.pth", real[:8])
        record["inception"] = c = compare(fake_dir, real_dir, args.n, weights, args, tmp, device)
        sec = {k: v["wall"]["median"] for k, v in c["seconds"].items()}
        print(f"wall s: {sec}; genbench / fastest clean-fid images/s {c['speedup_vs_fastest_clean_fid']:.2f}x; "
              f"FID rel diff {c['fid_rel_diff']:.1e}", flush=True)  # fmt: skip
        common.write_record(record, args)
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
