"""Bad files, safe loading, atomic writes, secrets and validation before work (the divergence guard:
tests/test_divergence.py)."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import torch

from genbench.checkpoint import CheckpointError, load_model
from genbench.io import atomic_write_json
from genbench.lightning_compat import strategies
from genbench.train import train
from tests.conftest import compose_config, run_cli


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
    with pytest.raises(CheckpointError, match=f"^checkpoint {tmp_path}: a folder, not a checkpoint file$"):
        load_model(tmp_path)


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


def test_written_files_get_the_permissions_of_new_files(tmp_path):
    """Not mkstemp's 0600: others on a shared machine read results and checkpoints (umask 022 -> 0644)."""
    from genbench import io

    path = tmp_path / "results.json"
    atomic_write_json(path, {"fid": 1.0})
    assert path.stat().st_mode & 0o777 == 0o666 & ~io._UMASK
    old = os.umask(0o077)
    try:
        assert (0o666 & ~io._read_umask()) == 0o600  # a private umask is honoured the same way
    finally:
        os.umask(old)


def test_unwritable_outputs_are_named_before_any_work(tmp_path, monkeypatch):
    from genbench.io import writable_file_errors

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert writable_file_errors("--csv", "out.csv", tmp_path / "ok" / "deeper" / "t.csv") == []
    assert writable_file_errors("--csv", "d", tmp_path) == [f"--csv='d': {tmp_path} is a directory; give the path of a file"]
    assert writable_file_errors("run_dir", "r", a_file / "sub" / "results.json") == [
        f"run_dir='r': {a_file} is a file, so {a_file / 'sub' / 'results.json'} cannot be written under it"]
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked)  # root may write anywhere: pretend
    assert writable_file_errors("--markdown", "m", locked / "t.md") == [f"--markdown='m': cannot write in {locked} (permission denied)"]


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


