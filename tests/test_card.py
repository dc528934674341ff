"""The evaluation card: in every result, and genbench-compare's footnotes where cards differ in a column."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from evaluation.card import CARD_FIELDS, weights_sha256
from genbench.compare import load_records, main
from genbench.table import group_records, to_csv, to_markdown

CARD = {"features": "classifier", "weights_sha256": "ab" * 32, "resize": None, "num_generated": 5000,
        "reference": "mnist5k", "split": "val", "num_real": 500, "seed": 0, "metric_seed": 2020,
        "sampler": None, "nfe": 1}  # fmt: skip


def write(path, family, seed, fid, **card):
    path.mkdir(parents=True)
    ev = {"fid": fid, "kid_mean": fid / 100, "nfe": 1, "card": {**CARD, **card}}
    rec = {"family": family, "data": "mnist5k", "seed": seed, "parameters": 10**6, "eval": ev}
    (path / "results.json").write_text(json.dumps(rec))


def test_same_cards_give_no_footnotes_and_different_ones_one_per_difference(tmp_path):
    write(tmp_path / "gan0", "gan", 0, 10.0)
    write(tmp_path / "gan1", "gan", 1, 12.0)
    write(tmp_path / "vae0", "vae", 0, 30.0)
    assert "¹" not in to_markdown(group_records(load_records([tmp_path])))
    write(tmp_path / "ddpm0", "ddpm", 0, 5.0, features="inception", weights_sha256="cd" * 32, resize="clean",
          sampler="ddim", nfe=50)  # fmt: skip
    write(tmp_path / "ddpm1", "ddpm", 1, 7.0, features="inception", weights_sha256="cd" * 32, resize="clean",
          sampler="ddpm", nfe=100)  # fmt: skip
    md = to_markdown(group_records(load_records([tmp_path])))
    assert "| mnist5k | gan | 2 | ≈ 11.00 ± 12.71 | ≈ 0.1100 ± 0.1271 |" in md  # the majority: no footnote
    assert "| mnist5k | ddpm | 2 | **6.00 ± 12.71**¹²³⁴⁵ | **0.0600 ± 0.1271**¹²³⁴⁵ |" in md
    footnotes = md.split("\n\n")[1].splitlines()
    assert footnotes == [
        "¹ features=inception (others: classifier)",
        f"² weights_sha256={'cd' * 6} (others: {'ab' * 6})",
        "³ resize=clean (others: None)",
        "⁴ sampler=ddim, ddpm within one cell",
        "⁵ nfe=100, 50 within one cell",
    ]
    # sampler and NFE differ between families by design: across cells they are no difference
    assert "sampler=ddim, ddpm (others" not in md
    csv_row = to_csv(group_records(load_records([tmp_path]))).splitlines()[-1]
    assert csv_row.endswith('fid: features=inception (others: classifier); fid: weights_sha256=cdcdcdcdcdcd (others: '
                            'abababababab); fid: resize=clean (others: None); fid: sampler=ddim, ddpm within one cell; '
                            'fid: nfe=100, 50 within one cell; kid_mean: features=inception (others: classifier); '
                            'kid_mean: weights_sha256=cdcdcdcdcdcd (others: abababababab); kid_mean: resize=clean '
                            '(others: None); kid_mean: sampler=ddim, ddpm within one cell; kid_mean: nfe=100, 50 within '
                            'one cell"')  # fmt: skip


def test_a_mixed_sample_count_in_one_cell_is_marked(tmp_path, capsys):
    write(tmp_path / "gan0", "gan", 0, 10.0)
    write(tmp_path / "gan1", "gan", 1, 12.0, num_generated=1000)
    write(tmp_path / "vae0", "vae", 0, 30.0)
    write(tmp_path / "vae1", "vae", 1, 31.0)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| **11.00 ± 12.71**¹ |" in out and "¹ num_generated=1000, 5000 (others: 5000)" in out


def test_results_without_a_card_are_compared_on_what_they_record(tmp_path):
    for name, features in (("gan", "classifier"), ("vae", "inception")):
        (tmp_path / name).mkdir()
        ev = {"fid": 1.0, "features": features, "num_samples": 100}  # written before the card
        (tmp_path / name / "results.json").write_text(json.dumps({"family": name, "data": "d", "eval": ev}))
    md = to_markdown(group_records(load_records([tmp_path])))
    assert "¹ features=inception (others: classifier)" in md  # a tie: the first row's card is the majority


def test_weights_hash_is_the_files_or_the_parameters(tmp_path):
    class Space(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

    space = Space()
    digest = weights_sha256(space)
    assert len(digest) == 64 and weights_sha256(space) == digest  # memoised
    other = Space()
    with torch.no_grad():
        other.lin.weight.copy_(space.lin.weight)
        other.lin.bias.copy_(space.lin.bias + 1)
    assert weights_sha256(other) != digest
    (tmp_path / "w.pth").write_bytes(b"weights")
    filed = Space()
    filed.weights = tmp_path / "w.pth"
    assert weights_sha256(filed) == hashlib.sha256(b"weights").hexdigest()
    assert weights_sha256(nn.Module()) is None  # no parameters: raw points


def test_every_result_has_a_card(tmp_path, monkeypatch):
    import numpy as np

    from genbench.evaluate import evaluate
    from tests.conftest import compose_config

    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    np.savez(tmp_path / "a.npz", samples=np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32))
    results = evaluate(compose_config([f"fake={tmp_path / 'a.npz'}", "data=rings", "eval.device=cpu", "eval.seed=3"],
                                      config_name="evaluate", run_dir=tmp_path / "out"))  # fmt: skip
    card = results["card"]
    assert tuple(card) == CARD_FIELDS
    assert card == {"features": "raw", "weights_sha256": None, "resize": None, "num_generated": 40, "reference": "rings",
                    "split": "val", "num_real": card["num_real"], "seed": 3, "metric_seed": 2020, "sampler": None,
                    "nfe": None}  # fmt: skip
    assert card["num_real"] == results["num_real"] > 0
