"""Command-line behaviour: multiruns and the default W&B logger offline."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_multirun_two_seeds_with_offline_wandb_runs(tmp_path):
    """`genbench-train -m seed=0,1` runs two jobs, each its own (offline) W&B run."""
    env = {"WANDB_API_KEY": None, "WANDB_MODE": None, "HOME": str(tmp_path)}  # no key configured anywhere
    r = run_cli("genbench-train", "-m", "model=vae", "seed=0,1", "trainer.max_steps=6", "eval.final=false",
                f"hydra.sweep.dir={tmp_path}/sweep", env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 2
    seeds = sorted(json.loads((j / "results.json").read_text())["seed"] for j in jobs)
    assert seeds == [0, 1]
    run_ids = set()
    for job in jobs:
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, f"expected one offline W&B run in {job}"
        run_ids.add(offline[0].name.rsplit("-", 1)[-1])
        assert list(offline[0].glob("*.wandb")), "the offline run directory holds the run file for `wandb sync`"
    assert len(run_ids) == 2  # wandb.finish() between jobs: a new run per job
