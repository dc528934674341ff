"""Agreement with torch-fidelity: same folders, same InceptionV3 weights file -> same FID, IS, KID.

The weights are random (written by the test, never downloaded), but non-degenerate: the test
proves the wiring (file loading, image decoding, resize, feature layers, metric protocols), not
the weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.testing import write_pngs, write_random_inception
from genbench.errors import ConfigError
from genbench.evaluate import evaluate
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from datamodules.mnist5k import MNIST5kDataModule

    root = tmp_path_factory.mktemp("fidelity")
    dm = MNIST5kDataModule(kind="image", shape=[1, 28, 28])
    g = torch.Generator().manual_seed(0)
    real = dm.real_samples("val")[torch.randperm(500, generator=g)[:12]]
    fake = dm.real_samples("train")[torch.randperm(4500, generator=g)[:12]]
    fake = (fake.roll(3, dims=-1) * 0.8 + 0.1 * torch.randn(fake.shape, generator=g)).clamp(-1, 1)  # shifted, noisy
    weights = write_random_inception(root / "inception.pth", real[:4])
    return write_pngs(root / "fake", fake), write_pngs(root / "real", real), weights


@pytest.mark.slow  # InceptionV3 at 299×299 on a CPU: ~20 s idle, over a minute on a busy 2-core machine
def test_fid_is_kid_agree_with_torch_fidelity(folders, tmp_path, monkeypatch):
    import torch_fidelity

    fake, real, weights = folders
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    protocol = {"isc_splits": 3, "kid_subsets": 10, "kid_subset_size": 6}
    cfg = compose_config(
        [f"fake={fake}", f"real={real}", "eval=inception", f"eval.inception_weights={weights}", "eval.device=cpu",
         "eval.is_splits=3", "eval.kid_subsets=10", "eval.kid_subset_size=6", "eval.batch_size=6"],
        config_name="evaluate", run_dir=tmp_path / "out",
    )  # fmt: skip
    ours = evaluate(cfg)
    ref = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), cuda=False, isc=True, fid=True, kid=True, verbose=False, cache=False,
        feature_extractor_weights_path=str(weights), batch_size=12, save_cpu_ram=True, **protocol,
    )  # fmt: skip
    assert ours["features"] == "inception" and ours["num_samples"] == ours["num_real"] == 12
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-3)
    assert ours["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-3)
    assert ours["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-3, abs=1e-6)
    assert ours["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3, abs=1e-6)
    # non-degenerate: the numbers carry information
    assert ours["fid"] > 1.0 and ours["is_mean"] > 1.5 and ours["kid_mean"] > 1e-3


def test_missing_or_corrupt_inception_weights_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache: offline, nothing downloaded
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENBENCH_OFFLINE", "1")  # genbench would download them otherwise (tests/test_weights.py)
    common = ["fake=/nonexistent", "data=mnist5k", "eval=inception"]
    cfg = compose_config(common, config_name="evaluate", run_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        evaluate(cfg)
    msg = str(e.value)
    assert "eval.inception_weights=null" in msg and "eval.inception_weights=PATH" in msg and "eval.features=classifier" in msg

    corrupt = tmp_path / "weights.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    folder = write_pngs(tmp_path / "imgs", torch.zeros(3, 1, 28, 28))
    cfg = compose_config([f"fake={folder}", "data=mnist5k", "eval=inception", f"eval.inception_weights={corrupt}"],
                         config_name="evaluate", run_dir=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"eval.inception_weights='.*weights.pth': not a readable InceptionV3 weights file"):
        evaluate(cfg)
    corrupt.write_text("not weights at all\n")  # text: the weights-only unpickler fails with an IndexError
    with pytest.raises(ConfigError, match=r"eval.inception_weights='.*weights.pth': not a readable InceptionV3 weights file"):
        evaluate(cfg)
    torch.save({"conv.weight": torch.zeros(3)}, corrupt)
    with pytest.raises(ConfigError, match="not an InceptionV3 state dict"):
        evaluate(cfg)
    assert not (tmp_path / "cache" / "real_stats").exists() or not any((tmp_path / "cache" / "real_stats").glob("*.pt"))


def test_inception_runs_in_channels_last(folders):
    """NHWC convolutions (1.5x faster on the CPU here); the agreement test above checks the numbers."""
    from evaluation.features import InceptionFeatures

    _, _, weights = folders
    net = InceptionFeatures(weights).net
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
