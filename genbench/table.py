"""``genbench-compare``'s table (and the report's): runs grouped by (data, family), every metric as its mean
with a 95 % confidence interval, as markdown and CSV.

The interval is over the seeds (Student t, :func:`t_interval`) where a group has two or more, else the run's
own bootstrap interval (``eval.ci``). In each column the best family of a data set is bold and the families not
significantly different from it at 95 % are marked ≈ (:func:`significant`; the table's legend says how). A cell
whose evaluation card (``results["card"]``) differs from its column's majority gets a footnote marker, with one
footnote per difference under the table (:func:`card_differences`).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from scipy import stats as scipy_stats

from evaluation.card import CARD_FIELDS, PROTOCOL_FIELDS
from evaluation.registry import ResultKey, metric_specs, result_keys
from models.registry import order as family_order


def columns() -> list[ResultKey]:
    """The table's columns: every registered result key with a column, in registry order."""
    return [k for k in result_keys() if k.column]


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

    def stat(self, key: str) -> Stat | None:
        """The mean over seeds with its 95 % interval (:class:`Stat`); None without values."""
        v = self.values(key)
        if not v:
            return None
        if len(v) > 1:
            return Stat(statistics.fmean(v), tuple(v), *t_interval(v), kind="t")
        ci = next(r for r in self.ok if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])).get("ci") or {}
        bounds = ci.get(key)
        if (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in bounds)):  # fmt: skip
            return Stat(v[0], tuple(v), float(min(bounds)), float(max(bounds)), kind="run")
        return Stat(v[0], tuple(v))

    def mean_std(self, key: str) -> tuple[float, float | None] | None:
        """Mean and sample standard deviation (n − 1) over seeds; std is None for one seed."""
        v = self.values(key)
        if not v:
            return None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


