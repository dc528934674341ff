"""`make gpu-check` without a GPU: the skip, its CPU path at tiny sizes (the record and its markdown), the
MFU arithmetic and curve comparison against hand-computed values, the time caps; and the speed probe's line."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_check_report, speed_probe
from genbench.lecture import available_families

ROOT = Path(__file__).resolve().parent.parent


def test_without_cuda_it_says_skipped_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert capsys.readouterr().out == "skipped: no CUDA device\n"
    assert list(tmp_path.iterdir()) == []


def test_mfu_is_achieved_flops_over_the_bf16_dense_peak():
    # 30 GFLOP per training image at 5,000 images/s: 1.5e14 FLOP/s; on an H100 SXM (989 TFLOP/s) 15.17 %.
    r = gpu_check_report.mfu(30e9, 5000, 989e12)
    assert r["achieved_flop_per_s"] == pytest.approx(1.5e14)
    assert r["mfu"] == pytest.approx(0.151668, rel=1e-5)
    assert gpu_check_report.mfu(30e9, 5000, None)["mfu"] is None  # a GPU without a listed peak
    names = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12}  # fmt: skip
    for name, peak in names.items():
        assert gpu_check_report.peak_bf16(name)[1] == peak, name
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", "the CPU"):
        assert gpu_check_report.peak_bf16(unknown) is None


def test_curves_are_compared_after_smoothing():
    assert gpu_check_report.smooth([1.0, 2.0, 3.0, 4.0], 2) == [1.5, 2.5, 3.5]
    # smoothed over 2 steps: ref 1, 1, 1 and test 1, 1.1, 1.2; the largest difference is at the last step
    c = gpu_check_report.compare_curves([1.0, 1.0, 1.0, 1.0, 9.0], [1.0, 1.0, 1.2, 1.2], window=2)
    assert c["steps"] == 4 and c["at_step"] == 4
    assert c["max_rel_diff"] == pytest.approx(0.2) and c["final_ref"] == 1.0 and c["final_test"] == pytest.approx(1.2)
    assert c["noise"] == 0.0  # the reference's last 2 steps are equal
    # noise: stdev of the last window (1, 3: √2) / √2 / its mean 2 = 0.5
    assert gpu_check_report.compare_curves([1.0, 3.0, 1.0, 3.0], [1.0, 3.0, 1.0, 3.0], 2)["noise"] == pytest.approx(0.5)
    assert gpu_check_report.compare_curves([], [1.0], 2)["skipped"]
    # a loss that crosses zero (the GAN's hinge loss): the difference over the curve's scale, not over |ref| there
    assert gpu_check_report.compare_curves([2.0, 0.0, -2.0], [2.0, 0.02, -2.0], 1)["max_rel_diff"] == pytest.approx(0.01)


def test_the_full_run_fits_in_8_minutes_and_compares_bf16_compiled_with_fp32():
    assert sum(gpu_check.CAPS.values()) <= 8 * 60 - 30  # the rest: this process's start-up and the record
    assert all(cap > gpu_check.SOFT_MARGIN for cap in gpu_check.CAPS.values())
    runs = gpu_check.train_runs(compile=True)
    assert runs["bf16"] == ["trainer.precision=bf16-mixed", "model.compile=true"]
    assert runs["fp32"] == ["trainer.precision=32-true", "model.compile=false"]
    full = gpu_check.FULL
    assert (full["steps"], full["batch_size"], full["mfu_batch_size"], full["eval_n"]) == (300, 128, 128, 10_000)


def test_a_part_past_its_cap_is_killed_with_its_children():
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")  # fmt: skip
    start = time.perf_counter()
    rc, wall, text = gpu_check.run_capped([sys.executable, "-c", code], timeout=2, capture=True)
    assert rc is None and 2 <= wall < 30 and time.perf_counter() - start < 30
    child = int(text.split()[0])
    for _ in range(100):  # the grandchild went with its process group (reaped by init soon after)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"process {child} outlived the cap")


@pytest.fixture(scope="module")
def dry_record(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    assert gpu_check.main(["--cpu-dry-run", "--out", str(out), "--threads", "1"]) == 0
    return json.loads(out.read_text())


def test_cpu_dry_run_writes_a_record_of_every_part(dry_record):
    r = dry_record
    assert r["benchmark"] == "gpu_check" and r["mode"] == "cpu_dry_run" and r["wall_s"] > 0
    assert r["settings"]["device"] == "cpu" and r["settings"]["compile"] is False
    assert {"cpu", "torch", "gpu", "load_average_at_end"} <= set(r["machine"])
    for family in available_families():
        runs = r["train"][family]["runs"]
        assert runs["fp32"]["precision"] == "32-true" and runs["bf16"]["precision"] == "bf16-mixed"
        assert all(run["steps"] == gpu_check.DRY["steps"] for run in runs.values())
        comparison = r["train"][family]["comparison"]
        assert comparison and all(k.startswith("train/") and k.endswith("loss") for k in comparison)
        for c in comparison.values():  # bf16 rounds the loss by about 2^-8: a few steps stay within a few per cent
            assert 0 <= c["max_rel_diff"] < 0.1 and c["steps"] == gpu_check.DRY["steps"]
    m = r["mfu"]
    assert m["parameters"] == pytest.approx(35.7e6, rel=0.01)  # Ho et al.'s CIFAR-10 UNet
    assert m["train_flops_per_step"] == m["train_flops_per_image"] * m["batch_size"] > 0
    eager = m["eager"]
    assert eager["achieved_flop_per_s"] == pytest.approx(m["train_flops_per_image"] * eager["images_per_s"]["median"])
    assert eager["mfu"] is None and m["peak"]["skipped"] and m["compiled"]["skipped"]
    assert r["eval"]["images"] == gpu_check.DRY["eval_n"] and r["eval"]["evaluate_images_per_s"] > 0
    assert math.isfinite(r["eval"]["metrics"]["fid"])
    assert r["ddp"] == {"skipped": True, "reason": "0 GPU"}


def test_render_reads_the_record(dry_record):
    text = gpu_check_report.render(dry_record)
    assert "| part | result | target |" in text and "no GPU" in text
    for family in available_families():
        assert f"| {family} | `train/" in text
    assert "skipped: cpu dry run: no torch.compile" in text and "skipped: 0 GPU" in text
    assert "(MFU unknown: no bf16 peak listed for this device)" in text

    # The same record as a GPU would write it: the MFU against its peak, and DDP runs.
    gpu = json.loads(json.dumps(dry_record))
    gpu["machine"].update(gpu="NVIDIA H100 80GB HBM3", gpu_count=2)
    gpu["mfu"]["peak"] = {"device": "H100 SXM", "bf16_dense_flop_per_s": 989e12}
    gpu["mfu"]["compiled"] = {"images_per_s": {"median": 12_000.0}, **gpu_check_report.mfu(37.3e9, 12_000.0, 989e12)}
    gpu["ddp"] = {"gpus": 2, "vae": {"returncode": 0, "train_images_per_s": 51234.5, "skipped": False},
                  "gan": {"skipped": True, "reason": "time cap reached before this run"}}  # fmt: skip
    text = gpu_check_report.render(gpu)
    assert "45.3 %, met: 447.6 TFLOP/s of the H100 SXM's bf16 dense peak, 989 TFLOP/s (12,000 img/s × 37.3 GFLOP)" in text
    assert "vae: exit 0, 51234.5 img/s; gan: skipped: time cap reached before this run" in text


def test_speed_probe_prints_one_line(capsys):
    assert speed_probe.main() == 0
    line = capsys.readouterr().out
    assert re.fullmatch(r"speed probe: matmul \d+\.\d GFLOP/s, conv \d+\.\d GFLOP/s "
                        r"\(\d+ threads(, load \d+\.\d\d)?, \d{4}-\d\d-\d\d \d\d:\d\d\)\n", line), line  # fmt: skip


def test_make_lecture_prints_the_probe_first_and_gpu_check_is_a_target():
    recipes, target = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if re.match(r"^[\w-]+:", line):
            target = line.split(":")[0]
            recipes[target] = []
        elif line.startswith("\t") and target:
            recipes[target].append(line.strip())
    assert recipes["lecture"] == ["$(BIN)/python benchmarks/speed_probe.py",
                                  "$(BIN)/genbench-lecture $(if $(FAMILIES),--families $(FAMILIES))"]
    assert recipes["gpu-check"] == ["$(BIN)/python benchmarks/gpu_check.py"]
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    assert "gpu-check" in phony.split()
