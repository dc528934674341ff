"""The GAN family: networks, stabilisers, manual optimisation, training, checkpoints, errors."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parametrize

from genbench.checkpoint import load_model, read_checkpoint
from genbench.errors import ConfigError, TrainingDivergedError
from genbench.train import train
from genbench.validate import config_errors
from models.gan import GAN
from models.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from tests.conftest import compose_config, run_cli

RINGS_STEPS = 500


def build(*overrides: str) -> GAN:
    cfg = compose_config(["model=gan", *overrides])
    return instantiate(cfg.model, _convert_="all")


@pytest.fixture
def one_thread():
    """Tiny 2-D MLPs run fastest on one thread, and far faster than on two busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def nearest_mode_distance(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, centers).min(dim=1).values


# --- networks ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, shape", [("mnist5k", (1, 28, 28)), ("cifar10", (3, 32, 32))])
def test_dcgan_shapes_follow_the_datamodule(data, shape):
    model = build(f"data={data}")
    assert isinstance(model.generator, DCGANGenerator) and isinstance(model.discriminator, DCGANDiscriminator)
    z = torch.randn(5, model.latent_dim)
    x = model.generate(z)
    assert x.shape == (5, *shape)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert model.discriminator(x).shape == (5, 1)
    assert model.discriminate(x).shape == (5,)
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *shape)


def test_dcgan_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="image_size=30: the generator halves it 2 times .* divisible by 4"):
        DCGANGenerator(latent_dim=8, out_channels=1, image_size=30)
    with pytest.raises(ValueError, match=r"norm='group': must be one of \['none', 'batch', 'layer'\]"):
        DCGANDiscriminator(in_channels=1, image_size=28, norm="group")


@pytest.mark.parametrize("data", ["rings", "grid"])
def test_points_use_mlps(data):
    model = build(f"data={data}")
    x = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and model.data_range is None
    assert model.discriminate(x).shape == (7,)


def test_spectral_norm_is_applied_where_configured():
    torch.manual_seed(0)  # the weights and the power iteration's start: independent of the tests run before
    model = build("data=mnist5k", "model.spectral_norm=true")
    layers = [m for m in model.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in model.generator.modules())
    # The power iteration converges: every normalised weight has largest singular value ≈ 1.
    model.discriminator.train()
    with torch.no_grad():
        for _ in range(30):
            model.discriminator(torch.randn(2, 1, 28, 28))
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.02)
    plain = build("data=mnist5k")
    assert not any(parametrize.is_parametrized(m) for m in plain.discriminator.modules())


def test_sampling_contract():
    model = build("data=mnist5k")
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert model.nfe() == 1 and not model.has_likelihood
    with pytest.raises(NotImplementedError):
        model.nll_bpd(a)
    # sample() leaves the training generator's mode alone (batch norm must not learn from samples).
    model.generator.train()
    model.sample(2, ema=False)
    assert model.generator.training
    # the fixed validation z is a buffer: same latents, same grid, in the checkpoint
    assert "fixed_z" in model.state_dict() and model.fixed_z.shape == (64, model.latent_dim)
    assert torch.equal(model.fixed_samples(), model.decode(model.fixed_z))


def test_interpolate_walks_from_z_a_to_z_b():
    model = build("data=mnist5k")
    z_a, z_b = torch.randn(model.latent_dim), torch.randn(model.latent_dim)
    walk = model.interpolate(z_a, z_b, steps=5)
    assert walk.shape == (5, 1, 28, 28)
    assert torch.allclose(walk[0], model.decode(z_a[None])[0], atol=1e-5)
    assert torch.allclose(walk[-1], model.decode(z_b[None])[0], atol=1e-5)
    mid = model.decode((0.5 * (z_a + z_b))[None])[0]
    assert torch.allclose(walk[2], mid, atol=1e-5)
    with pytest.raises(ValueError, match="must have 64 entries"):
        model.interpolate(torch.zeros(3), z_b)


# --- training -----------------------------------------------------------------------------


