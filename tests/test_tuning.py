"""The equal tuning's table and adopted defaults (genbench/tuning.py) and how conf/tuned/ reaches a run."""

from __future__ import annotations

import json

import optuna
import pytest

from genbench import tuning
from genbench.sweep import journal_storage
from tests.conftest import compose_config


def _search(tmp_path, fids):
    sweep = tmp_path / "gan"
    sweep.mkdir()
    study = optuna.create_study(study_name="gan_mnist5k_fid", storage=journal_storage(str(sweep / "optuna.jsonl")))
    for i, fid in enumerate(fids):
        trial = study.ask({"model.lr": optuna.distributions.LogUniformDistribution(1e-5, 1e-2),
                           "model.loss": optuna.distributions.CategoricalDistribution(["hinge", "nonsaturating"])})
        study.tell(trial, fid)
        (sweep / f"{i}_gan_seed0").mkdir()
        (sweep / f"{i}_gan_seed0" / "results.json").write_text(json.dumps(
            {"family": "gan", "data": "mnist5k", "budget": {"kind": "flops", "value": 1.2e13}, "eval": {"fid": fid}}))
    return sweep, study


def test_table_marks_the_best_trial_and_adopts_it_only_when_it_beats_the_defaults(tmp_path, monkeypatch):
    sweep, study = _search(tmp_path, [12.0, 7.5, 9.0])
    search = tuning.load_search(sweep)
    assert (search.family, search.data, search.study, search.budget) == ("gan", "mnist5k", "gan_mnist5k_fid", "1.2e+13 flops")
    assert search.best[0] == 1 and search.best[2] == 7.5
    table = tuning.markdown([search])
    assert "| 1 | " in table and "7.5 **best**" in table and "FID not run. The search adopted" in table

    monkeypatch.setattr(tuning, "TUNED_DIR", tmp_path / "tuned")
    search.baseline_fid = 7.0  # the current defaults are better: the search is recorded, no value changes
    assert not search.adopted and "kept the current defaults" in tuning.markdown([search])
    kept = tuning.write_tuned(search, "2026-12-06").read_text()
    assert "result: \"kept the current defaults (current defaults 7.000; best trial 1: FID 7.500)\"" in kept
    assert "model:" not in kept and "trials: 3" in kept
    search.baseline_fid = 8.0
    path = tuning.write_tuned(search, "2026-12-06")
    text = path.read_text()
    lr = study.trials[1].params["model.lr"]
    assert path.name == "mnist5k_gan.yaml" and f"  lr: {lr!r}" in text and "study: gan_mnist5k_fid" in text
    assert "result: \"adopted trial 1 (FID 7.500; current defaults 8.000)\"" in text


def test_tuned_file_sets_the_defaults_of_its_data_and_family_only():
    # conf/tuned/<data>_<model>.yaml loads through conf/train.yaml's defaults list; command-line overrides win.
    files = {p.stem for p in tuning.TUNED_DIR.glob("*.yaml")} if tuning.TUNED_DIR.is_dir() else set()
    if not files:
        pytest.skip("no tuned defaults in conf/tuned/")
    data, family = sorted(files)[0].split("_", 1)
    cfg = compose_config([f"model={family}", f"data={data}"])
    assert cfg.tuned.study.startswith(family)
    other = compose_config([f"model={family}", "data=rings"])
    assert "tuned" not in other


def test_bad_baseline_is_one_clear_error(tmp_path, capsys):
    sweep, _ = _search(tmp_path, [3.0])
    assert tuning.main([str(sweep), "--baseline", "vae=somewhere"]) == 2
    assert "--baseline 'vae=somewhere': must be FAMILY=RUN_DIR for a family of the searches (gan)" in capsys.readouterr().err
    assert tuning.main([str(tmp_path / "nothing")]) == 2
    assert "no optuna.jsonl" in capsys.readouterr().err


def test_docs_page_gets_the_table_between_its_markers(tmp_path, capsys):
    sweep, _ = _search(tmp_path, [3.0, 2.0])
    page = tmp_path / "tuning.md"
    page.write_text("intro\n<!-- tuning:start -->\nold table\n<!-- tuning:end -->\nafter\n")
    assert tuning.main([str(sweep), "--docs", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("intro\n<!-- tuning:start -->\n### gan on mnist5k") and text.endswith("<!-- tuning:end -->\nafter\n")
    assert "old table" not in text and "| 1 | " in text and "2 **best**" in text
