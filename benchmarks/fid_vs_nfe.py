"""FID against NFE for every sampler of the DDPM and every ODE solver of the flow, on rings and mnist5k.

For each family and each target NFE in 10, 20, 50, 100 (``--nfes``), every sampler runs with the
``steps`` that give that NFE (``model.nfe``, the sampler's own count: Algorithm 2 (respaced), DDIM and
DPM-Solver++(2M) one network call per step, EDM's Heun 2·steps − 1, the flow's Euler ``steps``, midpoint
2·steps and Heun 2·steps − 1); where no ``steps`` gives it exactly, the largest NFE below it (Heun: 9, 19,
49, 99), and the record says which. Every point is scored by genbench's :class:`~evaluation.Evaluator`
with the run's own evaluation settings (its ``eval`` config from the checkpoint: feature space, split,
real samples, KID subsets, opt-in metrics), only the number of samples, the sampling seed, the sampler
(``eval.sample_kwargs``) changed and the likelihood bound left out: the classifier's feature space on
mnist5k, raw points and the mode metrics (modes covered, share within 3σ of a mode) on rings.

The models: ``--ckpt FAMILY=PATH`` (repeatable; the data set is the checkpoint's own), e.g. the
lecture's ``<lecture out>/images/<job>/checkpoints/last.ckpt``. Without one, rings models are trained
here with ``genbench-train``'s code (``experiment=lecture_2d``: tens of seconds each); mnist5k ones only
with ``--train-mnist`` (``experiment=lecture``: minutes each), else that family is skipped on mnist5k.

The check of issue 23: on mnist5k, SDE-DPM-Solver++(2M) at 20 NFE gives an FID at most 1.1× that of
Algorithm 2 at 100 NFE, over the means of the ``--seeds`` sampling seeds (``eval.seed``; default 0,1,2);
DPM-Solver++(2M)'s ODE form is reported beside it.
These points (and the ODE form's at the fast NFE) are evaluated with every seed; the rest of the curve with
the first ``--curve-seeds`` of them (default: all on rings, one on mnist5k, where the full curve costs about
1,500 network calls per image).
The ratio is computed on rings too, where it is only reported (FIDs there sit near the estimator's floor,
the FID of as many real training samples, which the record gives next to them).

A data set not run now keeps its curve from the record already at the output path (``carried_over``),
so ``--data mnist5k --ckpt ...`` adds the image panel to a record holding rings.

    python benchmarks/fid_vs_nfe.py --threads 1                       # rings, trained here
    python benchmarks/fid_vs_nfe.py --threads 1 --data mnist5k --seeds 0,1,2 \\
        --ckpt ddpm=<lecture out>/images/<ddpm job>/checkpoints/last.ckpt \\
        --ckpt flow=<lecture out>/images/<flow job>/checkpoints/last.ckpt
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import RECORD_VERSION, common  # noqa: E402
from benchmarks.fid_vs_nfe_report import plot  # noqa: E402

NAME = "fid_vs_nfe"
DATA = ("rings", "mnist5k")
TARGET_NFES = (10, 20, 50, 100)
#: The issue's check: (family, sampler, NFE) of the fast point and of the reference, and the largest ratio allowed.
#: The target is on SDE-DPM-Solver++(2M), the lecture's DDPM sampler; the same ratio of the ODE form
#: (``reported``, at the fast point's NFE) stands beside it without a target.
CHECK = {"family": "ddpm", "fast": ("sde_dpmpp_2m", 20), "reference": ("ddpm", 100), "target": 1.1, "data": "mnist5k",
         "reported": ("dpmpp_2m",)}  # fmt: skip
#: The experiment a model missing for a data set is trained with (genbench-train's config groups).
EXPERIMENT = {"rings": "lecture_2d", "mnist5k": "lecture"}
#: Result keys kept per point (those a data set has; the others are null).
KEYS = ("fid", "kid_mean", "precision", "recall", "modes_covered", "num_modes", "high_quality_share", "nfe",
        "sample_images_per_s", "eval_time_s")  # fmt: skip
# --- what runs -----------------------------------------------------------------------------------------
def family_samplers(family: str) -> tuple[str, tuple[str, ...]]:
    """The ``sample()`` keyword that picks the sampler, and every sampler of the family (its registry)."""
    if family == "ddpm":
        from models.samplers import SAMPLERS

        return "sampler", tuple(SAMPLERS)
    if family == "flow":
        from models.flow import SOLVERS

        return "solver", tuple(SOLVERS)
    raise ValueError(f"family={family!r}: must be one of ['ddpm', 'flow']")


def steps_for(model: Any, key: str, sampler: str, target: int) -> tuple[int, int]:
    """(steps, NFE): the most steps whose NFE (``model.nfe``) is at most ``target``."""
    best = None
    for steps in range(1, target + 1):
        try:
            nfe = int(model.nfe(**{key: sampler, "steps": steps}))
        except ValueError:  # steps beyond the model's T
            break
        if nfe <= target:
            best = (steps, nfe)
        if nfe >= target:
            break
    if best is None:
        raise ValueError(f"{sampler}: no number of steps gives at most {target} network evaluations")
    return best


def parse_ckpts(specs: list[str]) -> dict[tuple[str, str], str]:
    """``FAMILY=PATH`` -> {(family, the checkpoint's data set): path}; one error for bad specs, before any work."""
    from genbench.checkpoint import check_checkpoint, read_checkpoint

    out, errors = {}, []
    for spec in specs:
        family, sep, path = spec.partition("=")
        if not sep or family not in ("ddpm", "flow"):
            errors.append(f"--ckpt {spec!r}: must be FAMILY=PATH with FAMILY one of ['ddpm', 'flow']")
            continue
        meta = check_checkpoint(read_checkpoint(path), path, family)
        data = ((meta.get("config") or {}).get("data") or {}).get("name")
        if data not in DATA:
            errors.append(f"--ckpt {spec!r}: the checkpoint was trained on data {data!r}; this benchmark runs {list(DATA)}")
        elif (family, data) in out:
            errors.append(f"--ckpt {spec!r}: a second {family} checkpoint for {data}")
        else:
            out[(family, data)] = path
    if errors:
        raise SystemExit("fid_vs_nfe: " + "; ".join(errors))
    return out


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or (option == "--nfes" and min(values) < 1):
        raise SystemExit(f"fid_vs_nfe: {option}={text!r}: must be a comma-separated list of integers"
                         + (" >= 1" if option == "--nfes" else " >= 0"))  # fmt: skip
    return values


def parse_eval_set(specs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` (VALUE read as YAML) -> {key: value}, checked by EvalConfig's own checks."""
    import yaml

    from evaluation import EvalConfig

    out, errors = {}, []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or key not in EvalConfig.__dataclass_fields__ or key in ("num_samples", "seed", "sample_kwargs"):
            errors.append(f"--eval-set {spec!r}: must be KEY=VALUE with KEY an eval setting other than num_samples, seed "
                          "and sample_kwargs (set by this benchmark)")
            continue
        out[key] = yaml.safe_load(value)
    errors += EvalConfig.config_errors(out) if not errors else []
    if errors:
        raise SystemExit("fid_vs_nfe: " + "; ".join(errors))
    return out


# --- the models ----------------------------------------------------------------------------------------
def train_model(family: str, data: str, steps: int | None, overrides: list[str], run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Train ``model=family`` on ``data`` with genbench-train's code (the lecture's experiment, no logger, no
    evaluation); returns the model loaded back from its checkpoint and what describes it."""
    from genbench.checkpoint import load_model
    from genbench.train import train

    cfg = common.compose([f"experiment={EXPERIMENT[data]}", f"data={data}", f"model={family}", "logger=none",
                          "eval.final=false", "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                          *([f"trainer.max_steps={steps}"] if steps else []), *overrides], run_dir=run_dir)  # fmt: skip
    results = train(cfg)
    max_steps = int(cfg.trainer.max_steps)
    info = {"source": "trained here", "description": f"experiment={EXPERIMENT[data]}, {max_steps} steps of {cfg.data.batch_size}"
            + (f", {' '.join(overrides)}" if overrides else ""), "train_steps": max_steps, "overrides": list(overrides),
            "train_time_s": results.get("train_time_s"), "parameters": results.get("parameters")}  # fmt: skip
    return load_model(results["checkpoint"]), info


# --- the evaluation --------------------------------------------------------------------------------------
def run_eval_config(model: Any, num_samples: int, device: torch.device, overrides: dict[str, Any] | None = None
                    ) -> tuple[Any, list[str]]:  # fmt: skip
    """The run's own evaluation settings (its checkpoint's ``eval``), with ``num_samples``, no likelihood bound, no
    bootstrap intervals and ``overrides`` (``--eval-set``); and the run's keys this genbench does not know (left out)."""
    from evaluation import EvalConfig

    fields = EvalConfig.__dataclass_fields__
    run_eval = dict((model.run_config or {}).get("eval") or {})
    run_eval.pop("_target_", None)
    unknown = sorted(set(run_eval) - set(fields))
    settings = {k: v for k, v in run_eval.items() if k in fields}
    settings.update(num_samples=num_samples, nll_samples=0, device=str(device))
    if "bootstrap" in fields:
        settings["bootstrap"] = 0
    settings.update(overrides or {})
    return EvalConfig(**settings), unknown


def evaluate_family(model: Any, family: str, data: str, num_samples: int, nfes: list[int], seeds: list[int],
                    curve_seeds: int, device: torch.device, chk: dict[str, Any] = CHECK,
                    eval_set: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Every sampler of ``family`` at every target NFE, each point with the sampling seeds it needs."""
    from hydra.utils import instantiate

    from evaluation import DataReference, Evaluator, ModelSource, TensorSource

    cfg, unknown = run_eval_config(model, num_samples, device, eval_set)
    data_cfg = (model.run_config or {}).get("data")
    evaluator = Evaluator(cfg, DataReference(instantiate(data_cfg), cfg.split, cfg.num_real), device=device)
    model = model.to(device).eval()
    key, samplers = family_samplers(family)
    base_kwargs = {k: v for k, v in (cfg.sample_kwargs or {}).items() if v is not None and k not in (key, "steps")}
    check_points = set(check_points_of(chk)) if family == chk["family"] else set()
    points: dict[str, dict[str, Any]] = {}
    for sampler in samplers:
        points[sampler] = {}
        for target in nfes:
            steps, nfe = steps_for(model, key, sampler, target)
            kwargs = {**base_kwargs, key: sampler, "steps": steps}
            use = seeds if (sampler, target) in check_points else seeds[:curve_seeds]
            runs = []
            for seed in use:
                evaluator.cfg = dataclasses.replace(cfg, seed=seed, sample_kwargs=kwargs)
                r = evaluator.evaluate(ModelSource(model, kwargs), num_samples)
                runs.append({k: r.get(k) for k in KEYS})
                print(f"  {data} {family} {sampler} steps={steps} (NFE {r['nfe']}, target {target}) seed {seed}: "
                      f"FID {r['fid']:.4g}, {r['eval_time_s']:.1f} s", flush=True)  # fmt: skip
            fids = [p["fid"] for p in runs]
            point = {**runs[0], "target_nfe": target, "steps": steps, "sample_kwargs": kwargs,
                     "nfe_rule": "exact" if nfe == target else "nearest below", "seeds": use, "fid_by_seed": fids,
                     "fid_mean": statistics.fmean(fids), "fid_std": statistics.stdev(fids) if len(fids) > 1 else None,
                     "sample_seconds": [round(num_samples / p["sample_images_per_s"], 3) if p["sample_images_per_s"] else None
                                        for p in runs],
                     "eval_seconds": [p["eval_time_s"] for p in runs]}  # fmt: skip
            if runs[0].get("high_quality_share") is not None:
                point["high_quality_share_mean"] = statistics.fmean(p["high_quality_share"] for p in runs)
                point["modes_covered_mean"] = statistics.fmean(p["modes_covered"] for p in runs)
            assert point["nfe"] == nfe, (sampler, steps, point["nfe"], nfe)  # the evaluation's count is the model's
            points[sampler][str(target)] = point
    evaluator.cfg = cfg
    # The estimator's floor at this n: the FID of as many real training samples against the same reference.
    train = evaluator.reference.datamodule.real_samples("train")
    floor = None
    if len(train) >= num_samples:
        floor = evaluator.evaluate(TensorSource(train[:num_samples], f"{data} train split [:{num_samples}]"))["fid"]
    eval_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("sample_kwargs", "seed")}
    return {"features": evaluator.feature_name, "eval_config": eval_cfg, "run_eval_keys_unknown_here": unknown,
            "samplers": points, "real_floor_fid": floor}  # fmt: skip


def check_points_of(chk: dict[str, Any]) -> list[tuple[str, int]]:
    """The (sampler, NFE) points evaluated with every seed: the check's fast point, its reference and the reported ones."""
    return [chk["fast"], chk["reference"], *((s, chk["fast"][1]) for s in chk.get("reported", ()))]


def reported_checks(curve: dict[str, Any], chk: dict[str, Any] = CHECK) -> list[dict[str, Any]]:
    """The same ratio for each ``reported`` sampler at the fast point's NFE, without a target."""
    out = [check(curve, {**chk, "fast": (s, chk["fast"][1])}) for s in chk.get("reported", ())]
    return [{**k, "target": None, "met": None} for k in out if k]


def check(curve: dict[str, Any], chk: dict[str, Any] = CHECK) -> dict[str, Any] | None:
    """The issue's ratio: mean FID of SDE-DPM-Solver++(2M) at 20 NFE over that of Algorithm 2 at 100 NFE."""
    fam = curve["families"].get(chk["family"])
    if not fam or fam.get("skipped"):
        return None
    (fs, fn), (rs, rn) = chk["fast"], chk["reference"]
    fast, ref = fam["samplers"].get(fs, {}).get(str(fn)), fam["samplers"].get(rs, {}).get(str(rn))
    if fast is None or ref is None:
        return None
    ratio = fast["fid_mean"] / ref["fid_mean"] if ref["fid_mean"] else None
    per_seed = [a / b if b else None for a, b in zip(fast["fid_by_seed"], ref["fid_by_seed"], strict=True)]
    return {"fast": f"{fs}@{fn}", "reference": f"{rs}@{rn}", "fast_nfe": fast["nfe"], "reference_nfe": ref["nfe"],
            "seeds": fast["seeds"], "fast_fid_mean": fast["fid_mean"], "fast_fid_std": fast["fid_std"],
            "reference_fid_mean": ref["fid_mean"], "reference_fid_std": ref["fid_std"], "ratio": ratio,
            "ratio_by_seed": per_seed, "target": chk["target"],
            "met": None if ratio is None else ratio <= chk["target"]}  # fmt: skip


def full_size_estimate(curve: dict[str, Any], full_n: int, seeds: int, curve_seeds: int, chk: dict[str, Any] = CHECK) -> float:
    """Seconds the same curve would take with ``full_n`` samples (the evaluations' time scaled linearly with n)."""
    total = 0.0
    for fam in curve["families"].values():
        for sampler, by_nfe in fam.get("samplers", {}).items():
            for target, p in by_nfe.items():
                per_seed = statistics.fmean(p["eval_seconds"])
                is_check = fam.get("family") == chk["family"] and (sampler, int(target)) in check_points_of(chk)
                total += per_seed * (seeds if is_check else curve_seeds) * full_n / curve["num_samples"]
    return total


# --- main ----------------------------------------------------------------------------------------------------
def previous_curves(path: Path, mode: str) -> dict[str, Any]:
    """The curves of the record already at ``path`` (same mode and layout), to keep those not run now."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if rec.get("benchmark") != NAME or rec.get("mode") != mode or rec.get("record_version") != RECORD_VERSION:
        return {}
    return {d: c for d, c in rec.get("curves", {}).items() if not c.get("skipped")}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--ckpt", action="append", default=[], metavar="FAMILY=PATH",
                        help="a trained checkpoint (repeatable); its data set is the one it was trained on")
    parser.add_argument("--data", default=",".join(DATA), help=f"comma-separated data sets (default: {','.join(DATA)})")
    parser.add_argument("--families", default="ddpm,flow")
    parser.add_argument("--train-mnist", action="store_true",
                        help="train the mnist5k models missing a --ckpt (experiment=lecture: minutes each)")
    parser.add_argument("--seeds", default=None, help="sampling seeds (eval.seed) of the check's points (default 0,1,2; quick 0)")
    parser.add_argument("--curve-seeds", type=int, default=None,
                        help="how many of --seeds the other points use (default: all on rings, 1 on mnist5k)")
    parser.add_argument("--nfes", default=",".join(map(str, TARGET_NFES)), help="target NFEs (default 10,20,50,100)")
    parser.add_argument("--samples", type=int, default=None, help="samples per evaluation (default 2000; quick: mnist5k 500)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps of the models trained here (default: the experiment's 2000; quick 600)")
    parser.add_argument("--train-overrides", nargs="*", default=[], help="config overrides of the models trained here")
    parser.add_argument("--check-nfes", default=f"{CHECK['fast'][1]},{CHECK['reference'][1]}",
                        help="NFE of the check's fast point and of its reference (default 20,100; both must be in --nfes)")
    parser.add_argument("--eval-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="evaluation settings changed from the run's, e.g. kid_subsets=10 (recorded)")
    parser.add_argument("--full-samples", type=int, default=2000, help="n of the full-size time estimate")
    args = parser.parse_args(argv)
    datas = [d.strip() for d in args.data.split(",") if d.strip()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    errors = [f"--data {d!r}: must be one of {list(DATA)}" for d in datas if d not in DATA]
    errors += [f"--families {f!r}: must be one of ['ddpm', 'flow']" for f in families if f not in ("ddpm", "flow")]
    if errors or not datas or not families:
        raise SystemExit("fid_vs_nfe: " + ("; ".join(errors) or "--data and --families must name at least one"))
    seeds = parse_ints(args.seeds or ("0" if args.quick else "0,1,2"), "--seeds")
    nfes = parse_ints(args.nfes, "--nfes")
    fast_nfe, ref_nfe = (parse_ints(args.check_nfes, "--check-nfes") + [0, 0])[:2]
    if fast_nfe not in nfes or ref_nfe not in nfes:
        raise SystemExit(f"fid_vs_nfe: --check-nfes={args.check_nfes!r}: both must be in --nfes={args.nfes!r}")
    chk = {**CHECK, "fast": (CHECK["fast"][0], fast_nfe), "reference": (CHECK["reference"][0], ref_nfe)}
    if args.curve_seeds is not None and not 1 <= args.curve_seeds <= len(seeds):
        raise SystemExit(f"fid_vs_nfe: --curve-seeds={args.curve_seeds}: must be in [1, {len(seeds)}] (the number of --seeds)")
    eval_set = parse_eval_set(args.eval_set)
    ckpts = parse_ckpts(args.ckpt)
    device = common.setup(args)
    train_steps = args.train_steps or (600 if args.quick else None)
    record = common.start_record(NAME, args, seeds=seeds, nfes=nfes, families=families, data=datas,
                                 checkpoints={f"{f}/{d}": p for (f, d), p in ckpts.items()},
                                 train_steps=train_steps, train_overrides=args.train_overrides,
                                 check=chk, eval_set=eval_set)  # fmt: skip
    out_path = common.record_path(NAME, args)
    curves: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="genbench-fid-vs-nfe-"))
    try:  # the models trained here (checkpoints) are deleted afterwards
        for data in datas:
            n = args.samples or (500 if args.quick and data == "mnist5k" else 2000)
            curve_seeds = args.curve_seeds or (len(seeds) if data == "rings" else 1)
            curve: dict[str, Any] = {"num_samples": n, "seeds": seeds, "curve_seeds": curve_seeds,
                                     "date": time.strftime("%Y-%m-%d %H:%M:%S"), "families": {}}  # fmt: skip
            for family in families:
                t0 = time.perf_counter()
                if (family, data) in ckpts:
                    from genbench.checkpoint import load_model

                    model = load_model(ckpts[(family, data)])
                    info = {"source": "checkpoint", "description": f"checkpoint {ckpts[(family, data)]}",
                            "checkpoint": ckpts[(family, data)]}  # fmt: skip
                elif data == "rings" or args.train_mnist:
                    print(f"{data} {family}: training (experiment={EXPERIMENT[data]})", flush=True)
                    model, info = train_model(family, data, train_steps, args.train_overrides, tmp / f"{data}-{family}")
                else:
                    curve["families"][family] = common.skipped(f"no --ckpt {family}=PATH of a {data} model (or --train-mnist)")
                    continue
                res = evaluate_family(model, family, data, n, nfes, seeds, curve_seeds, device, chk, eval_set)
                curve["features"], curve["real_floor_fid"] = res.pop("features"), res.pop("real_floor_fid")
                curve["families"][family] = {"family": family, "model": info, **res,
                                             "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            if all(f.get("skipped") for f in curve["families"].values()):
                curves[data] = common.skipped("; ".join(f["reason"] for f in curve["families"].values()))
                continue
            curve["check"], curve["reported_checks"] = check(curve, chk), reported_checks(curve, chk)
            est = full_size_estimate(curve, args.full_samples, len(seeds), curve_seeds, chk)
            curve["full_size_estimate_s"] = round(est, 1)
            curves[data] = curve
            k = curve["check"]
            print(f"{data}: at n = {args.full_samples} with {len(seeds)} seed(s) on the check's points and {curve_seeds} on "
                  f"the rest, this curve would take about {est / 60:.1f} min here"
                  + (f"; check {k['fast']} / {k['reference']} = {k['ratio']:.3f} (target <= {k['target']})" if k else ""),
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for data, c in previous_curves(out_path, record["mode"]).items():
        if curves.get(data, {}).get("skipped") or data not in curves:
            curves[data] = {**c, "carried_over": True}
    record["curves"] = curves
    plotted = {k: v for k, v in curves.items() if not v.get("skipped")}
    png = out_path.with_name(f"{NAME}{'_quick' if args.quick else ''}.png")
    if plotted:
        plot(plotted, png)
    record["plot"] = str(png.relative_to(common.ROOT)) if png.is_relative_to(common.ROOT) else str(png)
    k = (curves.get(CHECK["data"]) or {}).get("check")
    record["targets"] = {"check": f"{CHECK['data']}: {chk['fast'][0]}@{chk['fast'][1]} vs {chk['reference'][0]}@"
                         f"{chk['reference'][1]}, ratio of the mean FIDs over the seeds",
                         "ratio": k["ratio"] if k else None, "target": CHECK["target"], "met": k["met"] if k else None}  # fmt: skip
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
