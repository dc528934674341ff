"""Render the performance tables of ``docs/performance.md`` from the JSON records in ``benchmarks/results/``.

The tables go between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in the page; everything
else in it is left alone. For each benchmark the full record (``make bench``) is used,
or the quick one (``make bench-quick``) when there is no full record; the table says which, and
gives the machine and load average of every record it quotes.

    python benchmarks/render_docs.py            # rewrite the tables in docs/performance.md
    python benchmarks/render_docs.py --print    # print the tables only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "performance.md"
sys.path.insert(0, str(ROOT))

from benchmarks import RECORD_VERSION  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHMARKS = ("train_overhead", "eval_throughput", "eval_vs_cleanfid", "sampling", "sampling_vs_diffusers", "scaling",
              "flops", "feature_cost", "fid_vs_nfe")  # fmt: skip
#: Benchmarks whose script renders its own rows: name -> (targets-table rows, lines after the tables), each a
#: function of benchmarks/<name>.py or, written "module.function", of benchmarks/<module>.py
SELF_RENDERED = {"eval_vs_cleanfid": ("target_rows", None), "sampling_vs_diffusers": ("target_rows", None),
                 "feature_cost": (None, "detail_lines"), "fid_vs_nfe": ("fid_vs_nfe_report.target_rows", "fid_vs_nfe_report.detail_lines")}  # fmt: skip


def load_records(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The newest record of each benchmark: the full one if present, else the quick one."""
    out = {}
    for name in BENCHMARKS:
        for suffix in ("", "_quick"):
            path = results / f"{name}{suffix}.json"
            if path.is_file():
                rec = json.loads(path.read_text())
                if rec.get("record_version") == RECORD_VERSION:  # older layouts are not quoted
                    rec["_file"] = path.name
                    out[name] = rec
                    break
    return out


def _x(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}×"


def _n(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}g}"


def _pm(point: dict[str, Any]) -> str:
    """A point's mean FID over the sampling seeds ± their standard deviation."""
    return f"{point['fid_mean']:.3g} ± {point['fid_std']:.2g}"


def _weights(s: dict[str, Any]) -> str:
    w = s.get("weights")
    if not w:
        return ""
    return "; random weights: the timing is valid, the metrics' values mean nothing" if w.startswith("random") else f"; weights: {w}"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _load(load: dict[str, float] | None) -> str:
    return "?" if not load else f"{load['1min']:.1f}"


def _clock(clock: str | None) -> str:
    return "over the process's CPU time" if clock == "cpu" else "wall clock"


def _sizes(sizes: list[int]) -> str:
    def one(n: int) -> str:
        if n >= 10**6 and n % 10**6 == 0:
            return f"{n // 10**6}M"
        return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)

    return " / ".join(one(n) for n in sizes)


def _med(d: dict[str, Any]) -> float:
    return d["median"]


def _floors(o: dict[str, Any]) -> str:
    """The bare step inside the same ``Trainer`` (manual and automatic optimisation) against the bare loop,
    and genbench over the closer of the two (the one with genbench's optimisation mode)."""
    if "lightning_floor_vs_bare" not in o:
        return ""
    text = f"; the bare step in the same `Trainer`: {_x(o['lightning_floor_vs_bare'], 3)} by hand"
    if "lightning_auto_floor_vs_bare" in o:
        return (text + f", {_x(o['lightning_auto_floor_vs_bare'], 3)} with Lightning's automatic optimisation; genbench "
                f"over the latter {_x(o['genbench_vs_lightning_auto_floor'], 3)}")  # fmt: skip
    return text + f"; genbench over it {_x(o['genbench_vs_lightning_floor'], 3)}"


#: Targets the performance issue retired, because they measure run-to-run noise rather than a cost: the VAE's
#: training loop at 0.97x the bare loop on mnist5k, and a cached classifier-space re-run 10x faster than a cold one.
#: Their measurements stay in the table, without a target.
RETIRED = {("train_overhead", "vae", "mnist5k"), ("eval_throughput", "classifier", "rerun")}


def _target(key: tuple[str, str, str], target: str, met: Any) -> tuple[str, str]:
    """(target, verdict) of a row: retired targets and rows that are only reported have none."""
    if key in RETIRED:
        return "retired (noise)", "—"
    return target, _met(met)


