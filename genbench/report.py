"""The comparison report: ``report.md`` + PNG figures, also logged to W&B.

``build_report(root)`` reads every run under ``root`` (its ``results.json`` and checkpoint),
groups them by data set and family, and writes into ``root``:

- ``report.md``: the table (mean ± std over seeds) and every figure below;
- ``table.md`` / ``table.csv``: the table alone (as ``genbench-compare`` prints it);
- ``samples.png``: the families' samples side by side, from the same fixed seeds;
- ``forward_diffusion.png``, ``reverse_chain.png``: the DDPM chains x_0 → x_T and x_T → x_0;
- ``vae_reconstructions.png``, ``vae_interpolation.png``, ``gan_interpolation.png``;
- ``fid_vs_time.png``: FID against wall-clock training time;
- ``trilemma.png``: quality / diversity / sampling speed;
- ``toy.png``: each family's samples over the true modes of the 2-D data sets.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from genbench import figures
from genbench.checkpoint import load_model
from genbench.checks import is_int
from genbench.compare import flatten, group_records, to_csv, to_markdown
from genbench.errors import GenbenchError
from genbench.io import atomic_write_bytes, read_results

FAMILY_ORDER = ("gan", "vae", "ddpm")
SAMPLE_SEED = 1234
# Points per family in toy.png: as many as the evaluation scored (its modes / 3σ share label the panel), at most this.
TOY_POINTS = 2000


@dataclass
class Run:
    dir: Path
    results: dict[str, Any]

    @property
    def family(self) -> str:
        return self.results["family"]

    @property
    def data(self) -> str:
        return self.results["data"]

    @property
    def seed(self) -> int:
        return int(self.results.get("seed", 0))

    @property
    def eval(self) -> dict[str, Any]:
        return self.results.get("eval") or {}

    def model(self):
        return load_model(self.results.get("checkpoint") or self.dir / "checkpoints" / "last.ckpt")

    def datamodule(self):
        dm = instantiate(self.results["config"]["data"], _convert_="all")
        dm.setup()
        return dm

    def history(self) -> list[dict[str, float]]:
        """Evaluations made during training (``eval_history.jsonl``: time_s, step, fid, ...)."""
        path = self.dir / "eval_history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_runs(root: Path) -> list[Run]:
    """The finished runs under ``root``; unreadable ``results.json`` files are skipped with a note."""
    runs = []
    for f in sorted(root.rglob("results.json")):
        try:
            res = read_results(f)
        except ValueError as e:
            print(f"genbench-lecture: skipping unreadable {f}: {e}", file=sys.stderr)
            continue
        if res.get("status", "ok") == "ok" and res.get("family"):
            runs.append(Run(f.parent, res))
    return runs


def _by_data_family(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        out[r.data][r.family].append(r)
    for d in out:
        out[d] = dict(sorted(out[d].items(), key=lambda kv: FAMILY_ORDER.index(kv[0]) if kv[0] in FAMILY_ORDER else 9))
        for f in out[d]:
            out[d][f].sort(key=lambda r: r.seed)
    return dict(out)


def _sample_kwargs(run: Run) -> dict[str, Any]:
    """The evaluation's sampler settings (e.g. DDIM steps), so pictures show what was scored."""
    return dict((run.results.get("config") or {}).get("eval", {}).get("sample_kwargs") or {})


def _toy_points(run: Run) -> int:
    """Points of a 2-D run's scatter: the evaluation's sample count, at most TOY_POINTS."""
    n = run.eval.get("num_samples")
    return min(TOY_POINTS, n) if is_int(n, 1) else TOY_POINTS


