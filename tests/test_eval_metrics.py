"""The metrics on features: closed forms, hand-computed cases, and torch-fidelity's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.cache import TensorCache
from evaluation.frechet import moments, real_cov_sqrt
from evaluation.manifold import ManifoldMetrics, manifold_metrics
from evaluation.metrics import FID, IS, KID, ModeMetrics


def fid_of(real: torch.Tensor, fake: torch.Tensor, batch: int = 1000) -> tuple[float, FID]:
    m = FID(real.shape[1])
    for i in range(0, len(real), batch):
        m.update(real[i : i + batch], real=True)
    for i in range(0, len(fake), batch):
        m.update(fake[i : i + batch], real=False)
    return float(m.compute()), m


def test_fid_closed_forms():
    """Same covariance, shifted mean: FID = ||μ_r − μ_g||². Scaled by 2: FID = Tr(Σ) (Tr(Σ + 4Σ − 2·2Σ))."""
    torch.manual_seed(0)
    real = torch.randn(3000, 4, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.2, 0, 0], [0, 0.5, 0.1, 0], [0, 0, 2.0, 0], [0.3, 0, 0, 1.0]], dtype=torch.float64
    )
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    fid, _ = fid_of(real, real + shift)
    assert fid == pytest.approx(1.0 + 4.0 + 0.25, rel=1e-9)
    centred = real - real.mean(0)
    fid, _ = fid_of(centred, 2 * centred)
    assert fid == pytest.approx(torch.cov(centred.T).trace().item(), rel=1e-8)


def test_fid_does_not_depend_on_the_batch_size():
    torch.manual_seed(1)
    real, fake = torch.randn(1000, 16).relu(), (torch.randn(800, 16) + 0.2).relu()
    values = [fid_of(real, fake, batch)[0] for batch in (7, 64, 1000)]
    assert values[0] > 0.01
    assert max(values) - min(values) <= 1e-9 * values[0]


def test_fid_with_itself_is_zero_never_negative_and_cached_moments_agree():
    torch.manual_seed(2)
    x = torch.randn(500, 32)
    fid, metric = fid_of(x, x, batch=33)
    assert 0.0 <= fid < 1e-6
    # loading the real side from cached sums gives the same number as feeding the features
    m = FID(32)
    m.set_real_moments(*moments(x))
    m.update(x + 1, real=False)
    assert float(m.compute()) == pytest.approx(fid_of(x, x + 1)[0], rel=1e-10) == pytest.approx(32.0, rel=1e-9)
    # ... and with the cached Σ_r^½ (the real side's eigendecomposition done once)
    y = torch.randn(300, 32) * 1.5 + 0.2
    with_root = FID(32)
    with_root.set_real_moments(*moments(x), cov_sqrt=real_cov_sqrt(*moments(x)))
    with_root.update(y, real=False)
    assert float(with_root.compute()) == pytest.approx(fid_of(x, y)[0], rel=1e-10)


def test_fid_clamps_a_negative_rounding_error_and_says_so(monkeypatch):
    import evaluation.metrics as metrics

    # identical moments, and a trace term that rounds 3e-9 too high: FID = −6e-9 before clamping
    monkeypatch.setattr(metrics, "trace_sqrt_product", lambda s1, s2, root_1=None: s1.trace() + 3e-9)
    m = FID(2)
    x = torch.randn(10, 2)
    m.update(x, real=True)
    m.update(x, real=False)
    assert float(m.compute()) == 0.0 and m.clamped == pytest.approx(-6e-9, rel=1e-3)


def test_fid_is_kid_equal_torch_fidelity_on_the_same_features():
    """torch-fidelity's own metric functions on the same features (the Inception wiring: test_eval_fidelity)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    torch.manual_seed(6)
    real, fake = torch.randn(600, 32).relu(), (torch.randn(500, 32) * 1.2 + 0.1).relu()
    ref = fid_statistics_to_metric(fid_features_to_statistics(fake), fid_features_to_statistics(real), verbose=False)
    assert fid_of(real, fake, batch=128)[0] == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    few_real, few_fake = real[:12, :].repeat(1, 8), fake[:12, :].repeat(1, 8)  # 12 samples in 256-d: singular Σ
    ref = fid_statistics_to_metric(fid_features_to_statistics(few_fake), fid_features_to_statistics(few_real), verbose=False)
    assert fid_of(few_real, few_fake)[0] == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)

    torch.manual_seed(3)
    logits = torch.randn(503, 10) * 3
    inception_score = IS(10, splits=10)
    for chunk in logits.split(100):
        inception_score.update(chunk)
    mean, std = inception_score.compute()
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert float(mean) == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert float(std) == pytest.approx(ref["inception_score_std"], rel=1e-5)
    assert 2.0 < float(mean) < 10.0

    real, fake = torch.randn(400, 64).relu(), (torch.randn(300, 64) + 0.3).relu()
    kid = KID(64, subsets=50, subset_size=200)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    k_mean, k_std = kid.compute()
    ref = kid_features_to_metric(fake, real, kid_subsets=50, kid_subset_size=200, verbose=False, rng_seed=2020,
                                 kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1)  # fmt: skip
    assert float(k_mean) == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)
    assert float(k_std) == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    assert float(k_mean) > 0.05