@dataclass(frozen=True)
class Stat:
    """A cell's numbers: the mean over seeds and its 95 % interval.

    ``kind``: ``t`` (two or more seeds: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n), ``run`` (one seed: the run's own interval,
    ``eval.ci``: a percentile bootstrap over its generated samples) or ``""`` (one seed without one).
    """

    mean: float
    values: tuple[float, ...]
    low: float | None = None
    high: float | None = None
    kind: str = ""

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def se(self) -> float | None:
        """Standard error of the mean: s/√n over seeds, (high − low) / (2 · 1.96) from a run's interval."""
        if self.kind == "t":
            return self.std / math.sqrt(len(self.values))
        if self.kind == "run":
            return (self.high - self.low) / (2 * 1.96)
        return None


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The Student-t interval of the mean: x̄ ± t_{(1+level)/2, n−1} · s/√n (s: sample std, n − 1)."""
    mean, n = statistics.fmean(values), len(values)
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def significant(a: Stat, b: Stat) -> bool | None:
    """Whether the means of two cells differ at the 95 % level; None when either has no interval.

    Both with two or more seeds: Welch's t-test (unequal variances), p < 0.05 (equal means over seeds without
    spread: not significant; different ones: significant). Otherwise a normal approximation from the standard
    errors (:attr:`Stat.se`): significant when |Δ| > 1.96 · sqrt(se_a² + se_b²).
    """
    if not a.kind or not b.kind:
        return None
    if a.kind == b.kind == "t":
        if a.std == b.std == 0:
            return a.mean != b.mean
        p = float(scipy_stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
        return a.mean != b.mean if math.isnan(p) else p < 0.05
    return abs(a.mean - b.mean) > 1.96 * math.hypot(a.se, b.se)


def group_records(records: list[dict[str, Any]]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for r in records:
        key = (str(r.get("data")), str(r.get("family")))
        groups.setdefault(key, Group(*key)).records.append(r)
    return sorted(groups.values(), key=lambda g: (g.data, family_order(g.family), g.family))


def _cell(stat: Stat | None, column: ResultKey, mark: str = "") -> str:
    """``mean ± h`` (seeds), ``mean [low, high]`` (one seed's own interval) or ``mean``; bold when ``mark`` is
    ``best``, prefixed ``≈`` when it is ``≈``."""
    if stat is None:
        return "–"
    fmt, scale = column.fmt, column.scale
    text = fmt.format(stat.mean * scale)
    if stat.kind == "t":
        text += f" ± {fmt.format((stat.high - stat.mean) * scale)}"
    elif stat.kind == "run":
        low, high = sorted((stat.low * scale, stat.high * scale))
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return f"**{text}**" if mark == "best" else f"≈ {text}" if mark == "≈" else text


def significance_marks(groups: list[Group], cols: list[ResultKey]) -> dict[tuple[int, str], str]:
    """``(group index, key) -> "best" | "≈"``: per column with a direction and per data set, among the cells
    with an interval (two at least), the best mean, and the cells not significantly different from it
    (:func:`significant`). Cells without an interval are not tested and get no mark."""
    marks: dict[tuple[int, str], str] = {}
    for col in (c for c in cols if c.better in ("lower", "higher")):
        for data in sorted({g.data for g in groups}):
            cells = {i: g.stat(col.key) for i, g in enumerate(groups) if g.data == data}
            cells = {i: st for i, st in cells.items() if st is not None and st.kind}
            if len(cells) < 2:
                continue
            sign = 1 if col.better == "lower" else -1
            best = min(cells, key=lambda i: sign * cells[i].mean)
            marks[(best, col.key)] = "best"
            for i, st in cells.items():
                if i != best and not significant(cells[best], st):
                    marks[(i, col.key)] = "≈"
    return marks


def legend(groups: list[Group], cols: list[ResultKey]) -> str | None:
    """The table's note on its intervals and marks; None when no cell has an interval."""
    kinds = {st.kind for g in groups for c in cols if (st := g.stat(c.key)) is not None}
    if not kinds - {""}:
        return None
    return (
        "Cells: mean ± h, the 95 % Student-t interval of the mean over the seeds (h = t(0.975, n−1) · s/√n, s the "
        "sample std); mean [low, high] for one seed: the run's own 95 % interval, a percentile bootstrap over its "
        "generated samples with the real set held fixed (nll_bpd: mean ± 1.96 · s/√n over its real examples); a bare "
        "mean: one seed without an interval. **Bold**: the best mean of its column and data set among the cells with "
        "an interval; ≈: not significantly different from the bold one at 95 % (both with ≥ 2 seeds: Welch's t-test, "
        "p < 0.05; otherwise a normal approximation with se = s/√n over seeds or (high − low) / (2 · 1.96) of a run's "
        "interval, significant when |Δ| > 1.96 · sqrt(se_a^2 + se_b^2)); unmarked cells with an interval are "
        "significantly worse than the bold one; cells without one are not tested."
    )


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
    best = significance_marks(groups, cols)
    header = ["data", "family", "seeds"] + [c.header for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, g in enumerate(groups):
        row = [g.data, g.family, g.runs_cell()]
        row += [_cell(g.stat(c.key), c, best.get((i, c.key), "")) + marker(marks.get((i, c.key), [])) for c in cols]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += [""] + [f"{marker([n])} {text}" for n, text in enumerate(notes, 1)]
    note = legend(groups, cols)
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def to_csv(groups: list[Group]) -> str:
    cols = active_columns(groups)
    marks, notes = card_differences(groups, cols)
    best = significance_marks(groups, cols)
    buf = io.StringIO()
    w = csv.writer(buf)
    fields = ("mean", "std", "low", "high", "interval", "mark")
    w.writerow(["data", "family", "seeds", "failed"] + [f"{c.key}_{s}" for c in cols for s in fields]
               + ["card_differences"])  # fmt: skip
    for i, g in enumerate(groups):
        row: list[Any] = [g.data, g.family, len(g.ok), sum(g.failures().values())]
        for c in cols:
            st = g.stat(c.key)
            if st is None:
                row += [""] * len(fields)
                continue
            row += [st.mean, "" if st.std is None else st.std, "" if st.low is None else st.low,
                    "" if st.high is None else st.high, st.kind, best.get((i, c.key), "")]  # fmt: skip
        row.append("; ".join(f"{c.key}: {notes[n - 1]}" for c in cols for n in marks.get((i, c.key), [])))
        w.writerow(row)
    return buf.getvalue()