def lecture_pictures(image_runs: dict[str, list[Run]], out: Path, n: int = 64) -> dict[str, Path]:
    """Samples side by side + the lecture's pictures, from the first seed of each family."""
    made: dict[str, Path] = {}
    models = {f: runs[0].model() for f, runs in image_runs.items()}
    samples = {f: figures.fixed_seed_samples(m, n, SAMPLE_SEED, **_sample_kwargs(image_runs[f][0])) for f, m in models.items()}
    made["samples"] = figures.samples_side_by_side(samples, out / "samples.png", title=f"{n} samples per family, seed {SAMPLE_SEED}")
    some_run = next(iter(image_runs.values()))[0]
    real = some_run.datamodule().real_samples("val", n=8)
    g = torch.Generator().manual_seed(SAMPLE_SEED)

    if "ddpm" in models:
        ddpm = models["ddpm"]
        sched = ddpm.schedule
        T = sched.T
        ts = [0, T // 20, T // 10, T // 5, T // 3, T // 2, 2 * T // 3, 5 * T // 6, T - 1]
        x0 = real[:4]
        noise = torch.randn(x0.shape, generator=g)
        rows = []
        for i in range(len(x0)):
            frames = [sched.q_sample(x0[i : i + 1], torch.tensor([t]), noise[i : i + 1])[0] for t in ts]
            rows.append((f"digit {i + 1}", torch.stack([x0[i]] + frames[1:])))
        made["forward_diffusion"] = figures.image_rows(
            rows, out / "forward_diffusion.png",
            title="Forward process q(x_t | x_0): t = " + ", ".join(str(t + 1) for t in ts) + f" of T = {T}")
        traj = ddpm.sample(4, generator=torch.Generator().manual_seed(SAMPLE_SEED), return_trajectory=True,
                           **_sample_kwargs(image_runs["ddpm"][0]))
        chain = traj[1] if isinstance(traj, tuple) else traj  # [steps + 1, n, C, H, W], x_T first
        idx = torch.linspace(0, len(chain) - 1, 10).round().long()
        rows = [(f"chain {i + 1}", chain[idx, i]) for i in range(chain.shape[1])]
        made["reverse_chain"] = figures.image_rows(rows, out / "reverse_chain.png", title="Reverse process x_T → x_0 (Algorithm 2)")

    if "vae" in models:
        vae = models["vae"]
        made["vae_reconstructions"] = figures.image_rows(
            [("data", real), ("reconstruction", vae.reconstruct(real))], out / "vae_reconstructions.png",
            title="VAE: x and the decoded posterior mean of q(z|x)")
        rows = [(f"{a}→{b}", vae.interpolate(real[a], real[b], steps=10)) for a, b in ((0, 1), (2, 3), (4, 5))]
        made["vae_interpolation"] = figures.image_rows(rows, out / "vae_interpolation.png",
                                                       title="VAE: decoded straight lines between two encodings")

    if "gan" in models:
        gan = models["gan"]
        z = torch.randn(6, gan.latent_dim, generator=g)
        rows = [(f"walk {k + 1}", gan.interpolate(z[2 * k], z[2 * k + 1], steps=10)) for k in range(3)]
        made["gan_interpolation"] = figures.image_rows(rows, out / "gan_interpolation.png",
                                                       title="GAN: generator along straight lines in z")
    return made


def _mean(runs: list[Run], key: str) -> float | None:
    vals = [r.eval.get(key) for r in runs if isinstance(r.eval.get(key), (int, float))]
    return sum(vals) / len(vals) if vals else None


def build_report(root: str | Path, wandb_group: str | None = None) -> Path:
    """Write the report of every run under ``root``; returns the path of ``report.md``."""
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise GenbenchError(f"no finished runs (results.json) under {root}: train them first (genbench-lecture without "
                            "--report-only), or give --out the directory that holds them")
    grouped = _by_data_family(runs)
    groups = group_records([flatten(r.results) for r in runs])
    table = to_markdown(groups)
    atomic_write_bytes(root / "table.md", table.encode())
    atomic_write_bytes(root / "table.csv", to_csv(groups).encode())

    made: dict[str, Path] = {}
    image_data = [d for d, fams in grouped.items() if len(next(iter(fams.values()))[0].results["config"]["data"]["shape"]) == 3]
    toy_data = [d for d in grouped if d not in image_data]
    for d in image_data[:1]:
        made.update(lecture_pictures(grouped[d], root))
        hist = {f: rs[0].history() for f, rs in grouped[d].items()}
        if any(hist.values()):
            made["fid_vs_time"] = figures.fid_vs_time(hist, root / "fid_vs_time.png")
        made["trilemma"] = figures.trilemma(
            {f: {k: _mean(rs, k) for k in ("fid", "precision", "recall", "coverage", "sample_images_per_s")}
             for f, rs in grouped[d].items()}, root / "trilemma.png")
    if toy_data:
        panels, centers, stds = {}, {}, {}
        for d in toy_data:
            first = next(iter(grouped[d].values()))[0]
            dm = first.datamodule()
            centers[d], stds[d] = dm.centers, dm.std
            panels[d] = {f: (figures.fixed_seed_samples(rs[0].model(), _toy_points(rs[0]), SAMPLE_SEED, **_sample_kwargs(rs[0])),
                             rs[0].eval) for f, rs in grouped[d].items()}  # fmt: skip
        made["toy"] = figures.toy_scatter(panels, centers, stds, root / "toy.png")

    md = render_markdown(root, runs, grouped, table, made, image_data, toy_data)
    report = root / "report.md"
    atomic_write_bytes(report, md.encode())
    if wandb_group is not None:
        log_to_wandb(root, made, groups, wandb_group)
    return report


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {threads} torch threads, {gpu}, torch {torch.__version__}"


def render_markdown(root: Path, runs: list[Run], grouped, table: str, made: dict[str, Path], image_data, toy_data) -> str:
    any_run = runs[0]
    cfg = any_run.results["config"]
    ev = any_run.eval
    lines = [
        "# genbench comparison report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} on {_machine()}.",
        "",
        "Every family was trained on the same data split with the same batch size, the same number of "
        f"training images (`trainer.max_steps` × `data.batch_size`), precision `{cfg['trainer'].get('precision')}`, "
        "and evaluated by the same loop"
        + (f" (features `{ev.get('features')}`, {ev.get('num_samples')} samples)." if ev else "."),
        "",
        "## Results",
        "",
        table,
        "",
        "Means ± sample standard deviations over seeds. NLL is a bound in bits/dim on the validation split "
        "(DDPM: the full variational bound; VAE: the importance-weighted bound, only with a likelihood of "
        "8-bit images, `net.image.likelihood=discretized_gaussian` — the default Bernoulli decoder gives "
        "clearly better samples but is no density of 8-bit images, so no bits/dim); GANs have none. "
        "NFE = network evaluations per sample.",
        "",
    ]
    figure_text = [
        ("samples", "## Samples", "The same seeds for every family."),
        ("forward_diffusion", "## The forward process", "q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) applied to validation digits."),
        ("reverse_chain", "## The reverse process", "DDPM sampling from x_T ~ N(0, I) down to x_0."),
        ("vae_reconstructions", "## VAE reconstructions", ""),
        ("vae_interpolation", "## VAE latent interpolation", ""),
        ("gan_interpolation", "## GAN latent interpolation", ""),
        ("fid_vs_time", "## FID during training", "Measured by the training-time evaluation callback (small sample count)."),
        ("trilemma", "## Quality, diversity, speed", "The generative learning trilemma (Xiao et al. 2022): no family wins all three."),
        ("toy", "## 2-D mode coverage", "Modes covered and the share of samples within 3σ of a mode (Srivastava et al. 2017)."),
    ]
    for key, heading, text in figure_text:
        if key in made:
            lines += [heading, "", text, "", f"![{key}]({made[key].name})", ""] if text else [heading, "", f"![{key}]({made[key].name})", ""]
    lines += ["## Runs", ""]
    for r in runs:
        lines.append(f"- {r.data} / {r.family} / seed {r.seed}: `{r.dir.relative_to(root) if r.dir.is_relative_to(root) else r.dir}`")
    return "\n".join(lines) + "\n"


def log_to_wandb(root: Path, made: dict[str, Path], groups, group: str) -> None:
    """The same figures and table as one W&B run (``job_type=report``) in the comparison's group."""
    import wandb

    from genbench.compare import active_columns
    from genbench.wandb_utils import configure_wandb_mode

    configure_wandb_mode()
    run = wandb.init(project="genbench", group=group, job_type="report", name=f"report-{group}", dir=str(root),
                     tags=["report"], reinit=True)
    try:
        cols = active_columns(groups)
        table = wandb.Table(columns=["data", "family", "seeds"] + [c[1] for c in cols])
        for g in groups:
            table.add_data(g.data, g.family, g.runs_cell(), *[(g.mean_std(k) or (None,))[0] for _, k, _ in cols])
        run.log({"comparison": table, **{f"figures/{k}": wandb.Image(str(p)) for k, p in made.items()}})
    finally:
        run.finish()
