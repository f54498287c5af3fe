"""The README and the pages under docs/ as a reader follows them: every relative link leads somewhere, and no page cites an issue number.

Shell blocks and generated tables are checked elsewhere (tests/test_readme.py, the generators'
``--check``); this file holds what is true of the text itself.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# [text](target) outside code: an inline link or image. Reference-style links are not used here.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^ *```.*?^ *```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
# "issue 18", "Issues 6, 11", "issue #5": a reader of the repository cannot resolve them.
ISSUE = re.compile(r"\bissues?\s*#?\d+", re.I)


def prose(text: str) -> str:
    """The text without its fenced blocks and code spans, where a bracket is code, not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("Protect /metrics: TLS, client certificates, basic auth")
    'protect-metrics-tls-client-certificates-basic-auth'
    >>> slug("`--state.path` and what survives")
    '--statepath-and-what-survives'
    """
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file's headings, duplicates numbered as GitHub numbers them."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_pages_hold_relative_links_to_check() -> None:
    assert sum(len(relative_links(page)) for page in PAGES) > 50


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_to_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        name, _, fragment = target.partition("#")
        destination = (page.parent / name).resolve() if name else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_page_cites_an_issue_number(page: Path) -> None:
    """Covers README.md and docs/ only: exporter/ and dashboards/ still cite some in their comments, and are cleaned on their own."""
    assert ISSUE.findall(page.read_text()) == []


@pytest.mark.parametrize("text", ["as issue 18 measured", "Issues 6, 11", "see issue #5", "ISSUE 21's levers"])
def test_an_issue_number_is_found_in_any_case_and_form(text: str) -> None:
    assert ISSUE.search(text)


@pytest.mark.parametrize("text", ["the issue's table", "an issue of the parser", "tissue 5"])
def test_the_word_issue_without_a_number_is_no_citation(text: str) -> None:
    assert not ISSUE.search(text)
