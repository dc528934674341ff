"""The README stays a front door (at most 200 lines), every relative link in it and in docs/ resolves
to a file and, where it names one, a heading, and docs/performance.md holds the tables that
benchmarks/render_docs.py renders from the records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import render_docs

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where ``[x](y)`` is not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")  # GitHub numbers repeated headings
            seen[s] = seen.get(s, 0) + 1
    return out


def test_slug_matches_github():
    assert slug("On a GPU cluster with W&B (CIFAR-10)") == "on-a-gpu-cluster-with-wb-cifar-10"
    assert slug("The contract: `sample(n)`") == "the-contract-samplen"
    assert slug("Weights & Biases") == "weights--biases"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; at most 200 (move the rest to docs/)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_performance_page_holds_the_rendered_tables():
    page = (ROOT / "docs" / "performance.md").read_text()
    assert render_docs.START not in (ROOT / "README.md").read_text()
    inside = page.split(render_docs.START, 1)[1].split(render_docs.END, 1)[0].strip("\n")
    assert inside == render_docs.render(render_docs.load_records()), (
        "docs/performance.md is not what the records render to: run .venv/bin/python benchmarks/render_docs.py")
