"""Shared fixtures: a fake Entra ID, a fake Graph and the sample API.

Two layers: a test file that sets ``pytestmark = pytest.mark.in_process``
gets them in process (``tests/_inprocess.py``: httpx.ASGITransport, no sockets); every
other file, and any test marked ``over_sockets``, gets real servers on 127.0.0.1
(``LiveServer``). The fixtures keep their names and shapes in both layers: ``api`` and
``start_api(...)`` return a base URL, ``client`` is a sync ``httpx.Client`` for it.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from entra_guard import EntraAuth, EntraAuthMiddleware, EntraSettings
from entra_guard.testing import FakeEntraID, FakeGraph, FakeKey, LiveServer
from sample_app.app import create_app

from . import _inprocess
from ._inprocess import InProcessNetwork, entra_client_for

T = TypeVar("T")

pytest_plugins = ["entra_guard.testing.pytest_plugin"]

ApiFactory = Callable[..., str]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "in_process: serve this file's fakes and APIs in process (no sockets)"
    )
    config.addinivalue_line(
        "markers", "over_sockets: real servers on 127.0.0.1, even in an in_process file"
    )


#: The files that take longest (waits on real servers, retries, a browser), run first so
#: that ``make test``'s workers (``--dist loadfile``) do not end on one of them alone.
SLOW_FILES_FIRST = (
    "test_fleet.py",
    "test_hostile_upstreams.py",
    "test_obo.py",
    "test_browser.py",
    "test_metadata.py",
    "test_groups.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_FILES_FIRST.index(name) if name in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)

    items.sort(key=rank)  # stable: every file keeps its own order


def in_process(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return (
        node.get_closest_marker("in_process") is not None
        and node.get_closest_marker("over_sockets") is None
    )


@pytest.fixture(scope="session")
def network() -> Iterator[InProcessNetwork]:
    """The in-process network (one event loop, no sockets) of the whole session."""
    yield _inprocess.network()
    _inprocess.close_network()


@pytest.fixture(scope="session")
def _inprocess_entra_url(
    network: InProcessNetwork, _fake_entra_server: tuple[FakeEntraID, LiveServer]
) -> str:
    """The shared fake Entra ID, also served in process (same object, same counters)."""
    return network.add(_fake_entra_server[0].app, "entra")


@pytest.fixture
def fake_entra_url(request: pytest.FixtureRequest, fake_entra_url: str) -> str:
    """The plugin's URL of the shared fake Entra ID, or its in-process one."""
    if in_process(request):
        return str(request.getfixturevalue("_inprocess_entra_url"))
    return fake_entra_url


@pytest.fixture(scope="session")
def _fresh_idp_key() -> FakeKey:
    """The signing key every fresh fake Entra ID starts with (a 2048-bit RSA key costs
    0.1-0.4 s to make); each gets its own copy of the published JWK to edit."""
    return FakeKey.generate()


@pytest.fixture
def fresh_idp(
    request: pytest.FixtureRequest, _fresh_idp_key: FakeKey
) -> Iterator[tuple[FakeEntraID, str]]:
    """A private fake Entra ID (for tests that rotate keys or break it)."""
    key = dataclasses.replace(_fresh_idp_key, public_jwk=copy.deepcopy(_fresh_idp_key.public_jwk))
    idp = FakeEntraID(key=key)
    if in_process(request):
        network: InProcessNetwork = request.getfixturevalue("network")
        url = network.add(idp.app, "idp")
        yield idp, url
        network.remove(url)
        return
    with LiveServer(idp.app) as server:
        yield idp, server.url


