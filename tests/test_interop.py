"""Interoperability with the reference FID tools: statistics files (pytorch-fid, TTUR, clean-fid) and
clean-fid's "clean" resize and FID, compared number for number on CPU, with no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from evaluation.metrics import FID
from evaluation.ref_stats import ReferenceStatsError, frechet_distance, gaussian_stats, load_stats, save_stats
from evaluation.resize import clean_resize


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix).relu() + shift


# --- statistics files -------------------------------------------------------------------------------------
def test_stats_written_by_genbench_give_pytorch_fids_number(tmp_path):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    real, fake = features(2000, 64, seed=0), features(1500, 64, seed=1, shift=0.05)
    path_r = save_stats(tmp_path / "real", *gaussian_stats(real))
    path_g = save_stats(tmp_path / "fake.npz", *gaussian_stats(fake))
    assert path_r.name == "real.npz" and path_g.name == "fake.npz"
    # pytorch-fid reads the files itself (its .npz branch needs no network and no model)
    m1, s1 = fid_score.compute_statistics_of_path(str(path_r), None, 50, 64, "cpu")
    m2, s2 = fid_score.compute_statistics_of_path(str(path_g), None, 50, 64, "cpu")
    theirs = fid_score.calculate_frechet_distance(m1, s1, m2, s2)
    ours = float(frechet_distance(*load_stats(path_r), *load_stats(path_g)))
    assert theirs > 1  # measured 5.651
    assert ours == pytest.approx(theirs, rel=1e-6)
    # and genbench's FID metric, fed the features themselves, gives the same number
    metric = FID(64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert float(metric.compute()) == pytest.approx(ours, rel=1e-9)
    # the statistics are numpy's: np.cov's unbiased covariance, the plain mean
    assert np.allclose(np.load(path_r)["sigma"], np.cov(real.numpy(), rowvar=False), rtol=1e-12, atol=1e-15)


def test_stats_in_clean_fids_compressed_layout_load(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    np.savez_compressed(tmp_path / "cifar10_clean_custom_na.npz", mu=mu, sigma=sigma)  # as make_custom_stats
    got_mu, got_sigma = load_stats(tmp_path / "cifar10_clean_custom_na.npz")
    assert got_mu.dtype == torch.float64 and torch.equal(got_mu, torch.from_numpy(mu)) and torch.equal(got_sigma, torch.from_numpy(sigma))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"mu": np.zeros(3)}, r"no key 'sigma'; found \['mu'\], need \['mu', 'sigma'\]"),
        ({"feats": np.zeros((5, 3))}, r"no key 'mu' or 'sigma'; found \['feats'\]"),
        ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"mismatched shapes, 'mu' \[3\] and 'sigma' \[4, 4\]"),
        ({"mu": np.zeros((1, 3)), "sigma": np.eye(3)}, r"'mu' \[1, 3\] and 'sigma' \[3, 3\]"),
        ({"mu": np.array([0.0, np.nan]), "sigma": np.eye(2)}, "non-finite"),
    ],
)
def test_bad_stats_files_get_one_clear_error(tmp_path, arrays, message):
    path = tmp_path / "stats.npz"
    np.savez(path, **arrays)
    with pytest.raises(ReferenceStatsError, match=message) as info:
        load_stats(path)
    assert "stats.npz" in str(info.value)


def test_not_an_npz_file_is_refused(tmp_path):
    (tmp_path / "text.npz").write_text("mu, sigma")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ReferenceStatsError, match="not a readable .npz file"):
        load_stats(tmp_path / "text.npz")
    with pytest.raises(ReferenceStatsError, match="single .npy array"):
        load_stats(tmp_path / "array.npy")
    with pytest.raises(ReferenceStatsError, match="mismatched shapes"):
        save_stats(tmp_path / "bad.npz", np.zeros(3), np.eye(2))


# --- clean-fid ----------------------------------------------------------------------------------------------
def test_clean_resize_equals_clean_fids_resizer():
    resize = pytest.importorskip("cleanfid.resize")
    fn = resize.make_resizer("PIL", False, "bicubic", (299, 299))
    g = torch.Generator().manual_seed(0)
    for h, w in ((32, 32), (20, 37)):
        x = torch.randint(0, 256, (2, 3, h, w), generator=g, dtype=torch.uint8)
        ours = clean_resize(x)
        assert ours.dtype == torch.float32 and ours.shape == (2, 3, 299, 299)
        for i in range(2):
            theirs = fn(x[i].permute(1, 2, 0).numpy())  # HWC in, HWC float32 out
            assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), theirs)
    # a grey image resizes as clean-fid's RGB copy of it, channel for channel
    grey = torch.randint(0, 256, (1, 1, 28, 28), generator=g, dtype=torch.uint8)
    assert np.array_equal(clean_resize(grey)[0, 0].numpy(), fn(grey[0].expand(3, -1, -1).permute(1, 2, 0).numpy())[..., 0])
    assert 0 <= float(ours.min()) and float(ours.max()) <= 255  # clipped, as the Inception expects [0, 255]


class TinyExtractor(nn.Module):
    """A small random-weight feature extractor on [0, 255] images [B, 3, 299, 299] -> [B, 12]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 12, kernel_size=8, stride=8)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x / 255 - 0.5).relu().mean((2, 3))


