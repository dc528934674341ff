"""``genbench-lecture`` (``make lecture``): the lecture's comparison of GAN, VAE and DDPM.

1. trains every family with ``experiment=lecture`` (same data, batch size, training FLOPs,
   precision, seed and evaluation) as one Hydra multirun — one W&B run per job, all in the group
   ``lecture_<data>``;
2. the same on the 2-D benchmarks ``rings`` and ``grid`` with ``experiment=lecture_2d`` (three
   seeds), one lane per data set side by side (:func:`toy_lanes`);
3. writes ``report.md`` with the table and figures into the output directory (and logs the
   figures to W&B as a ``report`` run of the same group).

Extra arguments are Hydra overrides applied to every run, e.g. ``seed=0,1,2`` for three seeds
or ``data=fashion_mnist trainer=gpu`` for another data set and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genbench.errors import GenbenchError
from genbench.io import atomic_write_bytes, nearest_existing, read_results
from genbench.runtime import start as start_runtime
from models.registry import family_names, family_specs

TOY_DATA = ("rings", "grid")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def available_families() -> list[str]:
    """Every registered family (models/registry.py and the plug-ins), in display order."""
    return family_names()


def default_families() -> list[str]:
    """The families ``make lecture`` trains without ``--families``: those registered with ``in_lecture``."""
    return [s.name for s in family_specs() if s.in_lecture]


def parse_families(text: str) -> list[str]:
    """The families of ``--families`` (comma-separated); raises GenbenchError on an unknown, empty or repeated name."""
    allowed = available_families()
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in allowed:
            problem = "an empty family name" if not name else f"unknown family {name!r}"
            raise GenbenchError(f"--families {text!r}: {problem}; allowed: {', '.join(allowed)} (comma-separated)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GenbenchError(f"--families {text!r}: {', '.join(repeated)} named more than once; give each family once")
    return names


def parse_toy_data(text: str) -> list[str]:
    """The data sets of ``--toy-data``; raises GenbenchError on an unknown, empty or repeated name."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in TOY_DATA:
            problem = "an empty name" if not name else f"unknown 2-D data set {name!r}"
            raise GenbenchError(f"--toy-data {text!r}: {problem}; allowed: {', '.join(TOY_DATA)} (comma-separated)")
    if len(set(names)) < len(names):
        raise GenbenchError(f"--toy-data {text!r}: a data set is named more than once; give each once")
    return names


def check_out_dir(out: Path) -> None:
    """Raise GenbenchError when ``out`` (or the nearest of its folders that exists) is not a directory."""
    existing = nearest_existing(out)
    if not existing.is_dir():
        where = "is a file" if existing == out else f"lies under the file {existing}"
        raise GenbenchError(f"--out {out}: {where}; give a directory")


def first_values(overrides: list[str]) -> list[str]:
    """The overrides with each sweep (``seed=0,1,2``) replaced by its first value: one job's config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            prefix = "+" * o.is_add() + "++" * o.is_force_add()
            out.append(f"{prefix}{o.key_or_group}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(o.input_line)
    return out


@dataclass
class PlanRow:
    family: str
    flops_per_step: float
    images_per_step: int
    steps: int


def compose_job(family: str, overrides: list[str], experiment: str = "lecture") -> Any:
    """The validated config of ``family``'s first job of ``experiment=<experiment>`` + ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from genbench.validate import validate

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={experiment}", *first_values(overrides), f"model={family}"],
                          return_hydra_config=True)  # fmt: skip
    except HydraException as e:
        raise GenbenchError(f"overrides {' '.join(overrides)!r}: {e}") from e
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = tempfile.gettempdir()  # nothing is written: the job's own directory is Hydra's
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    validate(cfg)
    return cfg


