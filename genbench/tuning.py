"""``python -m genbench.tuning``: the equal tuning's table, and the defaults it adopts.

``make tune`` runs one Optuna search per family with the same protocol (``conf/tuning/optuna.yaml``). This
reads each search's study (``<sweep dir>/optuna.jsonl``) and the run of the family's current defaults under
the same protocol (``--baseline FAMILY=RUN_DIR``, a ``results.json`` of ``genbench-train experiment=lecture
hparams_search=... hydra.sweeper.n_trials=0``-style settings: see docs/tuning.md), prints the table of every
trial, and with ``--write`` adopts the best trial's values as the family's defaults on that data set
(``conf/tuned/<data>_<family>.yaml``) where they beat the current defaults' FID; otherwise it records that
the search kept them.

    python -m genbench.tuning outputs/tune/gan outputs/tune/vae outputs/tune/ddpm \\
        --baseline gan=outputs/tune/gan_default ... [--write]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genbench.errors import GenbenchError
from genbench.io import atomic_write_bytes, read_results

TUNED_DIR = Path(__file__).resolve().parent.parent / "conf" / "tuned"
DOCS_START, DOCS_END = "<!-- tuning:start -->", "<!-- tuning:end -->"


@dataclass
class Search:
    family: str
    data: str
    study: str
    budget: str
    trials: list[tuple[int, dict[str, Any], float | None]] = field(default_factory=list)  # number, params, FID
    baseline_fid: float | None = None

    @property
    def best(self) -> tuple[int, dict[str, Any], float] | None:
        done = [t for t in self.trials if t[2] is not None and math.isfinite(t[2])]
        return min(done, key=lambda t: t[2]) if done else None  # type: ignore[return-value]

    @property
    def distinct(self) -> int:
        """Completed trials with distinct parameters (a repeated draw counts once)."""
        return len({tuple(sorted(p.items())) for _, p, fid in self.trials if fid is not None})

    @property
    def adopted(self) -> bool:
        best = self.best
        return best is not None and (self.baseline_fid is None or best[2] < self.baseline_fid)


def load_search(sweep_dir: Path) -> Search:
    """The study of an Optuna sweep directory, with the family, data set and budget of its trials."""
    import optuna

    from genbench.sweep import journal_storage

    journal = sweep_dir / "optuna.jsonl"
    if not journal.is_file():
        raise GenbenchError(f"{sweep_dir}: no optuna.jsonl; give the hydra.sweep.dir of a search (make tune)")
    storage = journal_storage(str(journal))
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if len(names) != 1:
        raise GenbenchError(f"{journal}: expected one study, found {names}")
    study = optuna.load_study(study_name=names[0], storage=storage)
    some = next((read_results(f) for f in sorted(sweep_dir.glob("*/results.json"))), None)
    if some is None:
        raise GenbenchError(f"{sweep_dir}: no finished trial (results.json)")
    budget = some.get("budget") or {}
    search = Search(some["family"], some["data"], names[0], f"{float(budget.get('value') or 0):.3g} {budget.get('kind')}")
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.state.name == "COMPLETE" else None
        search.trials.append((t.number, dict(t.params), value))
    return search


def markdown(searches: list[Search]) -> str:
    lines = []
    for s in searches:
        keys = sorted({k for _, params, _ in s.trials for k in params})
        lines += [f"### {s.family} on {s.data}: study `{s.study}`, {s.distinct} distinct completed trials at {s.budget} each",
                  "",
                  "| trial | " + " | ".join(f"`{k}`" for k in keys) + " | FID ↓ |",
                  "|---|" + "---|" * (len(keys) + 1)]  # fmt: skip
        best = s.best
        for number, params, fid in s.trials:
            cells = [_fmt(params.get(k)) for k in keys]
            mark = " **best**" if best and number == best[0] else ""
            lines.append(f"| {number} | " + " | ".join(cells) + f" | {_fmt(fid)}{mark} |")
        base = f"{s.baseline_fid:.3f}" if s.baseline_fid is not None else "not run"
        verdict = "adopted (conf/tuned/)" if s.adopted else "kept the current defaults"
        lines += ["", f"Current defaults under the same protocol: FID {base}. The search {verdict}.", ""]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "failed"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tuned(s: Search, date: str) -> Path | None:
    """``conf/tuned/<data>_<family>.yaml``: the search that decided the family's defaults on that data set, and
    the best trial's values where they beat the current defaults' FID (else none: the defaults stand)."""
    best = s.best
    if best is None:
        return None
    number, params, fid = best
    base = f"current defaults {s.baseline_fid:.3f}" if s.baseline_fid is not None else "current defaults not run"
    result = (f"adopted trial {number} (FID {fid:.3f}; {base})" if s.adopted
              else f"kept the current defaults ({base}; best trial {number}: FID {fid:.3f})")
    lines = ["# @package _global_",
             f"# {s.family} on {s.data}: the equal tuning's outcome ({s.study}), written by",
             "# `python -m genbench.tuning --write` (docs/tuning.md). Command-line overrides still win.",
             "tuned:", f"  study: {s.study}", f"  trials: {s.distinct}", f"  budget: {s.budget}",
             f"  result: \"{result}\"", f"  date: '{date}'"]  # fmt: skip
    if s.adopted:
        lines.append("model:")
        for key, value in sorted(params.items()):
            lines.append(f"  {key.removeprefix('model.')}: {value if isinstance(value, str) else repr(value)}")
    path = TUNED_DIR / f"{s.data}_{s.family}.yaml"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def main(argv: list[str] | None = None) -> int:
    import time

    parser = argparse.ArgumentParser(prog="python -m genbench.tuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="sweep directories of the searches (hydra.sweep.dir)")
    parser.add_argument("--baseline", action="append", default=[], metavar="FAMILY=RUN_DIR",
                        help="the run of a family's current defaults under the same protocol")
    parser.add_argument("--write", action="store_true", help="write conf/tuned/<data>_<family>.yaml for the adopted searches")
    parser.add_argument("--docs", default=None, metavar="PAGE",
                        help="also put the table between <!-- tuning:start --> and <!-- tuning:end --> in PAGE (docs/tuning.md)")
    args = parser.parse_intermixed_args(argv)  # make tune interleaves sweep directories and --baseline
    try:
        searches = [load_search(Path(d)) for d in args.sweeps]
        for item in args.baseline:
            family, _, run_dir = item.partition("=")
            match = [s for s in searches if s.family == family]
            if not match or not run_dir:
                raise GenbenchError(f"--baseline {item!r}: must be FAMILY=RUN_DIR for a family of the searches "
                                    f"({', '.join(s.family for s in searches)})")
            match[0].baseline_fid = float((read_results(Path(run_dir) / "results.json").get("eval") or {})["fid"])
    except (GenbenchError, KeyError, ValueError) as e:
        print(f"genbench.tuning: error: {e}", file=sys.stderr)
        return 2
    table = markdown(searches)
    print(table)
    if args.docs:
        page = Path(args.docs).read_text()
        head, _, rest = page.partition(DOCS_START)
        _, _, tail = rest.partition(DOCS_END)
        atomic_write_bytes(Path(args.docs), f"{head}{DOCS_START}\n{table}\n{DOCS_END}{tail}".encode())
    if args.write:
        for s in searches:
            path = write_tuned(s, time.strftime("%Y-%m-%d"))
            print(f"{s.family}: wrote {path}" if path else f"{s.family}: no completed trial, nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
