"""pytest fixtures: ``pytest_plugins = ["entra_guard.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._settings import EntraSettings
from ._idp import FakeEntraID
from ._server import LiveServer


@pytest.fixture(scope="session")
def _fake_entra_server() -> Iterator[tuple[FakeEntraID, LiveServer]]:
    idp = FakeEntraID()
    with LiveServer(idp.app) as server:
        yield idp, server


@pytest.fixture
def fake_entra(_fake_entra_server: tuple[FakeEntraID, LiveServer]) -> Iterator[FakeEntraID]:
    """The running fake Entra ID; faults and hit counters are reset for every test."""
    idp, _ = _fake_entra_server
    idp.recover()
    idp.reset_hits()
    yield idp
    idp.recover()


@pytest.fixture
def fake_entra_url(_fake_entra_server: tuple[FakeEntraID, LiveServer]) -> str:
    return _fake_entra_server[1].url


@pytest.fixture
def entra_settings(fake_entra: FakeEntraID, fake_entra_url: str) -> EntraSettings:
    """Settings of an API registered in the fake tenant."""
    return fake_entra.settings(fake_entra_url)