def write_pngs(folder, images: torch.Tensor) -> None:
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


def test_clean_fid_equals_genbench_pieces(tmp_path, monkeypatch):
    fid = pytest.importorskip("cleanfid.fid")
    # clean-fid must not reach for its Inception or reference statistics: fail loudly if it tries
    monkeypatch.setattr(fid, "build_feature_extractor", lambda *a, **k: pytest.fail("clean-fid built its Inception"))
    monkeypatch.setattr(fid, "get_reference_statistics", lambda *a, **k: pytest.fail("clean-fid fetched statistics"))
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (60, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = (torch.randint(0, 256, (60, 3, 16, 16), generator=g) * 0.5 + 100).to(torch.uint8)  # less contrast
    write_pngs(tmp_path / "a", a)
    write_pngs(tmp_path / "b", b)
    extractor = TinyExtractor()
    theirs = fid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), mode="clean", custom_feat_extractor=extractor,
                             num_workers=0, batch_size=32, device=torch.device("cpu"), verbose=False)  # fmt: skip
    ours = frechet_distance(*gaussian_stats(extractor(clean_resize(a))), *gaussian_stats(extractor(clean_resize(b))))
    assert theirs > 5e-3  # measured 0.01902 (the features are means over 1,369 patches: small spread)
    assert float(ours) == pytest.approx(theirs, rel=1e-3)  # measured 1e-8 apart: the features are equal


# --- eval.resize=clean end to end: genbench-evaluate against clean-fid, with one random InceptionV3 -----------
@pytest.mark.slow  # 4 x 8 Inception passes at 299 x 299 + writing the weights: ~45 s on a busy 2-core machine
def test_clean_resize_fid_equals_clean_fids(tmp_path, monkeypatch):
    """clean-fid's compute_fid(mode="clean") with genbench's InceptionV3 passed in as its extractor gives the FID
    of ``genbench-evaluate eval.features=inception eval.resize=clean`` on the same folders: reading, resizing
    and the Fréchet distance are each library's own."""
    fid = pytest.importorskip("cleanfid.fid")
    from evaluation.spaces.inception import InceptionFeatures
    from evaluation.testing import write_random_inception
    from genbench.evaluate import evaluate
    from tests.conftest import compose_config

    monkeypatch.setattr(fid, "build_feature_extractor", lambda *a, **k: pytest.fail("clean-fid built its Inception"))
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = (torch.randint(0, 256, (8, 3, 16, 16), generator=g) * 0.5 + 100).to(torch.uint8)
    write_pngs(tmp_path / "a", a)
    write_pngs(tmp_path / "b", b)
    weights = write_random_inception(tmp_path / "inception.pth", a[:4].float() / 127.5 - 1)
    ours = evaluate(compose_config(
        [f"fake={tmp_path / 'a'}", f"real={tmp_path / 'b'}", "eval=inception", f"eval.inception_weights={weights}",
         "eval.resize=clean", "eval.device=cpu", "eval.batch_size=8", "eval.is_splits=2"],
        config_name="evaluate", run_dir=tmp_path / "out"))  # fmt: skip
    assert ours["card"]["resize"] == "clean" and ours["card"]["features"] == "inception"
    space = InceptionFeatures(weights, resize="clean").eval()
    # the pre-hook adapter: a 299 x 299 image needs no resize, and both modes see the same pixels
    big = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8).float() / 127.5 - 1
    with torch.no_grad():
        assert torch.equal(space(big)[0], InceptionFeatures(weights).eval()(big)[0])
    theirs = fid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), mode="clean", num_workers=0, batch_size=8,
                             custom_feat_extractor=lambda x: space.forward_resized(x)[0], device=torch.device("cpu"),
                             verbose=False)  # fmt: skip
    assert ours["fid"] > 1  # non-degenerate
    assert ours["fid"] == pytest.approx(theirs, rel=1e-3)
