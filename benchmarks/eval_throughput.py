"""Evaluation throughput: genbench against torch-fidelity, and cold against cached real statistics.

Both implementations evaluate the same two image folders (generated vs real) with the same
InceptionV3 weights file and compute FID, IS and KID. Times are wall-clock medians over
``--repeats`` runs after an untimed warm-up run of each; torch-fidelity's own cache is off.
genbench is timed twice: with an empty cache (the real folder's statistics are computed) and
with the cache filled by the previous run (only the generated folder is featurised). A second
section times the offline ``classifier`` space on the mnist5k reference, cold and cached.

Offline, the real Inception weights are not available: without ``--inception-weights`` a file
with random weights is written (same architecture, hence the same cost). Writes
``benchmarks/results/eval_throughput[_quick].json`` with the machine it ran on.

    python benchmarks/eval_throughput.py --quick            # ~2-3 minutes on 2 CPU cores
    python benchmarks/eval_throughput.py --n 1000 --device cuda --inception-weights pt_inception.pth
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.testing import write_pngs, write_random_inception  # noqa: E402


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    import torch_fidelity
    import torchmetrics

    info["torch_fidelity"] = torch_fidelity.__version__
    info["torchmetrics"] = torchmetrics.__version__
    return info


def genbench_evaluate(overrides: list[str], run_dir: Path) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genbench.evaluate import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"run_dir={run_dir}"])
    with contextlib.redirect_stdout(io.StringIO()):  # the results table
        return evaluate(cfg)


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 images per folder, 1 repeat")
    parser.add_argument("--n", type=int, default=200, help="images per folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="of both implementations")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--inception-weights", default=None, help="torch-fidelity's weights file (default: random weights)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/eval_throughput[_quick].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")

    import torch_fidelity

    from datamodules.mnist5k import MNIST5kDataModule

    tmp = Path(tempfile.mkdtemp(prefix="genbench-bench-"))
    dm = MNIST5kDataModule(kind="image", shape=[1, 28, 28])
    g = torch.Generator().manual_seed(0)
    real = dm.real_samples("val")[torch.randperm(500, generator=g)[: args.n]]
    fake = dm.real_samples("train")[torch.randperm(4500, generator=g)[: args.n]]
    fake_dir, real_dir = write_pngs(tmp / "fake", fake), write_pngs(tmp / "real", real)
    weights = Path(args.inception_weights) if args.inception_weights else write_random_inception(tmp / "inception.pth", real[:8])
    n_kid = min(1000, args.n)
    splits = min(10, args.n)
    tf_kwargs = dict(
        input1=str(fake_dir), input2=str(real_dir), cuda=args.device.startswith("cuda"), isc=True, fid=True, kid=True,
        verbose=False, cache=False, feature_extractor_weights_path=str(weights), batch_size=args.batch_size,
        isc_splits=splits, kid_subset_size=n_kid,
    )  # fmt: skip
    ours = [f"fake={fake_dir}", f"real={real_dir}", "eval=inception", f"eval.inception_weights={weights}",
            f"eval.device={args.device}", f"eval.batch_size={args.batch_size}", f"eval.is_splits={splits}",
            f"eval.kid_subset_size={n_kid}"]  # fmt: skip

    def cache(name: str) -> None:
        os.environ["GENBENCH_CACHE"] = str(tmp / name)

    # warm-up: load both implementations' code and weights once (untimed)
    cache("warmup")
    torch_fidelity.calculate_metrics(**{**tf_kwargs, "kid_subset_size": min(n_kid, args.n)})
    genbench_evaluate(ours, tmp / "out")

    t_fidelity, t_cold, t_warm = [], [], []
    results = {}
    for r in range(args.repeats):
        dt, results["torch_fidelity"] = timed(lambda: torch_fidelity.calculate_metrics(**tf_kwargs))
        t_fidelity.append(dt)
        cache(f"inception_{r}")
        dt, results["genbench_cold"] = timed(lambda: genbench_evaluate(ours, tmp / "out"))
        t_cold.append(dt)
        dt, results["genbench_cached"] = timed(lambda: genbench_evaluate(ours, tmp / "out"))
        t_warm.append(dt)
        assert results["genbench_cached"]["real_stats_cached"] and not results["genbench_cold"]["real_stats_cached"]

    # the offline classifier space on the mnist5k reference: cold vs cached real statistics
    cache("classifier")
    classifier = [f"fake={fake_dir}", "data=mnist5k", f"eval.device={args.device}", f"eval.batch_size={args.batch_size}"]
    dt_train, first = timed(lambda: genbench_evaluate(classifier, tmp / "out"))  # trains the classifier + real stats
    c_cold, c_warm = [], []
    for _ in range(args.repeats):
        for p in (tmp / "classifier" / "real_stats").glob("*.pt"):
            p.unlink()
        c_cold.append(timed(lambda: genbench_evaluate(classifier, tmp / "out"))[0])
        c_warm.append(timed(lambda: genbench_evaluate(classifier, tmp / "out"))[0])

    med = statistics.median
    tf = results["torch_fidelity"]
    gb = results["genbench_cached"]
    images = 2 * args.n
    record = {
        "benchmark": "eval_throughput",
        "machine": machine(),
        "settings": {"images_per_folder": args.n, "repeats": args.repeats, "batch_size": args.batch_size,
                     "device": args.device, "inception_weights": "given" if args.inception_weights else "random",
                     "is_splits": splits, "kid_subset_size": n_kid},  # fmt: skip
        "inception": {
            "torch_fidelity_s": med(t_fidelity),
            "genbench_cold_s": med(t_cold),
            "genbench_cached_s": med(t_warm),
            "torch_fidelity_images_per_s": images / med(t_fidelity),
            "genbench_cold_images_per_s": images / med(t_cold),
            "genbench_cold_vs_torch_fidelity_speedup": med(t_fidelity) / med(t_cold),
            "cached_vs_cold_speedup": med(t_cold) / med(t_warm),
            "agreement_rel_diff": {
                "fid": abs(gb["fid"] / tf["frechet_inception_distance"] - 1),
                "is_mean": abs(gb["is_mean"] / tf["inception_score_mean"] - 1),
                "kid_mean": abs(gb["kid_mean"] / tf["kernel_inception_distance_mean"] - 1),
            },
            "values": {"fid": gb["fid"], "is_mean": gb["is_mean"], "kid_mean": gb["kid_mean"]},
        },
        "classifier": {
            "first_run_with_classifier_training_s": dt_train,
            "classifier_train_time_s": None,
            "classifier_accuracy": first.get("classifier_accuracy"),
            "real_images": first["num_real"],
            "cold_s": med(c_cold),
            "cached_s": med(c_warm),
            "cached_vs_cold_speedup": med(c_cold) / med(c_warm),
        },
        "raw_times_s": {"torch_fidelity": t_fidelity, "genbench_cold": t_cold, "genbench_cached": t_warm,
                        "classifier_cold": c_cold, "classifier_cached": c_warm},  # fmt: skip
    }
    entries = list((tmp / "classifier" / "classifiers").glob("*.pt"))
    if entries:
        record["classifier"]["classifier_train_time_s"] = float(torch.load(entries[0], weights_only=True)["train_time_s"])
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"eval_throughput{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("settings", "inception", "classifier")}, indent=2))
    print(f"written: {out}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
