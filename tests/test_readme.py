"""The README is the user's manual: its tables are checked against the code so they cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from entra_guard import EntraSettings
from entra_guard.__main__ import build_parser
from entra_guard._errors import STATUS_BY_CODE
from entra_guard.contrib.prometheus import PrometheusObserver

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

#: DESIGN.md §4: the fixed codes every troubleshooting table must explain.
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


def table_after(marker: str) -> list[list[str]]:
    """Rows (cells stripped) of the markdown table right after ``<!-- marker ...``."""
    start = README.index(f"<!-- {marker}")
    lines = README[start:].splitlines()[1:]
    assert lines[0].startswith("|") and set(lines[1]) <= set("|-: "), lines[:2]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start : end if end != -1 else None]


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
    rows = table_after("settings-table")
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
    rows = table_after("troubleshooting-table")
    documented = {row[0].strip("`"): int(row[1]) for row in rows}
    assert len(documented) == len(rows), "a code is listed twice"
    assert documented == STATUS_BY_CODE  # every code the library can return, right status
    assert CONTRACT_CODES.items() <= documented.items()
    for row in rows:
        assert len(row) == 4 and all(len(cell) > 10 for cell in row[2:]), row


def test_metrics_table_matches_prometheus_observer() -> None:
    rows = table_after("metrics-table")
    documented = {row[0].strip("`"): row[1] for row in rows}
    observer = PrometheusObserver()
    actual = {}
    for family in observer.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        actual[name] = family.type
    assert documented == actual


def test_every_cli_flag_in_the_readme_exists() -> None:
    text = section("### `entra-guard inspect`")
    mentioned = set(re.findall(r"`(--?[a-z][a-z-]*)`", text))
    assert {"--json", "--tenant-id", "--audience", "-v"} <= mentioned
    inspect_parser = build_parser()._subparsers._group_actions[0].choices["inspect"]  # type: ignore[union-attr]
    known = {option for action in inspect_parser._actions for option in action.option_strings}
    assert mentioned <= known, mentioned - known


def test_quick_start_commands_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    quick_start = section("## Quick start")
    for target in re.findall(r"^make (\w+)", quick_start, flags=re.MULTILINE):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


def test_national_clouds_table_is_valid_settings() -> None:
    text = section("### National clouds")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "https://" in line]
    assert len(rows) >= 4
    for row in rows:
        authority, graph = re.findall(r"`(https://[^`]+)`", row)
        EntraSettings(
            tenant_id="organizations", client_id="x", authority_host=authority, graph_url=graph
        )


@pytest.mark.timeout(120)
def test_testing_your_api_example_runs(tmp_path: Path) -> None:
    """The two code blocks of "Testing your API" are a working test suite."""
    blocks = re.findall(r"```python\n(.*?)```", section("## Testing your API"), flags=re.DOTALL)
    conftest, tests = blocks[0], blocks[1]
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
    assert "2 passed" in result.stdout
