"""Sweep and cluster configs: Optuna searches and the SLURM launcher compose without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF_DIR

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
