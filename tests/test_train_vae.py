"""The spine end to end, carried by the VAE."""

from __future__ import annotations

import json

import pytest
import torch

from genbench.checkpoint import load_model
from genbench.train import train
from tests.conftest import run_cli


def test_train_writes_checkpoint_and_results(tiny_config, tmp_path):
    results = train(tiny_config("model=vae", "data=mnist5k", "trainer.max_steps=6"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["steps"] == results["steps"] == 6
    assert on_disk["family"] == "vae"
    assert on_disk["train_images"] == 6 * 128
    assert on_disk["parameters"] > 10_000
    assert {"train/loss", "train/recon", "train/kl"} <= set(on_disk["metrics"])
    assert on_disk["config"]["model"]["_target_"] == "models.vae.VAE"


@pytest.mark.parametrize("data", ["rings", "grid"])
def test_train_on_points(tiny_config, tmp_path, data):
    train(tiny_config("model=vae", f"data={data}"))
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    x = model.sample(32, generator=torch.Generator().manual_seed(0))
    assert x.shape == (32, 2) and torch.isfinite(x).all()


def test_console_script_train_resume_sample(tmp_path):
    """train 8 steps -> resume to 12 through `genbench-train` -> load -> sample(16)."""
    out = tmp_path / "run"
    common = ["genbench-train", "model=vae", "data=mnist5k", "logger=csv", "eval.final=false", f"hydra.run.dir={out}"]
    first = run_cli(*common, "trainer.max_steps=8")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(*common, "trainer.max_steps=12", f"ckpt_path={out}/checkpoints/last.ckpt")
    assert second.returncode == 0, second.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["start_step"] == 8 and results["steps"] == 12
    assert results["train_images"] == 4 * 128  # only the resumed steps were trained
    model = load_model(out / "checkpoints" / "last.ckpt")
    a = model.sample(16, generator=torch.Generator().manual_seed(1))
    b = model.sample(16, generator=torch.Generator().manual_seed(1))
    assert a.shape == (16, 1, 28, 28)
    assert torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert (out / "csv" / "metrics.csv").is_file()