def test_manual_optimisation_alternates(tiny_config, monkeypatch):
    """A discriminator step leaves G's parameters untouched and a generator step D's; with
    n_critic=2 the generator moves after every second discriminator step, and only the
    discriminator steps count as trainer steps."""
    record = []

    def snapshot(model):
        return (
            [p.detach().clone() for p in model.generator.parameters()],
            [p.detach().clone() for p in model.discriminator.parameters()],
        )

    def changed(before, after):
        return [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]

    def spy(name):
        original = getattr(GAN, name)

        def wrapped(self, *args, **kwargs):
            g0, d0 = snapshot(self)
            out = original(self, *args, **kwargs)
            g1, d1 = snapshot(self)
            record.append((id(self), name, self.global_step, changed(g0, g1), changed(d0, d1)))
            return out

        monkeypatch.setattr(GAN, name, wrapped)

    spy("discriminator_step")
    spy("generator_step")
    results = train(tiny_config("model=gan", "data=rings", "model.n_critic=2", "model.ema=false"))
    # the trained model's steps (the budget first counts one period's FLOPs on a copy of it: genbench/budget.py)
    trained = record[-1][0]
    record = [r[1:] for r in record if r[0] == trained]
    assert [(name, step) for name, step, _, _ in record] == [
        ("discriminator_step", 1),
        ("discriminator_step", 2),
        ("generator_step", 2),
        ("discriminator_step", 3),
        ("discriminator_step", 4),
        ("generator_step", 4),
    ]
    for name, _, g_changed, d_changed in record:
        if name == "discriminator_step":
            assert all(d_changed) and not any(g_changed)
        else:
            assert all(g_changed) and not any(d_changed)
    assert results["steps"] == 4 and results["train_images"] == 4 * 256


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax", "hinge", "wgan-gp"])
def test_each_loss_trains(tiny_config, tmp_path, loss):
    extra = ["model.r1_gamma=1.0", "model.spectral_norm=true"] if loss == "hinge" else []
    results = train(tiny_config("model=gan", "data=rings", f"model.loss={loss}", *extra))
    metrics = results["metrics"]
    assert {"train/g_loss", "train/d_loss", "train/d_real", "train/d_fake"} <= set(metrics)
    assert ("train/gp" in metrics) == (loss == "wgan-gp")
    assert ("train/r1" in metrics) == bool(extra)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_image_gan_trains_and_writes_fixed_z_grids(tiny_config, tmp_path):
    results = train(
        tiny_config(
            "model=gan",
            "data=mnist5k",
            "model.loss=wgan-gp",
            "trainer.max_steps=3",
            "+trainer.limit_val_batches=1",
            "+trainer.val_check_interval=2",
        )
    )
    assert results["steps"] == 3 and results["family"] == "gan"
    grids = sorted(p.name for p in (tmp_path / "samples").glob("gan_fixed_z_*.png"))
    assert grids == ["gan_fixed_z_step000002.png", "gan_fixed_z_step000003.png"]  # first validation, end
    assert {"val/d_real", "val/d_fake", "train/gp"} <= set(results["metrics"])


def test_rings_short_run_moves_samples_towards_the_modes(tiny_config, tmp_path, one_thread):
    """500 steps of the default 2-D GAN: the mean distance of its samples to the nearest of
    the 8 ring modes (radius 2) falls from ≈ 1.9 (the untrained generator's output sits near
    the origin; measured 1.89) to below 0.6 (measured 0.41)."""
    cfg = tiny_config(
        "model=gan", "data=rings", f"trainer.max_steps={RINGS_STEPS}", "trainer.log_every_n_steps=50"
    )
    centers = instantiate(cfg.data).centers
    torch.manual_seed(cfg.seed)
    before = (
        nearest_mode_distance(instantiate(cfg.model, _convert_="all").sample(2000), centers).mean().item()
    )
    train(cfg)
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    after = (
        nearest_mode_distance(model.sample(2000, generator=torch.Generator().manual_seed(0)), centers)
        .mean()
        .item()
    )
    assert before > 1.5
    assert after < 0.6 and after < before / 3


def test_resume_restores_both_optimizers_and_the_ema(tiny_config, tmp_path):
    first = train(tiny_config("model=gan", "data=rings", "model.n_critic=2", "model.ema=true"))
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    opt_g, opt_d = ckpt["optimizer_states"]
    assert first["steps"] == 4
    assert next(iter(opt_d["state"].values()))["step"].item() == 4  # discriminator: every step
    assert next(iter(opt_g["state"].values()))["step"].item() == 2  # generator: every 2nd
    assert ckpt["state_dict"]["ema.num_updates"].item() == 2

    resumed = train(
        tiny_config(
            "model=gan",
            "data=rings",
            "model.n_critic=2",
            "model.ema=true",
            "trainer.max_steps=8",
            "ckpt_path=last",
        )
    )
    assert resumed["start_step"] == 4 and resumed["steps"] == 8
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    opt_g, opt_d = ckpt["optimizer_states"]
    # Restored, not restarted: a fresh optimizer / EMA would count 4 / 2 / 2.
    assert next(iter(opt_d["state"].values()))["step"].item() == 8
    assert next(iter(opt_g["state"].values()))["step"].item() == 4
    assert ckpt["state_dict"]["ema.num_updates"].item() == 4


def test_save_load_sample_end_to_end(tiny_config, tmp_path):
    train(tiny_config("model=gan", "data=mnist5k", "model.spectral_norm=true", "trainer.max_steps=2"))
    model = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(model, GAN) and model.ema is not None
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    b = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    # the sampler is the averaged generator restored from the checkpoint, not the trained one
    state = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    ema_weight = state["ema.module.project.weight"]
    assert torch.equal(model.ema.module.project.weight, ema_weight)
    assert not torch.equal(ema_weight, state["generator.project.weight"])


