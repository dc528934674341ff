"""The speed choices of the training loop (issue 7), each checked for what it must not change."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from benchmarks import common
from datamodules.base import EpochBatches
from genbench.train import train


# --- the fused optimizer ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vae", "gan", "ddpm"])
def test_default_optimizer_is_fused_adam_on_the_cpu(family):
    model, _, _ = common.build(family, ["data=mnist5k"])  # (rings' DDPM decays its LR over the Trainer's steps)
    opts = model.configure_optimizers()
    opts = opts if isinstance(opts, (list, tuple)) else [opts]
    opts = [o["optimizer"] if isinstance(o, dict) else o for o in opts]
    assert [(type(o).__name__, o.defaults["fused"]) for o in opts] == [("Adam", True)] * len(opts)


@pytest.mark.parametrize("override,fused,foreach", [
    ("model.optimizer.fused=false", False, None),   # an explicit choice is kept
    ("+model.optimizer.foreach=true", None, True),  # so is asking for the foreach kernels
])  # fmt: skip
def test_explicit_kernel_choices_are_kept(override, fused, foreach):
    model, _, _ = common.build("vae", ["data=rings", override])
    opt = model.configure_optimizers()
    assert (opt.defaults["fused"], opt.defaults["foreach"]) == (fused, foreach)


def test_optimizers_without_a_fused_kernel_ignore_the_default():
    model, _, _ = common.build("vae", ["data=rings", "model.optimizer._target_=torch.optim.RMSprop"])
    opt = model.configure_optimizers()
    assert type(opt).__name__ == "RMSprop" and "fused" not in opt.defaults


def test_not_fused_under_mixed_precision():
    """Lightning's mixed-precision gradient clipping refuses fused optimizers (they unscale inside step)."""
    model, _, _ = common.build("ddpm", ["data=mnist5k"])
    model._trainer = SimpleNamespace(precision_plugin=MixedPrecision("bf16-mixed", "cpu"))
    try:
        assert model.configure_optimizers()["optimizer"].defaults.get("fused") is None
    finally:
        model._trainer = None


# --- per-step logging --------------------------------------------------------------------------------
def test_train_metrics_reach_the_logger_on_the_same_steps_and_end_with_the_last_step(tiny_config, tmp_path, monkeypatch):
    """``log_train`` logs only the steps Lightning writes (every log_every_n_steps) and the last one."""
    from models.vae import VAE

    calls = []
    original = VAE.log

    def spy(self, name, *args, **kwargs):
        if name == "train/loss":
            calls.append((id(self), self.trainer.fit_loop.epoch_loop._batches_that_stepped + 1))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(VAE, "log", spy)
    # rings: 50,000 points in batches of 256 is 195 batches an epoch, so no epoch ends in these 12 steps
    results = train(tiny_config("model=vae", "data=rings", "logger=csv", "trainer.max_steps=12",
                                "trainer.log_every_n_steps=5", "+trainer.limit_val_batches=0"))  # fmt: skip
    trained = calls[-1][0]  # not the copy whose one step the budget counts first (genbench/budget.py)
    assert [step for model, step in calls if model == trained] == [5, 10, 12]
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert logged == [4, 9]  # Lightning's own rule (0-indexed steps 4 and 9), unchanged
    assert torch.isfinite(torch.tensor(results["metrics"]["train/loss"]))  # the last step's value, in results.json


# --- the epoch order ------------------------------------------------------------------------------------
def test_epoch_order_is_one_int32_permutation_equal_to_the_int64_one():
    """4 bytes per example, and the same order as before (runs stay reproducible across versions)."""
    batches = EpochBatches(1000, 64, shuffle=True, drop_last=True, seed=3)
    got = list(batches)
    assert [b.dtype for b in got] == [torch.int32] * 15 and len(batches) == 15
    expected = torch.randperm(1000, generator=torch.Generator().manual_seed(3 * 1_000_003 + 0))[: 15 * 64]
    assert torch.equal(torch.cat(got).long(), expected)
    assert got[0].untyped_storage().nbytes() == 1000 * 4  # views of one permutation, no per-batch copies


