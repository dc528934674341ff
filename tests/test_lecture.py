"""The lecture comparison end to end with a tiny budget: every file of the report is produced."""

from __future__ import annotations

import json

import pytest

from genbench.compare import group_records, load_records
from tests.conftest import run_cli

REPORT_FILES = ["report.md", "table.md", "table.csv", "samples.png", "forward_diffusion.png", "reverse_chain.png",
                "vae_reconstructions.png", "vae_interpolation.png", "gan_interpolation.png", "fid_vs_time.png",
                "trilemma.png", "toy.png"]
# A smaller UNet (the other families ignore the key), and one thread: on a busy 2-core machine two
# OpenMP threads per op wait on each other's time slices (the tiny lecture once took 900 s so).
SMALL_UNET = ["++net.image.eps_net.ch=8", "++net.image.eps_net.groups=4"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_lecture_tiny_budget_writes_the_whole_report(tmp_path):
    out = tmp_path / "lecture"
    tiny = ["trainer.max_steps=4", "eval.num_samples=64", "eval.val_num_samples=32", "eval.every_n_steps=2",
            "eval.kid_subset_size=16", "eval.nll_samples=2", "trainer.enable_progress_bar=false", *SMALL_UNET]
    r = run_cli("genbench-lecture", "--out", str(out), "--", *tiny, timeout=900, env=ONE_THREAD)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"missing {name}"
    report = (out / "report.md").read_text()
    for name in REPORT_FILES[3:]:
        assert f"]({name})" in report, f"{name} not in report.md"
    groups = group_records(load_records([out]))
    assert {(g.data, g.family) for g in groups} == {(d, f) for d in ("mnist5k", "rings", "grid") for f in ("gan", "vae", "ddpm")}
    # one W&B group per data set, one offline run per job, plus the report run
    images = sorted((out / "images").glob("*/results.json"))
    assert len(images) == 3
    for f in images:
        res = json.loads(f.read_text())
        assert res["config"]["group"] == "lecture_mnist5k"
        assert list((f.parent / "wandb").glob("offline-run-*"))
    assert list(out.glob("wandb/offline-run-*")), "the report is logged to W&B as its own run"


def test_two_seed_lecture_multirun_gives_mean_and_std_per_family(tmp_path):
    out = tmp_path / "multi"
    tiny = ["trainer.max_steps=3", "eval.num_samples=40", "eval.every_n_steps=0", "eval.kid_subset_size=16",
            "eval.nll_samples=2", "trainer.enable_progress_bar=false", "logger=csv", *SMALL_UNET]
    r = run_cli("genbench-train", "-m", "experiment=lecture", "model=gan,vae,ddpm", "seed=0,1", *tiny,
                f"hydra.sweep.dir={out}", timeout=900, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    c = run_cli("genbench-compare", str(out), "--csv", str(tmp_path / "t.csv"))
    assert c.returncode == 0, c.stderr[-3000:]
    rows = {line.split(",")[1]: line.split(",") for line in (tmp_path / "t.csv").read_text().splitlines()[1:]}
    assert set(rows) == {"gan", "vae", "ddpm"} and all(row[2] == "2" for row in rows.values())  # two seeds each
    for family, row in rows.items():  # fid_mean, fid_std right after data, family, seeds, failed
        fids = [json.loads(f.read_text())["eval"]["fid"] for f in out.glob(f"*_{family}_seed*/results.json")]
        assert float(row[4]) == pytest.approx(sum(fids) / 2) and float(row[5]) == pytest.approx(abs(fids[0] - fids[1]) / 2**0.5)
    assert "±" in c.stdout


def test_report_only_without_runs_is_one_clear_error(tmp_path, capsys):
    from genbench.lecture import main

    (tmp_path / "images").mkdir()
    assert main(["--report-only", "--no-wandb-report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"genbench-lecture: error: no finished runs (results.json) under {tmp_path}: train them first")
    assert not (tmp_path / "report.md").exists()
