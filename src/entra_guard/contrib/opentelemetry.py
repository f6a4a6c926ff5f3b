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
``PrometheusObserver`` (docs/operations.md "Tracing (OpenTelemetry)").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Generic, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Status, StatusCode

from .._errors import STATUS_BY_CODE
from .._observer import AuthObserver

logger = logging.getLogger("entra_guard")

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
STATUS = "entra_guard.status"
# Built once: the metric calls on the request path allocate nothing of their own.
_BY_CACHED: dict[bool, _Attrs] = {True: {CACHED: True}, False: {CACHED: False}}
_BY_HIT: dict[bool, _Attrs] = {True: {RESULT: "hit"}, False: {RESULT: "miss"}}
_BY_OK: dict[bool, _Attrs] = {True: {OUTCOME: "ok"}, False: {OUTCOME: "error"}}
_BY_FORCED: dict[bool, _Attrs] = {True: {FORCED: True}, False: {FORCED: False}}
_BY_CODE: dict[str, _Attrs] = {code: {CODE: code} for code in (*STATUS_BY_CODE, "other")}
_OBO: dict[tuple[bool, bool], _Attrs] = {
    (cached, ok): {**_BY_CACHED[cached], **_BY_OK[ok]}
    for cached in (True, False)
    for ok in (True, False)
}


_Key = TypeVar("_Key", bound=Hashable)


