"""The evaluation schedule of a budgeted run: evaluations at fractions of the planned steps, and the
snapshot (the final evaluation's protocol at one step) behind the lecture's equal-images table."""

from __future__ import annotations

import json

import pytest

from genbench.train import train

IMAGES = 256 * 8  # rings, batch 256: 8 steps


def _run(tiny_config, tmp_path, *overrides):
    return train(tiny_config("model=vae", "data=rings", "budget.kind=images", *overrides, "eval.final=true",
                             "eval.num_samples=64", "eval.val_num_samples=32", run_dir=tmp_path))  # fmt: skip


def test_fractions_and_snapshot(tiny_config, tmp_path, one_thread):
    results = _run(tiny_config, tmp_path / "long", f"budget.value={IMAGES}", "eval.at_fractions=[0.25,0.5]",
                   "eval.snapshot_step=3")  # fmt: skip
    history = [json.loads(line) for line in (tmp_path / "long" / "eval_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4, 8]  # and the last step, at the same sample count
    assert results["steps"] == 8
    snapshot = results["eval_snapshot"]
    assert snapshot["step"] == 3 and snapshot["num_samples"] == 64
    # The VAE's learning rate does not depend on the planned steps, so its state at step 3 of an 8-step run is
    # that of a 3-step run: the snapshot is the 3-step run's final evaluation, number for number.
    short = _run(tiny_config, tmp_path / "short", f"budget.value={256 * 3}")
    for key in ("fid", "precision", "recall", "density", "coverage"):
        assert snapshot[key] == pytest.approx(short["eval"][key], rel=1e-9, abs=1e-12), key
    assert snapshot["fid"] != results["eval"]["fid"]


def test_the_last_point_is_scored_from_the_final_evaluations_samples(tiny_config, tmp_path, one_thread, monkeypatch):
    """The curve's point at the last step comes from the final evaluation's first val_num_samples samples (one
    draw, not two): number for number the point a run without the final evaluation scores on its own."""
    from evaluation.evaluator import Evaluator

    calls = []
    evaluate = Evaluator.evaluate
    monkeypatch.setattr(Evaluator, "evaluate", lambda self, *a, **k: calls.append(a[1:2]) or evaluate(self, *a, **k))
    args = (f"budget.value={IMAGES}", "eval.at_fractions=[0.5]", "eval.batch_size=32")
    _run(tiny_config, tmp_path / "final", *args)
    assert calls == [(32,), (64,)]  # step 4, then the final evaluation (which also scores step 8's point)
    train(tiny_config("model=vae", "data=rings", "budget.kind=images", *args, "eval.final=false", "eval.num_samples=64",
                      "eval.val_num_samples=32", run_dir=tmp_path / "alone"))  # fmt: skip
    assert calls[2:] == [(32,), (32,)]
    shared, alone = ([json.loads(line) for line in (tmp_path / d / "eval_history.jsonl").read_text().splitlines()]
                     for d in ("final", "alone"))  # fmt: skip
    assert [h["step"] for h in shared] == [h["step"] for h in alone] == [4, 8]
    for key in ("fid", "precision", "recall", "density", "coverage", "num_samples"):
        assert shared[1][key] == alone[1][key], key
    assert shared[1]["time_s"] > shared[0]["time_s"] > 0


def test_snapshot_at_the_last_step_is_the_final_evaluation(tiny_config, tmp_path, one_thread):
    results = _run(tiny_config, tmp_path, f"budget.value={256 * 3}", "eval.snapshot_step=3")
    snapshot = dict(results["eval_snapshot"])
    assert snapshot.pop("time_s") > 0
    assert snapshot == {"step": 3, **results["eval"]}
    assert not (tmp_path / "eval_history.jsonl").exists()


def test_fractions_are_checked_before_any_work(tiny_config, tmp_path):
    from genbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval.at_fractions=\[0.5, 1.5\]: 1.5 is not a number with 0 < f < 1"):
        _run(tiny_config, tmp_path, "eval.at_fractions=[0.5,1.5]")
    assert not any(tmp_path.iterdir()) if tmp_path.exists() else True
