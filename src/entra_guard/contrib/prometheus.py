"""Prometheus metrics for entra-guard (``pip install 'entra-guard[prometheus]'``).

    from entra_guard.contrib.prometheus import PrometheusObserver

    metrics = PrometheusObserver()                  # its own CollectorRegistry
    auth = EntraAuth(settings, observer=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

No global state: by default every observer owns a fresh ``CollectorRegistry``
(pass ``registry=prometheus_client.REGISTRY`` to join the process-wide one).
Labels are bounded: ``code`` is one of the codes of docs/troubleshooting.md "Codes",
``document`` is ``v1``/``v2``/``jwks``; no tenant, user or token ever becomes a label.

The metrics (``namespace`` defaults to ``entra_guard``), their types and labels:
docs/operations.md "Metrics", whose table is checked against this class.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .._errors import STATUS_BY_CODE
from .._observer import AuthObserver

#: Validation is sub-millisecond when cached, a few ms otherwise; fetches take longer.
AUTH_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _flag(value: bool) -> str:
    return "true" if value else "false"


class PrometheusObserver(AuthObserver):
    """An ``AuthObserver`` that records every event in Prometheus metrics."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "entra_guard"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        ns, reg = namespace, self.registry
        self.authenticated_total = Counter(
            "authenticated", "Tokens accepted.", ["cached"], namespace=ns, registry=reg
        )
        self.authentication_seconds = Histogram(
            "authentication_seconds",
            "Time to authenticate an accepted token.",
            ["cached"],
            namespace=ns,
            registry=reg,
            buckets=AUTH_BUCKETS,
        )
        self.rejected_total = Counter(
            "rejected", "Requests refused, by error code.", ["code"], namespace=ns, registry=reg
        )
        self.token_cache_total = Counter(
            "token_cache", "Verified-token cache look-ups.", ["result"], namespace=ns, registry=reg
        )
        self.metadata_fetches_total = Counter(
            "metadata_fetches",
            "Discovery/JWKS documents fetched.",
            ["document", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.metadata_fetch_seconds = Histogram(
            "metadata_fetch_seconds",
            "Time to fetch one discovery/JWKS document.",
            ["document"],
            namespace=ns,
            registry=reg,
            buckets=FETCH_BUCKETS,
        )
        self.key_refreshes_total = Counter(
            "key_refreshes",
            "Key set reloads (forced: unknown kid; else periodic).",
            ["forced"],
            namespace=ns,
            registry=reg,
        )
        self.graph_calls_total = Counter(
            "graph_calls",
            "Calls to Microsoft Graph or its token endpoint.",
            ["outcome"],
            namespace=ns,
            registry=reg,
        )
        self.graph_call_seconds = Histogram(
            "graph_call_seconds",
            "Duration of Graph calls.",
            namespace=ns,
            registry=reg,
            buckets=FETCH_BUCKETS,
        )
        self.groups_cache_total = Counter(
            "groups_cache", "Groups overage cache look-ups.", ["result"], namespace=ns, registry=reg
        )
        self.graph_responses_total = Counter(
            "graph_responses",
            "Microsoft Graph answers to groups look-ups, by status class (429: throttled).",
            ["status"],
            namespace=ns,
            registry=reg,
        )
        self.graph_resource_units_total = Counter(
            "graph_resource_units",
            "Resource units Graph charged (x-ms-resource-unit) against the app's budget.",
            namespace=ns,
            registry=reg,
        )
        self.shared_cache_degraded_total = Counter(
            "shared_cache_degraded",
            "Times the shared cache (Redis) failed and the process went in-process.",
            namespace=ns,
            registry=reg,
        )
        # Every code shows up as 0 from the start, so rate() and alerts work at once.
        for code in STATUS_BY_CODE:
            self.rejected_total.labels(code=code)
        for flag in ("true", "false"):
            self.authenticated_total.labels(cached=flag)
            self.key_refreshes_total.labels(forced=flag)
        for result in ("hit", "miss"):
            self.token_cache_total.labels(result=result)
            self.groups_cache_total.labels(result=result)
        for outcome in ("ok", "error"):
            self.graph_calls_total.labels(outcome=outcome)

    # -- AuthObserver ----------------------------------------------------------------------

    def authenticated(self, *, cached: bool, seconds: float) -> None:
        flag = _flag(cached)
        self.authenticated_total.labels(cached=flag).inc()
        self.authentication_seconds.labels(cached=flag).observe(seconds)

    def rejected(self, code: str) -> None:
        self.rejected_total.labels(code=code if code in STATUS_BY_CODE else "other").inc()

    def token_cache(self, *, hit: bool) -> None:
        self.token_cache_total.labels(result="hit" if hit else "miss").inc()

    def metadata_fetch(self, *, document: str, ok: bool, seconds: float) -> None:
        self.metadata_fetches_total.labels(document=document, outcome="ok" if ok else "error").inc()
        self.metadata_fetch_seconds.labels(document=document).observe(seconds)

    def key_refresh(self, *, forced: bool) -> None:
        self.key_refreshes_total.labels(forced=_flag(forced)).inc()

    def graph_call(self, *, ok: bool, seconds: float) -> None:
        self.graph_calls_total.labels(outcome="ok" if ok else "error").inc()
        self.graph_call_seconds.observe(seconds)

    def groups_cache(self, *, hit: bool) -> None:
        self.groups_cache_total.labels(result="hit" if hit else "miss").inc()

    def graph_response(self, *, status: int, resource_units: float | None) -> None:
        label = "429" if status == 429 else f"{status // 100}xx" if 100 <= status < 600 else "other"
        self.graph_responses_total.labels(status=label).inc()
        if resource_units is not None:
            self.graph_resource_units_total.inc(resource_units)

    def shared_cache_degraded(self, *, reason: str) -> None:
        self.shared_cache_degraded_total.inc()

    # -- exposition ------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the text exposition format, for a ``/metrics`` route."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0.0 when absent), e.g. in tests or health checks:
        ``value("entra_guard_rejected_total", code="token_expired")``."""
        sample = self.registry.get_sample_value(name, labels)
        return 0.0 if sample is None else sample


__all__ = ["PrometheusObserver"]
