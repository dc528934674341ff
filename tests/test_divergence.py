"""The divergence guard (models/divergence.py, every family): a non-finite loss or weights stop the run, the
last good checkpoint stays, the failure is on record, and a sweep goes on with its next job."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from genbench.train import train
from tests.conftest import run_cli


def _nan_loss_from_step(cls, method: str, step: int, last_ckpt: Path, good: dict):
    """``cls.method`` whose training loss is NaN from update ``step`` on; keeps the checkpoint bytes seen then."""
    original = getattr(cls, method)

    def patched(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training and self.global_step + 1 >= step:
            good.setdefault("bytes", last_ckpt.read_bytes())  # the last good checkpoint, before the NaN
            nan = float("nan")
            out = {**out, "loss": out["loss"] * nan} if isinstance(out, dict) else out * nan
        return out

    return patched


@pytest.mark.parametrize("family,method", [("vae", "negative_elbo"), ("ddpm", "simple_loss")])
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch, one_thread,
                                                                    family, method):
    from genbench.errors import TrainingDivergedError
    from models.ddpm import DDPM
    from models.vae import VAE

    cls = {"vae": VAE, "ddpm": DDPM}[family]
    last, good = tmp_path / "checkpoints" / "last.ckpt", {}
    monkeypatch.setattr(cls, method, _nan_loss_from_step(cls, method, 5, last, good))
    cfg = tiny_config(f"model={family}", "data=rings", "trainer.max_steps=8",
                      "callbacks.model_checkpoint.every_n_train_steps=2")
    with pytest.raises(TrainingDivergedError) as info:
        train(cfg)
    msg = str(info.value)
    assert msg.startswith(f"{family} training diverged: train/loss=nan at step 5; stopped before this update, "
                          f"the last good checkpoint is {last}.")
    assert last.read_bytes() == good["bytes"]  # never overwritten
    assert read_checkpoint_step(last) == 4
    failed = json.loads((tmp_path / "results.json").read_text())
    assert failed["status"] == "diverged" and failed["error"] == msg
    assert failed["family"] == family and failed["steps"] == 4 and failed["checkpoint"] == str(last)


def test_deferred_check_names_the_first_bad_step_and_never_checkpoints_after_it(tiny_config, tmp_path, monkeypatch,
                                                                               one_thread):
    """On a GPU the loss is not read every step (a host sync): the first non-finite step is kept on the
    device and read every log_every_n_steps steps and before any checkpoint. Forced here on the CPU."""
    from genbench.errors import TrainingDivergedError
    from models.base import GenerativeModule
    from models.vae import VAE

    monkeypatch.setattr(GenerativeModule, "defer_finite_checks", True)
    last, good = tmp_path / "checkpoints" / "last.ckpt", {}
    monkeypatch.setattr(VAE, "negative_elbo", _nan_loss_from_step(VAE, "negative_elbo", 5, last, good))
    cfg = tiny_config("model=vae", "data=rings", "trainer.max_steps=12", "trainer.log_every_n_steps=3",
                      "callbacks.model_checkpoint.every_n_train_steps=4")
    with pytest.raises(TrainingDivergedError) as info:
        train(cfg)
    msg = str(info.value)
    assert msg.startswith("vae training diverged: train/loss=non-finite at step 5; found at step 6 (on this device the "
                          "check is read every trainer.log_every_n_steps steps), the weights since then were not "
                          f"checkpointed, the last good checkpoint is {last}.")
    assert last.read_bytes() == good["bytes"] and read_checkpoint_step(last) == 4


def read_checkpoint_step(path: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    return ckpt["global_step"]


class PoisonWeightsAt(L.Callback):
    """Test-only: sets one weight to inf after the optimizer update of ``step`` (before that step's checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("inf")


def test_non_finite_weights_are_never_checkpointed(tiny_config, tmp_path, one_thread):
    from genbench.errors import TrainingDivergedError

    cfg = tiny_config("model=ddpm", "data=rings", "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=2",
                      "+callbacks.poison._target_=tests.test_divergence.PoisonWeightsAt", "+callbacks.poison.step=6")
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingDivergedError, match=r"^ddpm training diverged: non-finite weights at step 6 in net\."):
        train(cfg)
    assert read_checkpoint_step(last) == 4  # the step-6 checkpoint was refused, step 4's kept
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"


def test_a_multirun_goes_on_after_a_diverged_job(tmp_path):
    """lr = 1e30 blows the VAE up at its second update; the sweep's second job still trains."""
    r = run_cli("genbench-train", "-m", "model=vae", "data=rings", "model.lr=1e30,1e-3", "trainer.max_steps=4",
                "logger=none", "eval.final=false", "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 3, r.stderr[-3000:]  # the multirun still reports the failure at the end
    assert "Traceback" not in r.stderr
    diverged = json.loads((tmp_path / "0_vae_seed0" / "results.json").read_text())
    assert diverged["status"] == "diverged"
    assert diverged["error"].startswith("vae training diverged: train/loss=") and " at step " in diverged["error"]
    assert not (tmp_path / "0_vae_seed0" / "checkpoints").exists()  # nothing good to keep, nothing written
    done = json.loads((tmp_path / "1_vae_seed0" / "results.json").read_text())
    assert done["status"] == "ok" and done["steps"] == 4
    assert (tmp_path / "1_vae_seed0" / "checkpoints" / "last.ckpt").is_file()
    assert "1 job(s) of this multirun failed" in r.stderr and f"{tmp_path / '0_vae_seed0'}: diverged" in r.stderr

    # The same sweep again into the same directory, with a bad value: each job fails before any work. The
    # finished job's record is kept (its run and checkpoint still stand); its failure is recorded beside it.
    finished = (tmp_path / "1_vae_seed0" / "results.json").read_bytes()
    r = run_cli("genbench-train", "-m", "model=vae", "data=rings", "model.lr=-1,-2", "trainer.max_steps=4",
                "logger=none", "eval.final=false", "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 2, r.stderr[-3000:]
    assert (tmp_path / "1_vae_seed0" / "results.json").read_bytes() == finished
    failed = json.loads((tmp_path / "1_vae_seed0" / "results.failed.json").read_text())
    assert failed["status"] == "failed" and "model.lr=-2: must be a number > 0" in failed["error"]
    assert json.loads((tmp_path / "0_vae_seed0" / "results.json").read_text())["status"] == "failed"  # was diverged
    assert "2 job(s) of this multirun failed" in r.stderr



@pytest.mark.slow
def test_an_optuna_sweep_goes_on_after_a_diverged_trial(tmp_path):
    """Optuna refuses NaN (the sweep would end): a failed trial returns +inf, the worst value when minimising.
    The sampler's seed 2 draws lr = 1e30 for the first trial and 1e-3 for the second."""
    r = run_cli("genbench-train", "hparams_search=vae_optuna", "data=rings", "data.n_val=500",
                'hydra.sweeper.params={model.lr: "choice(1e30, 1e-3)"}', "hydra.sweeper.sampler.seed=2",
                "hydra.sweeper.n_trials=2", "trainer.max_steps=4", "logger=none", "trainer.enable_progress_bar=false",
                "~callbacks.progress_bar", "eval.num_samples=200", "eval.batch_size=100", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 3, r.stderr[-3000:]
    assert json.loads((tmp_path / "0_vae_seed0" / "results.json").read_text())["status"] == "diverged"
    assert json.loads((tmp_path / "1_vae_seed0" / "results.json").read_text())["status"] == "ok"
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "model.lr: 0.001" in best and "best_value: .inf" not in best
