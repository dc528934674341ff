"""The benchmark scripts run on tiny sizes and write well-formed records (no timing thresholds here:
timings belong to `make bench`, whose records docs/performance.md quotes)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from benchmarks import (
    RECORD_VERSION,
    common,
    eval_throughput,
    eval_vs_cleanfid,
    feature_cost,
    flops,
    render_docs,
    sampling,
    sampling_vs_diffusers,
    scaling,
    train_loops,
    train_overhead,
)

MACHINE_KEYS = {"cpu", "cpu_cores", "torch_threads", "torch", "gpu", "load_average_at_start", "load_average_at_end"}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """A directory the tests of this module write their records into (rendered together at the end)."""
    return tmp_path_factory.mktemp("records")


def _read(path: Path, name: str) -> dict:
    rec = json.loads(path.read_text())
    assert rec["benchmark"] == name and rec["mode"] in ("quick", "full") and rec["record_version"] == RECORD_VERSION
    assert MACHINE_KEYS <= set(rec["machine"]), MACHINE_KEYS - set(rec["machine"])
    assert rec["wall_s"] > 0 and "_start" not in rec
    for when in ("start", "end"):
        assert rec["machine"][f"load_average_at_{when}"]["1min"] >= 0
    return rec


def _clocks_ok(by_clock: dict) -> None:
    """Both the wall clock and this process's CPU time were recorded."""
    assert {"wall", "cpu"} <= set(by_clock)
    for s in by_clock.values():
        _summary_ok(s)


def _summary_ok(s: dict) -> None:
    assert s["n"] == len(s["raw"]) >= 1 and s["min"] <= s["median"] <= s["max"] and math.isfinite(s["median"])


