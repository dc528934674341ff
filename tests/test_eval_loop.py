"""The evaluation loop on stub sample sources: 2-D mixtures, the real split against itself, DDP."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from datamodules.mnist5k import MNIST5kDataModule
from datamodules.toy2d import RingsDataModule
from evaluation import DataReference, EvalConfig, Evaluator, ModelSource, TensorSource, always_result_keys
from evaluation.cache import TensorCache
from models.base import GenerativeModule


class MixtureStub(GenerativeModule):
    """A "model" that samples the rings mixture exactly, from ``modes`` only (all by default)."""

    family = "stub"

    def __init__(self, centers: torch.Tensor, std: float, modes: list[int] | None = None):
        super().__init__(data_shape=[2])
        self.register_buffer("centers", centers[modes] if modes is not None else centers.clone())
        self.std = std
        self.unused = nn.Linear(1, 1)

    @torch.no_grad()
    def sample(self, n, generator=None, **kwargs):
        k = torch.randint(len(self.centers), (n,), generator=generator, device=generator.device).to(self.device)
        return self.centers[k] + self.std * self.randn(n, 2, generator=generator)

    def nfe(self, **kwargs):
        return 3


class LikelihoodStub(MixtureStub):
    def nll_bpd(self, x0):
        return torch.full((len(x0),), 1.25)  # per-example bits/dim


def rings(n: int = 2000) -> RingsDataModule:
    return RingsDataModule(n_train=n, n_val=n, kind="points", shape=[2])


def evaluate_stub(model, n: int = 2000, batch_size: int = 250, **cfg) -> dict:
    dm = rings()
    ev = Evaluator(EvalConfig(batch_size=batch_size, kid_subset_size=500, kid_subsets=20, **cfg), DataReference(dm), device="cpu")
    return ev.evaluate(ModelSource(model), n)


def test_points_exact_sampler_scores_like_the_data():
    dm = rings()
    out = evaluate_stub(MixtureStub(dm.centers, dm.std))
    assert set(always_result_keys()) <= set(out) and out["features"] == "raw" and out["num_samples"] == 2000
    assert out["modes_covered"] == 8 and out["num_modes"] == 8
    assert out["high_quality_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)  # P(χ²₂ ≤ 9)
    # Two independent samples of n = 2000 differ by sampling noise only: E ||μ̂_r − μ̂_g||² = 2 Tr(Σ)/n = 0.004
    # for the ring (Σ = 2 I). Dropping 6 of the 8 modes gives 5.7 (next test).
    assert out["fid"] < 0.01
    assert abs(out["kid_mean"]) < 0.1  # ± 0.03 over subsets; 13 when modes are dropped
    assert out["precision"] > 0.9 and out["recall"] > 0.9 and out["coverage"] > 0.8
    assert out["is_mean"] == pytest.approx(8.0, rel=0.03)  # mode posteriors are one-hot, modes balanced
    assert out["nfe"] == 3 and out["sample_images_per_s"] > 0
    assert "nll_bpd" not in out


def test_points_mode_collapse_is_measured():
    dm = rings()
    out = evaluate_stub(MixtureStub(dm.centers, dm.std, modes=[0, 1]))
    assert out["modes_covered"] == 2
    assert out["high_quality_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)  # what it draws is good
    assert out["precision"] > 0.9 and out["recall"] < 0.3 and out["coverage"] < 0.3
    assert out["is_mean"] == pytest.approx(2.0, rel=0.03)
    assert out["fid"] > 1.0 and out["kid_mean"] > 1.0


def test_likelihood_is_evaluated_where_the_family_defines_it():
    dm = rings()
    out = evaluate_stub(LikelihoodStub(dm.centers, dm.std), n=500, nll_samples=300)
    assert out["nll_bpd"] == pytest.approx(1.25)


def test_results_are_reproducible_and_training_rng_is_untouched():
    dm = rings()
    torch.manual_seed(123)
    a = evaluate_stub(MixtureStub(dm.centers, dm.std), n=600)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = evaluate_stub(MixtureStub(dm.centers, dm.std), n=600)
    assert torch.equal(after, torch.rand(1))  # the evaluation did not consume the global RNG
    drop = ("eval_time_s", "sample_images_per_s", "real_stats_cached")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


@pytest.mark.parametrize("prefix", [500, 400])
def test_prefix_scores_the_first_samples_like_an_evaluation_of_that_size(prefix):
    """``evaluate(n, prefix=k)`` also scores its first k samples: with k a multiple of the batch size those are the
    samples an evaluation of k draws (one seed per batch), so every metric agrees; otherwise k are still scored."""
    dm = rings()
    stub = MixtureStub(dm.centers, dm.std, modes=[0, 1, 2])  # imperfect, so the metrics are not all at their optimum
    ev = Evaluator(EvalConfig(batch_size=250, kid_subset_size=200, kid_subsets=20), DataReference(dm), device="cpu")
    full = ev.evaluate(ModelSource(stub), 2000, bootstrap=50, prefix=prefix)
    head = ev.prefix_results
    assert full["num_samples"] == 2000 and "ci" in full and head["num_samples"] == prefix and head["bootstrap"] == 0
    alone = ev.evaluate(ModelSource(stub), prefix, bootstrap=0)
    assert ev.prefix_results is None
    keys = ("fid", "kid_mean", "precision", "recall", "density", "coverage", "modes_covered", "high_quality_share", "is_mean")
    if prefix % 250 == 0:
        assert {k: head[k] for k in keys} == {k: alone[k] for k in keys}
    else:  # the last batch's samples differ (a batch of 150 has its own noise); the same model is measured
        assert head["modes_covered"] == alone["modes_covered"] == 3 and head["fid"] == pytest.approx(alone["fid"], rel=0.5)
    assert head["fid"] != full["fid"] and head["nfe"] == full["nfe"] == 3
    assert any(f"first {prefix} of the 2000" in note for note in head["notes"])


# --- images, classifier feature space ----------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return MNIST5kDataModule(kind="image", shape=[1, 28, 28])


def test_real_split_against_itself_and_cached_real_statistics(mnist):
    ev = Evaluator(EvalConfig(), DataReference(mnist), device="cpu")
    ev.prepare()  # the classifier (cached across test sessions under $GENBENCH_CACHE)
    TensorCache("real_stats").path(ev.real_key()).unlink(missing_ok=True)
    val = mnist.real_samples("val")
    cold = ev.evaluate(TensorSource(val, "val split"))
    assert cold["real_stats_cached"] is False
    assert 0.0 <= cold["fid"] < 1e-6
    assert cold["precision"] == cold["recall"] == cold["coverage"] == 1.0
    assert abs(cold["kid_mean"]) < 0.05
    assert 0.97 <= cold["classifier_accuracy"] <= 1.0
    assert cold["is_mean"] > 8.0  # 10 balanced, confidently classified digits
    assert cold["sample_images_per_s"] is None and cold["nfe"] is None  # stored samples
    # a new evaluator (a new process) finds the real statistics in the cache
    warm = Evaluator(EvalConfig(), DataReference(mnist), device="cpu").evaluate(TensorSource(val, "val split"))
    assert warm["real_stats_cached"] is True
    assert warm["fid"] == cold["fid"] and warm["is_mean"] == cold["is_mean"]


def test_half_the_digits_is_a_collapse(mnist):
    val, labels = mnist.real_samples("val"), mnist.real_labels("val")
    out = Evaluator(EvalConfig(), DataReference(mnist), device="cpu").evaluate(TensorSource(val[labels < 5], "digits 0-4"))
    assert out["num_samples"] == 250
    assert out["precision"] > 0.95
    assert 0.35 < out["recall"] < 0.65 and 0.35 < out["coverage"] < 0.65
    assert 4.0 < out["is_mean"] < 5.2  # ≈ 5 classes
    assert out["fid"] > 5.0


# --- distributed ------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    dm = rings()
    results = evaluate_stub(LikelihoodStub(dm.centers, dm.std), n=1030, batch_size=100, nll_samples=300)  # 11 uneven batches
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_equal_one_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    dm = rings()
    single = evaluate_stub(LikelihoodStub(dm.centers, dm.std), n=1030, batch_size=100, nll_samples=300)
    assert ranks[0]["world_size"] == 2 and single["world_size"] == 1
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
                "modes_covered", "high_quality_share", "nll_bpd", "num_samples", "num_real", "nfe"):  # fmt: skip
        assert ranks[0][key] == pytest.approx(single[key], rel=1e-9, abs=1e-12), key
        assert ranks[1][key] == ranks[0][key], key


def test_classifier_features_run_in_channels_last_and_equal_the_nchw_network():
    # NHWC weights (~1.8x faster on the CPU here) must not change the features beyond float rounding
    import copy

    from evaluation.classifier import SmallCNN
    from evaluation.features import ClassifierFeatures

    torch.manual_seed(0)
    for c, side in [(1, 28), (3, 32)]:
        net = SmallCNN(c, side, num_classes=10).eval()
        reference = copy.deepcopy(net)
        space = ClassifierFeatures(net, {"accuracy": 1.0, "weights_sha1": "x"})
        convs = [m.weight for m in space.net.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        x = torch.rand(16, c, side, side) * 2 - 1
        with torch.no_grad():
            (f, logits), (f_ref, logits_ref) = space(x), reference(x)
        assert f.shape == (16, 128) and torch.allclose(f, f_ref, atol=1e-5) and torch.allclose(logits, logits_ref, atol=1e-5)


def test_the_classifier_trains_to_the_same_weights_whatever_the_caller_s_thread_count():
    """Its weights define the feature space of every image FID: with two threads the convolutions' backward
    sums are split differently (mnist5k, this machine: other weights, held-out accuracy 0.982 against 0.980),
    so the classifier trains on one thread and the first run on a machine cannot change later runs' numbers."""
    from evaluation.classifier import ClassifierSettings, train_classifier

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g)
    settings = ClassifierSettings(epochs=1, batch_size=64)
    threads, weights = torch.get_num_threads(), []
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            net, _ = train_classifier(x, y, x[:64], y[:64], settings, torch.device("cpu"))
            weights.append(net.state_dict())
            assert torch.get_num_threads() == n  # the caller's setting is back
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
