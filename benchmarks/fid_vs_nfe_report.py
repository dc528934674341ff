"""The figure and the docs/performance.md rows of benchmarks/fid_vs_nfe.py (FID against NFE), from its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import plots

LABELS = {"ddpm": "Algorithm 2", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)", "sde_dpmpp_2m": "SDE-DPM-Solver++(2M)",
          "heun": "Heun (EDM)", "euler": "Euler", "midpoint": "midpoint", ("flow", "heun"): "Heun"}  # fmt: skip


def label(family: str, sampler: str) -> str:
    return LABELS.get((family, sampler)) or LABELS.get(sampler, sampler)


# --- the figure -------------------------------------------------------------------------------------------
def plot(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """FID against NFE (log-log), one panel per data set, one line per family/sampler; the real-sample floor dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.8 * len(curves), 3.8), squeeze=False)
    styles = {"ddpm": "-", "flow": "--"}
    markers = iter("os^vDP*X" * 2)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2)
    look: dict[tuple[str, str], tuple[str, str]] = {}
    for ax, (data, c) in zip(axes[0], curves.items(), strict=True):
        for family, fam in c["families"].items():
            if fam.get("skipped"):
                continue
            for sampler, by_nfe in fam["samplers"].items():
                if (family, sampler) not in look:
                    look[(family, sampler)] = (next(markers), next(colors))
                m, col = look[(family, sampler)]
                xs = [p["nfe"] for p in by_nfe.values()]
                ys = [p["fid_mean"] for p in by_nfe.values()]
                ax.plot(xs, ys, styles.get(family, "-") + m, color=col, ms=4,
                        label=f"{family.upper()}: {label(family, sampler)}")  # fmt: skip
        plots.style_fid_nfe_axes(ax, c, data, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


# --- docs/performance.md (rendered by benchmarks/render_docs.py) -----------------------------------------
def target_rows(rec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The record's rows of the targets table: the issue's ratio per data set (a target on its data set only),
    then the same ratio of each ``reported`` sampler (no target)."""
    from benchmarks.render_docs import _met, _x

    chk = rec["settings"]["check"]
    pm = lambda m, s: f"{m:.3g}" + (f" ± {s:.2g}" if s is not None else "")  # noqa: E731
    rows = []
    for data, c in rec["curves"].items():
        checks = [] if c.get("skipped") else [c.get("check"), *c.get("reported_checks", [])]
        for k in filter(None, checks):
            spread = [x for x in k["ratio_by_seed"] if x is not None]
            seeds = len(k["seeds"])
            fids = (f"{pm(k['fast_fid_mean'], k['fast_fid_std'])} vs {pm(k['reference_fid_mean'], k['reference_fid_std'])} = "
                    f"{_x(k['ratio'])}" + (f" (means of {seeds} sampling seeds; per seed {min(spread):.2f}–{max(spread):.2f}×)"
                                          if seeds > 1 and spread else " (one sampling seed)"))  # fmt: skip
            if c.get("real_floor_fid") is not None:
                fids += f"; real samples {c['real_floor_fid']:.3g}"
            model = c["families"][chk["family"]]["model"]["description"]
            is_target = data == chk["data"] and k["target"] is not None
            fast, ref = (label(chk["family"], k[x].split("@")[0]) for x in ("fast", "reference"))
            rows.append((f"{fast} at {k['fast_nfe']} NFE vs {ref} at {k['reference_nfe']} NFE, FID, {data} "
                         f"({model}, n = {c['num_samples']})", fids,
                         f"≤ {_x(k['target'])}" if is_target else "reported", _met(k["met"]) if is_target else "—"))  # fmt: skip
    return rows


def detail_lines(rec: dict[str, Any]) -> list[str]:
    """FID per sampler and target NFE, one table per data set."""
    out = []
    for data, c in rec["curves"].items():
        if c.get("skipped"):
            continue
        nfes = rec["settings"]["nfes"]
        cs = c.get("curve_seeds", 1)
        out += ["", f"FID against NFE, {data} ({c['features']} features, n = {c['num_samples']}, "
                f"{'mean of ' + str(cs) + ' sampling seeds' if cs > 1 else 'one sampling seed'}"
                + (f"; real samples {c['real_floor_fid']:.3g}" if c.get("real_floor_fid") is not None else "")
                + f"; `{rec['plot']}`; the NFE in brackets where no step count gives the target):", "",
                "| family | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---" * (len(nfes) + 2) + "|"]  # fmt: skip
        for family, fam in c["families"].items():
            if fam.get("skipped"):
                out.append(f"| {family.upper()} | skipped: {fam['reason']} |" + " |" * len(nfes))
                continue
            for sampler, by_nfe in fam["samplers"].items():
                cells = []
                for n in nfes:
                    p = by_nfe.get(str(n))
                    cells.append("—" if p is None else f"{p['fid_mean']:.3g}" + ("" if p["nfe"] == n else f" ({p['nfe']})"))
                out.append(f"| {family.upper()} | {label(family, sampler)} | " + " | ".join(cells) + " |")
    return out
