"""Every config composes and instantiates; bad input gets one clear error before training."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from genbench.errors import ConfigError
from genbench.train import train
from genbench.validate import config_errors
from tests.conftest import CONF_DIR, TINY, compose_config, run_cli

DATA = sorted(p.stem for p in Path(CONF_DIR, "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in Path(CONF_DIR, "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_every_model_composes_and_instantiates_with_every_data(tmp_path, model, data):
    cfg = compose_config([f"model={model}", f"data={data}", "logger=none"], run_dir=tmp_path)
    assert config_errors(cfg) == []
    dm = instantiate(cfg.data)
    net = instantiate(cfg.model, _convert_="all")
    assert net.data_shape == tuple(cfg.data.shape) == dm.data_shape


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_every_option_of_the_other_groups_instantiates(tmp_path, group):
    for option in sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml")):
        cfg = compose_config([f"{group}={option}"], run_dir=tmp_path)
        node = cfg[group]
        if group == "trainer":
            if option != "cpu":
                continue  # gpu/ddp need CUDA to instantiate; composed above, run in the gpu-marked tests
            instantiate(node)
        else:
            for sub in node.values():
                obj = instantiate(sub)
                assert obj is not None
                if hasattr(obj, "experiment") and type(obj).__name__ == "WandbLogger":
                    pass  # constructing does not start a run


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.lr=-1", "model.lr=-1"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("model.beta=-1", "model.beta=-1"),
        ("model.latent_dim=0", "model.latent_dim=0"),
        ("model.likelihood=poisson", "model.likelihood='poisson'"),
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("trainer.precision=8-bit", "trainer.precision='8-bit'"),
        ("seed=-3", "seed=-3"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5"),
        ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0"),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(tmp_path, override, needle):
    cfg = compose_config(TINY + [override], run_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert needle in str(e.value) and "must be" in str(e.value)
    assert not (tmp_path / "checkpoints").exists()  # raised before any training


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["data=rings", "model=vae", "net.points.encoder.hidden=0"], ["model.encoder.hidden=0: must be an integer >= 1"]),
        (["data=rings", "model=gan", "net.points.generator.activation=gelu", "net.points.discriminator.depth=-1"],
         ["model.generator.activation='gelu': must be one of ['leaky_relu', 'relu', 'silu', 'tanh']",
          "model.discriminator.depth=-1: must be an integer >= 0"]),
        (["data=rings", "model=ddpm", "net.points.eps_net.temb_dim=0"], ["model.net.temb_dim=0: must be an integer >= 1"]),
        (["data=mnist5k", "model=vae", "net.image.encoder.ch=0", "net.image.decoder.ch_mult=[]"],
         ["model.encoder.ch=0: must be an integer >= 1", "model.decoder.ch_mult=[]: must be a non-empty list of integers >= 1"]),
        (["data=mnist5k", "model=gan", "net.image.discriminator.ch_mult=[1,2,2]", "net.image.generator.batch_norm=maybe"],
         ["model.generator.batch_norm='maybe': must be true or false",
          "model.discriminator.image_size=28: the discriminator halves it 3 times (len(ch_mult)=3), so it must be "
          "divisible by 8; use fewer levels in ch_mult or another image size"]),
        # an interpolated value (the nets' ${model.latent_dim}) is named once, where it is set
        (["data=mnist5k", "model=vae", "model.latent_dim=0"], ["model.latent_dim=0: must be an integer >= 1"]),
    ],
)  # fmt: skip
def test_every_family_checks_its_networks_before_training(tmp_path, overrides, expected):
    """Widths of 0 would build (torch allows empty layers) and train a network that ignores its input."""
    cfg = compose_config(TINY + overrides, run_dir=tmp_path)
    assert config_errors(cfg) == expected
    with pytest.raises(ConfigError):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # bool is a subclass of int: these went through as 1 / 0 (or NaN as a number) before genbench.checks
        (["model.latent_dim=true"], "model.latent_dim=True: must be an integer >= 1"),
        (["data.num_workers=true"], "data.num_workers=True: must be an integer >= 0"),
        (["seed=true"], "seed=True: must be an integer >= 0"),
        (["data=rings", "data.n_train=true"], "data.n_train=True: must be an integer >= 1"),
        (["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan: must be null or a number >= 0"),
        (["model=ddpm", "model.eta=nan"], "model.eta=nan: must be a number >= 0 (DDIM's η)"),
        (["model.sigma=nan"], "model.sigma=nan: must be a number > 0"),
        (["model=ddpm", "model.T=true"], "model.T=True: must be an integer >= 1"),
        (["callbacks.model_checkpoint.save_top_k=true"],
         "callbacks.model_checkpoint.save_top_k=True: must be an integer >= -1 (-1: every checkpoint)"),
    ],
)  # fmt: skip
def test_booleans_and_nan_are_not_counts_or_numbers(tmp_path, overrides, expected):
    cfg = compose_config(TINY + overrides, run_dir=tmp_path)
    assert config_errors(cfg) == [expected]


def test_shared_value_checks():
    from genbench.checks import integer_errors, is_int, is_number, nonnegative_errors, positive_errors

    assert [is_int(v) for v in (0, -3, True, 1.0, "1")] == [True, True, False, False, False]
    assert [is_int(v, 1) for v in (0, 1, 2)] == [False, True, True]
    assert [is_number(v) for v in (0, 1.5, float("nan"), False, "1")] == [True, True, True, False, False]
    assert integer_errors("p.", ("a", 0, 1), ("b", 1, 1), ("c", False, 0)) == [
        "p.a=0: must be an integer >= 1", "p.c=False: must be an integer >= 0"]  # fmt: skip
    assert positive_errors("p.", ("x", 0.0), ("y", 1e-9), ("z", float("nan"))) == [
        "p.x=0.0: must be a number > 0", "p.z=nan: must be a number > 0"]  # fmt: skip
    assert nonnegative_errors("", ("w", 0), ("v", -1e-9), ("u", True)) == [
        "v=-1e-09: must be a number >= 0", "u=True: must be a number >= 0"]  # fmt: skip


def test_all_problems_reported_at_once(tmp_path):
    cfg = compose_config(TINY + ["model.lr=-1", "data.batch_size=0", "model.beta=-1"], run_dir=tmp_path)
    assert len(config_errors(cfg)) == 3


def test_cli_bad_input_is_one_clear_error_and_keeps_existing_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"previous checkpoint")
    (tmp_path / "results.json").write_text('{"previous": true}')
    r = run_cli("genbench-train", "model.lr=-1", "data.batch_size=0", "logger=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert "model.lr=-1: must be a number > 0" in r.stderr
    assert "data.batch_size=0: must be an integer >= 1" in r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == b"previous checkpoint"
    assert (tmp_path / "results.json").read_text() == '{"previous": true}'


def test_cli_missing_dataset_offline(tmp_path):
    r = run_cli("genbench-train", "data=mnist", "data.download=false", f"data.root={tmp_path}/nothing",
                "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 2
    assert f"{tmp_path}/nothing" in r.stderr and "data=mnist5k" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["genbench-train", "genbench-evaluate"])
def test_cli_unknown_group_option_names_the_choices(tmp_path, command):
    # genbench-evaluate's data group is empty by default; an unknown name must not be dropped silently
    r = run_cli(command, "data=imagenet", f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    assert "imagenet" in r.stderr and "mnist5k" in r.stderr  # Hydra lists the available options


def test_missing_resume_checkpoint(tmp_path):
    cfg = compose_config(TINY + [f"ckpt_path={tmp_path}/nope.ckpt"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="no checkpoint file"):
        train(cfg)
