"""The comparison report: ``report.md`` + PNG figures, also logged to W&B.

``build_report(root)`` reads every run under ``root`` (its ``results.json`` and checkpoint),
groups them by data set and family, and writes into ``root``:

- ``report.md``: the budget, the table (at equal FLOPs when the runs had a FLOPs budget, and at equal
  images beside it) and every figure below;
- ``table.md`` / ``table.csv``: the table alone (as ``genbench-compare`` prints it);
- ``samples.png``: the families' samples side by side, from the same fixed seeds;
- one PNG per figure a family offers (its spec's ``figures`` in :mod:`models.registry`): the DDPM's
  ``forward_diffusion.png`` and ``reverse_chain.png``, the VAE's ``vae_reconstructions.png`` and
  ``vae_interpolation.png``, the GAN's ``gan_interpolation.png``;
- ``table_equal_images.md`` / ``.csv``: the table at equal training images (runs with ``eval.snapshot_step``);
- ``fid_vs_compute.png``: FID against training FLOPs and against wall-clock seconds;
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
from genbench.compare import flatten
from genbench.errors import GenbenchError
from genbench.io import atomic_write_bytes, read_results
from genbench.table import active_columns, group_records, to_csv, to_markdown
from models.registry import family_names, family_spec
from models.registry import order as family_order

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
        out[d] = dict(sorted(out[d].items(), key=lambda kv: (family_order(kv[0]), kv[0])))
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


def lecture_pictures(image_runs: dict[str, list[Run]], out: Path, n: int = 64) -> tuple[dict[str, Path], dict[str, tuple[str, str]]]:
    """Samples side by side, and every figure the families offer (their spec's ``figures``), from the
    first seed of each family. Returns the PNGs by key and each figure's (heading, caption)."""
    made: dict[str, Path] = {}
    text: dict[str, tuple[str, str]] = {}
    models = {f: runs[0].model() for f, runs in image_runs.items()}
    samples = {f: figures.fixed_seed_samples(m, n, SAMPLE_SEED, **_sample_kwargs(image_runs[f][0])) for f, m in models.items()}
    made["samples"] = figures.samples_side_by_side(samples, out / "samples.png", title=f"{n} samples per family, seed {SAMPLE_SEED}")
    some_run = next(iter(image_runs.values()))[0]
    real = some_run.datamodule().real_samples("val", n=8)
    nearest = nearest_training_rows(some_run, samples)
    if nearest:
        made["nearest_training"] = figures.image_rows(
            nearest, out / "nearest_training.png", title="Samples (left) and their 3 nearest training images")
        text["nearest_training"] = ("Nearest training images", "Each family's first samples next to their 3 nearest "
                                    "training images in the evaluation's feature space: a family that copies its "
                                    "training set shows near-duplicates here (copy rate, authenticity and C_T in the table).")
    for family, model in models.items():
        make = family_spec(family).figure_function() if family in family_names() else None
        if make is None:
            continue
        g = torch.Generator().manual_seed(SAMPLE_SEED)
        for fig in make(model, real, g, _sample_kwargs(image_runs[family][0])):
            made[fig.key] = figures.image_rows(fig.rows, out / f"{fig.key}.png", title=f"{fig.heading}: {fig.caption}")
            text[fig.key] = (fig.heading, fig.caption)
    return made, text


def nearest_training_rows(run: Run, samples: dict[str, torch.Tensor], per_family: int = 2, k: int = 3) -> list:
    """Rows ``sample, its k nearest training images`` per family, in the run's evaluation feature space.

    Only where that space is the data set's classifier (cheap to featurise the training split with); an
    InceptionV3 pass over the training split costs minutes on a CPU, so other spaces skip the figure."""
    from evaluation.config import EvalConfig
    from evaluation.evaluator import Evaluator, quantize
    from evaluation.memorization import nearest_training_examples
    from evaluation.sources import DataReference

    node = dict((run.results.get("config") or {}).get("eval") or {})
    if node.get("features", "auto") not in ("auto", "classifier"):
        return []
    dm = run.datamodule()
    evaluator = Evaluator(EvalConfig.from_node(node), DataReference(dm, "train"), device="cpu")
    train_features = evaluator.split_features("train")
    train_images = dm.real_samples("train")
    rows = []
    with torch.no_grad():
        for family, x in samples.items():
            x = quantize(x[:per_family].float())
            idx, _ = nearest_training_examples(evaluator.prepare()(x)[0].float(), train_features, k)
            rows += [(f"{figures.display_name(family)} {i + 1}", torch.cat([x[i : i + 1], train_images[idx[i]]]))
                     for i in range(len(x))]  # fmt: skip
    return rows


def snapshot_results(results: dict[str, Any]) -> dict[str, Any]:
    """A run's record as it stood at its snapshot (``eval.snapshot_step``): that evaluation, steps,
    images and training seconds (evaluations excluded) at that step."""
    snap = dict(results["eval_snapshot"])
    step = int(snap.pop("step"))
    seconds = snap.pop("time_s", None)
    per_step = (results.get("budget") or {}).get("images_per_step")
    images = step * per_step if per_step else None
    return {**results, "eval": snap, "steps": step, "train_images": images, "train_time_s": seconds,
            "train_images_per_s": round(images / seconds, 2) if images and seconds else None}


def compute_curve(run: Run) -> list[dict[str, float | None]]:
    """The run's evaluations during training with the training FLOPs at each (step × FLOPs per step)."""
    per_step = (run.results.get("budget") or {}).get("flops_per_step")
    return [{**h, "flops": h["step"] * per_step if per_step else None} for h in run.history()]


def budget_lines(grouped: dict[str, dict[str, list[Run]]]) -> list[str]:
    """One line per data set: the budget every family got and what each used of it."""
    lines = []
    for data, fams in grouped.items():
        first = next(iter(fams.values()))[0].results
        budget = first.get("budget") or {}
        used = {f: (rs[0].results.get("used") or {}) for f, rs in fams.items()}
        images = ", ".join(f"{figures.display_name(f)} {u.get('images', 0):,}" for f, u in used.items())
        if budget.get("kind") == "flops":
            lines.append(f"- **{data}: equal training FLOPs**, {float(budget['value']):.3g} per family (forward and "
                         f"backward passes of the networks, counted once per step): training images {images}.")
        elif budget.get("kind") == "time":
            lines.append(f"- **{data}: equal wall-clock time**, {budget['value']} s per family: training images {images}.")
        else:
            lines.append(f"- **{data}: equal training images**: {images}.")
    return lines


def tuning_lines(grouped: dict[str, dict[str, list[Run]]]) -> list[str]:
    """Where each family's defaults came from: the search recorded in ``conf/tuned/<data>_<model>.yaml``
    (the run's config ``tuned``), else hand-set."""
    lines = []
    for data, fams in grouped.items():
        parts = []
        for family, rs in fams.items():
            tuned = (rs[0].results.get("config") or {}).get("tuned") or {}
            name = figures.display_name(family)
            if tuned.get("study"):
                parts.append(f"{name}: Optuna study `{tuned['study']}` ({tuned.get('trials')} trials at "
                             f"{tuned.get('budget')}; {tuned.get('result', '')})".replace("; )", ")"))
            else:
                parts.append(f"{name}: hand-set, no search")
        lines.append(f"- **{data}**: " + "; ".join(parts) + ".")
    return lines


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
    snapshots = [snapshot_results(r.results) for r in runs if r.results.get("eval_snapshot")]
    equal_images = None
    if snapshots:
        snapshot_groups = group_records([flatten(r) for r in snapshots])
        equal_images = to_markdown(snapshot_groups)
        atomic_write_bytes(root / "table_equal_images.md", equal_images.encode())
        atomic_write_bytes(root / "table_equal_images.csv", to_csv(snapshot_groups).encode())

    made: dict[str, Path] = {}
    figure_text: dict[str, tuple[str, str]] = {}
    image_data = [d for d, fams in grouped.items() if len(next(iter(fams.values()))[0].results["config"]["data"]["shape"]) == 3]
    toy_data = [d for d in grouped if d not in image_data]
    for d in image_data[:1]:
        pictures, figure_text = lecture_pictures(grouped[d], root)
        made.update(pictures)
        curves = {f: compute_curve(rs[0]) for f, rs in grouped[d].items()}
        if any(curves.values()):
            made["fid_vs_compute"] = figures.fid_vs_compute(curves, root / "fid_vs_compute.png")
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

    md = render_markdown(root, runs, table, made, figure_text, equal_images)
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


def render_markdown(root: Path, runs: list[Run], table: str, made: dict[str, Path],
                    family_figures: dict[str, tuple[str, str]], equal_images: str | None = None) -> str:  # fmt: skip
    any_run = runs[0]
    cfg = any_run.results["config"]
    ev = any_run.eval
    lines = [
        "# genbench comparison report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} on {_machine()}.",
        "",
        "Every family was trained on the same data split with the same batch size, precision "
        f"`{cfg['trainer'].get('precision')}` and training budget, and evaluated by the same loop"
        + (f" (features `{ev.get('features')}`, {ev.get('num_samples')} samples)." if ev else "."),
        "",
        *budget_lines(_by_data_family(runs)),
        "",
        "Each family's defaults, and the search that chose them (the same trials and per-trial budget for every "
        "family, docs/tuning.md):",
        "",
        *tuning_lines(_by_data_family(runs)),
        "",
        "## Results" + (" at equal training FLOPs" if equal_images else ""),
        "",
        table,
        "",
    ]
    if equal_images:
        lines += [
            "## Results at equal training images",
            "",
            "The same runs, evaluated with the same protocol at the step where every family had seen as many "
            "training images as the family with the fewest had at the end (`eval.snapshot_step`). A family's "
            "learning rate does not depend on the run's length (the DDPM's cosine decay ends at its own last "
            "step, which is this step), so each row is what a run of that many images gives.",
            "",
            equal_images,
            "",
        ]
    lines += [
        "Each cell: the mean with its 95 % interval (over seeds, or the bootstrap over samples for one seed; the "
        "legend under the table says which and how the marks are decided). NLL is a bound in bits/dim on the validation split "
        "(DDPM: the full variational bound; VAE: the importance-weighted bound, only with a likelihood of "
        "8-bit images, `net.image.likelihood=discretized_gaussian` — the default Bernoulli decoder gives "
        "clearly better samples but is no density of 8-bit images, so no bits/dim); GANs have none. "
        "NFE = network evaluations per sample.",
        "",
    ]
    figure_text = [("samples", "## Samples", "The same seeds for every family.")]
    figure_text += [(key, f"## {heading}", caption) for key, (heading, caption) in family_figures.items()]
    figure_text += [
        ("fid_vs_compute", "## FID against training compute",
         "Evaluations during training at the same fractions of the budget for every family (`eval.at_fractions`, "
         "`eval.val_num_samples` samples, so lower sample counts than the table's): FID against training FLOPs "
         "and against wall-clock seconds, evaluations excluded. Who leads at every budget, not only at the end."),
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

    from genbench.wandb_utils import configure_wandb_mode

    configure_wandb_mode()
    run = wandb.init(project="genbench", group=group, job_type="report", name=f"report-{group}", dir=str(root),
                     tags=["report"], reinit=True)
    try:
        cols = active_columns(groups)
        table = wandb.Table(columns=["data", "family", "seeds"] + [c.key for c in cols])
        for g in groups:
            table.add_data(g.data, g.family, g.runs_cell(), *[getattr(g.stat(c.key), "mean", None) for c in cols])
        run.log({"comparison": table, **{f"figures/{k}": wandb.Image(str(p)) for k, p in made.items()}})
    finally:
        run.finish()