# --- model.compile ---------------------------------------------------------------------------------------
def test_model_compile_compiles_the_networks_and_keeps_checkpoints_loadable(tiny_config, tmp_path):
    """``model.compile=true``: torch.compile (inductor) of the VAE's encoder and decoder; the checkpoint
    has the same keys as an uncompiled model's and loads into one."""
    import torch._dynamo

    from genbench.checkpoint import load_model

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    results = train(tiny_config("model=vae", "data=rings", "model.compile=true", "trainer.max_steps=3"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the encoder's and the decoder's forward
    model = load_model(results["checkpoint"])
    eager, _, _ = common.build("vae", ["data=rings"])
    assert set(model.state_dict()) == set(eager.state_dict())
    assert model.compile_options == {}  # restored from the checkpoint's hyperparameters (a fit compiles it again)
    x = model.sample(8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_model_compile_takes_torch_compile_options(tiny_config):
    torch._dynamo.reset()
    model, _, _ = common.build("gan", ["data=rings", "model.compile={backend: eager, dynamic: false}"])
    assert model.compile_options == {"backend": "eager", "dynamic": False}
    model.setup("fit")
    assert model.generator._compiled_call_impl is not None and model.discriminator._compiled_call_impl is not None
    out = model.generator(torch.randn(4, model.latent_dim))
    assert out.shape[0] == 4


# --- the sampling call's own costs (issue 24: per-call overhead at batch 1) ---------------------------
def test_no_grad_turns_gradients_off_for_the_call_and_restores_the_mode_after_errors_too():
    from models.base import no_grad

    seen = []

    @no_grad
    def f(fail=False):
        seen.append(torch.is_grad_enabled())
        if fail:
            raise RuntimeError("boom")
        return torch.ones(2, requires_grad=True) * 2

    assert not f().requires_grad and seen == [False] and torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        f(fail=True)
    assert torch.is_grad_enabled()
    with torch.no_grad():
        f()
        assert not torch.is_grad_enabled()  # an outer no_grad stays on
    assert f.__name__ == "f"


def test_eval_mode_restores_every_modules_own_mode_and_leaves_an_eval_network_alone():
    from models.base import eval_call, eval_mode

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5))
    x = torch.randn(8, 2)
    net.train()
    expected = net.eval()(x)
    net.train()
    assert torch.equal(eval_call(net, x), expected) and net.training  # dropout off, running statistics, mode back
    net.train()
    net[1].eval()  # a frozen batch norm inside a training network
    with eval_mode(net) as inside:
        assert inside is net and not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("the modes come back after an error too")
    assert [m.training for m in net.modules()] == [True, True, False, True]
    # a network whose own flag says eval (as .eval() leaves it) is not walked or changed
    net.eval()
    net[2].training = True
    with eval_mode(net):
        assert net[2].training
    assert [m.training for m in net.modules()] == [False, False, False, True]


def test_schedule_memo_is_reused_and_starts_afresh_when_the_buffers_change():
    from models.diffusion import NoiseSchedule

    schedule, calls = NoiseSchedule.linear(10), []

    def compute():
        calls.append(1)
        return float(schedule.alphas_cumprod[3])

    first = schedule.memo("k", compute)
    assert schedule.memo("k", compute) == first and len(calls) == 1
    schedule.load_state_dict(NoiseSchedule.cosine(10).state_dict())  # in place: a new version of ᾱ
    assert schedule.memo("k", compute) == float(NoiseSchedule.cosine(10).alphas_cumprod[3]) != first
    schedule.double()  # new storage and dtype
    schedule.memo("k", compute)
    assert len(calls) == 3
    import copy
    import pickle

    for twin in (copy.deepcopy(schedule), pickle.loads(pickle.dumps(schedule))):  # a copy computes its own
        assert twin.memo("k", lambda: "fresh") == "fresh" and schedule.memo("k", compute) != "fresh"


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_memoized_chain_constants_give_the_samples_of_a_fresh_model(sampler):
    """sample() twice (the second call reads the memo) and a fresh copy's first call: bitwise the same samples;
    after the schedule's buffers are loaded from another schedule, the samples follow the loaded buffers."""
    from models.diffusion import NoiseSchedule

    def draw(m):
        return m.sample(16, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=7, progress=False)

    def fresh_copy(m):
        copy, _, _ = common.build("ddpm", ["data=rings"])
        copy.load_state_dict(m.state_dict())
        return copy

    model, _, _ = common.build("ddpm", ["data=rings"])
    first, second = draw(model), draw(model)
    assert torch.equal(first, second) and torch.equal(second, draw(fresh_copy(model)))
    model.schedule.load_state_dict(NoiseSchedule.cosine(model.schedule.T).state_dict())
    moved = draw(model)
    assert not torch.equal(moved, first) and torch.equal(moved, draw(fresh_copy(model)))


# --- the allocator (genbench.runtime.keep_freed_memory) ------------------------------------------------
_FAULTS = """
import resource, sys, torch
from genbench.runtime import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tune" else None
torch.set_num_threads(1)
conv = lambda a, b: torch.nn.Conv2d(a, b, 3, padding=1)
net = torch.nn.Sequential(conv(1, 16), torch.nn.SiLU(), conv(16, 32), torch.nn.SiLU(), conv(32, 16), torch.nn.SiLU(), conv(16, 1))
x = torch.randn(64, 1, 28, 28)  # activations of 0.2-6.4 MiB, allocated and freed layer by layer
with torch.no_grad():
    for _ in range(10):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        net(x)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_takes_no_page_faults_for_reused_activations():
    import os
    import subprocess
    import sys

    def faults(mode, **env):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env={**clean, **env}, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        return out[0], int(out[1])

    tuned, few = faults("tune")
    _, many = faults("as-is")
    # as is, the activations arrive as fresh pages (86,000-89,000 page faults in 20 passes here); kept, they reuse
    # the blocks freed by the pass before
    assert tuned == "True" and few < 100 and many > 20_000
    assert faults("tune", MALLOC_MMAP_THRESHOLD_="131072")[0] == "False"  # the user's own setting is left alone
