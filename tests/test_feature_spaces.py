"""DINOv2 and CLIP feature spaces with random weights and small models (nothing downloaded)."""

from __future__ import annotations

import pytest
import timm
import torch

from evaluation.features import CLIPFeatures, DINOv2Features, feature_space_spec
from evaluation.spaces.base import resize_normalise
from evaluation.spaces.dinov2 import resample_pos_embed
from evaluation.testing import write_pngs
from genbench.errors import ConfigError
from genbench.evaluate import evaluate
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def dinov2():
    return DINOv2Features("vits14", "random")


@pytest.fixture(scope="module")
def clip():
    return CLIPFeatures("ViT-B-32", "random")


def test_preprocessing_sizes_and_dims(dinov2, clip, one_thread):
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert resize_normalise(x, 224, (0.5,) * 3, (0.5,) * 3).shape == (3, 3, 224, 224)
    assert resize_normalise(torch.rand(2, 3, 32, 48) * 2 - 1, 336, (0.5,) * 3, (0.5,) * 3).shape == (
        2,
        3,
        336,
        336,
    )
    assert [feature_space_spec(n).input_size for n in ("dinov2", "clip", "inception")] == [224, 336, 299]
    assert clip.input_size == 224  # ViT-B-32 sees 224; the default ViT-L-14-336 sees 336
    with torch.no_grad():
        (fd, ld), (fc, lc) = dinov2(x), clip(x)
    assert fd.shape == (3, 384) and ld is None and dinov2.num_features == 384 and dinov2.num_classes is None
    assert fc.shape == (3, 512) and lc is None and clip.num_features == 512 and clip.num_classes is None
    assert torch.allclose(fc.norm(dim=1), torch.ones(3), atol=1e-5)  # CLIP embeddings are L2-normalised
    assert (fd[0] != fd[1]).any() and (fc[0] != fc[1]).any()  # the features depend on the image
    assert (
        dinov2.cache_id() == "dinov2-vits14-random-seed0" and clip.cache_id() == "clip-ViT-B-32-random-seed0"
    )
    # a constant grey image is [0.5 - mean] / std after resizing, whatever the size
    grey = torch.zeros(1, 1, 20, 20)
    y = resize_normalise(grey, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch.allclose(y[0, :, 100, 100], (torch.tensor([128 / 255] * 3) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]), atol=1e-5)  # fmt: skip


def test_official_dinov2_checkpoint_loads_with_pos_embed_resampled_as_dinov2_does(tmp_path, one_thread):
    # An official-format checkpoint: timm's names at 518 (37 x 37 grid) plus the mask token timm drops.
    torch.manual_seed(1)
    net = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    state = {**net.state_dict(), "mask_token": torch.zeros(1, 384)}
    state["pos_embed"] = torch.full_like(state["pos_embed"], 0.25)  # constant: bicubic keeps it exactly
    state["pos_embed"][:, 0] = 7.0  # the CLS position is never resampled
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    space = DINOv2Features("vits14", tmp_path / "dinov2_vits14_pretrain.pth")
    pos = space.net.pos_embed
    assert (
        pos.shape == (1, 1 + 16 * 16, 384)
        and (pos[:, 0] == 7.0).all()
        and torch.allclose(pos[:, 1:], torch.tensor(0.25))
    )
    assert torch.equal(space.net.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])
    assert space.cache_id().startswith("dinov2-vits14-") and "random" not in space.cache_id()
    # DINOv2's own resampling: scale factor (16 + 0.1) / 37, no antialiasing; the grid is 16 x 16
    ramp = torch.arange(1 + 37 * 37, dtype=torch.float32).view(1, -1, 1).expand(1, -1, 2)
    assert resample_pos_embed({"pos_embed": ramp}, 16)["pos_embed"].shape == (1, 257, 2)
    (tmp_path / "garbage.pth").write_text("not weights\n")
    with pytest.raises(
        ConfigError, match=r"eval.dinov2.weights='.*garbage.pth': not a readable weights file"
    ):
        DINOv2Features("vitb14", tmp_path / "garbage.pth")


