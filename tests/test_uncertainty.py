"""95 % intervals: the final evaluation's bootstrap (results' ci) and genbench-compare's intervals and marks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from evaluation import DataReference, EvalConfig, Evaluator, ModelSource
from evaluation.frechet import fid_of_resamples, moments
from evaluation.manifold import _manifold_parts, manifold_metrics, manifold_resampled
from evaluation.metrics import FID, IS, KID
from evaluation.registry import Resamples
from genbench.compare import load_records
from genbench.errors import ConfigError
from genbench.table import Stat, group_records, significant, t_interval, to_csv, to_markdown
from tests.test_eval_loop import LikelihoodStub, MixtureStub, evaluate_stub, rings


def _fid(real_moments, fake: torch.Tensor) -> float:
    f = FID(fake.shape[1])
    f.set_real_moments(*real_moments)
    f.update(torch.zeros(0, fake.shape[1]), real=True)
    f.update(fake, real=False)
    return float(f.compute())


@pytest.mark.parametrize("n, d", [(300, 16), (60, 100)])  # the d × d route; the Gram route (fewer rows than dims)
def test_fid_of_resamples_is_the_fid_of_each_resample(n, d):
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(400, d, generator=g), 1.1 * torch.randn(n, d, generator=g) + 0.1
    rm = moments(real)
    r = Resamples.draw(n, 4, seed=1)
    got = fid_of_resamples(fake, *rm, r.counts())
    want = [_fid(rm, fake[idx]) for idx in r.indices]
    # the Gram route is the more exact one here: the direct d × d route adds √ of rounding-level eigenvalues
    assert got.tolist() == pytest.approx(want, rel=1e-7)


def test_fid_bootstrap_spread_matches_the_spread_over_independent_draws():
    """Gaussian features: the sd of FID over independent generated sets of n = 500 (the real set fixed) and the
    bootstrap sd from one set agree within a factor 1.5 (measured: ratio 0.9-1.1 over seeds)."""
    g = torch.Generator().manual_seed(0)
    d, n = 8, 500
    real = torch.randn(4000, d, generator=g)
    rm = moments(real)

    def draw() -> torch.Tensor:
        return 1.2 * torch.randn(n, d, generator=g) + 0.3

    redraws = np.array([_fid(rm, draw()) for _ in range(150)])
    boot = fid_of_resamples(draw(), *rm, Resamples.draw(n, 300, seed=2).counts()).numpy()
    assert 1 / 1.5 < boot.std() / redraws.std() < 1.5


def _np_manifold(real: np.ndarray, fake: np.ndarray, k: int, idx: np.ndarray, r_fake_full: np.ndarray) -> dict:
    """The reference: precision, density and coverage of the resample fake[idx] computed directly; recall with
    the generated radii of the full set (the documented approximation)."""
    dist = np.linalg.norm(real[:, None] - real[None], axis=2)
    r_real = np.sort(dist, axis=1)[:, k]
    y = fake[idx]
    d_ry = np.linalg.norm(real[:, None] - y[None], axis=2)  # [N, M]
    return {
        "precision": (d_ry < r_real[:, None]).any(0).mean(),
        "recall": (d_ry < r_fake_full[idx][None]).any(1).mean(),
        "density": (d_ry < r_real[:, None]).sum() / (k * len(y)),
        "coverage": (d_ry.min(1) < r_real).mean(),
    }


def test_manifold_resamples_equal_a_direct_numpy_reference():
    g = torch.Generator().manual_seed(3)
    real, fake, k = torch.randn(40, 3, generator=g), 1.3 * torch.randn(30, 3, generator=g), 3
    parts = _manifold_parts(real, fake, k)
    r = Resamples.draw(30, 6, seed=4)
    got = manifold_resampled(parts, k, r.counts(), tile=16)  # several tiles
    for b, idx in enumerate(r.indices.numpy()):
        want = _np_manifold(real.numpy(), fake.numpy(), k, idx, parts["r_fake"].numpy())
        for key, value in want.items():
            assert float(got[key][b]) == pytest.approx(value, abs=1e-12), key
        direct = manifold_metrics(real, fake[idx], k)  # precision, density, coverage: the resample's own values
        for key in ("precision", "density", "coverage"):
            assert float(got[key][b]) == pytest.approx(direct[key], abs=1e-12), key


# KID's shift in 3 dimensions from the kernel's explicit feature map, in 11 (1,464 entries) from kernel tiles
@pytest.mark.parametrize("d", [3, 11])
def test_is_and_kid_resamples_equal_direct_formulas(d):
    g = torch.Generator().manual_seed(5)
    logits = 2 * torch.randn(40, 4, generator=g, dtype=torch.float64)
    m = IS(4, splits=4)
    m.update(logits)
    m.compute()
    r = Resamples.draw(40, 3, seed=6)
    got = m.resampled(r.indices)
    for b, idx in enumerate(r.indices):
        p = logits[idx].softmax(1).numpy()
        scores = [np.exp(np.mean(np.sum(q * (np.log(q) - np.log(q.mean(0))), 1))) for q in np.split(p, 4)]
        assert float(got[b]) == pytest.approx(np.mean(scores), rel=1e-10)
    # KID: the shift of the full-set MMD² (pairs of a sample with its own copy left out), brute force
    real, fake = torch.randn(25, d, generator=g), torch.randn(20, d, generator=g) + 0.5
    kid = KID(d, subsets=2, subset_size=10)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    kid.compute()
    r = Resamples.draw(20, 3, seed=7)
    got = kid.resampled_shift(r.counts())
    kern = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731

    def t(idx: np.ndarray) -> float:
        y, x = fake.double().numpy()[idx], real.double().numpy()
        same = idx[:, None] == idx[None, :]
        return kern(y, y)[~same].mean() - 2 * kern(y, x).mean()

    for b, idx in enumerate(r.indices.numpy()):
        assert float(got[b]) == pytest.approx(t(idx) - t(np.arange(20)), rel=1e-5, abs=1e-9)


def test_final_evaluation_has_intervals_and_the_periodic_one_none():
    dm = rings()
    model = LikelihoodStub(dm.centers, dm.std)
    out = evaluate_stub(model, n=600, num_samples=600, bootstrap=50, nll_samples=300)
    assert out["bootstrap"] == 50
    keys = {"fid", "is_mean", "kid_mean", "precision", "recall", "density", "coverage", "modes_covered",
            "high_quality_share", "nll_bpd"}  # fmt: skip
    assert set(out["ci"]) == keys
    for key in keys - {"nll_bpd", "fid", "kid_mean"}:  # means, and recall/coverage centred on their value
        low, high = out["ci"][key]
        assert low <= out[key] <= high, key
    assert out["ci"]["fid"][1] > out["ci"]["fid"][0] >= 0
    assert out["ci"]["nll_bpd"] == pytest.approx([1.25, 1.25])  # the stub's bound has no spread
    assert evaluate_stub(model, n=600, num_samples=600, bootstrap=50, nll_samples=300)["ci"] == out["ci"]
    # an evaluation of another size than eval.num_samples (during training: val_num_samples) has none
    periodic = evaluate_stub(MixtureStub(dm.centers, dm.std), n=300, num_samples=600, bootstrap=50)
    assert periodic["bootstrap"] == 0 and "ci" not in periodic
    with pytest.raises(ConfigError, match=r"bootstrap=-1: must be an integer >= 0 \(0: no intervals\)"):
        Evaluator(EvalConfig(), DataReference(dm), device="cpu").evaluate(ModelSource(model), 300, bootstrap=-1)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    dm = rings()
    results = evaluate_stub(LikelihoodStub(dm.centers, dm.std), n=1030, batch_size=100, nll_samples=300,
                            num_samples=1030, bootstrap=20)  # fmt: skip
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_intervals_equal_one_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    dm = rings()
    single = evaluate_stub(LikelihoodStub(dm.centers, dm.std), n=1030, batch_size=100, nll_samples=300,
                           num_samples=1030, bootstrap=20)  # fmt: skip
    assert set(rank0["ci"]) == set(single["ci"])
    for key, (low, high) in single["ci"].items():
        assert rank0["ci"][key] == pytest.approx([low, high], rel=1e-6, abs=1e-12), key  # float32 kernels, other threads


# --- genbench-compare -------------------------------------------------------------------------------------
def test_t_interval_equals_scipy_and_a_hand_value():
    from scipy import stats

    low, high = t_interval([10.0, 14.0, 18.0])
    assert (high - low) / 2 == pytest.approx(4.302652729911275 * 4 / math.sqrt(3))  # t(0.975, 2) = 4.3027
    want = stats.t.interval(0.95, 2, loc=14.0, scale=4 / math.sqrt(3))
    assert (low, high) == pytest.approx(want)


def test_significance_rule():
    seeds = lambda *v: Stat(float(np.mean(v)), tuple(v), *t_interval(list(v)), kind="t")  # noqa: E731
    assert significant(seeds(10.0, 10.1, 9.9), seeds(20.0, 20.1, 19.9)) is True
    assert significant(seeds(10.0, 12.0, 14.0), seeds(11.0, 13.0, 15.0)) is False  # Welch p = 0.59
    run = lambda v, lo, hi: Stat(v, (v,), lo, hi, kind="run")  # noqa: E731
    # se = (high − low) / 3.92 = 0.5102 each: significant when |Δ| > 1.96 · √2 · 0.5102 = 1.414
    assert significant(run(10.0, 9.0, 11.0), run(11.4, 10.4, 12.4)) is False
    assert significant(run(10.0, 9.0, 11.0), run(11.5, 10.5, 12.5)) is True
    assert significant(run(10.0, 9.0, 11.0), Stat(30.0, (30.0,))) is None  # no interval: not tested


def _write(path, family, fid, seed=0, ci=None, data="mnist5k"):
    path.mkdir(parents=True)
    ev = {"fid": fid, "precision": 0.5}
    if ci is not None:
        ev.update(ci=ci, bootstrap=200)
    (path / "results.json").write_text(json.dumps({"family": family, "data": data, "seed": seed, "eval": ev}))


def test_one_seed_records_show_their_interval_and_marks(tmp_path):
    _write(tmp_path / "gan", "gan", 10.0, ci={"fid": [9.0, 11.5], "precision": [0.45, 0.55]})
    _write(tmp_path / "vae", "vae", 30.0, ci={"fid": [28.0, 33.0], "precision": [0.46, 0.54]})
    _write(tmp_path / "ddpm", "ddpm", 10.5, ci={"fid": [9.5, 11.4], "precision": [0.40, 0.50]})
    _write(tmp_path / "old", "flow", 12.0)  # written before eval.ci: no interval, not tested
    md = to_markdown(group_records(load_records([tmp_path])))
    assert "| mnist5k | gan | 1 | **10.00 [9.00, 11.50]** | **0.500 [0.450, 0.550]** |" in md  # ties: the first row
    assert "| mnist5k | vae | 1 | 30.00 [28.00, 33.00] | ≈ 0.500 [0.460, 0.540] |" in md  # FID: clearly worse
    assert "| mnist5k | ddpm | 1 | ≈ 10.50 [9.50, 11.40] | ≈ 0.500 [0.400, 0.500] |" in md
    assert "| mnist5k | flow | 1 | 12.00 | 0.500 |" in md
    assert "≈: not significantly different from the bold one at 95 %" in md
    rows = {r.split(",")[1]: r.split(",") for r in to_csv(group_records(load_records([tmp_path]))).splitlines()}
    header = rows["family"]
    gan = dict(zip(header, rows["gan"], strict=True))
    assert (gan["fid_low"], gan["fid_high"], gan["fid_interval"], gan["fid_mark"]) == ("9.0", "11.5", "run", "best")
    assert dict(zip(header, rows["vae"], strict=True))["fid_mark"] == ""


def test_records_without_intervals_render_as_before(tmp_path):
    _write(tmp_path / "gan", "gan", 10.0)
    _write(tmp_path / "vae", "vae", 30.0)
    md = to_markdown(group_records(load_records([tmp_path])))
    assert md == ("| data | family | seeds | FID ↓ | precision ↑ |\n|---|---|---|---|---|\n"
                  "| mnist5k | gan | 1 | 10.00 | 0.500 |\n| mnist5k | vae | 1 | 30.00 | 0.500 |\n")  # fmt: skip
