"""genbench-compare: the right means and standard deviations from hand-written results."""

from __future__ import annotations

import json
import statistics

import pytest

from genbench.compare import group_records, load_records, main, to_csv, to_markdown, wandb_records


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
    assert "| mnist5k | gan | 3 | 14.00 ± 4.00 |" in md
    assert "| mnist5k | vae | 1 | 30.00 |" in md
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
    assert "| mnist5k | gan | 3 (+1 diverged) | 14.00 ± 4.00 |" in to_markdown([gan])
    assert to_csv([gan]).splitlines()[1].startswith("mnist5k,gan,3,1,14.0,4.0")


def test_cli_writes_files(sweep, tmp_path, capsys):
    assert main([str(sweep), "--csv", str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md")]) == 0
    assert "14.00 ± 4.00" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().count("\n") == 4


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


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