def budget_plan(families: list[str], overrides: list[str]) -> tuple[str, list[PlanRow]]:
    """``budget.kind`` and each family's steps within the lecture's budget: its step's FLOPs counted as
    ``genbench-train`` counts them (genbench/budget.py), on the first job of any sweep."""
    from hydra.utils import instantiate

    from genbench.budget import build_budget

    rows, kind = [], "images"
    for family in families:
        cfg = compose_job(family, overrides)
        kind = str(cfg.budget.kind)
        if kind != "flops":
            return kind, []
        budget = build_budget(cfg, instantiate(cfg.model, _convert_="all"))
        rows.append(PlanRow(family, float(budget.flops_per_step), budget.images_per_step, budget.planned_steps() or 0))
    return kind, rows


def print_plan(rows: list[PlanRow], kind: str) -> None:
    print(f"genbench-lecture: the budget ({kind}) in steps and images per family:", flush=True)
    for r in rows:
        print(f"  {r.family:>6}: {r.flops_per_step / 1e9:8.2f} GFLOP/step  {r.steps:6d} steps  "
              f"{r.steps * r.images_per_step:8d} images  {r.steps * r.flops_per_step / 1e12:6.2f} TFLOP", flush=True)


def _train_cmd(args: list[str]) -> list[str]:
    return [str(Path(sys.executable).parent / "genbench-train"), "-m", *args]


