"""``genbench-evaluate real=stats.npz`` and ``save_stats=``: reference statistics in and out, on points in
the raw feature space (16-d, so it runs in a second), against pytorch-fid's Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.ref_stats import save_stats
from genbench.errors import ConfigError, GenbenchError
from genbench.evaluate import evaluate
from tests.conftest import compose_config


def points(n: int, seed: int, shift: float) -> np.ndarray:
    g = np.random.default_rng(seed)
    return (g.standard_normal((n, 16)) @ g.standard_normal((16, 16)) / 4 + shift).astype(np.float32)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    np.savez(tmp_path / "fake.npz", samples=points(300, 0, 0.3))
    np.savez(tmp_path / "real.npz", samples=points(400, 1, 0.0))
    return tmp_path


def run(tmp_path, *overrides: str) -> dict:
    return evaluate(compose_config(["eval.device=cpu", "eval.kid_subsets=5", *overrides], config_name="evaluate",
                                   run_dir=tmp_path / "out"))  # fmt: skip


def test_written_statistics_give_the_same_fid_here_and_in_pytorch_fid(files):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    fake, real = files / "fake.npz", files / "real.npz"
    direct = run(files, f"fake={fake}", f"real={real}", f"save_stats={files / 'real_stats.npz'}")
    assert direct["saved_stats"] == str(files / "real_stats.npz") and direct["fid"] > 1  # measured 9.15
    stats_only = run(files, f"real={fake}", f"save_stats={files / 'fake_stats.npz'}")  # no fake=: statistics only
    assert stats_only["num_real"] == 300 and "fid" not in stats_only

    with np.load(files / "real_stats.npz") as f:
        assert f["mu"].dtype == f["sigma"].dtype == np.float64 and f["sigma"].shape == (16, 16)
        assert np.allclose(f["sigma"], np.cov(np.load(real)["samples"].astype(np.float64), rowvar=False), rtol=1e-9)
        assert (str(f["features"]), int(f["n"]), str(f["space_id"])) == ("raw", 400, "raw")
    # pytorch-fid reads both files itself
    m1, s1 = fid_score.compute_statistics_of_path(str(files / "real_stats.npz"), None, 50, 16, "cpu")
    m2, s2 = fid_score.compute_statistics_of_path(str(files / "fake_stats.npz"), None, 50, 16, "cpu")
    assert fid_score.calculate_frechet_distance(m2, s2, m1, s1) == pytest.approx(direct["fid"], rel=1e-6)

    against_stats = run(files, f"fake={fake}", f"real={files / 'real_stats.npz'}")
    assert against_stats["fid"] == pytest.approx(direct["fid"], rel=1e-6)
    assert against_stats["features"] == "raw" and against_stats["num_real"] == 400
    # the metrics of the real features themselves do not apply: null, and the notes say why
    assert against_stats["kid_mean"] is None and against_stats["precision"] is None and direct["kid_mean"] is not None
    notes = " ".join(against_stats["notes"])
    assert "kid (kid_mean, kid_std): needs the real features" in notes and "manifold (precision" in notes
    assert "cannot be verified" not in notes  # genbench wrote it: its space is checked, not guessed
    assert against_stats["card"]["split"] == "stats" and against_stats["card"]["num_real"] == 400


def test_another_tools_statistics_are_used_with_a_note(files):
    x = np.load(files / "real.npz")["samples"].astype(np.float64)
    np.savez(files / "foreign.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))  # as pytorch-fid writes them
    direct = run(files, f"fake={files / 'fake.npz'}", f"real={files / 'real.npz'}")
    foreign = run(files, f"fake={files / 'fake.npz'}", f"real={files / 'foreign.npz'}")
    assert foreign["fid"] == pytest.approx(direct["fid"], rel=1e-6)
    assert foreign["num_real"] is None and foreign["card"]["num_real"] is None
    assert any("statistics from another tool" in n and "cannot be verified" in n for n in foreign["notes"])


def test_statistics_that_do_not_fit_are_refused(files):
    fake = f"fake={files / 'fake.npz'}"
    np.savez(files / "small.npz", mu=np.zeros(3), sigma=np.eye(3))
    save_stats(files / "other_space.npz", np.zeros(16), np.eye(16), features="inception", space_id="inception-0123",
               resize="clean", n=10)  # fmt: skip
    np.savez(files / "neither.npz", mu=np.zeros(3), feats=np.zeros((4, 3)))
    cases = [
        ([fake, f"real={files / 'small.npz'}"], "statistics of 3-d features, but eval.features=raw gives 16-d features"),
        ([fake, f"real={files / 'other_space.npz'}", "eval.features=raw"],
         "written by genbench in feature space 'inception-0123' (eval.features=inception, eval.resize=clean), but this "
         "evaluation's is 'raw'"),
        ([fake, f"real={files / 'neither.npz'}"], "holds ['mu', 'feats']: neither samples"),
        ([f"fake={files / 'small.npz'}", f"real={files / 'real.npz'}"], "holds reference statistics (mu, sigma), not samples"),
        ([fake, f"real={files / 'real.npz'}", "save_stats=out.txt"], "save_stats='out.txt': must be the path of an .npz"),
    ]  # fmt: skip
    for overrides, needle in cases:
        with pytest.raises(GenbenchError) as e:
            run(files, *overrides)
        assert needle in str(e.value), (overrides, str(e.value))
    with pytest.raises(ConfigError, match="only eval.features=inception has resize modes"):
        run(files, fake, f"real={files / 'real.npz'}", "eval.resize=clean")
