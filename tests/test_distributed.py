"""Distributed training: `trainer=ddp` on 2 CPU processes (gloo) per family, and the CUDA trainers.

Each CPU case trains a few steps with a final evaluation in two processes, then evaluates the
saved checkpoint in this single process: the metrics must agree (the evaluation draws every
batch from its own seed, so both see the same samples). The evaluation loop alone is tested
against one process in tests/test_eval_loop.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, run_cli

# Two training processes (~10 s on 2 cores): the VAE in the default suite, the others with the slow tests.
FAMILIES = ["vae", pytest.param("gan", marks=pytest.mark.slow), pytest.param("ddpm", marks=pytest.mark.slow)]
# 300 samples in batches of 100: the two ranks draw unequal shares. `steps` shortens the DDPM's
# chain (the other families ignore it).
EVAL = ["eval.num_samples=300", "eval.batch_size=100", "eval.nll_samples=0", "eval.sample_kwargs={steps: 20}"]
METRICS = ("fid", "kid_mean", "is_mean", "precision", "recall", "density", "coverage", "high_quality_share")


def _train(run_dir: Path, family: str, trainer: list[str], steps: int = 6):
    return run_cli("genbench-train", f"model={family}", "data=rings", "data.n_train=2000", "data.n_val=600",
                   *trainer, f"trainer.max_steps={steps}", "logger=csv", "trainer.enable_progress_bar=false",
                   "~callbacks.progress_bar", *EVAL, f"hydra.run.dir={run_dir}",
                   env={"OMP_NUM_THREADS": "1"}, timeout=400)


def _written_files(run_dir: Path) -> list[str]:
    """Everything the run wrote, but Hydra's per-process logs and config dumps."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log")


def test_every_rank_takes_as_many_training_steps(monkeypatch):
    """7 batches an epoch on 2 ranks: 3 each (one left out); otherwise rank 0's 4th step would pair its
    gradient all-reduce with rank 1's first step of the next epoch (and the DDPM's buffer broadcast hangs)."""
    import datamodules.base as base

    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setattr(base, "_rank_and_world", lambda r=rank: (r, 2))
        batches = base.EpochBatches(2000, 256, shuffle=True, drop_last=True, seed=0)
        per_rank[rank] = [b for epoch in range(3) for b in batches.batches(epoch)]
        assert len(batches) == 3
    assert len(per_rank[0]) == len(per_rank[1]) == 9
    for epoch in range(3):  # disjoint within an epoch
        a, b = per_rank[0][3 * epoch: 3 * epoch + 3], per_rank[1][3 * epoch: 3 * epoch + 3]
        assert not set(torch.cat(a).tolist()) & set(torch.cat(b).tolist())
    # validation keeps every example: uneven shares are fine there (no gradient all-reduce)
    val = []
    for rank in (0, 1):
        monkeypatch.setattr(base, "_rank_and_world", lambda r=rank: (r, 2))
        val += base.EpochBatches(600, 256, shuffle=False, drop_last=False).batches(0)
    assert sorted(torch.cat(val).tolist()) == list(range(600))


@pytest.mark.parametrize("family", FAMILIES)
def test_two_process_cpu_ddp_trains_and_evaluates_like_one_process(tmp_path, family):
    from genbench.evaluate import evaluate

    run = tmp_path / "ddp"
    r = _train(run, family, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in r.stderr + r.stdout  # the second process really took part
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["steps"] == 6
    assert results["train_images"] == 6 * 256 * 2  # each rank trained on its own batches
    assert results["eval"]["world_size"] == 2 and results["eval"]["num_samples"] == 300

    # Only rank 0 writes: one results.json, one checkpoint, one metrics file, no temporary files.
    files = _written_files(run)
    assert [f for f in files if f.endswith("results.json")] == ["results.json"]
    assert [f for f in files if f.startswith("checkpoints/")] == ["checkpoints/last.ckpt"]
    assert [f for f in files if f.startswith("csv/")] == ["csv/hparams.yaml", "csv/metrics.csv"]
    assert not [f for f in files if f.endswith(".tmp")]

    single = evaluate(compose_config([f"ckpt={run / 'checkpoints' / 'last.ckpt'}", *EVAL], config_name="evaluate",
                                     run_dir=tmp_path / "single"))
    assert single["world_size"] == 1
    for key in METRICS:
        assert single[key] == pytest.approx(results["eval"][key], rel=1e-6, abs=1e-9), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_cuda_trainers_run_unchanged(tmp_path, trainer):
    """`trainer=gpu` and `trainer=ddp` as shipped (bf16-mixed), on one or two GPUs."""
    devices = min(2, torch.cuda.device_count()) if trainer == "ddp" else 1
    r = _train(tmp_path, "ddpm", [f"trainer={trainer}", f"trainer.devices={devices}"], steps=20)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["steps"] == 20
    assert results["eval"]["world_size"] == devices
    assert results["train_images"] == 20 * 256 * devices
    assert all(torch.isfinite(torch.tensor(results["eval"][k])) for k in ("fid", "kid_mean"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 20
