"""OpenTelemetry tracing and metrics (docs/operations.md "Tracing (OpenTelemetry)"), in process.

A FastAPI app behind ``EntraAuthMiddleware`` is called through ``httpx.ASGITransport``;
its ``EntraAuth`` reaches the fake Entra ID (and the fake Graph) through ASGI
transports too, so nothing listens on a socket. Spans and metrics are read back
from the SDK's in-memory span exporter and metric reader; a small ASGI wrapper
plays the HTTP server instrumentation (one ``SERVER`` span per request).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Receive, Scope, Send

from entra_guard import (
    AuthObserver,
    CompositeObserver,
    EntraAuth,
    EntraSettings,
    require_groups,
    require_principal,
    require_scopes,
)
from entra_guard.contrib.opentelemetry import OpenTelemetryObserver
from entra_guard.contrib.prometheus import PrometheusObserver
from entra_guard.testing import FakeEntraID, FakeGraph

from ._docs import table_after
from .conftest import FINANCE_GROUP, assert_refused, bearer, protected_app

IDP_URL = "http://idp.localhost"
GRAPH_URL = "http://graph.localhost"
GRAPH_SECRET = "otel-graph-secret"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    observer: OpenTelemetryObserver

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.spans.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        """``(instrument, attributes) -> value`` (histograms: their count)."""
        data = self.reader.get_metrics_data()
        points: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        is_histogram = isinstance(point, HistogramDataPoint)
                        points[key] = point.count if is_histogram else point.value
        return points


def value(points: dict[Any, Any], name: str, **attributes: Any) -> Any:
    key = frozenset((f"entra_guard.{k}", v) for k, v in attributes.items())
    return points.get((name, key), 0)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    # A span per cache hit too (opt-in), so every path's span can be checked.
    observer = OpenTelemetryObserver(
        tracer_provider=tracer_provider, meter_provider=meter_provider, trace_cache_hits=True
    )
    yield Telemetry(spans, reader, tracer_provider, observer)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture(scope="module")
def idp() -> FakeEntraID:
    return FakeEntraID()


@pytest.fixture
def graph(idp: FakeEntraID) -> Iterator[FakeGraph]:
    idp.confidential_clients[idp.client_id] = GRAPH_SECRET
    yield FakeGraph(idp)
    idp.confidential_clients.pop(idp.client_id, None)


def upstreams(idp: FakeEntraID, graph: FakeGraph | None = None) -> httpx.AsyncClient:
    """EntraAuth's HTTP client: the fakes as in-process ASGI apps, by host."""
    mounts = {IDP_URL: httpx.ASGITransport(app=idp.app)}
    if graph is not None:
        mounts[GRAPH_URL] = httpx.ASGITransport(app=graph.app)
    return httpx.AsyncClient(mounts=mounts, timeout=5)


class ServerSpans:
    """What an HTTP server instrumentation does: one current SERVER span per request."""

    def __init__(self, app: FastAPI, tracer_provider: TracerProvider) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("test.server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = f"{scope.get('method', '')} {scope.get('path', '')}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER):
            await self.app(scope, receive, send)


