"""Sweep and cluster configs: Optuna searches and the SLURM launcher compose without a cluster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF_DIR, TINY, run_cli

SEARCHES = sorted(p.stem for p in Path(CONF_DIR, "hparams_search").glob("*.yaml"))


def _compose_with_hydra(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("search", SEARCHES)
def test_optuna_search_composes(search):
    cfg = _compose_with_hydra([f"hparams_search={search}"])
    family = search.split("_")[0]
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.sweeper.direction == "minimize"
    assert cfg.monitor == "val/fid"
    assert cfg.model._target_.split(".")[1] == family
    for key in cfg.hydra.sweeper.params:
        assert key.startswith("model."), key


def test_slurm_launcher_renders_without_a_cluster():
    cfg = _compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("family", [
    "vae",
    pytest.param("gan", marks=pytest.mark.slow),
    pytest.param("ddpm", marks=pytest.mark.slow),
])  # fmt: skip
def test_optuna_runs_three_trials_and_reports_the_best(tmp_path, family):
    """The issue's command with a tiny budget: three trials, each returning its final val/fid."""
    r = run_cli("genbench-train", f"hparams_search={family}_optuna", "hydra.sweeper.n_trials=3", "data=rings",
                "data.n_train=512", "data.n_val=256", *TINY, "eval.final=true", "eval.num_samples=64",
                "eval.nll_samples=0", "eval.sample_kwargs={sampler: ddim, steps: 5}", f"hydra.sweep.dir={tmp_path}",
                env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "setup plugin alembic" not in r.stdout + r.stderr  # Optuna's storage imports alembic, which lists its plugins
    trials = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/results.json"))]
    assert len(trials) == 3
    fids = [t["metrics"]["val/fid"] for t in trials]
    assert all(math.isfinite(f) and f > 0 for f in fids)
    assert {t["family"] for t in trials} == {family}
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(fids))
    assert set(best["best_params"]) == set(_compose_with_hydra([f"hparams_search={family}_optuna"]).hydra.sweeper.params)


def test_readme_cluster_command_composes_as_documented():
    """The README's GPU-cluster command: experiment=lecture must not undo eval=inception or the cluster choices."""
    readme = Path(CONF_DIR).parent.joinpath("README.md").read_text()
    block = readme.split("### On a GPU cluster with W&B (CIFAR-10)")[1].split("```bash")[1].split("```")[0]
    command = " ".join(line.strip().rstrip("\\") for line in block.splitlines() if "genbench-train" in line or line.startswith("    "))
    args = [a for a in command.split() if "=" in a and not a.startswith("hydra/")]
    assert "experiment=lecture" in args and "eval=inception" in args
    # one job of the multirun: the first value of each swept key
    single = [a.split(",")[0] for a in args if not a.startswith("hydra.launcher.")]
    cfg = _compose_with_hydra([*single, "hydra/launcher=slurm", *(a for a in args if a.startswith("hydra.launcher."))])
    assert cfg.eval.features == "inception"
    assert cfg.eval.inception_weights == "/path/pt_inception.pth" and cfg.eval.num_samples == 50000
    assert cfg.data.name == "cifar10" and cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4
    assert cfg.budget == {"kind": "flops", "value": 1e17} and cfg.hydra.launcher.gpus_per_node == 4
    # the experiment's shared budget settings stay (same batch size and precision for every family)
    assert cfg.data.batch_size == 128 and cfg.trainer.precision == "32-true"
