"""``genbench-compare DIR... [--wandb PROJECT]``: one table for many runs.

Collects the ``results.json`` of runs and multirun directories (searched recursively), groups
them by (data, family) and reports mean ± std over seeds, as markdown and CSV. A cell whose evaluation
card (feature space, weights, resize, sample counts, reference, seeds: ``results["card"]``) differs from
its column's majority gets a footnote marker, with one footnote per difference under the table.

    genbench-compare multirun/2026-11-24_10-00-00
    genbench-compare outputs/lecture/* --csv table.csv --markdown table.md
    genbench-compare --wandb my-entity/genbench --group lecture_mnist5k
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.card import CARD_FIELDS, PROTOCOL_FIELDS
from evaluation.registry import ResultKey, metric_specs, result_keys
from genbench.errors import GenbenchError
from genbench.io import read_results
from genbench.runtime import start
from models.registry import order as family_order


def columns() -> list[ResultKey]:
    """The table's columns: every registered result key with a column, in registry order."""
    return [k for k in result_keys() if k.column]


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


@dataclass
class Group:
    data: str
    family: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The runs that finished; diverged or failed runs count in :meth:`runs_cell`, never in the means."""
        return [r for r in self.records if r.get("status", "ok") == "ok"]

    def failures(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            if r.get("status", "ok") != "ok":
                counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def runs_cell(self) -> str:
        """``3``, or ``2 (+1 diverged)`` when some runs of the group did not finish."""
        extra = ", ".join(f"+{n} {status}" for status, n in sorted(self.failures().items()))
        return f"{len(self.ok)} ({extra})" if extra else str(len(self.ok))

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.ok if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]

    def mean_std(self, key: str) -> tuple[float, float | None] | None:
        """Mean and sample standard deviation (n − 1) over seeds; std is None for one seed."""
        v = self.values(key)
        if not v:
            return None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


def group_records(records: list[dict[str, Any]]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for r in records:
        key = (str(r.get("data")), str(r.get("family")))
        groups.setdefault(key, Group(*key)).records.append(r)
    return sorted(groups.values(), key=lambda g: (g.data, family_order(g.family), g.family))


def _cell(stat: tuple[float, float | None] | None, column: ResultKey) -> str:
    if stat is None:
        return "–"
    mean, std = (None if v is None else v * column.scale for v in stat)
    fmt = column.fmt
    return fmt.format(mean) if std is None else f"{fmt.format(mean)} ± {fmt.format(std)}"


def active_columns(groups: list[Group]) -> list[ResultKey]:
    """The columns that at least one group has a value for."""
    return [c for c in columns() if any(g.values(c.key) for g in groups)]


# --- evaluation cards: cells measured differently from the rest of their column ------------------------------
def card_keys() -> set[str]:
    """The result keys whose value depends on the card: those of metrics of features or class logits."""
    return {k.key for s in metric_specs() if s.needs & {"features", "logits"} for k in s.keys}


def _shown(field: str, value: Any) -> str:
    return str(value)[:12] if field == "weights_sha256" and value else str(value)


def _runs(group: Group, key: str) -> list[dict[str, Any]]:
    return [r for r in group.ok if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def cell_card(group: Group, key: str) -> dict[str, tuple[str, ...]]:
    """Per card field, the values recorded by the runs behind one cell (several: a mixed cell); fields
    no run records (results written before the card) are left out."""
    card: dict[str, tuple[str, ...]] = {}
    for f in CARD_FIELDS:
        values = {_shown(f, r["card"][f]) for r in _runs(group, key) if f in (r.get("card") or {})}
        if values:
            card[f] = tuple(sorted(values))
    return card


def card_differences(groups: list[Group], cols: list[ResultKey]) -> tuple[dict[tuple[int, str], list[int]], list[str]]:
    """Footnotes of the cells whose card differs from their column's majority (among the rows of the same
    data set), one per difference, e.g. ``features=inception (others: classifier)``; and a cell whose runs
    disagree (e.g. on the sampler) gets ``sampler=ddim, ddpm within one cell``.

    Returns:
        ``(group index, key) -> footnote numbers`` and the footnotes' texts (number i is ``notes[i - 1]``).
    """
    marks: dict[tuple[int, str], list[int]] = {}
    notes: list[str] = []
    checked = card_keys()
    for col in (c for c in cols if c.key in checked):
        for data in sorted({g.data for g in groups}):
            cells = {i: cell_card(g, col.key) for i, g in enumerate(groups) if g.data == data and g.values(col.key)}
            # the majority over runs (a mixed cell is never the majority), ties to the first row
            protocol = Counter(tuple((_shown(f, r["card"][f]),) if f in r["card"] else None for f in PROTOCOL_FIELDS)
                               for i in cells for r in _runs(groups[i], col.key))  # fmt: skip
            majority = dict(zip(PROTOCOL_FIELDS, protocol.most_common(1)[0][0], strict=True)) if protocol else {}
            for i, card in cells.items():
                diffs = [f"{f}={', '.join(card[f])} (others: {', '.join(majority[f])})" for f in PROTOCOL_FIELDS
                         if card.get(f) and majority.get(f) and card[f] != majority[f]]
                diffs += [f"{f}={', '.join(v)} within one cell" for f, v in card.items()
                          if len(v) > 1 and f not in PROTOCOL_FIELDS]
                for text in diffs:
                    if text not in notes:
                        notes.append(text)
                    marks.setdefault((i, col.key), []).append(notes.index(text) + 1)
    return marks, notes


def marker(numbers: list[int]) -> str:
    """Footnote numbers as superscripts: [1, 12] -> ¹¹²."""
    return "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for n in numbers for d in str(n))


def to_markdown(groups: list[Group]) -> str:
    cols = active_columns(groups)
    marks, notes = card_differences(groups, cols)
    header = ["data", "family", "seeds"] + [c.header for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, g in enumerate(groups):
        row = [g.data, g.family, g.runs_cell()]
        row += [_cell(g.mean_std(c.key), c) + marker(marks.get((i, c.key), [])) for c in cols]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += [""] + [f"{marker([n])} {text}" for n, text in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def to_csv(groups: list[Group]) -> str:
    cols = active_columns(groups)
    marks, notes = card_differences(groups, cols)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["data", "family", "seeds", "failed"] + [f"{c.key}_{s}" for c in cols for s in ("mean", "std")]
               + ["card_differences"])  # fmt: skip
    for i, g in enumerate(groups):
        row: list[Any] = [g.data, g.family, len(g.ok), sum(g.failures().values())]
        for c in cols:
            stat = g.mean_std(c.key)
            row += ["", ""] if stat is None else [stat[0], "" if stat[1] is None else stat[1]]
        row.append("; ".join(f"{c.key}: {notes[n - 1]}" for c in cols for n in marks.get((i, c.key), [])))
        w.writerow(row)
    return buf.getvalue()


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