class _Tally(Generic[_Key]):
    """A counter kept as plain ints and read by the SDK at collection time.

    An SDK ``Counter.add`` cleans and hashes its attributes on every call (several
    µs); an ``ObservableCounter`` reading these totals costs the request path one
    dict update (docs/operations.md "Tracing (OpenTelemetry)", the benchmark 2c).
    """

    def __init__(self, start: Mapping[_Key, _Attrs] | None = None) -> None:
        self.attributes: dict[_Key, _Attrs] = dict(start or {})
        self.counts: dict[_Key, int] = dict.fromkeys(self.attributes, 0)

    def add(self, key: _Key, attributes: _Attrs) -> None:
        if key not in self.counts:
            self.attributes[key] = attributes
            self.counts[key] = 0
        self.counts[key] += 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # list(): one atomic copy, so a request adding a key meanwhile cannot break it
        counts = list(self.counts.items())
        return [Observation(count, self.attributes[key]) for key, count in counts]


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
        trace_cache_hits: bool = False,
    ) -> None:
        #: True: a child span for tokens answered by the verified-token cache too. By
        #: default a hit only marks the current (request) span (``entra_guard.cached``,
        #: ``entra_guard.token_version``) and is counted: most requests are hits, and one
        #: more SDK span each costs ~16-30 us and one more exported item (docs/benchmarks.md
        #: "2c").
        self.trace_cache_hits = trace_cache_hits
        release = _library_version()
        self.tracer = trace.get_tracer("entra_guard", release, tracer_provider)
        meter = metrics.get_meter("entra_guard", release or "", meter_provider)
        # Counters: totals kept here, read at collection (every one starts at 0, as
        # with Prometheus, except the per-document ones).
        self.authenticated_total = _Tally(_BY_CACHED)
        self.rejected_total = _Tally(_BY_CODE)
        self.token_cache_total = _Tally(_BY_HIT)
        self.metadata_fetches_total: _Tally[tuple[str, bool]] = _Tally()
        self.key_refreshes_total = _Tally(_BY_FORCED)
        self.graph_calls_total = _Tally(_BY_OK)
        self.groups_cache_total = _Tally(_BY_HIT)
        self.obo_acquisitions_total = _Tally(_OBO)
        self.graph_responses_total: _Tally[str] = _Tally()
        self.shared_cache_degraded_total: _Tally[bool] = _Tally({True: {}})
        #: Resource units Graph charged (a sum, not a count).
        self.graph_resource_units = 0.0
        for name, unit, description, tally in (
            ("authenticated", "{token}", "Tokens accepted.", self.authenticated_total),
            ("rejected", "{request}", "Requests refused, by error code.", self.rejected_total),
            ("token_cache", "{lookup}", "Verified-token cache look-ups.", self.token_cache_total),
            (
                "metadata.fetches",
                "{fetch}",
                "Discovery/JWKS documents fetched.",
                self.metadata_fetches_total,
            ),
            (
                "key_refreshes",
                "{refresh}",
                "Key set reloads (forced: unknown kid; else periodic).",
                self.key_refreshes_total,
            ),
            (
                "graph.calls",
                "{call}",
                "Calls to Microsoft Graph or its token endpoint.",
                self.graph_calls_total,
            ),
            ("groups_cache", "{lookup}", "Groups overage cache look-ups.", self.groups_cache_total),
            (
                "obo.acquisitions",
                "{token}",
                "On-behalf-of tokens acquired.",
                self.obo_acquisitions_total,
            ),
            (
                "graph.responses",
                "{response}",
                "Microsoft Graph answers to groups look-ups, by status class (429: throttled).",
                self.graph_responses_total,
            ),
            (
                "shared_cache.degraded",
                "{outage}",
                "Times the shared cache (Redis) failed and the process went in-process.",
                self.shared_cache_degraded_total,
            ),
        ):
            meter.create_observable_counter(
                f"entra_guard.{name}", [tally.observe], unit, description
            )
        meter.create_observable_counter(
            "entra_guard.graph.resource_units",
            [self._resource_units],
            "{unit}",
            "Resource units Graph charged (x-ms-resource-unit) against the app's budget.",
        )
        self.authentication_duration = meter.create_histogram(
            "entra_guard.authentication.duration",
            "s",
            "Time to verify a token not yet in the verified-token cache.",
            explicit_bucket_boundaries_advisory=AUTH_BUCKETS,
        )
        self.metadata_fetch_duration = meter.create_histogram(
            "entra_guard.metadata.fetch.duration",
            "s",
            "Time to fetch one discovery/JWKS document.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        self.graph_call_duration = meter.create_histogram(
            "entra_guard.graph.call.duration",
            "s",
            "Duration of Graph calls.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )
        self.obo_acquire_duration = meter.create_histogram(
            "entra_guard.obo.acquire.duration",
            "s",
            "Time to acquire an on-behalf-of token.",
            explicit_bucket_boundaries_advisory=FETCH_BUCKETS,
        )

    def _span(
        self, name: str, seconds: float, attributes: dict[str, str | bool], error: str | None
    ) -> None:
        """Record a finished span that ended now and lasted ``seconds``.

        A failing SDK part (a custom sampler or processor) loses the span, never the
        request: hooks run inside authentication and must not raise.
        """
        end = time.time_ns()
        try:
            span = self.tracer.start_span(
                name, attributes=attributes, start_time=end - int(max(seconds, 0.0) * 1e9)
            )
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end(end_time=end)
        except Exception:
            logger.debug("span %s not recorded", name, exc_info=True)

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
        verified = code is None
        if (user_id is not None and verified) or (cached and not self.trace_cache_hits):
            request = trace.get_current_span()
            if request.is_recording():
                if user_id is not None and verified:  # Azure Monitor reads it off the request
                    request.set_attribute(ENDUSER_ID, user_id)
                if cached and not self.trace_cache_hits:  # the hit, without a span of its own
                    request.set_attribute(CACHED, True)
                    if token_version is not None:
                        request.set_attribute(TOKEN_VERSION, token_version)
        if self.trace_cache_hits or not cached:
            attributes: dict[str, str | bool] = {CACHED: cached}
            if code is not None:
                attributes[CODE] = code
            if token_version is not None:
                attributes[TOKEN_VERSION] = token_version
            if user_id is not None and verified:  # only ever for a verified caller
                attributes[ENDUSER_ID] = user_id
            self._span(SPAN_AUTHENTICATE, seconds, attributes, code)
        if verified:
            self.authenticated(cached=cached, seconds=seconds)

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        self.authenticated_total.add(cached, _BY_CACHED[cached])
        if not cached:
            # Fresh verifications only: an SDK histogram record costs more than the
            # cache hit it would time (docs/operations.md "Tracing (OpenTelemetry)"); the hits'
            # durations are on their spans.
            self.authentication_duration.record(seconds, _BY_CACHED[False])

    def rejected(self, code: str) -> None:
        if code not in _BY_CODE:
            code = "other"
        by_code = _BY_CODE[code]
        self.rejected_total.add(code, by_code)
        span = trace.get_current_span()
        if span.is_recording():  # the request's span, when the app is instrumented
            span.set_attribute(CODE, by_code[CODE])
            span.add_event("entra_guard.rejected", by_code)

    def token_cache(self, *, hit: bool) -> None:
        self.token_cache_total.add(hit, _BY_HIT[hit])

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        self._span(
            SPAN_METADATA_FETCH,
            seconds,
            {DOCUMENT: document},
            None if ok else f"{document} document could not be fetched",
        )
        self.metadata_fetches_total.add((document, ok), {DOCUMENT: document, **_BY_OK[ok]})
        self.metadata_fetch_duration.record(seconds, {DOCUMENT: document})

    def key_refresh(self, *, forced: bool) -> None:
        self.key_refreshes_total.add(forced, _BY_FORCED[forced])
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("entra_guard.key_refresh", _BY_FORCED[forced])

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        self._span(SPAN_GRAPH_LOOKUP, seconds, {}, None if ok else "Graph call failed")
        self.graph_calls_total.add(ok, _BY_OK[ok])
        self.graph_call_duration.record(seconds)

    def groups_cache(self, *, hit: bool) -> None:
        self.groups_cache_total.add(hit, _BY_HIT[hit])

    def graph_response(self, *, status: int, resource_units: float | None) -> None:
        label = "429" if status == 429 else f"{status // 100}xx" if 100 <= status < 600 else "other"
        self.graph_responses_total.add(label, {STATUS: label})
        if resource_units is not None:
            self.graph_resource_units += resource_units

    def shared_cache_degraded(self, *, reason: str) -> None:
        self.shared_cache_degraded_total.add(True, {})

    def _resource_units(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.graph_resource_units)]

    def obo_acquire(self, *, cached: bool, ok: bool, code: str | None, seconds: float) -> None:
        attributes: dict[str, str | bool] = {CACHED: cached}
        if code is not None:
            attributes[CODE] = code
        error = None if ok else (code or "on-behalf-of token not acquired")
        self._span(SPAN_OBO_ACQUIRE, seconds, attributes, error)
        self.obo_acquisitions_total.add((cached, ok), _OBO[cached, ok])
        self.obo_acquire_duration.record(seconds, _BY_CACHED[cached])


__all__ = ["OpenTelemetryObserver"]
