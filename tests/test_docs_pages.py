"""The manual (docs/, README.md as its front page): its tables and examples are checked
against the code so they cannot drift, and its links against its files."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from entra_guard import AuthObserver, EntraSettings
from entra_guard.__main__ import build_parser
from entra_guard._errors import STATUS_BY_CODE
from entra_guard.contrib.prometheus import PrometheusObserver

from ._docs import (
    DOCS,
    README,
    ROOT,
    github_slug,
    headings,
    page,
    prose_lines,
    section,
    table_after,
)

#: The first release's fixed codes (a deliberate copy: renaming one in _errors must fail here).
CONTRACT_CODES = {
    "missing_token": 401,
    "malformed_token": 401,
    "unsupported_algorithm": 401,
    "unknown_key": 401,
    "invalid_signature": 401,
    "token_expired": 401,
    "token_not_yet_valid": 401,
    "invalid_audience": 401,
    "invalid_issuer": 401,
    "missing_scope_or_role": 401,
    "tenant_not_allowed": 403,
    "insufficient_scope": 403,
    "missing_role": 403,
    "missing_group": 403,
    "idp_unavailable": 503,
    "groups_unavailable": 503,
}

#: Every ``<!-- marker: ... -->`` a test reads, and the one page that holds its table.
CHECKED_TABLES = {
    "settings-table": "settings",
    "troubleshooting-table": "troubleshooting",
    "metrics-table": "operations",
    "observer-hooks": "operations",
    "otel-metrics-table": "operations",
    "supported-versions": "supported-versions",
    "validation-rules": "security",
}


def render_default(value: Any) -> str:
    """How the settings table writes a default."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:g}`"
    if isinstance(value, list):
        return ", ".join(f"`{item}`" for item in value) if value else "empty"
    if isinstance(value, SecretStr):
        return "unset"
    return f"`{value}`"


def test_settings_table_matches_entra_settings() -> None:
    rows = table_after("settings", "settings-table")
    fields = EntraSettings.model_fields
    assert [row[0] for row in rows] == [f"`{name}`" for name in fields], "order and names"
    for name, env, default, meaning in rows:
        field_name = name.strip("`")
        field = fields[field_name]
        assert env == f"`ENTRA_{field_name.upper()}`"
        value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        assert default.startswith(render_default(value)), (field_name, default)
        assert len(meaning) > 20, field_name


def test_troubleshooting_table_covers_every_code() -> None:
    rows = table_after("troubleshooting", "troubleshooting-table")
    documented = {row[0].strip("`"): int(row[1]) for row in rows}
    assert len(documented) == len(rows), "a code is listed twice"
    assert documented == STATUS_BY_CODE  # every code the library can return, right status
    assert CONTRACT_CODES.items() <= documented.items()
    for row in rows:
        assert len(row) == 4 and all(len(cell) > 10 for cell in row[2:]), row


def test_metrics_table_matches_prometheus_observer() -> None:
    rows = table_after("operations", "metrics-table")
    documented = {row[0].strip("`"): row[1] for row in rows}
    observer = PrometheusObserver()
    actual = {}
    for family in observer.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        actual[name] = family.type
    assert documented == actual


def test_observer_hooks_table_lists_every_hook() -> None:
    rows = table_after("operations", "observer-hooks")
    documented = [re.match(r"`(\w+)\(", row[0]).group(1) for row in rows]  # type: ignore[union-attr]
    hooks = [name for name in vars(AuthObserver) if not name.startswith("_")]
    assert sorted(documented) == sorted(hooks)
    for row in rows:  # the keyword arguments, as the hook takes them
        name, args = re.match(r"`(\w+)\((.*)\)`", row[0]).groups()  # type: ignore[union-attr]
        parameters = list(inspect.signature(getattr(AuthObserver, name)).parameters)[1:]
        assert re.findall(r"(\w+)=?", args) == parameters, row[0]


def test_every_cli_flag_in_the_inspector_section_exists() -> None:
    text = section("troubleshooting", "## `entra-guard inspect`")
    mentioned = set(re.findall(r"`(--?[a-z][a-z0-9-]*)`", text))
    assert {"--json", "--tenant-id", "--audience", "-v"} <= mentioned
    inspect_parser = build_parser()._subparsers._group_actions[0].choices["inspect"]  # type: ignore[union-attr]
    known = {option for action in inspect_parser._actions for option in action.option_strings}
    assert mentioned <= known, mentioned - known
    assert known - {"-h", "--help", "--verbose"} <= mentioned, known - mentioned


