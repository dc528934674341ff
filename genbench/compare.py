"""``genbench-compare DIR... [--wandb PROJECT]``: one table for many runs.

Collects the ``results.json`` of runs and multirun directories (searched recursively), groups
them by (data, family) and reports every metric as its mean with a 95 % confidence interval, as markdown
and CSV: over the seeds (Student t) where a group has two or more, else the run's own bootstrap interval
(``eval.ci``). In each column the best family of a data set is bold and the families not significantly
different from it at 95 % are marked ≈ (:func:`significant`; the table's legend says how). A cell whose evaluation
card (feature space, weights, resize, sample counts, reference, seeds: ``results["card"]``) differs from
its column's majority gets a footnote marker, with one footnote per difference under the table.

    genbench-compare multirun/2026-11-24_10-00-00
    genbench-compare outputs/lecture/* --csv table.csv --markdown table.md
    genbench-compare --wandb my-entity/genbench --group lecture_mnist5k
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evaluation.registry import result_keys
from genbench.errors import GenbenchError
from genbench.io import read_results
from genbench.runtime import start
from genbench.table import group_records, to_csv, to_markdown


def flatten(results: dict[str, Any]) -> dict[str, Any]:
    """One flat record of a run's ``results.json`` (training facts + the final evaluation), or of a
    ``genbench-evaluate`` record (the metrics at its top level; stored samples are named by their path)."""
    evaluated = results.get("evaluated")
    ev = results.get("eval") or (results if evaluated else {})
    rec: dict[str, Any] = {
        "family": results.get("family") or (f"samples:{Path(str(evaluated)).name}" if evaluated else None),
        "data": results.get("data"),
        "seed": results.get("seed"),
        "run_dir": results.get("run_dir"),
        "status": results.get("status", "ok"),
        "params_m": results["parameters"] / 1e6 if results.get("parameters") is not None else None,
        "train_time_s": results.get("train_time_s"),
        "train_images_per_s": results.get("train_images_per_s"),
        "steps": results.get("steps"),
    }
    for key in [k.key for k in result_keys()] + ["num_samples", "features"]:
        if key in ev and key not in rec:
            rec[key] = ev[key]
    # results written before the card: what they record of it
    old = {"features": ev.get("features"), "num_generated": ev.get("num_samples")}
    rec["card"] = ev.get("card") or {k: v for k, v in old.items() if v is not None}
    rec["ci"] = ev.get("ci") if isinstance(ev.get("ci"), dict) else {}  # the final evaluation's 95 % intervals
    return rec


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("results.json")))
        else:
            raise GenbenchError(f"{p}: neither a results.json file nor a directory")
    return files


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    records = []
    for f in find_results(paths):
        try:
            records.append(flatten(read_results(f)))
        except (ValueError, KeyError, TypeError) as e:
            print(f"genbench-compare: skipping unreadable {f}: {e}", file=sys.stderr)
    return records


def wandb_records(project: str, group: str | None = None, api: Any = None) -> list[dict[str, Any]]:
    """The same records from the W&B API (needs network and a key), from each run's summary.

    Raises :class:`GenbenchError` when the API cannot be read (no key, no network, no such project).
    """
    import wandb

    filters = {"group": group} if group else {}
    records = []
    try:
        api = wandb.Api() if api is None else api
        for run in api.runs(project, filters=filters):
            # genbench-train stores its results.json record (without the config) in the run summary
            results = dict(run.summary).get("results")
            if isinstance(results, dict) and results.get("family"):
                records.append(flatten(results))
    except (wandb.errors.Error, ValueError, OSError) as e:  # OSError: requests' connection errors
        reason = (str(e).strip().splitlines() or [""])[0]
        raise GenbenchError(
            f"--wandb {project}: cannot read its W&B runs ({type(e).__name__}: {reason or 'no detail'}). It needs the "
            "network and a W&B key (`wandb login` or WANDB_API_KEY) and an existing ENTITY/PROJECT; or give the run "
            "directories instead."
        ) from None
    return records


def check_output_file(option: str, path: str) -> None:
    """Raise :class:`GenbenchError` unless ``path`` can be written as a file (missing directories are made)."""
    from genbench.io import writable_file_errors

    errors = [f"{option}='': give a file name"] if not path else writable_file_errors(option, path, path)
    if errors:
        raise GenbenchError(errors[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbench-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", help="run or multirun directories, or results.json files")
    parser.add_argument("--wandb", metavar="PROJECT", help="read the runs of a W&B project (entity/project) instead")
    parser.add_argument("--group", help="with --wandb: only this W&B group")
    parser.add_argument("--markdown", metavar="FILE", help="also write the markdown table here")
    parser.add_argument("--csv", metavar="FILE", help="also write the CSV table here")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give run directories or --wandb PROJECT")
    try:
        start()
        for option, path in (("--markdown", args.markdown), ("--csv", args.csv)):
            if path is not None:
                check_output_file(option, path)
        records = wandb_records(args.wandb, args.group) if args.wandb else load_records(args.dirs)
    except GenbenchError as e:
        print(f"genbench-compare: error: {e}", file=sys.stderr)
        return 2
    if not records:
        print("genbench-compare: error: no results.json found in " + ", ".join(args.dirs or [args.wandb]), file=sys.stderr)
        return 2
    groups = group_records(records)
    md = to_markdown(groups)
    print(md)
    from genbench.io import atomic_write_bytes

    if args.markdown is not None:
        atomic_write_bytes(args.markdown, md.encode())
    if args.csv is not None:
        atomic_write_bytes(args.csv, to_csv(groups).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
