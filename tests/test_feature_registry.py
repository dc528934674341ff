"""A feature space is one spec and one registration: a toy random-projection space defined only here."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from evaluation import EvalConfig
from evaluation.features import (
    FEATURE_SPACES,
    FeatureSpace,
    FeatureSpaceSpec,
    feature_space_names,
    feature_space_spec,
    register_feature_space,
    resolve_feature_space,
    unregister_feature_space,
)
from evaluation.testing import write_pngs
from genbench.errors import ConfigError
from genbench.evaluate import evaluate
from tests.conftest import compose_config


class RandomProjection(FeatureSpace):
    """Flattened pixels times a fixed Gaussian matrix: 16 features."""

    name = "toyproj"

    def __init__(self, in_dim: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(in_dim, 16, generator=g) / in_dim**0.5)
        self.num_features, self.num_classes = 16, None

    def forward(self, x):
        return x.flatten(1).float() @ self.w, None

    def cache_id(self) -> str:
        return "toyproj-seed0"


def _errors(cfg: Any) -> list[str]:
    bs = cfg.get("batch_size", 250)
    return [] if bs <= 64 else [f"eval.batch_size={bs!r}: eval.features=toyproj takes at most 64 per batch"]


TOY = FeatureSpaceSpec(
    name="toyproj", kinds=frozenset({"image"}), resizes=False, input_size=None,
    build=lambda reference, cfg, device: RandomProjection(int(torch.tensor(reference.data_shape).prod())),
    errors=_errors, description="a random projection of the pixels (test only)",
)  # fmt: skip


@pytest.fixture
def toy():
    register_feature_space(TOY)
    yield TOY
    unregister_feature_space("toyproj")


def test_the_built_in_spaces_and_auto():
    assert feature_space_names() == ("auto", "classifier", "clip", "dinov2", "inception", "raw")
    assert (
        resolve_feature_space("auto", True) == "classifier" and resolve_feature_space("auto", False) == "raw"
    )
    assert [feature_space_spec(n).resizes for n in feature_space_names()[1:]] == [
        False,
        True,
        True,
        True,
        False,
    ]
    with pytest.raises(
        ConfigError,
        match=r"eval.features='raw': is for 2-D points; images use one of \['classifier', 'clip', 'dinov2', 'inception'\]",
    ):
        resolve_feature_space("raw", True)
    with pytest.raises(
        ConfigError, match=r"eval.features='dinov2': 2-D points have no dinov2 features; use one of \['raw'\]"
    ):
        resolve_feature_space("dinov2", False)
    with pytest.raises(ValueError, match="already registered"):
        register_feature_space(feature_space_spec("raw"))


def test_a_registered_toy_space_is_accepted_checked_and_evaluates(toy, tmp_path, monkeypatch):
    assert "toyproj" in FEATURE_SPACES and "toyproj" in feature_space_names()
    assert EvalConfig(features="toyproj", batch_size=8).features == "toyproj"
    with pytest.raises(ConfigError, match="eval.batch_size=100: eval.features=toyproj takes at most 64"):
        EvalConfig(features="toyproj", batch_size=100)
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    real = write_pngs(tmp_path / "real", torch.rand(12, 1, 8, 8, generator=g) * 2 - 1)
    fake = write_pngs(tmp_path / "fake", torch.rand(12, 1, 8, 8, generator=g) * 0.5 - 1)  # darker
    common = ["eval.features=toyproj", "eval.batch_size=6", "eval.kid_subset_size=4", "eval.device=cpu"]
    same = evaluate(
        compose_config(
            [f"fake={real}", f"real={real}", *common], config_name="evaluate", run_dir=tmp_path / "a"
        )
    )
    darker = evaluate(
        compose_config(
            [f"fake={fake}", f"real={real}", *common], config_name="evaluate", run_dir=tmp_path / "b"
        )
    )
    assert (
        same["features"] == "toyproj" and same["fid"] == pytest.approx(0.0, abs=1e-6) and darker["fid"] > 1.0
    )
    # not resizing: another image size is refused
    small = write_pngs(tmp_path / "small", torch.zeros(4, 1, 4, 4))
    with pytest.raises(ConfigError, match="does not match the real reference"):
        evaluate(
            compose_config(
                [f"fake={small}", f"real={real}", *common], config_name="evaluate", run_dir=tmp_path / "c"
            )
        )


def test_unknown_names_list_the_registry(toy):
    with pytest.raises(
        ConfigError,
        match=r"eval.features='pixels': must be one of \['auto', 'classifier', 'clip', 'dinov2', 'inception', 'raw', 'toyproj'\]",
    ):
        EvalConfig(features="pixels")