def test_inception_score_of_confident_uniform_predictions_is_the_class_count():
    logits = torch.full((1000, 10), -50.0)
    logits[torch.arange(1000), torch.arange(1000) % 10] = 50.0  # one-hot, every class equally often
    m = IS(10, splits=1)
    m.update(logits)
    mean, std = m.compute()
    assert float(mean) == pytest.approx(10.0, rel=1e-9) and float(std) == 0.0
    # a collapsed generator (always the same class) scores 1
    m = IS(10, splits=1)
    m.update(logits[::10])
    assert float(m.compute()[0]) == pytest.approx(1.0, rel=1e-9)


def line(n: int) -> torch.Tensor:
    """Points 0, 1, ..., n-1 on the x axis: every k-NN radius is known by hand."""
    return torch.stack([torch.arange(n, dtype=torch.float32), torch.zeros(n)], 1)


def test_precision_recall_density_coverage_by_hand():
    real = line(100)
    # identical sets: everything is covered
    same = manifold_metrics(real, real.clone(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    # far away: nothing is
    far = manifold_metrics(real, real + torch.tensor([0.0, 50.0]), k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # the generator only produces the left half. With k = 3 the real radii are 2 (3 at both ends) and
    # the generated radii 2 (3 at the ends): real points 0..49 coincide with generated ones, real 50
    # is 1 away from generated 49 (inside real 50's own ball of radius 2 -> covered, and inside
    # generated 49's ball of radius 3 -> recalled), real 51 is 2 away (not < 2: not covered, but < 3:
    # recalled). Density: each generated point lies in 3 real balls, except 0 (2 balls) and 2 (4 balls).
    half = manifold_metrics(real, real[:50].clone(), k=3)
    assert half["precision"] == 1.0
    assert half["recall"] == pytest.approx(52 / 100)
    assert half["coverage"] == pytest.approx(51 / 100)
    assert half["density"] == pytest.approx((2 + 3 + 4 + 47 * 3) / (3 * 50))


def test_manifold_metric_accumulates_batches_like_one_call():
    torch.manual_seed(4)
    real, fake = torch.randn(300, 8), torch.randn(250, 8) * 1.3
    m = ManifoldMetrics(nearest_k=3)
    m.update(real, real=True)
    for chunk in fake.split(64):
        m.update(chunk, real=False)
    assert m.compute() == manifold_metrics(real, fake, k=3)


def test_mode_metrics_on_the_ring():
    from datamodules.toy2d import ring_centers

    centers, std = ring_centers(8, 2.0), 0.02
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 7, (5000,), generator=g)  # mode 7 is never produced
    points = centers[k] + std * torch.randn(5000, 2, generator=g)
    points[:500] = torch.tensor([0.0, 0.0])  # 10 % garbage in the middle of the ring
    m = ModeMetrics(centers, std)
    m.update(points[:2000])
    m.update(points[2000:])
    out = m.compute()
    assert out["modes_covered"] == 7 and out["num_modes"] == 8
    # within 3σ of a 2-D Gaussian: P(χ²₂ ≤ 9) = 1 − e^{−4.5}
    assert out["high_quality_share"] == pytest.approx(0.9 * (1 - math.exp(-4.5)), abs=0.01)


def test_cache_entries_are_keyed_atomic_and_self_checking(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    cache = TensorCache("real_stats")
    calls = []

    def compute(value):
        def f():
            calls.append(value)
            return {"features": torch.full((3, 2), float(value)), "n": 3}

        return f

    key = {"data": "d", "fingerprint": "abc", "n": 3}
    a, hit_a = cache.get_or_compute(key, compute(1))
    b, hit_b = cache.get_or_compute(key, compute(2))
    assert (hit_a, hit_b) == (False, True) and calls == [1]
    assert torch.equal(a["features"], b["features"])
    # any change of the key is another entry
    c, hit_c = cache.get_or_compute({**key, "n": 4}, compute(3))
    assert not hit_c and float(c["features"][0, 0]) == 3.0
    # a corrupt file is recomputed and replaced, never used
    cache.path(key).write_bytes(b"garbage")
    d, hit_d = cache.get_or_compute(key, compute(5))
    assert not hit_d and float(d["features"][0, 0]) == 5.0
    assert float(cache.get_or_compute(key, compute(6))[0]["features"][0, 0]) == 5.0
    # a failing computation writes nothing
    with pytest.raises(RuntimeError):
        cache.get_or_compute({"other": 1}, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not cache.path({"other": 1}).exists()
    assert sorted(p.suffix for p in cache.dir.iterdir() if not p.name.endswith(".lock")) == [".pt", ".pt"]


def test_kid_protocol_is_reproducible():
    torch.manual_seed(5)
    real, fake = torch.randn(200, 16), torch.randn(200, 16) + 0.1
    values = []
    for _ in range(2):
        kid = KID(16, subsets=20, subset_size=100)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        values.append(tuple(float(v) for v in kid.compute()))
    assert values[0] == values[1]
    assert np.isfinite(values[0]).all()


@pytest.mark.parametrize("chunk", [64, 250, 4096])
def test_tiled_knn_radii_and_ball_counts_equal_the_full_distance_matrix(chunk):
    """The k-NN work is done in chunk x chunk tiles (fixed memory); the answers are the untiled ones."""
    from evaluation.manifold import _ball_counts, knn_radii

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(700, 16, generator=g), torch.randn(300, 16, generator=g)
    d_xx, d_yx = torch.cdist(x, x), torch.cdist(y, x)
    radii = d_xx.topk(4, dim=1, largest=False).values[:, 3]
    torch.testing.assert_close(knn_radii(x, 3, chunk=chunk), radii)
    counts, nearest = _ball_counts(y, x, radii, chunk=chunk)
    assert torch.equal(counts, (d_yx < radii[None, :]).sum(1))
    torch.testing.assert_close(nearest, d_yx.min(1).values)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_kid_from_the_kernels_feature_map_equals_the_per_subset_kernels(d):
    """In few dimensions KID sums the cubic kernel's explicit feature map per subset instead of computing
    kernels: the same MMD² per subset (float64 kernels as reference), and KID picks that route on 2-D points
    (its answer then equals the per-subset kernels on its own subset draws)."""
    from evaluation.metrics import mmd2_of_subsets_from_features, poly_features, unbiased_mmd2

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, d, generator=g, dtype=torch.float64) * 0.7 + 0.2, torch.randn(250, d, generator=g, dtype=torch.float64)
    k = (x[:7] @ y[:5].T / d + 1) ** 3
    torch.testing.assert_close(poly_features(x[:7]) @ poly_features(y[:5]).T, k, rtol=1e-12, atol=1e-12)
    rng = np.random.RandomState(0)
    x_idx = torch.from_numpy(np.stack([rng.choice(300, 100, replace=False) for _ in range(20)]))
    y_idx = torch.from_numpy(np.stack([rng.choice(250, 100, replace=False) for _ in range(20)]))
    per_subset = unbiased_mmd2(x[x_idx], y[y_idx])
    torch.testing.assert_close(mmd2_of_subsets_from_features(x, y, x_idx, y_idx), per_subset, rtol=1e-10, atol=1e-12)
    if d == 2:
        kid = KID(2, subsets=20, subset_size=100, seed=7)
        kid.update(y.float(), real=True)
        kid.update(x.float(), real=False)
        mean, std = kid.compute()
        rng = np.random.RandomState(7)
        draws = [(rng.choice(300, 100, replace=False), rng.choice(250, 100, replace=False)) for _ in range(20)]
        mmds = unbiased_mmd2(x.float().double()[np.stack([a for a, _ in draws])], y.float().double()[np.stack([b for _, b in draws])])
        torch.testing.assert_close((mean, std), (mmds.mean(), mmds.std(unbiased=False)), rtol=1e-10, atol=1e-12)
        assert mean.item() > 0.01  # a shift of 0.2 and a scale of 0.7 per dimension


def test_kid_from_full_kernel_matrices_equals_the_per_subset_kernels():
    """KID's two routes (3 kernels per subset, or the full kernel matrices once and 0/1 subset indicators)
    give the same MMD² per subset; the cheaper one is picked (here the full matrices, 24x faster)."""
    from evaluation.metrics import mmd2_of_subsets_from_grams, unbiased_mmd2

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 16, generator=g) * 0.5 + 0.1, torch.randn(250, 16, generator=g) * 0.5
    rng = np.random.RandomState(0)
    x_idx = torch.from_numpy(np.stack([rng.choice(300, 100, replace=False) for _ in range(20)]))
    y_idx = torch.from_numpy(np.stack([rng.choice(250, 100, replace=False) for _ in range(20)]))
    per_subset = unbiased_mmd2(x[x_idx], y[y_idx])
    torch.testing.assert_close(mmd2_of_subsets_from_grams(x, y, x_idx, y_idx, tile=64), per_subset, rtol=1e-9, atol=1e-12)
    # KID (which picks the full-matrix route for these sizes) against the per-subset route on its own draws
    kid = KID(16, subsets=20, subset_size=100, seed=7)
    kid.update(y, real=True)
    kid.update(x, real=False)
    mean, std = kid.compute()
    rng = np.random.RandomState(7)
    draws = [(rng.choice(300, 100, replace=False), rng.choice(250, 100, replace=False)) for _ in range(20)]
    mmds = unbiased_mmd2(x[np.stack([a for a, _ in draws])], y[np.stack([b for _, b in draws])])
    torch.testing.assert_close((mean, std), (mmds.mean(), mmds.std(unbiased=False)), rtol=1e-9, atol=1e-12)
    assert mean.item() > 0.01  # the two sets differ by a mean shift of 0.1 per dimension