def test_clip_loads_the_visual_tensors_of_a_state_dict(tmp_path, clip, one_thread):
    state = {f"visual.{k}": v + 0.01 for k, v in clip.net.state_dict().items()} | {
        "logit_scale": torch.tensor(4.6)
    }
    torch.save(state, tmp_path / "ViT-B-32.pt")
    loaded = CLIPFeatures("ViT-B-32", tmp_path / "ViT-B-32.pt")
    assert torch.equal(loaded.net.conv1.weight, state["visual.conv1.weight"])
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="not a readable CLIP weights file"):
        CLIPFeatures("ViT-B-32", tmp_path / "garbage.pt")


@pytest.mark.parametrize("space, options", [
    ("dinov2", ["+eval.dinov2={model: vits14, weights: random}"]),
    ("clip", ["+eval.clip={model: ViT-B-32, weights: random}"]),
])  # fmt: skip
def test_frechet_distance_of_a_folder_with_itself_is_zero(tmp_path, monkeypatch, space, options, one_thread):
    """End to end through genbench-evaluate; DINOv2 also compares 12 x 12 images with 16 x 16 ones."""
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    folder = write_pngs(tmp_path / "imgs", torch.rand(6, 3, 16, 16, generator=g) * 2 - 1)
    other = write_pngs(tmp_path / "small", torch.rand(6, 3, 12, 12, generator=g) * 2 - 1)
    common = [
        f"eval.features={space}",
        *options,
        "eval.device=cpu",
        "eval.batch_size=6",
        "eval.kid_subset_size=3",
    ]
    cfg = compose_config(
        [f"fake={folder}", f"real={folder}", *common], config_name="evaluate", run_dir=tmp_path / "a"
    )
    same = evaluate(cfg)
    assert same["features"] == space and same["num_samples"] == 6
    # the new spaces name their keys (fd_dinov2, kid_mean_clip, ...); no plain "fid" is reported there
    assert same[f"fd_{space}"] == pytest.approx(0.0, abs=1e-3) and same["is_mean"] is None and "fid" not in same
    assert same[f"precision_{space}"] == pytest.approx(1.0) and same[f"recall_{space}"] == pytest.approx(1.0)
    # a resizing space compares images of another size with the reference (random weights barely
    # see the pixels, so only the comparison itself is checked here)
    if space == "dinov2":
        cfg = compose_config(
            [f"fake={other}", f"real={folder}", *common], config_name="evaluate", run_dir=tmp_path / "b"
        )
        assert evaluate(cfg)["num_samples"] == 6


@pytest.mark.parametrize("override, message", [
    ("+eval.dinov2={model: vitx14}", "eval.dinov2.model='vitx14': must be one of ['vits14', 'vitb14', 'vitl14', 'vitg14']"),
    ("+eval.dinov2={modle: vits14}", "eval.dinov2.modle: unknown key; allowed: ['model', 'weights']"),
    ("+eval.dinov2={weights: /no/such.pth}", "eval.dinov2.weights='/no/such.pth': no such file"),
    ("+eval.clip={model: RN50}", "eval.clip.model='RN50': must be one of ['ViT-L-14-336', 'ViT-B-32']"),
])  # fmt: skip
def test_bad_options_are_one_clear_error_before_any_work(tmp_path, monkeypatch, override, message):
    monkeypatch.delenv("GENBENCH_OFFLINE", raising=False)  # online: missing weights are found (and fetched) later, not here
    space = override.split(".")[1].split("=")[0]
    cfg = compose_config(["fake=/nonexistent", "data=mnist5k", f"eval.features={space}", override],
                         config_name="evaluate", run_dir=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError) as e:
        evaluate(cfg)
    assert e.value.problems == [message]


def test_random_weights_are_refused_outside_tests(monkeypatch):
    from evaluation.spaces.dinov2 import settings_errors

    assert settings_errors({"dinov2": {"model": "vits14", "weights": "random"}}) == []
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    (msg,) = settings_errors({"dinov2": {"weights": "random"}})
    assert msg.startswith("eval.dinov2.weights='random': untrained weights give meaningless features")