def _train(args: list[str]) -> int:
    cmd = _train_cmd(args)
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def toy_lanes(toy_data: list[str], requested: int | None = None, cpus: int | None = None) -> tuple[list[list[str]], int]:
    """The 2-D comparison's lanes (data sets per lane) and the torch threads of each.

    The 2-D jobs are small MLPs whose steps gain little from a second thread (the 2-D DDPM 1.33x, the
    GAN 1.16x on 2 cores), so by default every data set gets its own lane, as many lanes as CPU cores, the
    cores split between them: on 2 cores, rings and grid train side by side on one thread each.
    """
    cpus = cpus or os.cpu_count() or 1
    lanes = max(1, min(len(toy_data), requested or cpus))
    groups = [toy_data[i::lanes] for i in range(lanes)]
    return groups, max(1, cpus // lanes)


def _train_lanes(lanes: dict[str, list[str]], threads: int) -> int:
    """Run one ``genbench-train -m`` per lane at once (``lanes``: each lane's tag and argument list), each
    with ``threads`` OpenMP threads, their output interleaved line by line behind its ``[tag]``; returns the
    largest exit status."""
    if len(lanes) == 1:
        return _train(next(iter(lanes.values())))
    env = {**os.environ, "OMP_NUM_THREADS": str(min(threads, int(os.environ.get("OMP_NUM_THREADS") or threads)))}
    procs = []
    for tag, args in lanes.items():
        cmd = _train_cmd(args)
        print(f"+ [{tag}] OMP_NUM_THREADS={env['OMP_NUM_THREADS']} " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        pump = threading.Thread(target=_prefix_lines, args=(proc.stdout, f"[{tag}] "), daemon=True)
        pump.start()
        procs.append((proc, pump))
    codes = []
    for proc, pump in procs:
        codes.append(proc.wait())
        pump.join()
    return max(codes)


def _prefix_lines(stream: Any, tag: str) -> None:
    for line in stream:
        print(tag + line, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbench-lecture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output directory (default: outputs/lecture/<date>_<time>)")
    parser.add_argument("--families", default=None,
                        help="comma-separated families (default: the registered ones marked in_lecture)")
    parser.add_argument("--budget", default=None, type=float, metavar="VALUE",
                        help="budget.value of the image comparison (default: conf/experiment/lecture.yaml's, "
                             "training FLOPs per family); the 2-D comparison keeps its own")
    parser.add_argument("--no-2d", action="store_true", help="skip the rings/grid comparison")
    parser.add_argument("--toy-data", default=",".join(TOY_DATA),
                        help=f"comma-separated 2-D data sets of the second comparison (default: {','.join(TOY_DATA)})")
    parser.add_argument("--toy-lanes", default=None, type=int, metavar="N",
                        help="2-D data sets trained side by side, the CPU cores split between them (default: one "
                             "lane per data set, at most one per core)")
    parser.add_argument("--report-only", action="store_true", help="only (re)build the report of the runs in --out")
    parser.add_argument("--no-wandb-report", action="store_true", help="do not log the report figures to W&B")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. seed=0,1 trainer.max_steps=500")
    args = parser.parse_args(argv)
    out = Path(args.out or f"outputs/lecture/{time.strftime('%Y-%m-%d_%H-%M-%S')}").resolve()
    try:
        start_runtime()
        families = ",".join(parse_families(args.families if args.families is not None else ",".join(default_families())))
        toy_data = parse_toy_data(args.toy_data)
        if args.toy_lanes is not None and args.toy_lanes < 1:
            raise GenbenchError(f"--toy-lanes {args.toy_lanes}: must be an integer >= 1")
        if args.budget is not None and not (0 < args.budget < float("inf")):
            raise GenbenchError(f"--budget {args.budget:g}: must be a finite number > 0 (the image comparison's "
                                "budget.value: training FLOPs per family)")
        check_out_dir(out)
    except GenbenchError as e:
        print(f"genbench-lecture: error: {e}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    phases: dict[str, float] = {}  # seconds per phase, printed at the end and kept in timing.json
    if not args.report_only:
        print(f"genbench-lecture: {families.replace(',', ', ')} on identical setups -> {out}", flush=True)
        image_overrides = [*([f"budget.value={args.budget:g}"] if args.budget is not None else []), *args.overrides]
        snapshot = []
        try:
            tick = time.perf_counter()
            kind, rows = budget_plan(families.split(","), image_overrides)
            phases["plan"] = time.perf_counter() - tick
            if rows:  # equal FLOPs: the equal-images table is every family at the fewest images
                print_plan(rows, kind)
                snapshot = [f"eval.snapshot_step={min(r.steps for r in rows)}"]
        except GenbenchError as e:
            print(f"genbench-lecture: error: {e}", file=sys.stderr)
            return 2
        tick = time.perf_counter()
        code = _train(["experiment=lecture", f"model={families}", f"hydra.sweep.dir={out}/images", *snapshot,
                       *image_overrides])  # fmt: skip
        phases["images"] = time.perf_counter() - tick
        if code:
            return code
        if not args.no_2d:
            tick = time.perf_counter()
            groups, threads = toy_lanes(toy_data, args.toy_lanes)
            quiet = ["trainer.enable_progress_bar=false"] if len(groups) > 1 else []  # interleaved bars are unreadable
            code = _train_lanes({",".join(g): ["experiment=lecture_2d", f"data={','.join(g)}", f"model={families}", *quiet,
                                               f"hydra.sweep.dir={out}/toy" + (f"/{'_'.join(g)}" if len(groups) > 1 else ""),
                                               *args.overrides] for g in groups}, threads)  # fmt: skip
            phases["toy"] = time.perf_counter() - tick
            if code:
                return code

    from genbench.report import build_report

    group = None if args.no_wandb_report else "lecture_" + _image_data_name(out)
    tick = time.perf_counter()
    try:
        report = build_report(out, wandb_group=group)
    except GenbenchError as e:
        print(f"genbench-lecture: error: {e}", file=sys.stderr)
        return 2
    phases["report"] = time.perf_counter() - tick
    total = time.perf_counter() - start
    atomic_write_bytes(out / "timing.json", json.dumps({"total_s": round(total, 1), **{f"{k}_s": round(v, 1) for k, v in
                                                        phases.items()}}, indent=1).encode())  # fmt: skip
    print(f"genbench-lecture: done in {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in phases.items())}).\n"
          f"  report:  {report}\n  runs:    {out}/images, {out}/toy\n"
          f"  compare: genbench-compare {out}/images", flush=True)
    return 0


def _image_data_name(out: Path) -> str:
    """The data set of the first readable image run (the report skips and notes the unreadable ones)."""
    for f in sorted((out / "images").rglob("results.json")):
        try:
            data = read_results(f).get("data")
        except ValueError:
            continue
        if isinstance(data, str):
            return data
    return "mnist5k"


if __name__ == "__main__":
    sys.exit(main())