@pytest.fixture
def start_api(request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Start an app (under uvicorn on 127.0.0.1, or in process); returns its base URL.

    ``start_api(settings)`` serves the sample app for those settings;
    ``start_api(app=my_fastapi_app)`` serves any app.
    """
    servers: list[LiveServer] = []
    urls: list[str] = []
    clients: list[httpx.AsyncClient] = []
    network: InProcessNetwork | None = (
        request.getfixturevalue("network") if in_process(request) else None
    )

    def start(
        settings: EntraSettings | None = None, *, app: FastAPI | None = None, **kw: Any
    ) -> str:
        if app is None:
            assert settings is not None
            if network is not None and not kw.get("dev_mode"):
                kw["http_client"] = network.entra_client(settings)
                clients.append(kw["http_client"])
            app = create_app(settings, **kw)
        if network is not None:
            urls.append(network.add(app, "api"))
            return urls[-1]
        server = LiveServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
    if network is not None:
        for url in urls:
            network.remove(url)
        for http in clients:
            network.run(http.aclose())


@pytest.fixture(scope="session")
def _shared_api(_fake_entra_server: tuple[FakeEntraID, LiveServer]) -> Iterator[str]:
    idp, idp_server = _fake_entra_server
    with LiveServer(create_app(idp.settings(idp_server.url))) as server:
        yield server.url


@pytest.fixture(scope="session")
def _shared_inprocess_api(
    network: InProcessNetwork,
    _fake_entra_server: tuple[FakeEntraID, LiveServer],
    _inprocess_entra_url: str,
) -> Iterator[str]:
    settings = _fake_entra_server[0].settings(_inprocess_entra_url)
    http = network.entra_client(settings)
    url = network.add(create_app(settings, http_client=http), "sample")
    yield url
    network.remove(url)
    network.run(http.aclose())


@pytest.fixture
def api(request: pytest.FixtureRequest, fake_entra: FakeEntraID) -> str:
    """The sample API (shared by the session), trusting the shared fake Entra ID."""
    if in_process(request):
        return str(request.getfixturevalue("_shared_inprocess_api"))
    return str(request.getfixturevalue("_shared_api"))


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    if in_process(request):
        network: InProcessNetwork = request.getfixturevalue("network")
        with network.client() as c:
            yield c
        return
    with httpx.Client(timeout=30) as c:
        yield c


def protected_app(
    settings: EntraSettings | EntraAuth,
    *,
    clock: Callable[[], float] | None = None,
    **middleware: Any,
) -> FastAPI:
    """A bare FastAPI app behind EntraAuthMiddleware, with no start-up warm-up
    (so the first requests find an empty metadata cache); closes its EntraAuth,
    which is also at ``app.state.auth``. Settings that point at an in-process fake
    Entra ID get an in-process HTTP client; ``clock`` is the library's clock."""
    http = None if isinstance(settings, EntraAuth) else entra_client_for(settings)
    auth = (
        settings
        if isinstance(settings, EntraAuth)
        else EntraAuth(settings, http_client=http, clock=clock)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await auth.aclose()
        if http is not None:
            await http.aclose()

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


@pytest.fixture(scope="session")
def _inprocess_graph_url(
    network: InProcessNetwork, _fake_graph_server: tuple[FakeGraph, LiveServer]
) -> str:
    return network.add(_fake_graph_server[0].app, "graph")


@pytest.fixture
def graph_settings(
    request: pytest.FixtureRequest,
    fake_entra: FakeEntraID,
    fake_entra_url: str,
    fake_graph: FakeGraph,
    _fake_graph_server: tuple[FakeGraph, LiveServer],
) -> EntraSettings:
    """Settings of an API that resolves groups overage through the fake Graph."""
    graph_url = (
        str(request.getfixturevalue("_inprocess_graph_url"))
        if in_process(request)
        else _fake_graph_server[1].url
    )
    return fake_entra.settings(fake_entra_url, graph_url=graph_url, client_secret=GRAPH_SECRET)


@pytest.fixture
def groups_api(start_api: ApiFactory, graph_settings: EntraSettings) -> str:
    """A fresh sample API (empty group cache) whose /finance needs ``FINANCE_GROUP``."""
    return start_api(graph_settings, finance_group_id=FINANCE_GROUP)


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` from a sync test on a loop of its own, closed after.

    Not ``asyncio.run``: that ends with ``set_event_loop(None)``, which orphans the loop
    pytest-asyncio set as current; with older pytest releases its unclosed sockets then
    fail whichever test the garbage collector happens to run in (``make test-min``).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def _no_idle_event_loop_left_current(request: pytest.FixtureRequest) -> None:
    """Before a sync test, close an idle event loop an earlier async test left current.

    Some pytest-asyncio releases leave one behind; ``asyncio.run`` in a sync test (the
    inspector's command line) then drops it unclosed, and its socketpair's
    ``ResourceWarning`` fails whichever later test the garbage collector runs in.
    """
    if inspect.iscoroutinefunction(request.function):
        return
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:
            return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    policy.set_event_loop(None)