def target_rows(r: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    rows = []
    if "train_overhead" in r:
        rec = r["train_overhead"]
        for fam, o in [*rec["overhead"].items(), *rec.get("overhead_toy", {}).items()]:
            wall = f"; wall clock {_x(o['ratio_by_clock']['wall'], 3)}" if o.get("clock") == "cpu" else ""
            per = o.get("ratio_per_repeat")
            spread = f" (repeats {min(per):.3f}–{max(per):.3f})" if per else ""
            spread += _floors(o)
            data = f" on {o['data']}" if o.get("data", "mnist5k") != "mnist5k" else ""
            step = f", {o['bare_ms_per_step']:.1f} ms per bare step" if "bare_ms_per_step" in o else ""
            toy = o.get("data", "mnist5k") != "mnist5k"  # the 2-D rows are reported, the target is on mnist5k
            target = ("—", "reported") if toy else _target(("train_overhead", fam, "mnist5k"), f"≥ {o['target']}×", o["met"])
            rows.append((f"Training loop, {fam.upper()}{data} (batch {o['batch_size']}{step}): genbench `Trainer` / bare PyTorch",
                         f"{_n(_med(o['genbench_images_per_s']))} / {_n(_med(o['bare_images_per_s']))} img/s "
                         f"({_clock(o.get('clock'))}) = {_x(o['ratio'], 3)}{spread}{wall}", *target))  # fmt: skip
    if "eval_throughput" in r:
        rec = r["eval_throughput"]
        n = rec["settings"]["generated_images"]
        for space, label in (("classifier", "classifier features"), ("inception", "InceptionV3")):
            s = rec.get(space, {})
            if s.get("skipped"):
                rows.append((f"Evaluation vs torch-fidelity, {label}", f"skipped: {s['reason'].split(':')[0]}", "≥ 1.2×", "—"))
                continue
            sec = {k: v["wall"] for k, v in s["seconds"].items()}
            cpu = {k: v["cpu_total"] for k, v in s["seconds"].items()}
            cpu_x = s["genbench_cold_vs_torch_fidelity_speedup_by_clock"].get("cpu_total")
            n_gen, n_real = s.get("generated_images", n), s.get("real_images", rec["settings"]["real_images"])
            rows.append((f"Evaluation vs torch-fidelity, {label} ({n_gen} + {n_real} PNGs, FID/IS/KID)",
                         f"wall {_med(sec['torch_fidelity']):.2f} s / {_med(sec['genbench_cold']):.2f} s = "
                         f"{_x(s['genbench_cold_vs_torch_fidelity_speedup'])}; CPU (with worker processes) "
                         f"{_med(cpu['torch_fidelity']):.2f} s / {_med(cpu['genbench_cold']):.2f} s = {_x(cpu_x)}; "
                         f"FID agrees to {s['agreement_rel_diff']['fid']:.1e}{_weights(s)}",
                         f"≥ {s['speedup_target']}×", _met(s["speedup_met"])))  # fmt: skip
            rerun_cpu = s["rerun_vs_cold_speedup_by_clock"].get("cpu_total")
            rows.append((f"Cached re-run vs cold, {label} (`genbench-evaluate` on the same folder, end to end)",
                         f"wall {_med(sec['genbench_cold']):.2f} s / {_med(sec['genbench_rerun']):.2f} s = "
                         f"{_x(s['rerun_vs_cold_speedup'])}; CPU {_x(rerun_cpu)}; with the real statistics alone cached "
                         f"{_med(sec['genbench_cached']):.2f} s = {_x(s['cached_vs_cold_speedup'])} (the {n_gen} "
                         f"generated images are featurised; extracting features alone, that could save at most "
                         f"{n_real} of {n_gen + n_real} images' worth)",
                         *_target(("eval_throughput", space, "rerun"), f"≥ {s['cache_target']:.0f}×", s["cache_met"])))  # fmt: skip
        rs = rec.get("real_statistics_step")
        if rs:
            sec = {k: v["wall"] for k, v in rs["seconds"].items()}
            rows.append((f"… the real-statistics step alone ({rs['real_images']} images): computed / loaded",
                         f"{_med(sec['computed']) * 1e3:.1f} ms / {_med(sec['loaded']) * 1e3:.1f} ms = "
                         f"{_x(rs['loaded_vs_computed_speedup'], 0)}; the rest of a run is fixed costs and the generated side "
                         f"(mnist5k data set-up alone {_med(rec['mnist5k_setup_s']['wall']):.2f} s)",
                         "", ""))  # fmt: skip
    if "sampling" in r:
        rec = r["sampling"]
        t = rec["targets"]
        sp = rec["speed"]
        ddpm_name = next(k for k in sp if k.startswith("ddpm-")).upper()
        wall = (sp.get("ddim50_vs_ddpm1000_speedup_by_clock") or {}).get("wall")
        rows.append((f"DDIM-50 vs {ddpm_name} speed (default UNet, {sp['batch']} images per call, "
                     f"{_clock(sp.get('clock'))})",
                     _x(t["ddim50_speedup"], 1) + (f"; wall clock {_x(wall, 1)}" if sp.get("clock") == "cpu" and wall else ""),
                     f"≥ {t['speedup_target']:.0f}×", _met(t["speedup_met"])))  # fmt: skip
        for data, by_eta in t["ddim50_fid_ratio"].items():
            c = rec["curves"][data]
            p = c["points"]
            ddpm = next(k for k in p if k.startswith("ddpm"))
            variants = rec["settings"].get("ddim_variants") or {}
            for eta, ratio in by_eta.items():
                if eta in variants:  # "eta=0 quadratic" -> ddim-50-quad
                    name, desc = f"ddim-50{variants[eta]['suffix']}", f"η = {variants[eta]['eta']:g}"
                    desc += "" if variants[eta]["spacing"] == "linear" else f", {variants[eta]['spacing']} steps"
                else:  # records before the variants: eta=0 / eta=1 on linear steps
                    name = "ddim-50" if eta == "eta=0" else f"ddim-50-eta{eta.split('=')[1]}"
                    desc = f"η = {eta.split('=')[1]}"
                extra = ""
                if p[ddpm].get("high_quality_share") is not None:
                    extra = f"; within 3σ of a mode {p[name]['high_quality_share']:.1%} vs {p[ddpm]['high_quality_share']:.1%}"
                seeds = len(c.get("seeds", [0]))
                if c.get("real_floor_fid") is not None:
                    extra += f"; real samples {c.get('real_floor_fid_mean', c['real_floor_fid']):.3g}"
                if seeds > 1:  # the mean FIDs over the sampling seeds, and the spread of each seed's own ratio
                    per_seed = [x for x in c["ddim50_fid_vs_ddpm1000_by_seed"][eta] if x is not None]
                    fids = (f"{_pm(p[name])} vs {_pm(p[ddpm])} = {_x(ratio)} (means of {seeds} sampling seeds; "
                            f"per seed {min(per_seed):.2f}–{max(per_seed):.2f}×)")  # fmt: skip
                else:
                    fids = f"{p[name]['fid']:.3g} vs {p[ddpm]['fid']:.3g} = {_x(ratio)}"
                rows.append((f"DDIM-50 ({desc}) vs {ddpm.upper()} FID, {data} ({c['model']['description']}, "
                             f"n = {c['num_samples']})",
                             fids + extra,
                             f"≤ {t['fid_ratio_target']:.2f}× (or ≤ real samples)", _met(t["fid_met"][data][eta])))  # fmt: skip
    rows += _self_rendered(r, 0, ("eval_vs_cleanfid", "sampling_vs_diffusers", "fid_vs_nfe"))
    if "scaling" in r:
        rec = r["scaling"]
        e, m = rec["eval_time"], rec["peak_memory"]
        secs = {n: v[e["clock"]] for n, v in e["seconds"].items()}
        what = "CPU s" if e["clock"] == "cpu" else "s"
        rows.append((f"Evaluation time vs n = {_sizes(e['sizes'])} (classifier space)",
                     " / ".join(f"{_med(secs[str(n)]):.2f}" for n in e["sizes"]) + f" {what}; least-squares fit R² = "
                     f"{e['fit']['r2']:.3f}, {e['fit']['s_per_1k_samples']:.2f} {what} per 1k",
                     "linear", _met(e["fit"]["r2"] >= 0.98)))  # fmt: skip
        fx, copies = m.get("fixed_mmap_threshold"), m.get("feature_copies", 1)
        fixed = "" if not fx else (" / ".join(f"{g:.0f}" for g in fx["rss_peak_mib"]) + f" MiB: {fx['peak_per_1k_samples_mib']:+.2f} "
                                   "MiB per 1k with glibc's mmap threshold fixed; as is ")  # fmt: skip
        rows.append((f"Peak memory of one evaluation vs n = {_sizes(m['sizes'])} (resident, a fresh process per size)",
                     fixed + " / ".join(f"{g:.0f}" for g in m["rss_peak_mib"]) + f" MiB: {m['peak_per_1k_samples_mib']:+.2f} "
                     f"MiB per 1k, what the allocator keeps of freed blocks included (the metrics hold "
                     f"{copies} copies of {m['features_kept_per_1k_mib']:.2f} MiB of features per 1k)",
                     f"≤ {2 * copies * m['features_kept_per_1k_mib']:.2f} MiB per 1k (no n² term)", _met(m["met"])))  # fmt: skip
        t = rec.get("train_memory", {})
        if not t.get("skipped"):
            f = t.get("fixed_mmap_threshold")
            fixed = (" / ".join(f"{g:.0f}" for g in f["peak_less_data_mib"]) + f" MiB: {f['peak_less_data_per_1m_points_mib']:+.1f} "
                     "MiB per 1M points with glibc's mmap threshold fixed; as is ") if f else ""
            rows.append((f"Training memory vs data set size ({_sizes(t['sizes'])} points, VAE on rings; peak less the data set)",
                         fixed + " / ".join(f"{g:.0f}" for g in t["peak_less_data_mib"]) + f" MiB: "
                         f"{t['peak_less_data_per_1m_points_mib']:+.1f} MiB per 1M points" + (", freed blocks the allocator "
                         "keeps included" if f else ""),
                         f"< {t['data_per_1m_points_mib']:.1f} MiB per 1M (one copy of the data)", _met(t["met"])))  # fmt: skip
    return rows


def detail_tables(r: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    if "sampling" in r:
        sp = r["sampling"]["speed"]
        names = [k for k, v in sp.items() if isinstance(v, dict) and "nfe" in v]
        out += ["", f"Sampling cost (mnist5k default networks, {sp['batch']} images per `sample()` call; "
                f"quality–speed curve: `{r['sampling']['plot']}`):", "",
                "| | " + " | ".join(n.upper() for n in names) + " |", "|---" * (len(names) + 1) + "|",
                *(f"| images/s ({'CPU time' if c == 'cpu' else 'wall clock'}) | "
                  + " | ".join(_n(_med(sp[n]["images_per_s_by_clock"][c])) for n in names) + " |"
                  for c in ("cpu", "wall") if all(c in sp[n].get("images_per_s_by_clock", {}) for n in names)),
                "| NFE | " + " | ".join(str(sp[n]["nfe"]) for n in names) + " |"]  # fmt: skip
        curves = {k: v for k, v in r["sampling"]["curves"].items() if not v.get("skipped")}
        if curves:
            pts = list(next(iter(curves.values()))["points"])
            seeds = max(len(c.get("seeds", [0])) for c in curves.values())
            if seeds > 1:
                out += ["", f"FID per sampler with the first sampling seed (the curve's points; the target rows above "
                        f"use the means of {seeds} seeds):"]  # fmt: skip
            out += ["", "| FID | " + " | ".join(p.upper() for p in pts) + " |", "|---" * (len(pts) + 1) + "|"]
            for data, c in curves.items():
                out.append(f"| {data} ({c['features']}) | " + " | ".join(f"{c['points'][p]['fid']:.3g}" for p in pts) + " |")
    if "flops" in r:
        rec = r["flops"]
        pk = rec["peak"]
        out += ["", f"Hardware utilisation (fp32 matmul peak {pk['matmul_used'] / 1e9:.0f} GFLOP/s, best kernel "
                f"(3×3 conv) {pk['best_kernel_used'] / 1e9:.0f} GFLOP/s, measured in the same run):", "",
                "| network | parameters | GFLOP per training image | train images/s (batch) | achieved GFLOP/s | of matmul peak | of best kernel |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, n in rec["networks"].items():
            out.append(f"| {name} | {n['parameters'] / 1e6:.2f} M | {n['train_flops_per_image'] / 1e9:.3g} | "
                       f"{_n(_med(n['train_images_per_s']))} ({n['batch_size']}) | {n['achieved_flop_per_s'] / 1e9:.1f} | "
                       f"{n['fraction_of_matmul_peak']:.0%} | {n['fraction_of_best_kernel_peak']:.0%} |")  # fmt: skip
    if "scaling" in r:
        tb = r["scaling"]["train_vs_batch_size"]["images_per_s"]
        sizes = sorted({int(b) for d in tb.values() for b in d})
        clock = r["scaling"]["train_vs_batch_size"]["clock"]
        out += ["", f"Training images/s (genbench `Trainer`, {_clock(clock)}) against batch size:", "",
                "| family | " + " | ".join(str(b) for b in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]  # fmt: skip
        for fam, d in tb.items():
            out.append(f"| {fam.upper()} | " + " | ".join(_n(_med(d[str(b)])) if str(b) in d else "—" for b in sizes) + " |")
    out += _self_rendered(r, 1, ("feature_cost", "fid_vs_nfe"))
    if "train_overhead" in r:
        rec = r["train_overhead"]
        gpu = next(iter(rec["gpu_options"].values()), {})
        opts = ", ".join(k for k in gpu)
        if all(v.get("skipped") for v in gpu.values()):
            out += ["", f"GPU options ({opts}): skipped, {next(iter(gpu.values()))['reason']}."]
        else:
            out += ["", "GPU options, speed-up when on (bare loop unless noted):", "", "| family | " + " | ".join(gpu) + " |",
                    "|---" * (len(gpu) + 1) + "|"]  # fmt: skip
            for fam, g in rec["gpu_options"].items():
                out.append(f"| {fam.upper()} | " + " | ".join("skipped" if v.get("skipped") else _x(v["speedup"]) for v in g.values()) + " |")
    return out


def _self_rendered(r: dict[str, dict[str, Any]], part: int, names: tuple[str, ...]) -> list[Any]:
    """Rows (``part`` 0) or lines (1) that the scripts of ``names`` render from their own records."""
    import importlib

    out: list[Any] = []
    for name in names:
        fn = SELF_RENDERED[name][part]
        if name in r and fn:
            module, _, fn = fn.rpartition(".")
            out += getattr(importlib.import_module(f"benchmarks.{module or name}"), fn)(r[name])
    return out


def render(records: dict[str, dict[str, Any]]) -> str:
    if not records:
        return "No benchmark records yet: run `make bench`."
    first = next(iter(records.values()))["machine"]
    gpu = first.get("gpu") or "no GPU"
    cpus = sorted({rec["machine"]["cpu"] for rec in records.values()})
    lines = [
        "<!-- generated by benchmarks/render_docs.py from benchmarks/results/*.json: edit the script, not this table -->",
        f"Machine: {first['cpu']}, {first['cpu_cores']} cores, {first['torch_threads']} torch thread(s), {gpu}, "
        f"torch {first['torch']}, Lightning {first.get('lightning', '?')}"
        + (f"; the records come from {len(cpus)} kinds of CPU ({', '.join(cpus)}), each named in the list below." if
           len(cpus) > 1 else "."),
        "",
        "| measurement | result | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(records)]
    lines += detail_tables(records)
    lines += ["", "Records (1-minute load average = runnable processes on the machine, at start → end; "
              f"above {first['cpu_cores']} the cores were shared with other jobs):", ""]  # fmt: skip
    for rec in records.values():
        m = rec["machine"]
        cpu = f", {m['cpu']}" if len(cpus) > 1 else ""
        lines.append(f"- `benchmarks/results/{rec['_file']}` ({rec['mode']}, {rec['date']}{cpu}, {rec['wall_s']:.0f} s): "
                     f"load {_load(m.get('load_average_at_start'))} → {_load(m.get('load_average_at_end'))}")  # fmt: skip
    return "\n".join(lines)


def gpu_check_section(results: Path) -> str:
    """``make gpu-check``'s record (benchmarks/results/gpu_check.json), where one was made on a GPU machine."""
    path = results / "gpu_check.json"
    if not path.is_file():
        return ""
    from benchmarks import gpu_check_report

    return "\n\n" + gpu_check_report.render(json.loads(path.read_text()))


def update_page(text: str, table: str, name: str = "docs/performance.md") -> str:
    """``text`` with everything between the markers replaced by ``table``."""
    if START not in text or END not in text:
        raise SystemExit(f"{name} has no {START} … {END} markers: add them where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the tables, leave the page alone")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--page", default=str(PAGE), help="the page holding the markers (default: docs/performance.md)")
    args = parser.parse_args(argv)
    table = render(load_records(Path(args.results))) + gpu_check_section(Path(args.results))
    if args.print:
        print(table)
        return 0
    page = Path(args.page)
    page.write_text(update_page(page.read_text(), table, str(page)))
    print(f"rendered {len(table.splitlines())} lines into {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