def test_quick_start_commands_exist() -> None:
    """The README's and the getting-started page's ``make`` commands are Makefile targets,
    and the README's test command is the one CI runs (.ci/run)."""
    makefile = (ROOT / "Makefile").read_text()
    readme = section(README, "## Quick start")
    for text in (readme, section("getting-started", "## Quick start"), page(README)):
        for target in re.findall(r"^make (\w+)", text, flags=re.MULTILINE):
            assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    assert re.search(r"^make test\b", readme, flags=re.MULTILINE)
    assert re.search(r"^make docs\b", page(README), flags=re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)
    assert re.search(r"^make docs$", ci, flags=re.MULTILINE)


def test_national_clouds_table_is_valid_settings() -> None:
    text = section("tenants", "## National clouds")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "https://" in line]
    assert len(rows) >= 4
    for row in rows:
        authority, graph = re.findall(r"`(https://[^`]+)`", row)
        EntraSettings(
            tenant_id="organizations", client_id="x", authority_host=authority, graph_url=graph
        )


@pytest.mark.timeout(120)
def test_testing_your_api_example_runs(tmp_path: Path) -> None:
    """The first two code blocks of docs/testing.md are a working test suite, and the block of
    "Moving the clock" is one more test in it."""
    blocks = re.findall(r"```python\n(.*?)```", page("testing"), flags=re.DOTALL)
    conftest, tests = blocks[0], blocks[1]
    moving_the_clock = section("testing", "## Moving the clock")
    clock = re.findall(r"```python\n(.*?)```", moving_the_clock, flags=re.DOTALL)
    assert len(clock) == 1 and "real_asyncio=True" in moving_the_clock
    tests += "\n\n" + clock[0]
    assert "pytest_plugins" in conftest
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_items.py").write_text(tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def _nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists (``- Title: page.md`` or ``- page.md``), read as
    text: the suite does not need PyYAML or MkDocs."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    return re.findall(r"^\s+- (?:[^:\n]+: )?([\w/.-]+\.md)\s*$", nav, flags=re.MULTILINE)


def test_every_docs_page_is_in_the_nav() -> None:
    """make docs --strict fails on broken links, but a page left out of the nav builds
    fine and nobody finds it."""
    listed = _nav_pages()
    assert len(listed) == len(set(listed)), "a page is listed twice"
    on_disk = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert set(listed) == on_disk, (on_disk - set(listed), set(listed) - on_disk)


def _links(text: str) -> list[str]:
    prose = "\n".join(line for _, line in prose_lines(text))
    prose = re.sub(r"`[^`\n]*`", "", prose)  # code spans are not links
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def test_readme_links_into_docs_point_at_existing_pages_and_headings() -> None:
    """Relative links (docs/page.md#anchor) work on GitHub and PyPI's file view alike;
    their anchors are GitHub's."""
    links = [link for link in _links(page(README)) if not re.match(r"[a-z]+:", link)]
    into_docs = [link for link in links if link.startswith("docs/")]
    assert len(into_docs) >= 15, into_docs
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            slugs = {github_slug(title) for _, _, title in headings(target.read_text())}
            assert anchor in slugs, (link, sorted(slugs))


def test_docs_links_point_at_existing_files() -> None:
    """The fast half of make docs --strict: every relative link between pages names a
    file (the build also checks the anchors)."""
    for path in DOCS.rglob("*.md"):
        for link in _links(path.read_text()):
            if re.match(r"[a-z]+:", link) or link.startswith("#"):
                continue
            target = (path.parent / link.partition("#")[0]).resolve()
            assert target.is_file() and DOCS in target.parents, (path.name, link)


def test_each_checked_table_lives_on_one_page() -> None:
    """A table copied back into the README (or another page) would not be checked."""
    pages = {path.stem if path.parent == DOCS else str(path): path for path in DOCS.rglob("*.md")}
    pages[README] = ROOT / "README.md"
    for marker, expected in CHECKED_TABLES.items():
        holders = [name for name, path in pages.items() if f"<!-- {marker}" in path.read_text()]
        assert holders == [expected], (marker, holders)


def test_screenshots_are_shown_on_the_front_page_and_in_the_docs() -> None:
    for name in ("signin.png", "try-it-out.png"):
        assert (DOCS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](docs/{name})" in page(README)
        assert f"]({name})" in page("getting-started")
