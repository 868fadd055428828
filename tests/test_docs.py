"""The documentation: it builds with warnings as errors (a broken docstring or a failing notebook
cell fails here), every problem kind and every notebook has its page, the pages carry their
figures, every analytical model is explained on a page, and nothing in the repository points to
files outside it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jointopt.solvers import PROBLEM_KINDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def images(page: Path) -> list[Path]:
    """The files a built HTML page's ``<img>`` tags point to (each must exist, non-empty)."""
    parser = _Images()
    parser.feed(page.read_text())
    files = []
    for src in parser.sources:
        if src.startswith("data:image/"):
            continue  # inline image: present by construction
        path = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        assert path.is_file() and path.stat().st_size > 0, f"{page.name}: missing image {src}"
        files.append(path)
    return files


def test_landing_page_carries_the_key_figures(docs_build):
    shown = images(docs_build / "html" / "index.html")
    assert len(shown) >= 2, f"the landing page shows {len(shown)} figure(s)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_page_with_its_figures(docs_build, path):
    page = docs_build / "html" / "examples" / f"{path.stem}.html"
    assert page.is_file(), f"no docs page for notebooks/{path.name}"
    assert images(page), f"examples/{path.stem}.html shows no figure"


@pytest.mark.parametrize("kind", sorted(PROBLEM_KINDS))
def test_every_problem_kind_has_its_page(docs_build, kind):
    source = DOCS / "kinds" / f"{kind}.md"
    assert source.is_file(), f"problem kind {kind!r} has no page docs/kinds/{kind}.md"
    text = source.read_text()
    for section in ("## What it decides", "## The model", "## The algorithm", "## Provenance",
                    "## Scenario format", "## Command line", "## Figures", "## Measured limits"):
        assert section in text, f"docs/kinds/{kind}.md lacks the section {section!r}"
    assert f"{{scenario-fields}} {kind}" in text, f"docs/kinds/{kind}.md lists no scenario fields"
    html = (docs_build / "html" / "kinds" / f"{kind}.html").read_text()
    for field in PROBLEM_KINDS[kind].model_fields:  # the generated field table is complete
        assert f">{field}<" in html, f"kinds/{kind}.html: field {field!r} missing"
    assert images(docs_build / "html" / "kinds" / f"{kind}.html"), f"kinds/{kind}.html: no figure"


def test_every_model_is_explained_on_a_page():
    pages = " ".join(p.read_text() for p in (DOCS / "kinds").glob("*.md"))
    helpers = {"__init__", "checks", "errors"}  # validation helpers and error types, not models
    for module in sorted((ROOT / "models").glob("*.py")):
        if module.stem not in helpers:
            assert f"jointopt.models.{module.stem}" in pages, (
                f"models/{module.name} is explained on no page of docs/kinds/")


# written split so that this file does not match its own patterns
_OUTSIDE = [re.compile(p) for p in (r"\.\./" + "shared", "shared" + r"/", "DESIGN" + r"\.md",
                                    "\u00a7", r"\b[Ss]pec" + r"\s+`+\w+\.md", r"\bSpec" + ":")]
_SCANNED = ["README.md", "docs", "jointopt", "models", "solvers", "notebooks", "benchmarks",
            "tests", "pyproject.toml"]
_GENERATED = ("_build", "jupyter_execute", "__pycache__", "examples/", "gallery.md")


def test_nothing_refers_to_files_outside_the_repository():
    bad = []
    for name in _SCANNED:
        base = ROOT / name
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for path in files:
            rel = path.relative_to(ROOT).as_posix()
            if path.suffix not in (".py", ".md", ".toml", ".yaml", ".ipynb", ".txt", ".rst") or (
                    any(g in rel for g in _GENERATED) and rel != "docs/examples/index.md"):
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if any(p.search(line) for p in _OUTSIDE):
                    bad.append(f"{rel}:{i}: {line.strip()[:100]}")
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)
