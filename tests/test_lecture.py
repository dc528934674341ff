"""The lecture comparison end to end with a tiny budget: every file of the report is produced."""

from __future__ import annotations

import json

import pytest

from genbench.compare import load_records
from genbench.table import group_records
from tests.conftest import run_cli

REPORT_FILES = ["report.md", "table.md", "table.csv", "samples.png", "forward_diffusion.png", "reverse_chain.png",
                "vae_reconstructions.png", "vae_interpolation.png", "gan_interpolation.png", "fid_vs_compute.png",
                "trilemma.png", "toy.png"]
# A smaller UNet (the other families ignore the key), and one thread: on a busy 2-core machine two
# OpenMP threads per op wait on each other's time slices (the tiny lecture once took 900 s so).
SMALL_UNET = ["++net.image.eps_net.ch=8", "++net.image.eps_net.groups=4"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_lecture_tiny_budget_writes_the_whole_report(tmp_path):
    from genbench.lecture import default_families

    out = tmp_path / "lecture"
    tiny = ["seed=0", "trainer.max_steps=4", "eval.num_samples=64", "eval.val_num_samples=32",
            "eval.kid_subset_size=16", "eval.nll_samples=2", "trainer.enable_progress_bar=false", *SMALL_UNET]
    # 5e10 FLOPs: the GAN 4 steps, the DDPM with the small UNet 5, the VAE 15; the 2-D runs trainer.max_steps
    r = run_cli("genbench-lecture", "--out", str(out), "--budget", "5e10", "--toy-lanes", "2", "--", *tiny,
                timeout=900, env=ONE_THREAD)  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"missing {name}"
    report = (out / "report.md").read_text()
    for name in REPORT_FILES[3:]:
        assert f"]({name})" in report, f"{name} not in report.md"
    assert "gan:    10.54 GFLOP/step       4 steps" in r.stdout  # the plan, before training
    timing = json.loads((out / "timing.json").read_text())  # where the time went, per phase
    assert set(timing) == {"total_s", "plan_s", "images_s", "toy_s", "report_s"}
    assert sum(v for k, v in timing.items() if k != "total_s") <= timing["total_s"] + 0.5
    # equal FLOPs, and equal images beside it: every family at the GAN's 4 steps (512 images)
    assert "## Results at equal training FLOPs" in report and "## Results at equal training images" in report
    assert "**mnist5k: equal training FLOPs**, 5e+10 per family" in report
    steps = {}
    for f in sorted((out / "images").glob("*/results.json")):
        res = json.loads(f.read_text())
        assert res["used"]["flops"] <= 5e10 < res["used"]["flops"] + res["budget"]["flops_per_step"]
        assert res["eval_snapshot"]["step"] == 4 and res["eval_snapshot"]["num_samples"] == 64
        steps[res["family"]] = res["steps"]
    assert steps == {"gan": 4, "vae": 15, "ddpm": 5}
    groups = group_records(load_records([out]))
    assert {(g.data, g.family) for g in groups} == {(d, f) for d in ("mnist5k", "rings", "grid") for f in default_families()}
    # the 2-D data sets trained side by side, one lane (multirun) each, their output tagged line by line
    for data in ("rings", "grid"):
        assert len(list((out / "toy" / data).glob("*/results.json"))) == 3
        assert f"+ [{data}] OMP_NUM_THREADS=1 " in r.stdout and f"[{data}] " in r.stdout.replace(f"+ [{data}]", "")
    # memorization of the training digits is scored for every family and tabulated, next to the nearest-image figure
    assert "copy rate ↓" in report and "authenticity ↑" in report and "C_T ↑" in report
    assert "![nearest_training](nearest_training.png)" in report
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
    tiny = ["budget.kind=images", "budget.value=null", "trainer.max_steps=3", "eval.num_samples=40", "eval.at_fractions=[]", "eval.kid_subset_size=16",
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


def _no_training(*args):
    raise AssertionError("genbench-train must not start on bad input")


@pytest.mark.parametrize("families", ["foo", "", "gan,,vae", "gan,foo", "gan, gan"])
def test_bad_families_are_one_clear_error_before_training(tmp_path, monkeypatch, capsys, families):
    from genbench import lecture

    monkeypatch.setattr(lecture, "_train", _no_training)
    assert lecture.main(["--families", families, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"genbench-lecture: error: --families {families!r}: ") and err.count("\n") == 1
    assert "allowed: gan, vae, ddpm" in err or "more than once" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--toy-data", "rings,moons", "--toy-data 'rings,moons': unknown 2-D data set 'moons'; allowed: rings, grid"),
    ("--toy-data", "rings,rings", "--toy-data 'rings,rings': a data set is named more than once"),
    ("--budget", "-1", "--budget -1: must be a finite number > 0 (the image comparison's budget.value: training FLOPs"),
    ("--budget", "inf", "--budget inf: must be a finite number > 0"),
    ("--toy-lanes", "0", "--toy-lanes 0: must be an integer >= 1"),
])
def test_bad_lecture_options_are_one_clear_error_before_training(tmp_path, monkeypatch, capsys, option, value, message):
    from genbench import lecture

    monkeypatch.setattr(lecture, "_train", _no_training)
    assert lecture.main([option, value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genbench-lecture: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("toy", "requested", "cpus", "lanes", "threads"), [
    (["rings", "grid"], None, 2, [["rings"], ["grid"]], 1),  # this machine: side by side, one thread each
    (["rings", "grid"], None, 16, [["rings"], ["grid"]], 8),
    (["rings", "grid"], None, 1, [["rings", "grid"]], 1),  # one core: one lane, as before
    (["rings", "grid"], 1, 16, [["rings", "grid"]], 16),
    (["rings"], None, 2, [["rings"]], 2),
    (["rings", "grid"], 5, 2, [["rings"], ["grid"]], 1),  # never more lanes than data sets
])
def test_toy_lanes_split_the_data_sets_and_the_cores(toy, requested, cpus, lanes, threads):
    from genbench.lecture import toy_lanes

    assert toy_lanes(toy, requested, cpus) == (lanes, threads)


def test_families_are_stripped_of_spaces(tmp_path, monkeypatch):
    from genbench import lecture

    calls = []
    monkeypatch.setattr(lecture, "_train", lambda args: calls.append(args) or 1)
    assert lecture.main(["--families", " gan , ddpm", "--out", str(tmp_path)]) == 1
    assert "model=gan,ddpm" in calls[0]


@pytest.mark.parametrize("under", ["", "sub/out"])
def test_out_that_is_or_lies_under_a_file_is_one_clear_error(tmp_path, monkeypatch, capsys, under):
    from genbench import lecture

    monkeypatch.setattr(lecture, "_train", _no_training)
    (tmp_path / "a_file").write_text("kept")
    out = tmp_path / "a_file" / under
    assert lecture.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"genbench-lecture: error: --out {out}: ") and err.count("\n") == 1
    assert (tmp_path / "a_file").read_text() == "kept"


@pytest.mark.parametrize("content", ["[1]", "{not json"])
@pytest.mark.parametrize("wandb", [[], ["--no-wandb-report"]])
def test_report_only_skips_unreadable_results(tmp_path, capsys, content, wandb):
    from genbench.lecture import main

    bad = tmp_path / "images" / "0" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    assert main(["--report-only", "--out", str(tmp_path), *wandb]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"genbench-lecture: skipping unreadable {bad}: ")
    assert err[1].startswith(f"genbench-lecture: error: no finished runs (results.json) under {tmp_path}") and len(err) == 2


def test_report_and_wandb_group_use_the_readable_runs_only(tmp_path, capsys):
    from genbench.lecture import _image_data_name
    from genbench.report import find_runs

    for name, content in [("0", "[1]"), ("1", "{not json"), ("2", json.dumps({"family": "gan", "data": "rings"}))]:
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "images" / name / "results.json").write_text(content)
    assert _image_data_name(tmp_path) == "rings"
    assert [r.dir.name for r in find_runs(tmp_path)] == ["2"]
    assert capsys.readouterr().err.count("skipping unreadable") == 2


@pytest.mark.parametrize("scored, plotted", [(64, 64), (2000, 2000), (50_000, 2000), (None, 2000), (True, 2000), (0, 2000)])
def test_toy_scatter_plots_as_many_points_as_the_evaluation_scored(tmp_path, scored, plotted):
    # the panel's label (modes covered, share within 3σ) comes from the evaluation: its points should too
    from genbench.report import Run, _toy_points

    results = {"family": "ddpm", "data": "rings", "eval": {} if scored is None else {"num_samples": scored}}
    assert _toy_points(Run(tmp_path, results)) == plotted
