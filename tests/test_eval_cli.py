"""Evaluation in training (callback), ``genbench-evaluate`` on checkpoints and stored samples, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.mnist5k import MNIST5kDataModule
from evaluation import always_result_keys
from evaluation.testing import write_pngs
from genbench.checkpoint import CheckpointError
from genbench.errors import ConfigError
from genbench.evaluate import evaluate
from genbench.train import train
from tests.conftest import TINY, compose_config, run_cli


def eval_config(tmp_path: Path, *overrides: str):
    return compose_config(list(overrides), config_name="evaluate", run_dir=tmp_path / "eval_out")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A VAE trained 4 steps, evaluated every 2 steps and at the end, logged to CSV."""
    run = tmp_path_factory.mktemp("vae_run")
    cfg = compose_config(
        TINY + ["model=vae", "logger=csv", "eval.every_n_steps=2", "eval.val_num_samples=50",
                "eval.final=true", "eval.num_samples=120", "eval.nll_samples=16",
                "net.image.likelihood=discretized_gaussian"],  # a likelihood of 8-bit images: nll_bpd
        run_dir=run,
    )  # fmt: skip
    return run, train(cfg)


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


def test_training_evaluates_periodically_and_at_the_end(vae_run):
    run, results = vae_run
    on_disk = json.loads((run / "results.json").read_text())
    final = on_disk["eval"]
    assert set(always_result_keys()) <= set(final)
    assert final["num_samples"] == 120 and final["features"] == "classifier" and final["nfe"] == 1
    assert final["fid"] > 0 and 1.0 <= final["is_mean"] <= 10.0 and final["sample_images_per_s"] > 0
    assert on_disk["metrics"]["val/fid"] == final["fid"]  # the last logged value is the final evaluation
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    steps = sorted(int(r["step"]) for r in rows if r.get("val/fid"))
    assert steps[:2] == [2, 4]
    # the bound only at the end by default (eval.val_nll_samples=0): a DDPM's costs T evaluations per example
    assert [h["step"] for h in _history(run)] == [2, 4] and not any("nll_bpd" in h for h in _history(run))
    assert final["nll_bpd"] > 0
    # grids 8 wide of 28 px digits with 2 px padding: 64 at the end, all 50 of a periodic evaluation
    sizes = {"step000002.png": (242, 7 * 30 + 2), "step000004.png": (242, 7 * 30 + 2), "final.png": (242, 242)}
    for name, size in sizes.items():
        with Image.open(run / "samples" / name) as img:
            assert img.size == size


def test_periodic_evaluations_compute_the_bound_when_asked(tmp_path):
    cfg = compose_config(TINY + ["model=vae", "eval.every_n_steps=2", "eval.val_num_samples=20", "eval.final=false",
                                 "eval.val_nll_samples=8", "net.image.likelihood=discretized_gaussian"],
                         run_dir=tmp_path)  # fmt: skip
    train(cfg)
    history = _history(tmp_path)
    assert [h["step"] for h in history][:2] == [2, 4] and all(h["nll_bpd"] > 0 for h in history)


def test_training_on_points_reports_modes(tmp_path):
    cfg = compose_config(TINY + ["model=vae", "data=rings", "data.n_train=2000", "data.n_val=1000",
                                 "eval.final=true", "eval.num_samples=300"], run_dir=tmp_path)  # fmt: skip
    out = train(cfg)["eval"]
    assert out["features"] == "raw" and out["num_modes"] == 8 and 0 <= out["modes_covered"] <= 8
    assert 0.0 <= out["high_quality_share"] <= 1.0 and set(always_result_keys()) <= set(out)
    assert (tmp_path / "samples" / "final.png").is_file()  # a scatter plot over the real points