# --- validation before work -----------------------------------------------------------------------
COMPILE_OPTIONS = sorted(set(inspect.signature(torch.compile).parameters) - {"model"})  # this torch's
BAD_VALUES = [
    # families
    ("model=ddpm", "model.T=0", "model.T=0: must be an integer >= 1"),
    ("model=ddpm", "model.beta_end=1.5", "model.beta_end=1.5: must be a number in the open interval (0, 1)"),
    ("model=ddpm", "model.schedule=quadratic", "model.schedule='quadratic': must be one of ['linear', 'cosine']"),
    ("model=ddpm", "model.sampler=euler", "model.sampler='euler': must be one of ['ddpm', 'ddim', 'dpmpp_2m', 'sde_dpmpp_2m', 'heun']"),
    ("model=ddpm", "model.ema_decay=1.5", "model.ema_decay=1.5: must be null (no EMA) or a number in [0, 1)"),
    ("model=gan", "model.loss=foo", "model.loss='foo': must be one of ['nonsaturating', 'minimax', 'hinge', 'wgan-gp']"),
    ("model=gan", "model.n_critic=0", "model.n_critic=0: must be an integer >= 1"),
    ("model=gan", "model.latent_dim=0", "model.latent_dim=0: must be an integer >= 1"),
    ("model=vae", "model.latent_dim=0", "model.latent_dim=0: must be an integer >= 1"),
    ("model=vae", "model.likelihood=poisson",
     "model.likelihood='poisson': must be one of ['bernoulli', 'discretized_gaussian', 'gaussian']"),
    ("model=vae", "model.sigma=0", "model.sigma=0: must be a number > 0"),
    ("model=vae", "model.lr=0", "model.lr=0: must be a number > 0"),
    # data modules
    ("data=rings", "data.n_train=0", "data.n_train=0: must be an integer >= 1"),
    ("data=rings", "data.n_modes=0", "data.n_modes=0: must be an integer >= 1"),
    ("data=grid", "data.spacing=-1", "data.spacing=-1: must be a number > 0"),
    ("data=mnist5k", "data.split_seed=-1", "data.split_seed=-1: must be an integer >= 0"),
    ("data=mnist", "data.download=maybe", "data.download='maybe': must be true or false"),
    ("data=mnist5k", "data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
    ("data=mnist5k", "data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
    # trainer and checkpoints
    ("", "trainer.devices=0", "trainer.devices=0: must be an integer >= 1, -1 (all), 'auto' or a list of device ids"),
    ("", "trainer.strategy=horovod", f"trainer.strategy='horovod': must be one of {strategies()}"),
    ("", "trainer.max_epochs=-5", "trainer.max_epochs=-5: must be an integer >= 1, or -1 (no limit, max_steps decides)"),
    ("", "trainer.max_steps=-1",
     "trainer.max_steps=-1 and trainer.max_epochs=-1: training would never end; set one of them"),
    ("", "trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: must be an integer >= 1"),
    ("", "trainer.accelerator=fpga", "trainer.accelerator='fpga': must be one of ['cpu', 'gpu', 'cuda', 'mps', 'auto']"),
    ("", "callbacks.model_checkpoint.every_n_train_steps=-1",
     "callbacks.model_checkpoint.every_n_train_steps=-1: must be null or an integer >= 0 (0: only at the end)"),
    # evaluation and run options
    ("", "eval.num_samples=-1", "eval.num_samples=-1: must be an integer >= 2 (FID is undefined for fewer than 2 samples)"),
    ("", "eval.features=bogus", "eval.features='bogus': must be one of ['auto', 'classifier', 'clip', 'dinov2', 'inception', 'raw']"),
    ("", "eval.split=test", "eval.split='test': must be 'train' or 'val'"),
    ("", "eval.nearest_k=0", "eval.nearest_k=0: must be an integer >= 1"),
    ("", "eval.classifier.epochs=0", "eval.classifier.epochs=0: must be an integer >= 1"),
    ("", "monitor=''", "monitor='': must be the name of a logged metric, e.g. 'train/loss' or 'val/fid'"),
    ("", "seed=-1", "seed=-1: must be an integer >= 0"),
    # the optimizer
    ("model=vae", "+model.optimizer.momentun=0.9",
     "model.optimizer.momentun=0.9: torch.optim.Adam takes no 'momentun' argument; it takes ['amsgrad', 'betas', "
     "'capturable', 'decoupled_weight_decay', 'differentiable', 'eps', 'foreach', 'fused', 'maximize', 'weight_decay']"),
    ("model=ddpm", "model.compile=3",
     "model.compile=3: must be true, false or a mapping of torch.compile options (e.g. {mode: max-autotune})"),
    ("model=vae", "model.compile={mod: max-autotune}",
     f"model.compile.mod: not a torch.compile option; allowed: {COMPILE_OPTIONS}"),
    ("model=gan", "model.optimizer._target_=torch.nn.Linear",
     "model.optimizer._target_='torch.nn.Linear': must be a torch.optim.Optimizer class"),
]


@pytest.mark.parametrize("choice,override,message", BAD_VALUES, ids=[f"{c}:{o}" if c else o for c, o, _ in BAD_VALUES])
def test_each_bad_value_is_one_clear_error_before_any_work(tiny_config, monkeypatch, choice, override, message):
    from genbench.errors import ConfigError

    def nothing_may_be_built(*args, **kwargs):
        raise AssertionError("something was instantiated (data, model, trainer) before validation")

    monkeypatch.setattr("genbench.train.instantiate", nothing_may_be_built)
    cfg = tiny_config(*([choice] if choice else []), override)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert info.value.problems == [message]  # the key, the value and what is allowed
    assert message in str(info.value)


@pytest.mark.parametrize("visible,overrides,message", [
    (0, ["trainer=gpu"], "trainer.accelerator='gpu': no CUDA GPU is visible on this machine (torch {torch}); use "
                         "trainer=cpu, or trainer=ddp trainer.accelerator=cpu for CPU processes"),
    (0, ["trainer=ddp"], "trainer.accelerator='gpu': no CUDA GPU is visible on this machine (torch {torch}); use "
                         "trainer=cpu, or trainer=ddp trainer.accelerator=cpu for CPU processes"),
    (2, ["trainer=ddp", "trainer.devices=4"], "trainer.devices=4: only 2 CUDA GPU(s) are visible; use at most 2, or -1 for all"),
    (2, ["trainer=ddp"], None),  # devices=-1: all of them
    (0, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], None),
])  # fmt: skip
def test_gpu_trainers_need_the_gpus_they_ask_for(monkeypatch, visible, overrides, message):
    """Checked before any work (Lightning would otherwise fail inside the Trainer with its own exception)."""
    from genbench.validate import config_errors

    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    errors = config_errors(compose_config(overrides))
    assert errors == ([message.format(torch=torch.__version__)] if message else [])


# --- corrupt data set files and cache entries ---------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_dataset_file_is_one_clear_error_at_train_level(tiny_config, tmp_path, damage):
    from genbench.errors import DatasetCorruptError
    from tests.test_datamodules import _write_mnist_like

    _write_mnist_like(tmp_path / "data", "MNIST")
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    cfg = tiny_config("data=mnist", f"data.root={tmp_path / 'data'}", "data.download=false", run_dir=tmp_path / "run")
    with pytest.raises(DatasetCorruptError) as info:
        train(cfg)
    msg = str(info.value)
    assert msg.startswith(f"data=mnist: the MNIST files under {tmp_path / 'data' / 'MNIST'} are corrupt or truncated (")
    assert "download them again (data.download=true)" in msg
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbled", "one flipped byte"])
def test_corrupt_cache_entry_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog, damage):
    """Real statistics of the rings: a damaged entry is never used, the numbers are recomputed."""
    from datamodules.toy2d import RingsDataModule
    from evaluation import DataReference, EvalConfig, Evaluator
    from evaluation.cache import TensorCache

    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    reference = DataReference(RingsDataModule(n_train=500, n_val=400), "val", None)
    first = Evaluator(EvalConfig(), reference, device="cpu")
    first.real_statistics()
    assert not first.real_cached
    path = TensorCache("real_stats").path(first.real_key())
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbled":
        data = bytearray(os.urandom(len(data)))
    else:  # inside the tensor data: torch.load alone would read it without complaint
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    again = Evaluator(EvalConfig(), reference, device="cpu")
    with caplog.at_level("WARNING", logger="genbench.evaluation"):
        again.real_statistics()
    assert not again.real_cached  # recomputed, not read
    assert any(str(path) in r.getMessage() and "recomputing" in r.getMessage() for r in caplog.records)
    for key, value in first.real.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, again.real[key]), key
    repaired = Evaluator(EvalConfig(), reference, device="cpu")
    repaired.real_statistics()
    assert repaired.real_cached  # the rebuilt entry is good


