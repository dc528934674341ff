"""genbench-compare: the right means, 95 % intervals and standard deviations from hand-written results."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from genbench.compare import load_records, main, wandb_records
from genbench.table import group_records, to_csv, to_markdown


def _write(path, family, seed, fid, params=1_000_000, data="mnist5k", nll=None):
    path.mkdir(parents=True)
    ev = {"fid": fid, "is_mean": 2.0 + seed, "precision": 0.5, "recall": 0.25, "nfe": 1}
    if nll is not None:
        ev["nll_bpd"] = nll
    rec = {"family": family, "data": data, "seed": seed, "parameters": params, "train_time_s": 10.0 * (seed + 1),
           "train_images_per_s": 100.0, "eval": ev, "config": {"huge": "ignored"}}
    (path / "results.json").write_text(json.dumps(rec))


@pytest.fixture
def sweep(tmp_path):
    _write(tmp_path / "0_gan_seed0", "gan", 0, fid=10.0)
    _write(tmp_path / "1_gan_seed1", "gan", 1, fid=14.0)
    _write(tmp_path / "2_gan_seed2", "gan", 2, fid=18.0)
    _write(tmp_path / "3_vae_seed0", "vae", 0, fid=30.0, nll=1.5)
    _write(tmp_path / "nested" / "4_ddpm_seed0", "ddpm", 0, fid=5.0, params=2_500_000, nll=1.0)
    _write(tmp_path / "5_ddpm_seed1", "ddpm", 1, fid=7.0, params=2_500_000, nll=1.2)
    return tmp_path


def test_groups_and_statistics(sweep):
    groups = group_records(load_records([sweep]))
    assert [(g.data, g.family, len(g.records)) for g in groups] == [
        ("mnist5k", "gan", 3), ("mnist5k", "vae", 1), ("mnist5k", "ddpm", 2)]
    gan, vae, ddpm = groups
    mean, std = gan.mean_std("fid")
    assert mean == 14.0 and std == pytest.approx(statistics.stdev([10, 14, 18])) == 4.0  # sample std (n − 1)
    assert vae.mean_std("fid") == (30.0, None)  # one seed: no std
    assert ddpm.mean_std("nll_bpd")[0] == pytest.approx(1.1)
    assert gan.mean_std("nll_bpd") is None  # GANs have no likelihood
    assert ddpm.mean_std("params_m") == (2.5, 0.0)


def test_markdown_and_csv(sweep):
    groups = group_records(load_records([sweep]))
    md = to_markdown(groups)
    # 3 seeds: 14 ± t(0.975, 2) · 4/√3 = 14 ± 9.94; not significantly worse than the DDPM's 6 (Welch p = 0.17)
    assert "| mnist5k | gan | 3 | ≈ 14.00 ± 9.94 |" in md
    assert "| mnist5k | vae | 1 | 30.00 |" in md  # one seed without eval.ci: no interval, not tested
    assert "| mnist5k | ddpm | 2 | **6.00 ± 12.71** |" in md
    csv_text = to_csv(groups).splitlines()
    assert csv_text[0].startswith("data,family,seeds,failed,fid_mean,fid_std")
    assert csv_text[1].startswith("mnist5k,gan,3,0,14.0,4.0")


def test_diverged_runs_are_counted_apart_and_left_out_of_the_means(sweep):
    # A diverged seed has no evaluation (genbench-train writes status, error, steps and no "eval").
    (sweep / "6_gan_seed3").mkdir()
    (sweep / "6_gan_seed3" / "results.json").write_text(json.dumps(
        {"status": "diverged", "error": "training diverged: train/d_loss=nan at step 12", "family": "gan",
         "data": "mnist5k", "seed": 3, "steps": 11, "parameters": 9_000_000, "train_time_s": 999.0}))
    gan = group_records(load_records([sweep]))[0]
    assert len(gan.records) == 4 and len(gan.ok) == 3 and gan.failures() == {"diverged": 1}
    assert gan.mean_std("fid") == (14.0, 4.0)
    assert gan.mean_std("train_time_s")[0] == 20.0  # 10, 20, 30: the diverged run's 999 s is not averaged in
    assert "| mnist5k | gan | 3 (+1 diverged) | 14.00 ± 9.94 |" in to_markdown([gan])  # one row: no marks
    assert to_csv([gan]).splitlines()[1].startswith("mnist5k,gan,3,1,14.0,4.0")


def test_cli_writes_files(sweep, tmp_path, capsys):
    assert main([str(sweep), "--csv", str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md")]) == 0
    assert "14.00 ± 9.94" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().count("\n") == 4


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("content, reason", [
    (b"[1]", "expected a JSON object {...}, found [1]"),
    (b'"text"', 'expected a JSON object {...}, found "text"'),
    (b"3", "expected a JSON object {...}, found 3"),
    (b"\xff\xfe{}", "'utf-8' codec can't decode byte 0xff in position 0"),
    (b"{not json", "Expecting property name"),
])
def test_unreadable_results_are_skipped_with_a_note(sweep, capsys, content, reason):
    bad = sweep / "9_bad" / "results.json"
    bad.parent.mkdir()
    bad.write_bytes(content)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr()
    assert out.err.startswith(f"genbench-compare: skipping unreadable {bad}: {reason}") and out.err.count("\n") == 1
    assert "| mnist5k | gan | 3 | ≈ 14.00 ± 9.94 |" in out.out  # the other runs still count


def test_results_without_read_permission_are_skipped_with_a_note(sweep, monkeypatch, capsys):
    locked = sweep / "0_gan_seed0" / "results.json"
    read_text = Path.read_text

    def read(self, *args, **kwargs):  # chmod 000 would not stop root, so the permission error is faked
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr()
    assert out.err == f"genbench-compare: skipping unreadable {locked}: Permission denied\n"
    assert "| mnist5k | gan | 2 | ≈ 16.00 ± 25.41 |" in out.out  # 16 ± t(0.975, 1) · 2.83/√2


@pytest.mark.parametrize("option, other", [("--markdown", "--csv"), ("--csv", "--markdown")])
@pytest.mark.parametrize("bad", ["", "{sweep}", "{sweep}/a_file/t.out", "{sweep}/a_file/sub/t.out", "unwritable"])
def test_cli_checks_both_output_paths_before_writing_anything(sweep, monkeypatch, capsys, option, other, bad):
    (sweep / "a_file").write_text("kept")
    if bad == "unwritable":  # chmod would not stop root, so the missing permission is faked
        (sweep / "locked").mkdir()
        bad = str(sweep / "locked" / "t.out")
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != sweep / "locked" and access(path, mode))
    bad = bad.format(sweep=sweep)
    ok = sweep / "ok.out"
    assert main([str(sweep), other, str(ok), option, bad]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"genbench-compare: error: {option}={bad!r}: ") and out.err.count("\n") == 1
    assert "Traceback" not in out.err and out.out == ""
    assert not ok.exists() and (sweep / "a_file").read_text() == "kept"


def test_cli_makes_missing_output_directories(sweep, tmp_path):
    assert main([str(sweep), "--csv", str(tmp_path / "new" / "dir" / "t.csv")]) == 0
    assert (tmp_path / "new" / "dir" / "t.csv").read_text().count("\n") == 4


def test_wandb_records_from_run_summaries():
    class Run:
        def __init__(self, results):
            self.summary = {"results": results}

    class Api:
        def runs(self, project, filters):
            assert project == "me/genbench" and filters == {"group": "lecture"}
            return [Run({"family": "vae", "data": "mnist5k", "seed": 0, "eval": {"fid": 3.0}}),
                    Run({"family": "vae", "data": "mnist5k", "seed": 1, "eval": {"fid": 5.0}}),
                    Run(None)]

    groups = group_records(wandb_records("me/genbench", "lecture", api=Api()))
    assert len(groups) == 1 and groups[0].mean_std("fid") == (4.0, pytest.approx(2 ** 0.5))


def test_cli_wandb_without_a_key_is_one_clear_error(monkeypatch, capsys):
    import wandb

    def no_key():
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "Api", no_key)
    assert main(["--wandb", "me/genbench", "--group", "lecture_mnist5k"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genbench-compare: error: --wandb me/genbench: cannot read its W&B runs (UsageError: No API "
                          "key configured. Use `wandb login` to log in.). It needs the network and a W&B key")  # fmt: skip
    assert "Traceback" not in err


def test_genbench_evaluate_records_are_rows_too(tmp_path, capsys):
    """Stored samples scored by genbench-evaluate (e.g. another library's) sit next to the trained runs."""
    import numpy as np

    from genbench.evaluate import evaluate
    from tests.conftest import compose_config

    points = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    np.savez(tmp_path / "theirs.npz", samples=points)
    run = tmp_path / "evaluated"
    record = evaluate(compose_config([f"fake={tmp_path / 'theirs.npz'}", "data=rings", "eval.num_samples=300"],
                                     config_name="evaluate", run_dir=run))  # fmt: skip
    _write(tmp_path / "runs" / "0_vae_seed0", "vae", 0, fid=30.0, data="rings")
    assert main([str(run), str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    low, high = record["ci"]["fid"]  # one seed: the evaluation's own bootstrap interval
    assert f"| rings | samples:theirs.npz | 1 | {record['fid']:.2f} [{low:.2f}, {high:.2f}] |" in table  # the only interval: no marks
    assert "| rings | vae | 1 | 30.00 |" in table