def test_genbench_evaluate_checkpoint(vae_run, tmp_path):
    run, _ = vae_run
    r = run_cli("genbench-evaluate", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "eval.num_samples=200",
                f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert set(always_result_keys()) <= set(out)
    assert out["family"] == "vae" and out["num_samples"] == 200 and out["data"] == "mnist5k"
    assert out["real_stats_cached"] is True  # the training run cached the real statistics
    assert "fid" in r.stdout and "classifier_accuracy" in r.stdout


def test_stored_samples_folder_and_npz_against_a_data_set(tmp_path):
    val = MNIST5kDataModule(kind="image", shape=[1, 28, 28]).real_samples("val")
    folder = write_pngs(tmp_path / "val_pngs", val)
    a = evaluate(eval_config(tmp_path, f"fake={folder}", "data=mnist5k"))
    assert a["num_samples"] == 500 and a["fid"] < 1e-6 and a["precision"] == a["recall"] == 1.0
    npz = tmp_path / "samples.npz"
    np.savez(npz, arr_0=((val + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())  # NHWC uint8, as ADM
    b = evaluate(eval_config(tmp_path, f"fake={npz}", "data=mnist5k"))
    drop = ("eval_time_s", "evaluated", "real_stats_cached", "fake_features_cached", "eval_config")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    # real=DIR has no labels to train the classifier on: one clear error
    with pytest.raises(ConfigError, match="needs a labelled data set"):
        evaluate(eval_config(tmp_path, f"fake={npz}", f"real={folder}"))


def test_stored_samples_features_are_cached_by_content(tmp_path, monkeypatch):
    """A re-run on the same files skips the extractor on both sides and gives the same numbers, decoding
    only the images of the sample grid; changing one pixel of one file is a different entry."""
    from evaluation import sources

    decoded = []  # the files each call decodes
    real_load = sources.load_image_folder
    monkeypatch.setattr(sources, "load_image_folder",
                        lambda path, option, files=None: decoded.append(len(files or sources.image_files(path, option)))
                        or real_load(path, option, files))  # fmt: skip
    val = MNIST5kDataModule(kind="image", shape=[1, 28, 28]).real_samples("val")[:200].clone()
    val[0, 0, :4, :4] = torch.tensor(list(os.urandom(16))).view(4, 4) / 127.5 - 1  # content no earlier run cached
    folder = write_pngs(tmp_path / "pngs", val)
    first = evaluate(eval_config(tmp_path, f"fake={folder}", "data=mnist5k", "eval.grid_size=16"))
    assert decoded == [200]
    again = evaluate(eval_config(tmp_path, f"fake={folder}", "data=mnist5k", "eval.grid_size=16"))
    assert decoded == [200, 16]  # the listing is unchanged: the cached features, and the 16 images of the grid
    assert (first["fake_features_cached"], again["fake_features_cached"]) == (False, True)
    same = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage")
    assert {k: again[k] for k in same} == {k: first[k] for k in same}
    img = np.array(Image.open(folder / "0007.png"))
    img[5, 5] = 255 - img[5, 5]
    Image.fromarray(img).save(folder / "0007.png")
    changed = evaluate(eval_config(tmp_path, f"fake={folder}", "data=mnist5k", "eval.grid_size=16"))
    assert decoded[2] == 200  # a rewritten file: a new listing, read in full
    assert not changed["fake_features_cached"] and changed["fid"] != first["fid"]


def test_a_folder_known_by_its_listing_is_decoded_only_when_needed(tmp_path):
    """A real reference from a folder the cache knows has its fingerprint, count and shape without decoding;
    its images are decoded when its statistics must be computed, and the digest matches the cached one."""
    from evaluation.sources import TensorReference, read_samples

    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    folder = write_pngs(tmp_path / "real", x.float().div(127.5).sub(1))
    first = read_samples(str(folder), "real")
    assert not first.lazy and first.unrecorded_listing is not None
    first.record_listing()
    second = read_samples(str(folder), "real")
    ref = TensorReference(second, str(folder))
    assert second.lazy and (ref.num_real, ref.data_shape, ref.is_image) == (5, (3, 8, 8), True)
    assert ref.fingerprint == first.digest[:16] and second.lazy
    assert torch.equal(second.rows(1, 2), first.x[1:3]) and second.lazy
    assert torch.equal(ref.samples(), first.x) and not second.lazy


def cache_snapshot() -> dict[str, str]:
    root = Path(os.environ["GENBENCH_CACHE"])
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*.pt")}


def test_bad_input_is_one_clear_error_and_leaves_the_cache_alone(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = write_pngs(tmp_path / "mixed", torch.zeros(2, 1, 28, 28))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mixed / "9999.png")
    rgb = write_pngs(tmp_path / "rgb", torch.zeros(3, 3, 28, 28))
    not_genbench = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, not_genbench)
    np.savez(tmp_path / "good.npz", samples=np.zeros((4, 1, 28, 28), np.float32))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    nan_images = np.zeros((5, 1, 28, 28), np.float32)
    nan_images[[1, 3], 0, 4, 4] = np.nan
    np.savez(tmp_path / "nan_images.npz", samples=nan_images)
    nan_points = np.zeros((6, 2), np.float32)
    nan_points[2, 1] = np.inf
    np.savez(tmp_path / "nan_points.npz", samples=nan_points)
    (tmp_path / "nan_points.npz").rename(tmp_path / "NAN_POINTS.NPZ")  # the suffix in any case
    np.savez(tmp_path / "five_channels.npz", samples=np.zeros((3, 28, 28, 5), np.uint8))
    before = cache_snapshot()
    cases = [
        (["fake=" + str(rgb), "data=mnist5k", "eval.num_samples=1"], ConfigError, "eval.num_samples=1: must be an integer >= 2"),
        ([f"fake={empty}", "data=mnist5k"], ConfigError, "no images"),
        ([f"fake={mixed}", "data=mnist5k"], ConfigError, "9999.png is 32x32 with 1 channel; all images must have one size"),
        ([f"fake={rgb}", "data=mnist5k"], ConfigError, "images have 3 channel(s), the real reference mnist5k has 1"),
        ([f"ckpt={not_genbench}"], CheckpointError, "not a genbench checkpoint"),
        (["data=mnist5k"], ConfigError, "give exactly one: ckpt=PATH"),
        ([f"ckpt={not_genbench}", f"fake={rgb}"], ConfigError, "give exactly one: ckpt=PATH"),
        ([f"fake={rgb}"], ConfigError, "give the real reference as real=DIR|FILE.npz or as data=NAME"),
        ([f"fake={tmp_path / 'truncated.npz'}", "data=mnist5k"], ConfigError,
         f"fake='{tmp_path / 'truncated.npz'}': not a readable .npz file (BadZipFile: "),
        ([f"fake={tmp_path / 'empty.npz'}", "data=mnist5k"], ConfigError,
         f"fake='{tmp_path / 'empty.npz'}': not a readable .npz file (EOFError: "),
        ([f"fake={tmp_path / 'nan_images.npz'}", "data=mnist5k"], ConfigError,
         f"fake='{tmp_path / 'nan_images.npz'}': 2 of 5 samples contain NaN or inf"),
        ([f"fake={tmp_path / 'good.npz'}", f"real={tmp_path / 'nan_images.npz'}", "eval.features=raw"], ConfigError,
         f"real='{tmp_path / 'nan_images.npz'}': 2 of 5 samples contain NaN or inf"),
        ([f"fake={tmp_path / 'NAN_POINTS.NPZ'}", "data=rings"], ConfigError,
         f"fake='{tmp_path / 'NAN_POINTS.NPZ'}': 1 of 6 samples contain NaN or inf"),
        ([f"fake={tmp_path / 'five_channels.npz'}", "data=mnist5k"], ConfigError,
         "images of shape [3, 28, 28, 5] have neither 1 nor 3 channels"),
    ]  # fmt: skip
    for overrides, error, needle in cases:
        with pytest.raises(error) as e:
            evaluate(eval_config(tmp_path, *overrides))
        assert needle in str(e.value), (overrides, str(e.value))
        assert len(getattr(e.value, "problems", [needle])) == 1, e.value  # one problem, no follow-on ones
    assert cache_snapshot() == before
    assert not (tmp_path / "eval_out" / "results.json").exists()


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    r = run_cli("genbench-evaluate", f"ckpt={tmp_path / 'missing.ckpt'}", "eval.features=pixels", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert "eval.features='pixels': must be one of" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("device, visible, message", [
    ("tpu", 0, "eval.device='tpu': must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ("", 0, "eval.device='': must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ("cuda", 0, "eval.device='cuda': no CUDA GPU is visible on this machine; use 'cpu' or 'auto'"),
    ("cuda:9", 2, "eval.device='cuda:9': only 2 CUDA GPU(s) are visible (cuda:0 to cuda:1)"),
    ("cuda:1", 2, None),
    ("cpu", 0, None),
    ("auto", 0, None),
])  # fmt: skip
def test_eval_device_is_checked_before_any_work(monkeypatch, device, visible, message):
    from evaluation import EvalConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    errors = EvalConfig.config_errors(compose_config([f"eval.device='{device}'"], config_name="evaluate").eval)
    assert errors == ([message] if message else [])


def test_run_dir_is_checked_before_any_work_and_a_training_record_is_kept(tmp_path, vae_run):
    from genbench.evaluate import evaluate

    run, _ = vae_run
    record = (run / "results.json").read_bytes()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "dir_results" / "results.json").mkdir(parents=True)
    cases = [
        (str(run), f"run_dir='{run}': holds a training run's results.json, which this evaluation would replace; "
                   "write elsewhere (the default is outputs/evaluate/<date>_<time>)"),
        ("", "run_dir='': must be the path of a folder for results.json"),
        (str(a_file), f"run_dir='{a_file}': {a_file} is a file, so {a_file / 'results.json'} cannot be written under it"),
        (str(tmp_path / "dir_results"), f"run_dir='{tmp_path / 'dir_results'}': {tmp_path / 'dir_results' / 'results.json'} "
                                         "is a directory; give the path of a file"),
    ]  # fmt: skip
    for run_dir, message in cases:
        cfg = compose_config([f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "eval.num_samples=20"], config_name="evaluate",
                             run_dir=tmp_path / "unused")  # fmt: skip
        cfg.run_dir = run_dir
        with pytest.raises(ConfigError) as e:
            evaluate(cfg)
        assert e.value.problems == [message]
    assert (run / "results.json").read_bytes() == record
