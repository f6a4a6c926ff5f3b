"""Shared fixtures: a fake Entra ID and the sample API, both real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from entra_guard import EntraSettings
from entra_guard.testing import FakeEntraID, LiveServer
from sample_app.app import create_app

pytest_plugins = ["entra_guard.testing.pytest_plugin"]

ApiFactory = Callable[..., str]


@pytest.fixture
def fresh_idp() -> Iterator[tuple[FakeEntraID, str]]:
    """A private fake Entra ID (for tests that rotate keys or break it)."""
    idp = FakeEntraID()
    with LiveServer(idp.app) as server:
        yield idp, server.url


@pytest.fixture
def start_api() -> Iterator[Callable[..., str]]:
    """Start an app under uvicorn on 127.0.0.1; returns its base URL.

    ``start_api(settings)`` serves the sample app for those settings;
    ``start_api(app=my_fastapi_app)`` serves any app.
    """
    servers: list[LiveServer] = []

    def start(
        settings: EntraSettings | None = None, *, app: FastAPI | None = None, **kw: Any
    ) -> str:
        if app is None:
            assert settings is not None
            app = create_app(settings, **kw)
        server = LiveServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def _shared_api(_fake_entra_server: tuple[FakeEntraID, LiveServer]) -> Iterator[str]:
    idp, idp_server = _fake_entra_server
    with LiveServer(create_app(idp.settings(idp_server.url))) as server:
        yield server.url


@pytest.fixture
def api(_shared_api: str, fake_entra: FakeEntraID) -> str:
    """The sample API (shared by the session), trusting the shared fake Entra ID."""
    return _shared_api


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Status, JSON ``code`` and the RFC 6750 header of a refusal, all at once."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    challenge = response.headers.get("www-authenticate")
    if status == 401:
        assert challenge is not None and challenge.startswith("Bearer")
        if code == "missing_token":
            assert challenge == "Bearer"
        else:
            assert 'error="invalid_token"' in challenge
            assert "error_description=" in challenge
    if code == "insufficient_scope":
        assert challenge is not None and 'error="insufficient_scope"' in challenge
        assert "scope=" in challenge
    if status == 503:
        assert int(response.headers["retry-after"]) >= 1
    return body