def test_console_script_runs_gan(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "genbench-train",
        "model=gan",
        "data=grid",
        "trainer.max_steps=5",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "eval.final=false",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["family"] == "gan" and results["steps"] == 5
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/g_loss", "train/d_loss", "train/d_real", "train/d_fake"} <= set(header)


# --- divergence ---------------------------------------------------------------------------


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tiny_config, tmp_path, monkeypatch
):
    original = GAN.discriminator_terms

    def nan_from_step_5(self, real, fake):
        terms = original(self, real, fake)
        if self.global_step >= 4:  # the 5th discriminator update
            terms["d_loss"] = terms["d_loss"] * float("nan")
        return terms

    monkeypatch.setattr(GAN, "discriminator_terms", nan_from_step_5)
    cfg = tiny_config(
        "model=gan", "data=rings", "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=2"
    )
    with pytest.raises(
        TrainingDivergedError, match=r"train/d_loss=nan at step 5 .*last good checkpoint is .*last\.ckpt"
    ):
        train(cfg)
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    failed = json.loads((tmp_path / "results.json").read_text())  # the failure is on record
    assert failed["status"] == "diverged" and "train/d_loss=nan at step 5" in failed["error"]


def test_a_real_blow_up_is_reported_with_step_and_loss(tiny_config, tmp_path):
    """lr = 1e30: the first discriminator update sends D's weights to ±1e30, so the
    generator loss of step 1 is nan; training stops there, nothing is checkpointed."""
    cfg = tiny_config("model=gan", "data=rings", "model.lr=1e30", "model.lr_d=1e30", "trainer.max_steps=20")
    with pytest.raises(
        TrainingDivergedError, match=r"train/g_loss=nan at step 1 .*no checkpoint was written yet"
    ):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = build("data=rings")
    with torch.no_grad():
        next(model.generator.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDivergedError, match="non-finite weights .*generator"):
        model.on_save_checkpoint({"state_dict": model.state_dict()})


# --- configuration errors -----------------------------------------------------------------


def test_bad_input_is_refused_before_training(tiny_config, tmp_path):
    cfg = tiny_config(
        "model=gan",
        "data=rings",
        "model.loss=lsgan",
        "model.n_critic=0",
        "model.gp_weight=-1",
        "model.r1_gamma=-0.5",
        "model.lr_d=0",
        "model.ema_decay=1.0",
    )
    errors = config_errors(cfg)
    assert "model.loss='lsgan': must be one of ['nonsaturating', 'minimax', 'hinge', 'wgan-gp']" in errors
    assert "model.n_critic=0: must be an integer >= 1" in errors
    assert "model.gp_weight=-1: must be a number >= 0 (a penalty weight)" in errors
    assert "model.r1_gamma=-0.5: must be a number >= 0 (a penalty weight)" in errors
    assert any(e.startswith("model.lr_d=0:") for e in errors)
    assert any(e.startswith("model.ema_decay=1.0:") for e in errors)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert len(info.value.problems) == 6
    assert not (tmp_path / "checkpoints").exists()  # nothing trained


def test_trainer_settings_of_automatic_optimisation_are_refused_before_training(tiny_config, tmp_path):
    cfg = tiny_config("model=gan", "data=rings", "trainer.gradient_clip_val=1.0", "+trainer.accumulate_grad_batches=2")
    errors = config_errors(cfg)
    assert len(errors) == 2
    assert errors[0].startswith("trainer.gradient_clip_val=1.0: model=gan steps its two optimizers by hand")
    assert "model.spectral_norm=true" in errors[0]
    assert errors[1].startswith("trainer.accumulate_grad_batches=2: model=gan steps its two optimizers by hand")
    assert "raise data.batch_size" in errors[1]
    with pytest.raises(ConfigError):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
    # the other families clip and accumulate through Lightning
    assert config_errors(tiny_config("model=vae", "data=rings", "trainer.gradient_clip_val=1.0",
                                     "+trainer.accumulate_grad_batches=2")) == []  # fmt: skip


def test_wgan_gp_refuses_batch_norm_in_the_critic(tiny_config):
    errors = config_errors(
        tiny_config("model=gan", "data=mnist5k", "model.loss=wgan-gp", "net.image.discriminator.norm=batch")
    )
    assert len(errors) == 1 and "model.discriminator.norm='batch' with model.loss='wgan-gp'" in errors[0]
    assert config_errors(tiny_config("model=gan", "data=mnist5k", "model.loss=wgan-gp")) == []


def test_default_configs_are_valid(tiny_config):
    for data in ("mnist5k", "rings", "grid", "cifar10", "mnist", "fashion_mnist"):
        assert config_errors(tiny_config("model=gan", f"data={data}")) == [], data