def test_interleaved_rotates_and_discards_the_warmup():
    calls: list[str] = []

    def case(name):
        return lambda: calls.append(name) or float(len(calls))

    out = common.interleaved({"a": case("a"), "b": case("b"), "c": case("c")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert out == {"a": [4.0, 9.0, 11.0], "b": [5.0, 7.0, 12.0], "c": [6.0, 8.0, 10.0]}
    assert common.ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == 2.0


def test_timed_records_wall_and_cpu_time():
    t, out = common.timed(lambda: sum(i * i for i in range(20_000)))
    assert out == sum(i * i for i in range(20_000))
    assert set(t) == {"wall", "cpu", "cpu_children"} and t["wall"] > 0 and t["cpu"] > 0 and t["cpu_children"] >= 0
    s = common.per_clock([t, t])
    assert s["wall"]["median"] == t["wall"] and s["cpu"]["n"] == 2
    load = common.load_average()
    assert set(load) == {"1min", "5min", "15min"} and load["1min"] >= 0


def test_peak_rss_sees_a_held_allocation():
    """The sampling thread records the resident memory while the block holds it. Only what the block
    holds is asserted: whether freed memory leaves the process is up to the allocator and the OS."""
    import time

    import torch

    with common.PeakRSS() as m:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        held = common.rss_mib()
        deadline = time.monotonic() + 10  # the sampler runs every 2 ms; a loaded machine may delay it
        while m.peak_mib < held - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = m.peak_mib
        del x
    assert seen >= held - 1 and m.peak_mib >= seen


def _train_overhead_record(records: Path) -> Path:
    out = records / "train_overhead_quick.json"
    if not out.exists():
        argv = ["--quick", "--families", "gan", "vae", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "1",
                "--toy-steps", "2", "--out", str(out)]  # fmt: skip
        assert train_overhead.main(argv) == 0
    return out


def test_train_overhead_record(one_thread, records):
    rec = _read(_train_overhead_record(records), "train_overhead")
    for fam in ("gan",):
        o = rec["overhead"][fam]
        _summary_ok(o["genbench_images_per_s"])
        _summary_ok(o["bare_images_per_s"])
        assert o["ratio"] > 0 and o["met"] == (o["ratio"] >= o["target"])
        _clocks_ok(o["images_per_s_by_clock"]["genbench"])
        assert o["ratio"] == o["ratio_by_clock"][o["clock"]]
        per = o["ratio_per_repeat"]
        assert len(per) == rec["settings"]["repeats"] and min(per) <= o["ratio"] <= max(per)
        _summary_ok(o["lightning_floor_images_per_s"])  # the bare step in the Trainer ran the same steps
        assert o["lightning_floor_vs_bare"] > 0 and o["genbench_vs_lightning_floor"] > 0
        assert o["lightning_auto_floor"]["skipped"]  # two optimizers stepped by hand: no automatic floor
        assert o["data"] == "mnist5k" and o["bare_ms_per_step"] > 0
        assert rec["adam_implementations"][fam]["for_loop_s_per_step"]["median"] > 0
        _clocks_ok(rec["adam_implementations"][fam]["for_loop_s_per_step_by_clock"])
        assert set(rec["gpu_options"][fam]) == {"bf16_mixed", "channels_last", "torch_compile", "fused_adamw"}
    vae = rec["overhead"]["vae"]  # one optimizer: the bare step also runs under automatic optimisation
    _summary_ok(vae["lightning_auto_floor_images_per_s"])
    assert vae["lightning_auto_floor_vs_bare"] > 0 and vae["genbench_vs_lightning_auto_floor"] > 0
    toy = rec["overhead_toy"]
    assert set(toy) == {"gan", "vae"} and all(t["data"] == "rings" and t["batch_size"] == 256 for t in toy.values())
    _summary_ok(toy["vae"]["lightning_auto_floor_images_per_s"])  # the Gaussian-likelihood bare VAE step ran
    assert rec["summary"]["toy_min_ratio"] == min(t["ratio"] for t in toy.values())
    _clocks_ok(rec["ema_update"]["gan"]["s_by_clock"]["genbench"])
    assert rec["ema_update"]["gan"]["tensors"] > 0 and train_overhead.ema_update("vae", None, 1)["skipped"]
    if not rec["machine"]["gpu"]:
        assert all(v["skipped"] and "CUDA" in v["reason"] for v in rec["gpu_options"]["gan"].values())


def test_flops_record(one_thread, records):
    out = records / "flops_quick.json"
    argv = ["--quick", "--networks", "gan", "vae", "--batch-size", "4", "--matmul-n", "128", "--conv-channels", "16",
            "--out", str(out)]  # fmt: skip
    assert flops.main(argv) == 0
    rec = _read(out, "flops")
    nets = rec["networks"]
    cifar = flops.count_flops("ddpm_unet_cifar10")  # counted on the meta device: no compute
    assert cifar["parameters"] == 35_746_307  # the paper's network
    assert 30e9 < cifar["train_flops_per_image"] < 45e9  # forward + backward: ~3 x 12.4 GFLOP per 32x32 image
    for n in nets.values():
        assert n["train_flops_per_image"] > 0 and n["fraction_of_matmul_peak"] > 0
        _clocks_ok(n["train_images_per_s_by_clock"])
    assert rec["peak"]["matmul_used"] > 0 and rec["peak"]["best_kernel_used"] >= rec["peak"]["matmul_used"]


def test_sampling_record(one_thread, records):
    out = records / "sampling_quick.json"
    argv = ["--quick", "--n", "2", "--ddpm-overrides", "model.T=60", "net.image.eps_net.ch=8", "net.image.eps_net.groups=4",
            "--rings-train-steps", "5", "--rings-samples", "60", "--fid-seeds", "2", "--out", str(out)]  # fmt: skip
    assert sampling.main(argv) == 0
    rec = _read(out, "sampling")
    speed = rec["speed"]
    assert {k: speed[k]["nfe"] for k in ("gan", "vae", "ddpm-60", "ddim-10", "ddim-20", "ddim-50")} == {
        "gan": 1, "vae": 1, "ddpm-60": 60, "ddim-10": 10, "ddim-20": 20, "ddim-50": 50}  # fmt: skip
    _clocks_ok(speed["ddim-10"]["images_per_s_by_clock"])
    points = rec["curves"]["rings"]["points"]
    assert set(points) == {"ddpm-60", *(f"ddim-{s}{v}" for s in (10, 20, 50) for v in ("", "-eta1", "-quad"))}
    assert set(rec["targets"]["fid_met"]["rings"]) == {"eta=0", "eta=1", "eta=0 quadratic"}
    assert rec["settings"]["ddim_variants"]["eta=0 quadratic"] == {"suffix": "-quad", "eta": 0.0, "spacing": "quadratic"}
    assert points["ddim-50-quad"]["fid"] != points["ddim-50"]["fid"]  # other timesteps, same x_T: another FID
    rings = rec["curves"]["rings"]
    assert rings["seeds"] == [0, 1] and rec["settings"]["fid_seeds"] == 2
    # the compared points are evaluated with both seeds, the first one being the plotted point; the others once
    ddim, ddpm = points["ddim-50-eta1"], points["ddpm-60"]
    assert len(ddim["fid_by_seed"]) == 2 and ddim["fid_by_seed"][0] == ddim["fid"]
    assert ddim["fid_by_seed"][1] != ddim["fid"]  # another seed, other samples
    assert ddim["fid_mean"] == pytest.approx(sum(ddim["fid_by_seed"]) / 2) and ddim["fid_std"] > 0
    assert "fid_by_seed" not in points["ddim-20"]
    floors = rings["real_floor_fid_by_seed"]
    assert len(floors) == 2 and floors[0] == rings["real_floor_fid"] and floors[1] != floors[0]  # other real samples
    assert rings["ddim50_at_floor"]["eta=1"] == (ddim["fid_mean"] <= rings["real_floor_fid_mean"])
    ratio = rings["ddim50_fid_vs_ddpm1000"]["eta=1"]
    assert ratio == pytest.approx(ddim["fid_mean"] / ddpm["fid_mean"])
    assert rings["ddim50_fid_vs_ddpm1000_by_seed"]["eta=1"] == pytest.approx(
        [a / b for a, b in zip(ddim["fid_by_seed"], ddpm["fid_by_seed"], strict=True)])
    assert rec["targets"]["fid_met"]["rings"]["eta=1"] == (ratio <= 1.1 or rings["ddim50_at_floor"]["eta=1"])
    assert all(math.isfinite(p["fid"]) for p in points.values())
    assert rec["curves"]["mnist5k"]["skipped"]
    assert (common.ROOT / rec["plot"] if not Path(rec["plot"]).is_absolute() else Path(rec["plot"])).is_file()
    assert rec["targets"]["speedup_met"] in (True, False)


@pytest.mark.slow
def test_scaling_record(one_thread, records):
    out = records / "scaling_quick.json"
    argv = ["--quick", "--sizes", "100", "200", "--families", "vae", "--batch-sizes", "4", "8", "--repeats", "1",
            "--threads", "1", "--memory-repeats", "1", "--out", str(out)]  # fmt: skip
    assert scaling.main(argv) == 0
    rec = _read(out, "scaling")
    assert set(rec["eval_time"]["seconds"]) == {"100", "200"} and "r2" in rec["eval_time"]["fit"]
    _clocks_ok(rec["eval_time"]["seconds"]["200"])
    assert [r["n"] for r in rec["peak_memory"]["rows"]] == [100, 200]
    assert set(rec["train_vs_batch_size"]["images_per_s"]["vae"]) == {"4", "8"}


@pytest.mark.slow
def test_eval_throughput_record(one_thread, records):
    out = records / "eval_throughput_quick.json"
    assert eval_throughput.main(["--quick", "--n", "20", "--batch-size", "20", "--repeats", "1", "--out", str(out)]) == 0
    rec = _read(out, "eval_throughput")
    c = rec["classifier"]
    assert c["agreement_rel_diff"]["fid"] < 1e-3  # same extractor, same images: the same FID as torch-fidelity
    _clocks_ok(c["seconds"]["genbench_cached"])
    _clocks_ok(c["seconds"]["genbench_rerun"])
    assert c["cache_met"] == (c["rerun_vs_cold_speedup"] >= c["cache_target"])
    assert {"cpu_children", "cpu_total"} <= set(c["seconds"]["torch_fidelity"])
    assert rec["inception"].get("skipped") or "seconds" in rec["inception"]


def test_sampling_vs_diffusers_record(one_thread, records):
    out = records / "sampling_vs_diffusers_quick.json"
    argv = ["--quick", "--batches", "1", "2", "--ddim-steps", "3", "--dpm-steps", "3", "--out", str(out)]
    assert sampling_vs_diffusers.main(argv) == 0
    rec = _read(out, "sampling_vs_diffusers")
    assert set(rec["against_diffusers"]) == {"ddim-3", "dpmpp_2m-3"}
    for d in rec["against_diffusers"].values():
        assert d["nfe"] == 3
        for b in ("batch_1", "batch_2"):
            _clocks_ok(d[b]["images_per_s_by_clock"]["genbench"])
            assert d[b]["ratio"] == d[b]["ratio_by_clock"]["cpu"] and d[b]["met"] == (d[b]["ratio"] >= 1.0)
            # the network's time split off: what is left is the sampler's own, a small part of a chain's CPU time
            outside = d[b]["cpu_s_outside_network"]
            for side in ("genbench", "diffusers"):
                chain_s = int(b[6:]) / d[b]["images_per_s_by_clock"][side]["cpu"]["median"]
                assert 0 < outside[side]["median"] < 0.9 * chain_s
    # the same solver on the same x_T: DPM-Solver++ agrees sample by sample (a random UNet: x̂_0 of scale
    # 1/√ᾱ_T ≈ 150, float32 against float64 coefficients); DDIM's steps end 20 or 21 lower in diffusers
    dpm = rec["against_diffusers"]["dpmpp_2m-3"]["batch_2"]
    assert dpm["max_abs_diff"] <= 1e-5 * max(dpm["max_abs"], 1.0)
    for fam in ("gan", "vae", "ddpm"):
        o = rec["overhead"][fam]
        assert o["batch_1"]["same_samples"] and o["batch_2"]["same_samples"]  # sample() computes what the bare calls do
        _clocks_ok(o["batch_2"]["ms_per_call_by_clock"]["sample"])
        assert o["batch_1"]["target"] == sampling_vs_diffusers.OVERHEAD_TARGET_BATCH_1 == 0.95
        assert o["met"] == (o["batch_2"]["sample_over_bare"] <= 1 / sampling_vs_diffusers.OVERHEAD_TARGET
                            and o["batch_1"]["sample_over_bare"] <= 1 / 0.95)  # fmt: skip


def test_ddim_sampler_is_bitwise_ddim_step(one_thread):
    """The DDIM sampler's precomputed coefficients give exactly the chain of NoiseSchedule.ddim_step
    (float32 and float64, clipped or not, η = 0 and η > 0): the speed-up changes no sample."""
    import torch

    from models.diffusion import NoiseSchedule
    from models.samplers import make_sampler

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    eps_fn = lambda x, t: conv(x.float()).to(x.dtype) + t.view(-1, 1, 1, 1).to(x.dtype) / 1000  # noqa: E731
    for schedule, steps, spacing in ((NoiseSchedule.linear(), 20, "linear"), (NoiseSchedule.linear(T=30), 30, "linear"),
                                     (NoiseSchedule.linear(), 7, "karras")):  # fmt: skip
        tau = schedule.timesteps(steps, spacing).tolist()
        for dtype, eta, clip in ((torch.float32, 0.0, None), (torch.float32, 1.0, (-1.0, 1.0)), (torch.float64, 0.5, (-1.0, 1.0))):
            x_T = torch.randn(3, 1, 6, 6, dtype=dtype)
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                ours = make_sampler("ddim", eta=eta, spacing=spacing).sample(eps_fn, schedule, x_T, steps, g, clip)
                x, g = x_T, torch.Generator().manual_seed(1)
                for i in reversed(range(steps)):
                    t = torch.full((3,), tau[i])
                    z = torch.randn(x.shape, generator=g).to(dtype) if eta > 0 else None
                    x = schedule.ddim_step(eps_fn(x, t), t, tau[i - 1] if i else -1, x, eta, z, clip)
            assert torch.equal(ours, x), (steps, spacing, dtype, eta, clip)


def test_feature_cost_record(one_thread, records):
    out = records / "feature_cost_quick.json"
    argv = ["--quick", "--spaces", "raw", "classifier", "dinov2-vits14", "--batch-scale", "0.01",
            "--thread-counts", "1", "2", "--out", str(out)]  # fmt: skip
    assert feature_cost.main(argv) == 0
    rec = _read(out, "feature_cost")
    s = rec["spaces"]
    assert {"raw", "classifier", "dinov2-vits14"} <= set(s)
    assert s["dinov2-vits14"]["feature_dim"] == 384 and s["classifier"]["feature_dim"] == 128 and s["raw"]["feature_dim"] == 2
    assert 21e6 < s["dinov2-vits14"]["parameters"] < 23e6  # ViT-S/14: 22 M
    for v in ("raw", "classifier", "dinov2-vits14"):
        _summary_ok(s[v]["images_per_s"]["threads_2"])
        assert s[v]["speedup_2_vs_1_threads"] > 0
    assert all(name in rec["registered"] for name in ("raw", "classifier", "inception", "dinov2", "clip"))


@pytest.mark.slow  # ~50 s: InceptionV3 at 299 x 299 on both sides and clean-fid's 2048 x 2048 matrix square root
def test_eval_vs_cleanfid_record(one_thread, records):
    out = records / "eval_vs_cleanfid_quick.json"
    assert eval_vs_cleanfid.main(["--quick", "--n", "6", "--out", str(out)]) == 0
    rec = _read(out, "eval_vs_cleanfid")
    c = rec["inception"]
    assert c["fid_rel_diff"] < 1e-3  # the same extractor and resize: the same FID as clean-fid
    _clocks_ok(c["seconds"]["genbench"])
    assert c["speedup_met"] == (c["speedup_vs_fastest_clean_fid"] >= 1.2)


def test_clean_fid_cannot_download_in_the_benchmark():
    fid = pytest.importorskip("cleanfid.fid")
    with eval_vs_cleanfid.clean_fid_offline():
        with pytest.raises(RuntimeError, match="tried to download or build its own network"):
            fid.compute_fid(".", ".", mode="clean", device="cpu", verbose=False)  # its Inception: refused
    assert fid.build_feature_extractor.__name__ == "build_feature_extractor"  # restored


def test_render_docs_between_markers(one_thread, records, tmp_path):
    _train_overhead_record(records)  # the records the other tests of this module wrote, at least this one
    table = render_docs.render(render_docs.load_records(records))
    assert "| measurement | result | target |" in table and "train_overhead_quick.json" in table
    if (records / "sampling_vs_diffusers_quick.json").is_file():  # written by the tests above when run together
        assert "Sampling vs diffusers, DDIM-3" in table and "Per-call overhead, GAN" in table
    if (records / "feature_cost_quick.json").is_file():
        assert "| dinov2-vits14 | 21.6 M | 384 |" in table
    page = tmp_path / "performance.md"
    page.write_text(f"# x\n\n## Measured\n\n{render_docs.START}\nPREVIOUS-TABLE\n{render_docs.END}\n\n## Notes\n")
    assert render_docs.main(["--results", str(records), "--page", str(page)]) == 0
    text = page.read_text()
    assert "PREVIOUS-TABLE" not in text and text.endswith(f"{render_docs.END}\n\n## Notes\n") and table in text
    assert render_docs.render({}).startswith("No benchmark records")
    assert render_docs.PAGE.relative_to(render_docs.ROOT).as_posix() == "docs/performance.md"
    with pytest.raises(SystemExit, match="no <!-- bench:start -->"):
        render_docs.update_page("# no markers\n", table)


@pytest.mark.parametrize("family,data", [("vae", "mnist5k"), ("vae", "rings"), ("ddpm", "rings")])
def test_bare_loss_is_genbench_loss(family, data):
    """The bare loop times the same maths: its loss equals genbench's on the same batch and random draws."""
    import copy

    import torch

    model, dm, cfg = common.build(family, train_loops.overrides(family, 8, torch.device("cpu"), [f"data={data}"]))
    parts = train_loops.bare_parts(family, copy.deepcopy(model), cfg, torch.device("cpu"))
    x = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)[0]
    torch.manual_seed(3)
    ours = model.negative_elbo(x)["loss"].mean() if family == "vae" else model.simple_loss(x)
    torch.manual_seed(3)
    bare = parts.loss(x)
    assert torch.allclose(bare, ours, rtol=1e-5, atol=1e-5), (float(bare), float(ours))


def test_fid_vs_nfe_record(one_thread, records):
    """The quick path on rings models trained for 5 steps: every sampler of both families at each target NFE, with the
    NFE models/samplers.py and models/flow.py give for the chosen steps (Heun 2s − 1, midpoint 2s, the others s)."""
    from benchmarks import fid_vs_nfe, fid_vs_nfe_report

    out = records / "fid_vs_nfe_quick.json"
    argv = ["--quick", "--data", "rings", "--train-steps", "5", "--samples", "40", "--nfes", "4,10", "--check-nfes", "4,10",
            "--seeds", "0,1", "--curve-seeds", "1", "--eval-set", "kid_subsets=5", "num_real=400", "--out", str(out)]  # fmt: skip
    assert fid_vs_nfe.main(argv) == 0
    rec = _read(out, "fid_vs_nfe")
    rings = rec["curves"]["rings"]
    assert rings["num_samples"] == 40 and rings["features"] == "raw" and rings["seeds"] == [0, 1]
    fams = rings["families"]
    assert set(fams["ddpm"]["samplers"]) == {"ddpm", "ddim", "dpmpp_2m", "sde_dpmpp_2m", "heun"}
    assert set(fams["flow"]["samplers"]) == {"euler", "midpoint", "heun"}
    nfe_of = {("ddpm", "heun"): lambda s: 2 * s - 1, ("flow", "heun"): lambda s: 2 * s - 1, ("flow", "midpoint"): lambda s: 2 * s}
    for family, fam in fams.items():
        assert fam["eval_config"]["kid_subsets"] == 5 and fam["eval_config"]["nll_samples"] == 0
        for sampler, by_nfe in fam["samplers"].items():
            assert set(by_nfe) == {"4", "10"}
            for target, p in by_nfe.items():
                assert p["nfe"] == nfe_of.get((family, sampler), lambda s: s)(p["steps"]) <= int(target)
                assert p["nfe_rule"] == ("exact" if p["nfe"] == int(target) else "nearest below")
                assert math.isfinite(p["fid"]) and p["fid_mean"] == pytest.approx(statistics.fmean(p["fid_by_seed"]))
                assert 0 <= p["high_quality_share"] <= 100 and 0 <= p["modes_covered"] <= p["num_modes"] == 8
    assert {(t, p["steps"], p["nfe"]) for t, p in fams["ddpm"]["samplers"]["heun"].items()} == {("4", 2, 3), ("10", 5, 9)}
    assert fams["flow"]["samplers"]["midpoint"]["10"]["steps"] == 5
    # the check's two points with both seeds (the others with one), its ratio that of the seeds' means
    fast, ref = fams["ddpm"]["samplers"]["sde_dpmpp_2m"]["4"], fams["ddpm"]["samplers"]["ddpm"]["10"]
    assert fast["seeds"] == ref["seeds"] == fams["ddpm"]["samplers"]["dpmpp_2m"]["4"]["seeds"] == [0, 1] and fams["ddpm"]["samplers"]["ddim"]["4"]["seeds"] == [0]
    assert fast["fid_by_seed"][0] != fast["fid_by_seed"][1]  # another seed, other samples
    k = rings["check"]
    assert k["ratio"] == pytest.approx(fast["fid_mean"] / ref["fid_mean"]) and k["met"] == (k["ratio"] <= 1.1)
    assert rec["targets"]["ratio"] is None  # the target is on mnist5k, not run here
    assert rings["real_floor_fid"] > 0 and rings["full_size_estimate_s"] > 0
    assert (common.ROOT / rec["plot"] if not Path(rec["plot"]).is_absolute() else Path(rec["plot"])).is_file()
    rows = fid_vs_nfe_report.target_rows(rec)  # the check, then the ODE form's ratio beside it
    assert [r[2] for r in rows] == ["reported", "reported"] and "means of 2 sampling seeds" in rows[0][1]
    assert rows[0][0].startswith("SDE-DPM-Solver++(2M) at 4 NFE vs Algorithm 2 at 10 NFE, FID, rings")
    assert rows[1][0].startswith("DPM-Solver++(2M) at 4 NFE") and rings["reported_checks"][0]["fast"] == "dpmpp_2m@4"
    lines = "\n".join(fid_vs_nfe_report.detail_lines(rec))
    assert "| DDPM | Heun (EDM) |" in lines and " (9) |" in lines and "| FLOW | midpoint |" in lines and "| FLOW | Heun |" in lines
    with pytest.raises(SystemExit, match="--check-nfes"):
        fid_vs_nfe.main(["--nfes", "10,20", "--check-nfes", "20,100", "--out", str(out)])
    with pytest.raises(SystemExit, match="must be FAMILY=PATH"):
        fid_vs_nfe.main(["--ckpt", "gan=x.ckpt", "--out", str(out)])