CACHE_KEY = {"data": "concurrency-test", "n": 100}


def _compute_once_worker(root: str, start_at: float, i: int) -> None:
    import time

    from evaluation.cache import TensorCache

    torch.set_num_threads(1)

    def compute():
        with open(Path(root) / "computed.log", "a") as f:
            f.write(f"{i}\n")
        time.sleep(0.5)  # long enough for every other process to be waiting on the lock
        return {"features": torch.arange(10_000.0).reshape(100, 100), "n": 100}

    while time.time() < start_at:
        time.sleep(0.001)
    entry, cached = TensorCache("real_stats", root=root).get_or_compute(CACHE_KEY, compute)
    Path(root, f"result{i}.json").write_text(json.dumps({"cached": cached, "sum": float(entry["features"].sum())}))


def _store_or_load_worker(root: str, start_at: float, i: int) -> None:
    import time

    from evaluation.cache import TensorCache

    torch.set_num_threads(1)
    cache = TensorCache("real_stats", root=root)
    while time.time() < start_at:
        time.sleep(0.001)
    misses = 0
    for _ in range(150):
        if i < 2:  # two writers replace the entry over and over, without the lock
            cache.store(CACHE_KEY, {"features": torch.full((200, 200), float(i)), "n": 200})
        else:  # readers must always find a whole entry, one writer's or the other's
            entry = cache.load(CACHE_KEY)
            misses += entry is None or float(entry["features"].std()) != 0.0
    Path(root, f"result{i}.json").write_text(json.dumps({"misses": misses}))


def _run_processes(target, root: Path, n: int) -> list[dict]:
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")  # a second each, where spawn re-imports torch per process
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=target, args=(str(root), start_at, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return [json.loads((root / f"result{i}.json").read_text()) for i in range(n)]


def test_concurrent_processes_compute_a_cache_entry_once(tmp_path, caplog):
    from evaluation.cache import TensorCache

    results = _run_processes(_compute_once_worker, tmp_path, 4)
    assert (tmp_path / "computed.log").read_text().count("\n") == 1  # the others waited on the file lock
    assert sorted(r["cached"] for r in results) == [False, True, True, True]
    assert {r["sum"] for r in results} == {float(sum(range(10_000)))}
    with caplog.at_level("WARNING", logger="genbench.evaluation"):
        assert TensorCache("real_stats", root=tmp_path).load(CACHE_KEY) is not None
    assert not caplog.records  # intact
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_readers_never_see_a_half_written_cache_entry(tmp_path):
    from evaluation.cache import TensorCache

    TensorCache("real_stats", root=tmp_path).store(CACHE_KEY, {"features": torch.zeros(200, 200), "n": 200})
    results = _run_processes(_store_or_load_worker, tmp_path, 4)
    assert [r["misses"] for r in results[2:]] == [0, 0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_any_garbled_checkpoint_is_a_clear_error(tmp_path):
    """Random bytes fail anywhere in the unpickler (about 7 % with IndexError or KeyError): always one clear error."""
    import random

    rng = random.Random(0)
    path = tmp_path / "garbled.ckpt"
    for _ in range(400):
        path.write_bytes(rng.randbytes(rng.choice([64, 512, 4096])))
        with pytest.raises(CheckpointError, match="corrupt or truncated|refused to load"):
            load_model(path)