@asynccontextmanager
async def api(
    telemetry: Telemetry,
    idp: FakeEntraID,
    *,
    observer: AuthObserver | None = None,
    graph: FakeGraph | None = None,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, a client for it, and the request spans around it."""
    if graph is not None:
        settings |= {"graph_url": GRAPH_URL, "client_secret": GRAPH_SECRET}
    config: EntraSettings = idp.settings(IDP_URL, **settings)
    async with (
        upstreams(idp, graph) as http,
        EntraAuth(config, http_client=http, observer=observer or telemetry.observer) as auth,
    ):
        app = protected_app(auth)

        @app.get("/open")
        async def open_route() -> dict[str, str]:
            return {"ok": "yes"}

        @app.get("/me", dependencies=[Depends(require_principal)])
        async def me() -> dict[str, str]:
            return {"ok": "yes"}

        @app.get("/items", dependencies=[Depends(require_scopes("Items.Read"))])
        async def items() -> dict[str, str]:
            return {"ok": "yes"}

        @app.get("/admin", dependencies=[Depends(require_scopes("Items.Admin"))])
        async def admin() -> dict[str, str]:
            return {"ok": "yes"}

        @app.get("/finance", dependencies=[Depends(require_groups(FINANCE_GROUP))])
        async def finance() -> dict[str, str]:
            return {"ok": "yes"}

        transport = httpx.ASGITransport(app=ServerSpans(app, telemetry.tracer_provider))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


# -- spans ------------------------------------------------------------------------------------


async def test_authenticate_spans_fresh_then_cached(telemetry: Telemetry, idp: FakeEntraID) -> None:
    token = idp.token()
    async with api(telemetry, idp) as client:
        for _ in range(2):
            assert (await client.get("/me", headers=bearer(token))).status_code == 200

    fresh, cached = telemetry.finished("entra_guard.authenticate")
    assert attrs(fresh) == {"entra_guard.cached": False, "entra_guard.token_version": "2.0"}
    assert attrs(cached) == {"entra_guard.cached": True, "entra_guard.token_version": "2.0"}
    requests = telemetry.finished("GET /me")
    for span, request in zip((fresh, cached), requests, strict=True):
        assert span.kind == SpanKind.INTERNAL
        assert span.status.status_code == StatusCode.UNSET
        # recorded after the fact, yet a child of the request, inside its time range
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context.trace_id == request.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert request.start_time is not None and request.end_time is not None
        assert request.start_time <= span.start_time < span.end_time <= request.end_time
        assert request.status.status_code == StatusCode.UNSET
        assert "entra_guard.code" not in attrs(request)
    # the first request loaded the metadata: one span per document, same trace
    fetches = telemetry.finished("entra_guard.metadata.fetch")
    assert sorted(attrs(s)["entra_guard.document"] for s in fetches) == ["jwks", "v1", "v2"]
    for span in fetches:
        assert span.status.status_code == StatusCode.UNSET
        assert span.context.trace_id == requests[0].context.trace_id


async def test_v1_token_version(telemetry: Telemetry, idp: FakeEntraID) -> None:
    async with api(telemetry, idp) as client:
        token = idp.token(version="1.0")
        assert (await client.get("/me", headers=bearer(token))).status_code == 200
    span = only(telemetry.finished("entra_guard.authenticate"))
    assert attrs(span)["entra_guard.token_version"] == "1.0"


async def test_refused_token_is_an_error_span_with_its_code(
    telemetry: Telemetry, idp: FakeEntraID
) -> None:
    expired = idp.token(expires_in=-3600)
    async with api(telemetry, idp) as client:
        response = await client.get("/me", headers=bearer(expired))
        assert_refused(response, 401, "token_expired")
        # a refused token on an open route: the request passes anonymously, the span says why
        assert (await client.get("/open", headers=bearer(expired))).status_code == 200

    refused, on_open = telemetry.finished("entra_guard.authenticate")
    for span in (refused, on_open):
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "token_expired"
        assert attrs(span) == {"entra_guard.cached": False, "entra_guard.code": "token_expired"}
    request = only(telemetry.finished("GET /me"))
    assert attrs(request)["entra_guard.code"] == "token_expired"
    event = only_event(request)
    assert event.name == "entra_guard.rejected"
    assert dict(event.attributes or {}) == {"entra_guard.code": "token_expired"}
    # the open route did not refuse the request: nothing on its span
    assert "entra_guard.code" not in attrs(only(telemetry.finished("GET /open")))


def only_event(span: ReadableSpan) -> Any:
    assert len(span.events) == 1, span.events
    return span.events[0]


async def test_refusals_without_a_refused_token(telemetry: Telemetry, idp: FakeEntraID) -> None:
    """Missing token: no authentication at all; guard refusal: authentication succeeded."""
    async with api(telemetry, idp) as client:
        assert_refused(await client.get("/me"), 401, "missing_token")
        response = await client.get("/admin", headers=bearer(idp.token()))
        assert_refused(response, 403, "insufficient_scope")

    authenticate = only(telemetry.finished("entra_guard.authenticate"))  # the /admin token
    assert authenticate.status.status_code == StatusCode.UNSET
    for path, code in (("/me", "missing_token"), ("/admin", "insufficient_scope")):
        request = only(telemetry.finished(f"GET {path}"))
        assert attrs(request) == {"entra_guard.code": code}
        assert dict(only_event(request).attributes or {}) == {"entra_guard.code": code}


async def test_enduser_id_only_when_verified_and_log_pii(
    telemetry: Telemetry, idp: FakeEntraID
) -> None:
    oid = str(uuid.uuid4())
    token = idp.token(object_id=oid)
    async with api(telemetry, idp) as client:
        assert (await client.get("/me", headers=bearer(token))).status_code == 200
    assert "enduser.id" not in attrs(only(telemetry.finished("entra_guard.authenticate")))
    assert "enduser.id" not in attrs(only(telemetry.finished("GET /me")))

    telemetry.spans.clear()
    async with api(telemetry, idp, log_pii=True) as client:
        for _ in range(2):  # fresh, then from the verified-token cache
            assert (await client.get("/me", headers=bearer(token))).status_code == 200
        expired = idp.token(object_id=oid, expires_in=-3600)
        assert (await client.get("/me", headers=bearer(expired))).status_code == 401
    fresh, cached, refused = telemetry.finished("entra_guard.authenticate")
    identity = f"{idp.tenant_id}/{oid}"
    assert attrs(fresh)["enduser.id"] == attrs(cached)["enduser.id"] == identity
    assert "enduser.id" not in attrs(refused)  # claims of a refused token are never trusted
    # the request span carries it too (where Azure Monitor looks for the user)
    first, second, third = telemetry.finished("GET /me")
    assert attrs(first)["enduser.id"] == attrs(second)["enduser.id"] == identity
    assert "enduser.id" not in attrs(third)


async def test_no_token_text_anywhere_in_the_telemetry(
    telemetry: Telemetry, idp: FakeEntraID
) -> None:
    tokens = [idp.token(), idp.token(expires_in=-3600), idp.token(scopes=["Other"])]
    tampered = tokens[0][:-8] + "AAAAAAAA"
    async with api(telemetry, idp) as client:
        for token in [*tokens, tampered]:
            for path in ("/me", "/items", "/open"):
                await client.get(path, headers=bearer(token))
    spans = telemetry.finished()
    assert len(telemetry.finished("entra_guard.authenticate")) == 12
    dumped = "\n".join(span.to_json() for span in spans)
    dumped += json.dumps([str(k) for k in telemetry.metrics()])
    for token in [*tokens, tampered]:
        for part in token.split("."):
            assert part[:16] not in dumped
    # PII stays out too while log_pii is off (the fake's tokens carry a name and a UPN)
    assert "Ada" not in dumped and "ada@" not in dumped
    for span in spans:
        values = [*attrs(span).values()]
        values += [v for event in span.events for v in (event.attributes or {}).values()]
        assert all(isinstance(v, bool) or len(str(v)) < 80 for v in values), values


async def test_idp_outage_failed_fetch_spans(telemetry: Telemetry, idp: FakeEntraID) -> None:
    idp.fail(503)
    try:
        async with api(telemetry, idp) as client:
            response = await client.get("/me", headers=bearer(idp.token()))
            assert_refused(response, 503, "idp_unavailable")
    finally:
        idp.recover()
    fetches = telemetry.finished("entra_guard.metadata.fetch")
    assert fetches
    for span in fetches:
        assert span.status.status_code == StatusCode.ERROR
        assert "could not be fetched" in (span.status.description or "")
    authenticate = only(telemetry.finished("entra_guard.authenticate"))
    assert authenticate.status.description == "idp_unavailable"
    points = telemetry.metrics()
    assert value(points, "entra_guard.metadata.fetches", document="v2", outcome="error") >= 1
    assert value(points, "entra_guard.rejected", code="idp_unavailable") == 1


async def test_graph_lookup_spans(telemetry: Telemetry, idp: FakeEntraID, graph: FakeGraph) -> None:
    oid = str(uuid.uuid4())
    graph.set_groups(oid, [FINANCE_GROUP])
    token = idp.token(object_id=oid, overage=True)
    async with api(telemetry, idp, graph=graph) as client:
        for _ in range(2):
            response = await client.get("/finance", headers=bearer(token))
            assert response.status_code == 200, response.text
    lookups = telemetry.finished("entra_guard.graph.lookup")
    assert len(lookups) == 2  # the app token, then the memberships; the 2nd request: cached
    first = telemetry.finished("GET /finance")[0]
    for span in lookups:
        assert span.status.status_code == StatusCode.UNSET
        assert span.context.trace_id == first.context.trace_id
    points = telemetry.metrics()
    assert value(points, "entra_guard.graph.calls", outcome="ok") == 2
    assert value(points, "entra_guard.graph.call.duration") == 2
    assert value(points, "entra_guard.groups_cache", result="miss") == 1
    assert value(points, "entra_guard.groups_cache", result="hit") == 1


async def test_graph_failure_is_an_error_span(
    telemetry: Telemetry, idp: FakeEntraID, graph: FakeGraph
) -> None:
    oid = str(uuid.uuid4())
    graph.set_groups(oid, [FINANCE_GROUP])
    graph.fail(403)  # refused, so not retried: the span is under test, not the backoff
    async with api(telemetry, idp, graph=graph) as client:
        response = await client.get(
            "/finance", headers=bearer(idp.token(object_id=oid, overage=True))
        )
        assert_refused(response, 503, "groups_unavailable")
    failed = [
        s
        for s in telemetry.finished("entra_guard.graph.lookup")
        if s.status.status_code == StatusCode.ERROR
    ]
    assert failed and all(s.status.description == "Graph call failed" for s in failed)
    request = only(telemetry.finished("GET /finance"))
    assert attrs(request)["entra_guard.code"] == "groups_unavailable"


def test_obo_acquire_span(telemetry: Telemetry) -> None:
    """The hook the on-behalf-of flow reports through (docs/operations.md "Tracing
    (OpenTelemetry)")."""
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("GET /downstream") as request:
        telemetry.observer.obo_acquire(cached=False, ok=True, code=None, seconds=0.05)
        telemetry.observer.obo_acquire(cached=True, ok=True, code=None, seconds=0.0001)
        telemetry.observer.obo_acquire(
            cached=False, ok=False, code="consent_required", seconds=0.02
        )
    acquired, cached, refused = telemetry.finished("entra_guard.obo.acquire")
    assert attrs(acquired) == {"entra_guard.cached": False}
    assert attrs(cached) == {"entra_guard.cached": True}
    assert attrs(refused) == {"entra_guard.cached": False, "entra_guard.code": "consent_required"}
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.status.description == "consent_required"
    assert acquired.end_time is not None and acquired.start_time is not None
    assert 0.049 < (acquired.end_time - acquired.start_time) / 1e9 < 0.051
    for span in (acquired, cached, refused):
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
    points = telemetry.metrics()
    assert value(points, "entra_guard.obo.acquisitions", cached=False, outcome="ok") == 1
    assert value(points, "entra_guard.obo.acquisitions", cached=True, outcome="ok") == 1
    assert value(points, "entra_guard.obo.acquisitions", cached=False, outcome="error") == 1
    assert value(points, "entra_guard.obo.acquire.duration", cached=False) == 2


# -- metrics -----------------------------------------------------------------------------------


async def test_metrics_mirror_prometheus(telemetry: Telemetry, idp: FakeEntraID) -> None:
    """Both observers at once (CompositeObserver): the same counts in each."""
    prometheus = PrometheusObserver()
    both = CompositeObserver([prometheus, telemetry.observer])
    token = idp.token()
    async with api(telemetry, idp, observer=both) as client:
        for _ in range(3):
            assert (await client.get("/items", headers=bearer(token))).status_code == 200
        assert (await client.get("/items")).status_code == 401
        expired = idp.token(expires_in=-3600)
        assert (await client.get("/items", headers=bearer(expired))).status_code == 401
        assert (await client.get("/admin", headers=bearer(token))).status_code == 403
        unknown = idp.token(header={"kid": "rotated-away"})
        assert (await client.get("/items", headers=bearer(unknown))).status_code == 401

    points = telemetry.metrics()
    expected = {
        ("entra_guard.authenticated", (("cached", False),)): 1,
        ("entra_guard.authenticated", (("cached", True),)): 3,
        ("entra_guard.authentication.duration", (("cached", False),)): 1,
        # fresh verifications only: a histogram record would cost more than a cache hit
        ("entra_guard.authentication.duration", (("cached", True),)): 0,
        ("entra_guard.token_cache", (("result", "hit"),)): 3,
        ("entra_guard.token_cache", (("result", "miss"),)): 3,
        ("entra_guard.rejected", (("code", "missing_token"),)): 1,
        ("entra_guard.rejected", (("code", "token_expired"),)): 1,
        ("entra_guard.rejected", (("code", "insufficient_scope"),)): 1,
        ("entra_guard.rejected", (("code", "unknown_key"),)): 1,
        ("entra_guard.rejected", (("code", "malformed_token"),)): 0,  # pre-declared at 0
        ("entra_guard.key_refreshes", (("forced", True),)): 1,
        ("entra_guard.metadata.fetches", (("document", "jwks"), ("outcome", "ok"))): 2,
        ("entra_guard.metadata.fetch.duration", (("document", "v2"),)): 1,  # jwks only, forced
    }
    for (name, labels), count in expected.items():
        assert value(points, name, **dict(labels)) == count, (name, labels)
    # ... and Prometheus counted the same
    flag = {True: "true", False: "false"}
    assert prometheus.value("entra_guard_authenticated_total", cached=flag[True]) == 3
    assert prometheus.value("entra_guard_authenticated_total", cached=flag[False]) == 1
    for code in ("missing_token", "token_expired", "insufficient_scope", "unknown_key"):
        assert prometheus.value("entra_guard_rejected_total", code=code) == 1
    assert prometheus.value("entra_guard_key_refreshes_total", forced="true") == 1
    # and the spans were there alongside
    assert len(telemetry.finished("entra_guard.authenticate")) == 6


async def test_by_default_cache_hits_mark_the_request_span_instead_of_their_own(
    idp: FakeEntraID,
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    observer = OpenTelemetryObserver(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    assert observer.trace_cache_hits is False
    telemetry = Telemetry(spans, reader, tracer_provider, observer)
    token = idp.token()
    async with api(telemetry, idp, log_pii=True) as client:
        for _ in range(3):
            assert (await client.get("/me", headers=bearer(token))).status_code == 200
        assert (
            await client.get("/me", headers=bearer(idp.token(expires_in=-3600)))
        ).status_code == 401
    fresh, refused = telemetry.finished("entra_guard.authenticate")  # no span for the 2 hits
    assert attrs(fresh)["entra_guard.cached"] is False
    assert attrs(refused)["entra_guard.code"] == "token_expired"
    points = telemetry.metrics()
    assert value(points, "entra_guard.authenticated", cached=True) == 2
    assert value(points, "entra_guard.token_cache", result="hit") == 2
    # the request spans still name the user (log_pii is on); the hits' say they were hits
    requests = telemetry.finished("GET /me")
    assert all("enduser.id" in attrs(s) for s in requests[:3])
    assert "entra_guard.cached" not in attrs(requests[0])  # the fresh one has its own span
    for hit in requests[1:3]:
        assert attrs(hit)["entra_guard.cached"] is True
        assert attrs(hit)["entra_guard.token_version"] == "2.0"


def test_readme_lists_every_instrument(telemetry: Telemetry) -> None:
    observer = telemetry.observer
    observer.authentication(cached=False, seconds=0.001, token_version="2.0")
    observer.rejected("token_expired")
    observer.token_cache(hit=True)
    observer.metadata_fetch(document="v2", ok=True, seconds=0.1)
    observer.key_refresh(forced=False)
    observer.graph_call(ok=True, seconds=0.1)
    observer.groups_cache(hit=True)
    observer.obo_acquire(cached=True, ok=True, code=None, seconds=0.001)
    observer.graph_response(status=429, resource_units=None)
    observer.graph_response(status=200, resource_units=2.0)
    observer.shared_cache_degraded(reason="TimeoutError")
    points = telemetry.metrics()
    assert value(points, "entra_guard.graph.responses", status="429") == 1
    assert value(points, "entra_guard.graph.responses", status="2xx") == 1
    assert value(points, "entra_guard.graph.resource_units") == 2.0
    assert value(points, "entra_guard.shared_cache.degraded") == 1
    emitted = {name for name, _ in points}
    documented = {row[0].strip("`") for row in table_after("operations", "otel-metrics-table")}
    assert documented == emitted


# -- the hooks themselves ----------------------------------------------------------------------


class OldStyle(AuthObserver):
    """An observer written before ``authentication()`` existed: exact old signatures."""

    def __init__(self) -> None:
        self.accepted: list[bool] = []

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        self.accepted.append(cached)


async def test_observers_overriding_only_authenticated_keep_working(
    telemetry: Telemetry, idp: FakeEntraID
) -> None:
    old = OldStyle()
    token = idp.token()
    async with api(telemetry, idp, observer=CompositeObserver([old, telemetry.observer])) as c:
        for _ in range(2):
            assert (await c.get("/me", headers=bearer(token))).status_code == 200
        expired = idp.token(expires_in=-3600)
        assert (await c.get("/me", headers=bearer(expired))).status_code == 401
    assert old.accepted == [False, True]  # the refusal is not an acceptance
    assert len(telemetry.finished("entra_guard.authenticate")) == 3


def test_global_providers_by_default() -> None:
    """No providers given and no SDK configured: the API's no-op, every hook still safe."""
    observer = OpenTelemetryObserver()
    observer.authentication(cached=False, seconds=0.01, code="token_expired")
    observer.authentication(cached=True, seconds=0.01, token_version="2.0", user_id="t/o")
    observer.rejected("not-a-code")
    observer.token_cache(hit=False)
    observer.metadata_fetch(document="jwks", ok=False, seconds=-1.0)
    observer.key_refresh(forced=True)
    observer.graph_call(ok=False, seconds=0.2)
    observer.groups_cache(hit=False)
    observer.obo_acquire(cached=False, ok=False, code=None, seconds=0.2)


def test_unknown_codes_are_bounded(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        telemetry.observer.rejected("x" * 500)
    assert value(telemetry.metrics(), "entra_guard.rejected", code="other") == 1
    assert attrs(only(telemetry.finished("request"))) == {"entra_guard.code": "other"}


def test_new_hooks_default_and_fan_out() -> None:
    """``authentication`` forwards accepted tokens only; ``obo_acquire`` is a no-op;
    ``CompositeObserver`` passes both on with every argument."""
    old, base = OldStyle(), AuthObserver()
    base.authentication(cached=False, seconds=0.1, code="token_expired")
    base.obo_acquire(cached=False, ok=True, code=None, seconds=0.1)

    class Recorder(AuthObserver):
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def authentication(self, **kwargs: Any) -> None:
            self.calls.append(("authentication", kwargs))

        def obo_acquire(self, **kwargs: Any) -> None:
            self.calls.append(("obo_acquire", kwargs))

    recorder = Recorder()
    both = CompositeObserver([old, recorder])
    both.authentication(cached=True, seconds=0.1, token_version="1.0", user_id="t/o")
    both.authentication(cached=False, seconds=0.2, code="bad_audience")
    both.obo_acquire(cached=True, ok=False, code="consent_required", seconds=0.3)
    assert old.accepted == [True]
    assert recorder.calls == [
        (
            "authentication",
            {
                "cached": True,
                "seconds": 0.1,
                "code": None,
                "token_version": "1.0",
                "user_id": "t/o",
            },
        ),
        (
            "authentication",
            {
                "cached": False,
                "seconds": 0.2,
                "code": "bad_audience",
                "token_version": None,
                "user_id": None,
            },
        ),
        (
            "obo_acquire",
            {"cached": True, "ok": False, "code": "consent_required", "seconds": 0.3},
        ),
    ]


class BrokenSampler(Sampler):
    """A user's sampler with a bug: tracing must fail, not the request."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        raise RuntimeError("sampler bug")

    def get_description(self) -> str:
        return "broken"


async def test_a_failing_tracer_never_fails_the_request(idp: FakeEntraID) -> None:
    reader = InMemoryMetricReader()
    observer = OpenTelemetryObserver(
        tracer_provider=TracerProvider(sampler=BrokenSampler()),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    telemetry = Telemetry(InMemorySpanExporter(), reader, TracerProvider(), observer)
    async with api(telemetry, idp) as client:
        for _ in range(2):
            assert (await client.get("/me", headers=bearer(idp.token()))).status_code == 200
        expired = idp.token(expires_in=-3600)
        assert_refused(await client.get("/me", headers=bearer(expired)), 401, "token_expired")
    assert value(telemetry.metrics(), "entra_guard.authenticated", cached=False) == 2
