"""OpenTelemetry traces and metrics for entra-guard (``pip install 'entra-guard[opentelemetry]'``).

    from entra_guard.contrib.opentelemetry import OpenTelemetryObserver

    auth = EntraAuth(settings, observer=OpenTelemetryObserver())

Only ``opentelemetry-api`` is needed here: the application configures the SDK and
its exporters (Azure Monitor, OTLP, ...). Without ``tracer_provider=`` /
``meter_provider=`` the global ones are used, also when they are set after the
observer was built.

Observer hooks run after the fact with a duration, so every span is recorded
retroactively (explicit start and end times) as a child of the span current at
that moment, usually the HTTP server span of the request:

==============================  ==============================================================
span                            attributes
==============================  ==============================================================
``entra_guard.authenticate``    ``entra_guard.cached``, ``entra_guard.token_version``,
                                ``entra_guard.code`` (refused), ``enduser.id`` (verified and
                                ``log_pii`` on)
``entra_guard.metadata.fetch``  ``entra_guard.document`` (``v1``/``v2``/``jwks``)
``entra_guard.graph.lookup``    none
``entra_guard.obo.acquire``     ``entra_guard.cached``, ``entra_guard.code`` (refused)
==============================  ==============================================================

A refusal or failure sets the span's status to ERROR (the description is the code
when there is one). On the current span (the request's): ``entra_guard.code`` and an
``entra_guard.rejected`` event when the request is refused, ``enduser.id`` when the
authenticate span has it, an ``entra_guard.key_refresh`` event on a key reload.
Hooks never receive the token, so no span can carry it. Metrics mirror
``PrometheusObserver`` (README "Tracing (OpenTelemetry)").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from .._errors import STATUS_BY_CODE
from .._observer import AuthObserver

SPAN_AUTHENTICATE = "entra_guard.authenticate"
SPAN_METADATA_FETCH = "entra_guard.metadata.fetch"
SPAN_GRAPH_LOOKUP = "entra_guard.graph.lookup"
SPAN_OBO_ACQUIRE = "entra_guard.obo.acquire"

CODE = "entra_guard.code"
CACHED = "entra_guard.cached"
TOKEN_VERSION = "entra_guard.token_version"
DOCUMENT = "entra_guard.document"
ENDUSER_ID = "enduser.id"
#: Metric-only attributes (bounded values, as the Prometheus labels).
OUTCOME = "entra_guard.outcome"
RESULT = "entra_guard.result"
FORCED = "entra_guard.forced"

#: Same buckets as the Prometheus histograms (seconds).
AUTH_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_Attrs = Mapping[str, str | bool]
# Built once: the metric calls on the request path allocate nothing of their own.
_BY_CACHED: dict[bool, _Attrs] = {True: {CACHED: True}, False: {CACHED: False}}
_BY_HIT: dict[bool, _Attrs] = {True: {RESULT: "hit"}, False: {RESULT: "miss"}}
_BY_OK: dict[bool, _Attrs] = {True: {OUTCOME: "ok"}, False: {OUTCOME: "error"}}
_BY_FORCED: dict[bool, _Attrs] = {True: {FORCED: True}, False: {FORCED: False}}
_BY_CODE: dict[str, _Attrs] = {code: {CODE: code} for code in (*STATUS_BY_CODE, "other")}


def _library_version() -> str | None:
    try:
        return version("entra-guard")
    except PackageNotFoundError:  # running from a source tree
        return None


class OpenTelemetryObserver(AuthObserver):
    """An ``AuthObserver`` that records spans and metrics through the OpenTelemetry API."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        release = _library_version()
        self.tracer = trace.get_tracer("entra_guard", release, tracer_provider)
        meter = metrics.get_meter("entra_guard", release or "", meter_provider)
        self.authenticated_total = meter.create_counter(
            "entra_guard.authenticated", "{token}", "Tokens accepted."
        )
        self.authentication_duration = meter.create_histogram(
            "entra_guard.authentication.duration",
            "s",
            "Time to authenticate an accepted token.",
            explicit_bucket_boundaries_advisory=AUTH_BUCKETS,
        )
        self.rejected_total = meter.create_counter(
            "entra_guard.rejected", "{request}", "Requests refused, by error code."
        )
        self.token_cache_total = meter.create_counter(
            "entra_guard.token_cache", "{lookup}", "Verified-token cache look-ups."
        )
        self.metadata_fetches_total = meter.create_counter(
            "entra_guard.metadata.fetches", "{fetch}", "Discovery/JWKS documents fetched."
        )
        self.metadata_fetch_duration = meter.create_histogram(
            "entra_guard.metadata.fetch.duration",
            "s",
            "Time to fetch one discovery/JWKS document.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        self.key_refreshes_total = meter.create_counter(
            "entra_guard.key_refreshes",
            "{refresh}",
            "Key set reloads (forced: unknown kid; else periodic).",
        )
        self.graph_calls_total = meter.create_counter(
            "entra_guard.graph.calls", "{call}", "Calls to Microsoft Graph or its token endpoint."
        )
        self.graph_call_duration = meter.create_histogram(
            "entra_guard.graph.call.duration",
            "s",
            "Duration of Graph calls.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        self.groups_cache_total = meter.create_counter(
            "entra_guard.groups_cache", "{lookup}", "Groups overage cache look-ups."
        )
        self.obo_acquisitions_total = meter.create_counter(
            "entra_guard.obo.acquisitions", "{token}", "On-behalf-of tokens acquired."
        )
        self.obo_acquire_duration = meter.create_histogram(
            "entra_guard.obo.acquire.duration",
            "s",
            "Time to acquire an on-behalf-of token.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        # Every code shows up as 0 from the start, as with Prometheus.
        for attributes in _BY_CODE.values():
            self.rejected_total.add(0, attributes)

    def _span(
        self, name: str, seconds: float, attributes: dict[str, str | bool], error: str | None
    ) -> None:
        """Record a finished span that ended now and lasted ``seconds``."""
        end = time.time_ns()
        span = self.tracer.start_span(
            name, attributes=attributes, start_time=end - int(max(seconds, 0.0) * 1e9)
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)

    # -- AuthObserver ----------------------------------------------------------------------

    def authentication(
        self,
        *,
        cached: bool,
        seconds: float,
        code: str | None = None,
        token_version: str | None = None,
        user_id: str | None = None,
    ) -> None:
        attributes: dict[str, str | bool] = {CACHED: cached}
        if code is not None:
            attributes[CODE] = code
        if token_version is not None:
            attributes[TOKEN_VERSION] = token_version
        if user_id is not None and code is None:  # only ever for a verified caller
            attributes[ENDUSER_ID] = user_id
            request = trace.get_current_span()  # Azure Monitor reads it off the request
            if request.is_recording():
                request.set_attribute(ENDUSER_ID, user_id)
        self._span(SPAN_AUTHENTICATE, seconds, attributes, code)
        super().authentication(cached=cached, seconds=seconds, code=code)  # -> authenticated

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        by_cached = _BY_CACHED[cached]
        self.authenticated_total.add(1, by_cached)
        self.authentication_duration.record(seconds, by_cached)

    def rejected(self, code: str) -> None:
        by_code = _BY_CODE.get(code) or _BY_CODE["other"]
        self.rejected_total.add(1, by_code)
        span = trace.get_current_span()
        if span.is_recording():  # the request's span, when the app is instrumented
            span.set_attribute(CODE, by_code[CODE])
            span.add_event("entra_guard.rejected", by_code)

    def token_cache(self, *, hit: bool) -> None:
        self.token_cache_total.add(1, _BY_HIT[hit])

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        self._span(
            SPAN_METADATA_FETCH,
            seconds,
            {DOCUMENT: document},
            None if ok else f"{document} document could not be fetched",
        )
        self.metadata_fetches_total.add(1, {DOCUMENT: document, **_BY_OK[ok]})
        self.metadata_fetch_duration.record(seconds, {DOCUMENT: document})

    def key_refresh(self, *, forced: bool) -> None:
        self.key_refreshes_total.add(1, _BY_FORCED[forced])
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("entra_guard.key_refresh", _BY_FORCED[forced])

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        self._span(SPAN_GRAPH_LOOKUP, seconds, {}, None if ok else "Graph call failed")
        self.graph_calls_total.add(1, _BY_OK[ok])
        self.graph_call_duration.record(seconds)

    def groups_cache(self, *, hit: bool) -> None:
        self.groups_cache_total.add(1, _BY_HIT[hit])

    def obo_acquire(self, *, cached: bool, ok: bool, code: str | None, seconds: float) -> None:
        attributes: dict[str, str | bool] = {CACHED: cached}
        if code is not None:
            attributes[CODE] = code
        error = None if ok else (code or "on-behalf-of token not acquired")
        self._span(SPAN_OBO_ACQUIRE, seconds, attributes, error)
        self.obo_acquisitions_total.add(1, {**_BY_CACHED[cached], **_BY_OK[ok]})
        self.obo_acquire_duration.record(seconds, _BY_CACHED[cached])


__all__ = ["OpenTelemetryObserver"]
