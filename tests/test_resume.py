"""Exact resume: a run killed at an arbitrary step and resumed equals an uninterrupted run, bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import BIN, ROOT

# Each case trains three short runs in subprocesses (tens of seconds): the VAE runs in the default
# suite, the other families with the slow tests.
FAMILIES = [
    "vae",
    pytest.param("gan", marks=pytest.mark.slow),
    pytest.param("ddpm", marks=pytest.mark.slow),
]


def _cmd(run_dir: Path, family: str, steps: int, *extra: str) -> list[str]:
    return [str(BIN / "genbench-train"), f"model={family}", "data=rings", "data.n_train=2000", "data.n_val=500",
            f"trainer.max_steps={steps}", "logger=csv",
            "trainer.enable_progress_bar=false", "eval.every_n_steps=0", "eval.final=false",
            f"hydra.run.dir={run_dir}", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def _state(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {"weights": ckpt["state_dict"], "optimizers": ckpt["optimizer_states"], "step": ckpt["global_step"]}


def _assert_same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _kill_and_resume(run_dir: Path, family: str, steps: int, every: int) -> tuple[int, dict]:
    """Trains, SIGKILLs the run a little after its first checkpoint, resumes it to ``steps``."""
    ckpt_every = f"callbacks.model_checkpoint.every_n_train_steps={every}"
    proc = subprocess.Popen(_cmd(run_dir, family, steps, ckpt_every), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let it run on past the checkpoint, to an arbitrary step
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    killed_at = _state(last)["step"]
    assert 0 < killed_at < steps

    resumed = subprocess.run(_cmd(run_dir, family, steps, ckpt_every, "ckpt_path=last"), env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The data module restores the stream's position, so Lightning's mid-epoch "not resumable" warning is not shown.
    assert "dataloader is not resumable" not in resumed.stderr
    return killed_at, _state(last)


@pytest.mark.parametrize("family", FAMILIES)
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, family):
    _resume_cases(tmp_path, family, everies=(10,))


@pytest.mark.slow
def test_resumes_at_an_epoch_boundary(tmp_path):
    _resume_cases(tmp_path, "vae", everies=(2000 // 256,))


def _resume_cases(tmp_path: Path, family: str, everies: tuple[int, ...]) -> None:
    steps = 150
    ref = subprocess.run(_cmd(tmp_path / "ref", family, steps, "callbacks.model_checkpoint.every_n_train_steps=10"), env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = _state(tmp_path / "ref" / "checkpoints" / "last.ckpt")
    assert a["step"] == steps

    # 2000 training points in batches of 256: 7 full batches an epoch. Checkpoints every 10 steps resume
    # mostly inside an epoch (the default suite); every 7 steps at an epoch boundary, where a new loader
    # iterator and a validation pass come next (the slow tests, as test_resumes_at_an_epoch_boundary).
    per_epoch = 2000 // 256
    for every in everies:
        killed_at, b = _kill_and_resume(tmp_path / f"killed_every{every}", family, steps, every)
        if every == per_epoch:
            assert killed_at % per_epoch == 0
        assert b["step"] == steps
        _assert_same(a["weights"], b["weights"], f"[every {every}, killed at {killed_at}] state_dict")  # EMA included
        _assert_same(a["optimizers"], b["optimizers"], f"[every {every}, killed at {killed_at}] optimizer_states")


# --- the same W&B run ----------------------------------------------------------------------------
def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    """A stopped run resumed with ckpt_path=last logs into the W&B run it started (offline here)."""
    from genbench.checkpoint import read_checkpoint
    from genbench.train import train
    from genbench.wandb_utils import checkpoint_run_id
    from tests.conftest import TINY, compose_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in TINY if o != "logger=none"] + [
        "logger=wandb", "model=vae", "data=rings", "callbacks.model_checkpoint.every_n_train_steps=2"]
    train(compose_config(overrides + ["trainer.max_steps=4"], run_dir=tmp_path))
    run_id = checkpoint_run_id(read_checkpoint(tmp_path / "checkpoints" / "last.ckpt"))
    assert run_id
    resumed_at = time.time()
    train(compose_config(overrides + ["trainer.max_steps=8", "ckpt_path=last"], run_dir=tmp_path))

    # One offline directory per process start second (offline-run-<date>_<hhmmss>-<id>; in a full
    # test run both can share one): `wandb sync` merges them by the run id, the one thing that matters.
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert 1 <= len(runs) <= 2 and all(r.name.endswith(f"-{run_id}") for r in runs), runs
    for run in runs:
        assert [p.name for p in run.glob("*.wandb")] == [f"run-{run_id}.wandb"], run
    # the resumed process logged too, into the run of the same id
    assert max((r / f"run-{run_id}.wandb").stat().st_mtime for r in runs) >= resumed_at - 1.0
    # kept for the next resume
    assert checkpoint_run_id(read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")) == run_id
