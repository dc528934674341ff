"""Training budgets (genbench/budget.py): images, FLOPs and seconds, and what results.json records."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from genbench.budget import budget_errors, count_step_flops
from genbench.errors import ConfigError
from genbench.train import train
from genbench.validate import config_errors

# Per step on rings (batch 256): the VAE's MLP about 0.11 GFLOP, the DDPM's about 1.05 GFLOP.
FLOPS_BUDGET = 6e9


@pytest.mark.parametrize("family", ["vae", "ddpm"])
def test_flops_budget_ends_within_one_step(tiny_config, one_thread, family):
    cfg = tiny_config(f"model={family}", "data=rings", "budget.kind=flops", f"budget.value={FLOPS_BUDGET}")
    results = train(cfg)
    per_step, used = results["budget"]["flops_per_step"], results["used"]
    assert used["flops"] <= FLOPS_BUDGET < used["flops"] + per_step
    assert used["steps"] == results["steps"] == FLOPS_BUDGET // per_step != 4  # not tiny_config's trainer.max_steps
    assert used["flops"] == used["steps"] * per_step
    assert used["images"] == used["steps"] * 256 == results["train_images"]
    assert results["budget"] == {"kind": "flops", "value": FLOPS_BUDGET, "steps": used["steps"],
                                 "flops_per_step": per_step, "images_per_step": 256}  # fmt: skip


def test_step_schedules_see_the_budgets_steps(tiny_config, tmp_path, one_thread):
    """The DDPM's cosine decay runs over the steps the FLOPs budget allows (5), not trainer.max_steps: the
    learning rate after the last step is lr · (1 + cos π) / 2 = 0."""
    train(tiny_config("model=ddpm", "data=rings", "budget.kind=flops", f"budget.value={FLOPS_BUDGET}",
                      "trainer.max_steps=1000", "model.lr_decay=cosine", "model.lr_warmup_steps=0"))  # fmt: skip
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    assert ckpt["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


def test_time_budget_stops_within_one_step(tiny_config, one_thread):
    cfg = tiny_config("model=vae", "data=rings", "budget.kind=time", "budget.value=3", "trainer.max_steps=1000000",
                      "+trainer.limit_val_batches=0")  # fmt: skip
    results = train(cfg)
    used = results["used"]
    # The step that reached 3 s was the last: the one before it ended under 3 s. The end of the loop after
    # the last step (its checkpoint; no validation here) gets 0.5 s.
    assert 3.0 <= used["seconds"] < 3.0 + used["last_step_seconds"] + 0.5
    assert 10 < used["steps"] < 1000000
    assert used["flops"] == used["steps"] * results["budget"]["flops_per_step"]


def test_images_budget(tiny_config, one_thread):
    results = train(tiny_config("model=vae", "data=rings", "budget.value=1000"))  # 256 images a step
    assert results["used"]["steps"] == 3 and results["used"]["images"] == 768


def test_resumed_run_continues_the_budget(tiny_config, tmp_path, one_thread):
    budget = ["model=vae", "data=rings", "budget.kind=flops", "budget.value=2e9"]  # 18 steps of 110.8 MFLOP
    whole = train(tiny_config(*budget, run_dir=tmp_path / "whole"))
    first = train(tiny_config("model=vae", "data=rings", "trainer.max_steps=7", run_dir=tmp_path / "split"))
    ckpt = f"ckpt_path={tmp_path / 'split' / 'checkpoints' / 'last.ckpt'}"
    resumed = train(tiny_config(*budget, ckpt, run_dir=tmp_path / "split"))
    assert resumed["start_step"] == 7 and resumed["train_images"] == (18 - 7) * 256
    for key in ("steps", "flops", "images"):
        assert resumed["used"][key] == whole["used"][key]
    assert whole["used"]["steps"] == 18
    assert resumed["used"]["seconds"] > first["used"]["seconds"]  # the first session's seconds are carried over


def test_gan_is_charged_the_average_step_of_its_period(tiny_config, one_thread):
    """With a D-only step of a FLOPs and a generator update of b every n_critic steps, a step costs
    a + b / n_critic: so f(1) - f(2) = b / 2 = 3 (f(2) - f(3))."""
    f = {}
    for n in (1, 2, 3):
        cfg = tiny_config("model=gan", "data=rings", f"model.n_critic={n}")
        f[n] = count_step_flops(cfg, instantiate(cfg.model, _convert_="all"), cfg.data.batch_size)
    assert f[1] - f[2] == 3 * (f[2] - f[3]) > 0


def test_count_matches_the_benchmark_and_leaves_the_rngs(tiny_config, one_thread):
    """The DDPM's UNet step (attention included) against benchmarks/flops.py's count of its bare training
    loop on the meta device; the count is extended from batches of 2 and 4 to 128 exactly."""
    from benchmarks.flops import count_flops

    cfg = tiny_config("model=ddpm", "data=mnist5k", "data.batch_size=8")
    model = instantiate(cfg.model, _convert_="all")
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    per_step = count_step_flops(cfg, model, 128)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]
    assert per_step == 128 * Fraction(count_flops("ddpm")["train_flops_per_image"])
    assert count_step_flops(cfg, model, 8, probe=None) == 8 * per_step / 128


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["budget.kind=epochs"], "budget.kind='epochs': must be one of ['images', 'flops', 'time']"),
        (["budget.kind=flops"], "budget.value=None: budget.kind=flops needs a number > 0 (training FLOPs)"),
        (["budget.kind=time", "budget.value=0"],
         "budget.value=0: must be a finite number > 0 (seconds for budget.kind=time)"),
        (["budget.value=true"], "budget.value=True: must be a finite number > 0"),
    ],
)
def test_bad_budget_is_one_clear_error(tiny_config, overrides, message):
    cfg = tiny_config(*overrides)
    assert len(budget_errors(cfg)) == 1 and budget_errors(cfg)[0].startswith(message)
    assert budget_errors(cfg)[0] in config_errors(cfg)


def test_budget_under_one_step_fails_before_training(tiny_config, tmp_path):
    message = r"budget.value=1000: less than one training step \(110755840 training FLOPs per step\)"
    with pytest.raises(ConfigError, match=message):
        train(tiny_config("model=vae", "data=rings", "budget.kind=flops", "budget.value=1000"))
    assert not (tmp_path / "checkpoints").exists()


def test_bad_budget_stops_train_before_any_work(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"budget.value=-5: must be a finite number > 0 \(training FLOPs"):
        train(tiny_config("model=vae", "data=rings", "budget.kind=flops", "budget.value=-5"))
    assert not (tmp_path / "checkpoints").exists()
