"""Bad files, safe loading, atomic writes and secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from genbench.checkpoint import CheckpointError, load_model
from genbench.io import atomic_write_json
from genbench.train import train
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    from tests.conftest import TINY, compose_config

    run = tmp_path_factory.mktemp("vae")
    train(compose_config(TINY + ["model=vae", "data=rings"], run_dir=run))
    return run / "checkpoints" / "last.ckpt"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/genbench_pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"genbench": {}, "state_dict": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    assert not Path("/tmp/genbench_pwned").exists()


def test_truncated_checkpoint(vae_ckpt, tmp_path):
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(vae_ckpt.read_bytes()[: vae_ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(bad)


def test_random_bytes_and_missing_file(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.ckpt")


def test_not_a_genbench_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a genbench checkpoint"):
        load_model(path)


def _edited(vae_ckpt, tmp_path, **meta) -> Path:
    ckpt = torch.load(vae_ckpt, weights_only=True)
    ckpt["genbench"].update(meta)
    path = tmp_path / "edited.ckpt"
    torch.save(ckpt, path)
    return path


def test_checkpoint_of_another_version(vae_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="written by genbench 9.3.0"):
        load_model(_edited(vae_ckpt, tmp_path, version="9.3.0"))


def test_resuming_another_family_is_refused_before_training(vae_ckpt, tmp_path):
    from genbench.errors import GenbenchError
    from tests.conftest import TINY, compose_config

    other = _edited(vae_ckpt, tmp_path, family="gan")
    cfg = compose_config(TINY + ["model=vae", "data=rings", f"ckpt_path={other}"], run_dir=tmp_path / "run")
    with pytest.raises(GenbenchError, match="holds a 'gan' model, but this run trains model='vae'"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"fid": 1.0})

    def crash(*_):
        raise KeyboardInterrupt  # e.g. the job is killed between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"fid": 2.0})
    assert json.loads(path.read_text()) == {"fid": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_api_key_never_written_or_printed(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real W&B key
    r = run_cli("genbench-train", "model=vae", "data=rings", "trainer.max_steps=3", "logger=wandb", "eval.final=false",
                f"hydra.run.dir={tmp_path}", env={"WANDB_API_KEY": secret, "WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert secret not in r.stdout and secret not in r.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in files) and any(".wandb" in p.name for p in files)
    for p in files:
        assert secret.encode() not in p.read_bytes(), f"API key found in {p}"
