"""docs/supported-versions.md says what pyproject.toml declares, and make test-min tests it.

``make test-min`` installs every declared requirement at its floor and sets
``ENTRA_GUARD_LOWEST_VERSIONS=1``; then the installed versions must be the floors,
so the "lowest tested" column is what the whole suite just ran on.
"""

from __future__ import annotations

import os
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ._docs import page, table_after

ROOT = Path(__file__).resolve().parent.parent
PAGE = page("supported-versions")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOWEST = os.environ.get("ENTRA_GUARD_LOWEST_VERSIONS") == "1"
#: Extras for the project's own development, not for users: not in the table.
DEV_EXTRAS = {"dev"}


def _key(req: Requirement) -> str:
    """``python-jose[cryptography]``: the name as pyproject.toml and the table write it."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name.lower()}{extras}"


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req}: every requirement needs one '>=' floor (lowest-direct)"
    return floors[0]


def _user_requirements() -> dict[str, Requirement]:
    """Dependencies and user-facing extras, one entry per requirement."""
    found: dict[str, Requirement] = {}
    groups = {"": PROJECT["dependencies"], **PROJECT.get("optional-dependencies", {})}
    for extra, lines in groups.items():
        if extra in DEV_EXTRAS:
            continue
        for line in lines:
            req = Requirement(line)
            if req.name.lower() == PROJECT["name"]:
                continue  # an extra that pulls in another extra
            other = found.setdefault(_key(req), req)
            assert other.specifier == req.specifier, f"{req} and {other} disagree"
    return found


def _all_requirements() -> list[Requirement]:
    lines = [*PROJECT["dependencies"]]
    for extra in PROJECT.get("optional-dependencies", {}).values():
        lines += extra
    return [r for r in map(Requirement, lines) if r.name.lower() != PROJECT["name"]]


def _table() -> dict[str, tuple[Version, Version]]:
    header = PAGE[PAGE.index("<!-- supported-versions") :].splitlines()[1]
    assert header.startswith("| dependency | lowest tested | newest tested"), header
    rows: dict[str, tuple[Version, Version]] = {}
    for cells in table_after("supported-versions", "supported-versions"):
        name, lowest, newest = (c.strip("`") for c in cells[:3])
        rows[name.lower()] = (Version(lowest), Version(newest))
    return rows


def test_table_lists_every_user_facing_requirement() -> None:
    table, declared = _table(), _user_requirements()
    missing = sorted(set(declared) - set(table))
    assert not missing, (
        f"docs/supported-versions.md needs a row for {missing} "
        "(lowest tested = the pyproject.toml floor, checked by make test-min)"
    )
    assert not set(table) - set(declared), f"rows for undeclared {set(table) - set(declared)}"


@pytest.mark.parametrize("key", sorted(_user_requirements()))
def test_row_matches_pyproject(key: str) -> None:
    req = _user_requirements()[key]
    lowest, newest = _table()[key]
    assert lowest == _floor(req), (
        f"{key}: docs/supported-versions.md says {lowest}, pyproject.toml {req.specifier}"
    )
    assert newest >= lowest
    assert req.specifier.contains(newest), f"{key}: {newest} is outside {req.specifier}"


def test_dev_extra_repeats_user_floors_exactly() -> None:
    """The dev extra names uvicorn etc. again: a different floor there would change
    what make test-min installs (lowest-direct takes the highest floor)."""
    user = _user_requirements()
    for line in PROJECT.get("optional-dependencies", {}).get("dev", []):
        req = Requirement(line)
        if _key(req) in user:
            assert req.specifier == user[_key(req)].specifier, f"dev {req} vs {user[_key(req)]}"


@pytest.mark.parametrize("req", _all_requirements(), ids=str)
def test_installed_versions(req: Requirement) -> None:
    """Under make test-min, exactly the floors; otherwise whatever pyproject.toml allows."""
    try:
        installed = Version(version(req.name))
    except PackageNotFoundError:
        if LOWEST:
            raise  # make test-min installs every extra
        pytest.skip(f"{req.name} is not installed (an extra make test does not install)")
    if LOWEST:
        assert installed == _floor(req), (
            f"make test-min installed {req.name} {installed} for {req}: the floor does not "
            f"exist or something else needs more; raise it in pyproject.toml to {installed}"
        )
    else:
        assert SpecifierSet(str(req.specifier)).contains(installed, prereleases=True), (
            f"{req.name} {installed} is outside {req.specifier}: reinstall (make clean)"
        )


def test_section_says_how_to_run_it() -> None:
    assert "`make test-min`" in PAGE


def test_dependency_instances_carry_real_annotations() -> None:
    """FastAPI < 0.123.7 reads a callable instance's annotations as written: a string
    ``"HTTPConnection"`` (``from __future__ import annotations``) becomes a query parameter
    or a start-up error, so these modules keep real annotations."""
    import inspect

    from starlette.requests import HTTPConnection

    from entra_guard import Guard, downstream_client, downstream_token

    for dependency in (Guard.__call__, type(downstream_token("s")).__call__):
        annotation = inspect.signature(dependency).parameters["connection"].annotation
        assert annotation is HTTPConnection, dependency
    client = downstream_client("https://api.test", scopes=["https://api.test/.default"])
    annotation = inspect.signature(type(client).__call__).parameters["connection"].annotation
    assert annotation is HTTPConnection
