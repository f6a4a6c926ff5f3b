"""The manual's pages (``docs/*.md``; ``README.md`` is the front page), read by the tests
that keep their tables and examples equal to the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = "README"

_HEADING = re.compile(r"^(#{1,6}) (.*)$")


def page_path(name: str) -> Path:
    """``"operations"`` -> ``docs/operations.md``; ``"README"`` -> ``README.md``."""
    return ROOT / "README.md" if name == README else DOCS / f"{name}.md"


def page(name: str) -> str:
    return page_path(name).read_text(encoding="utf-8")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(index, line)`` of the lines outside fenced code blocks (a ``# comment`` in a
    bash block is not a heading)."""
    lines, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((index, line))
    return lines


def headings(text: str) -> list[tuple[int, int, str]]:
    """``(line index, level, title)`` of every heading outside code blocks."""
    found = []
    for index, line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            found.append((index, len(match.group(1)), match.group(2).strip()))
    return found


def table_after(name: str, marker: str) -> list[list[str]]:
    """Rows (cells stripped) of the markdown table right after ``<!-- marker ...`` on
    page ``name``."""
    text = page(name)
    start = text.index(f"<!-- {marker}")
    lines = text[start:].splitlines()[1:]
    assert lines[0].startswith("|") and set(lines[1]) <= set("|-: "), lines[:2]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def section(name: str, title: str) -> str:
    """The section of page ``name`` whose heading starts with ``title`` (``"## Codes"``),
    up to the next heading of the same or a higher level."""
    text = page(name)
    lines = text.splitlines()
    found = [(i, level) for i, level, _ in headings(text) if lines[i].startswith(title)]
    assert len(found) == 1, f"{page_path(name).name}: {len(found)} headings {title!r}"
    start, level = found[0]
    ends = [i for i, other, _ in headings(text) if i > start and other <= level]
    return "\n".join(lines[start : ends[0] if ends else None])


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading (what README links into ``docs/`` use)."""
    text = re.sub(r"<[^>]+>", "", title).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
