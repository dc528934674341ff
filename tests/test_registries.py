"""The registries: a fourth family, a new metric and a new feature space, each defined only in tests/toys.py
and registered there in one call, run through genbench-train, genbench-evaluate, genbench-compare and the report."""

from __future__ import annotations

import csv
import json

import pytest

from evaluation.registry import log_names, metric_specs, result_keys
from models.registry import family_names, family_spec
from tests.conftest import run_cli

PLUGIN = {"GENBENCH_PLUGINS": "tests.toys"}


def test_builtin_registries_list_every_family_and_metric():
    assert family_names()[:3] == ["gan", "vae", "ddpm"]
    assert family_spec("ddpm").display_name == "DDPM" and family_spec("ddpm").module_class().__name__ == "DDPM"
    assert {"fid", "is", "kid", "manifold", "nll", "modes"} <= {s.name for s in metric_specs()}
    assert log_names()["fid"] == "val/fid" and log_names()["sample_images_per_s"] == "perf/sample_images_per_s"
    headers = [k.header for k in result_keys() if k.column]
    assert headers[0] == "FID ↓" and {"IS ↑", "KID ↓", "precision ↑", "recall ↑", "NLL bits/dim ↓"} <= set(headers)


def test_unknown_plugin_is_one_clear_error(tmp_path):
    r = run_cli("genbench-compare", str(tmp_path), env={"GENBENCH_PLUGINS": "tests.no_such_plugin"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "genbench-compare: error: GENBENCH_PLUGINS='tests.no_such_plugin': cannot import plug-in "
        "'tests.no_such_plugin' (No module named 'tests.no_such_plugin')"
    ]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy family trained 30 steps on mnist5k through genbench-train, evaluated during and after training in
    the toy feature space."""
    out = tmp_path_factory.mktemp("toy") / "run"
    r = run_cli("genbench-train", "model=gaussian", "data=mnist5k", "trainer.max_steps=30", "logger=csv",
                "trainer.enable_progress_bar=false", "eval.every_n_steps=15", "eval.val_num_samples=100",
                "eval.num_samples=200", "eval.kid_subset_size=50", "eval.features=pixel_means", f"hydra.run.dir={out}",
                env=PLUGIN)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_toy_family_and_metric_train_and_log(toy_run):
    results = json.loads((toy_run / "results.json").read_text())
    assert results["family"] == "gaussian" and results["steps"] == 30
    ev = results["eval"]
    assert ev["num_samples"] == 200 and ev["fid"] > 0 and ev["mean_offset"] > 0
    assert ev["features"] == "pixel_means" and ev["is_mean"] is None  # the toy space has no class posterior
    assert results["metrics"]["val/mean_offset"] == ev["mean_offset"]  # the final evaluation was logged last
    rows = list(csv.DictReader((toy_run / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("val/mean_offset")]
    assert sorted(int(r["step"]) for r in logged)[:2] == [15, 30]


def test_toy_family_evaluates_compares_and_reports(toy_run, tmp_path):
    ev = run_cli("genbench-evaluate", f"ckpt={toy_run}/checkpoints/last.ckpt", "eval.num_samples=100", "eval.features=pixel_means",
                 "eval.kid_subset_size=50", f"hydra.run.dir={tmp_path / 'ev'}", env=PLUGIN)
    assert ev.returncode == 0, ev.stderr[-3000:]
    record = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert record["family"] == "gaussian" and record["mean_offset"] > 0 and "mean_offset" in ev.stdout
    assert record["features"] == "pixel_means"

    c = run_cli("genbench-compare", str(toy_run), "--csv", str(tmp_path / "t.csv"), env=PLUGIN)
    assert c.returncode == 0, c.stderr[-3000:]
    header = c.stdout.splitlines()[0]
    assert "mean offset ↓" in header
    row = next(line for line in c.stdout.splitlines() if "| gaussian |" in line)
    assert f"{json.loads((toy_run / 'results.json').read_text())['eval']['mean_offset']:.3f}" in row
    assert "mean_offset_mean" in (tmp_path / "t.csv").read_text().splitlines()[0]

    r = run_cli("genbench-lecture", "--report-only", "--no-wandb-report", "--out", str(toy_run.parent), env=PLUGIN)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (toy_run.parent / "report.md").read_text()
    assert "| mnist5k | gaussian | 1 |" in report and "mean offset ↓" in report
    assert (toy_run.parent / "samples.png").is_file() and "![samples](samples.png)" in report
