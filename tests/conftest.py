"""Shared fixtures: a fake Entra ID and the sample API, both real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings
from entra_guard.testing import FakeEntraID, FakeGraph, LiveServer
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


def protected_app(settings: EntraSettings | EntraAuth, **middleware: Any) -> FastAPI:
    """A bare FastAPI app behind EntraAuthMiddleware, with no start-up warm-up
    (so the first requests find an empty metadata cache); closes its EntraAuth,
    which is also at ``app.state.auth``."""
    auth = settings if isinstance(settings, EntraAuth) else EntraAuth(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await auth.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(EntraAuthMiddleware, auth=auth, **middleware)
    app.state.auth = auth
    return app


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


# -- groups overage: a fake Microsoft Graph beside the shared fake Entra ID (issue 3) --------

GRAPH_SECRET = "graph-test-secret"
FINANCE_GROUP = "3f5c9b1e-2d4a-4e6f-8a7b-1c2d3e4f5a6b"


@pytest.fixture(scope="session")
def _fake_graph_server(
    _fake_entra_server: tuple[FakeEntraID, LiveServer],
) -> Iterator[tuple[FakeGraph, LiveServer]]:
    graph = FakeGraph(_fake_entra_server[0])
    with LiveServer(graph.app) as server:
        yield graph, server


@pytest.fixture
def fake_graph(
    _fake_graph_server: tuple[FakeGraph, LiveServer], fake_entra: FakeEntraID
) -> Iterator[FakeGraph]:
    """The running fake Graph (memberships, faults and counters reset for every test);
    the API's client secret is registered with the shared fake Entra ID."""
    graph = _fake_graph_server[0]
    graph.reset()
    fake_entra.confidential_clients[fake_entra.client_id] = GRAPH_SECRET
    yield graph
    graph.reset()


@pytest.fixture
def graph_settings(
    fake_entra: FakeEntraID,
    fake_entra_url: str,
    fake_graph: FakeGraph,
    _fake_graph_server: tuple[FakeGraph, LiveServer],
) -> EntraSettings:
    """Settings of an API that resolves groups overage through the fake Graph."""
    return fake_entra.settings(
        fake_entra_url, graph_url=_fake_graph_server[1].url, client_secret=GRAPH_SECRET
    )


@pytest.fixture
def groups_api(start_api: ApiFactory, graph_settings: EntraSettings) -> str:
    """A fresh sample API (empty group cache) whose /finance needs ``FINANCE_GROUP``."""
    return start_api(graph_settings, finance_group_id=FINANCE_GROUP)
