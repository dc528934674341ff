"""Shared fixtures: the tests compose the real Hydra configs users run, then shrink them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "conf")
BIN = Path(sys.executable).parent

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Evaluation caches (feature classifiers, real statistics) go to a temporary directory, shared by the
# tests of a machine; entries are keyed by everything they depend on, so sharing is safe.
os.environ.setdefault("GENBENCH_CACHE", str(Path(tempfile.gettempdir()) / "genbench-test-cache"))
# No test downloads weights: the download path is tested against a local server (tests/test_weights.py).
os.environ.setdefault("GENBENCH_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# Small enough for a 2-core CI machine; every test can override any of these.
TINY = [
    "logger=none",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "eval.final=false",
]


def compose_config(overrides: list[str] | None = None, config_name: str = "train", run_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as the command line would.

    The Hydra runtime node is set so ``${hydra:...}`` interpolations resolve; ``run_dir`` is
    pointed at ``run_dir`` (a tmp path) when given.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
    with open_dict(cfg):
        if run_dir is not None:
            cfg.hydra.runtime.output_dir = str(run_dir)
            if "run_dir" in cfg:
                cfg.run_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def one_thread():
    """One intra-op thread for a test of many small tensor ops (restored afterwards).

    On a busy 2-core machine two OpenMP threads per op can make small ops 100x slower (each
    parallel region waits for a time slice); one thread is also as fast for small tensors.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(*overrides)``: the real train config, shrunk, writing into ``tmp_path``."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config(TINY + list(overrides), run_dir=run_dir or tmp_path)

    return make


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a console script of this venv (e.g. ``genbench-train``) as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    exe = str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
