"""Benchmark 2c: what tracing costs per request (docs/operations.md "Tracing (OpenTelemetry)").

The guarded ``GET /hello`` app of 2b, called in process as an ASGI callable with
the same valid token (the verified-token cache-hit path), with no observer
(baseline), with ``PrometheusObserver`` (for reference) and with
``OpenTelemetryObserver`` on a real SDK: a ``TracerProvider`` whose
``BatchSpanProcessor`` feeds an exporter that drops everything, and a
``MeterProvider`` whose periodic reader does the same; once as configured by
default (one span per request) and once with ``trace_cache_hits=False``.

Interleaved batches; the figure is the process's CPU time per request (all its
threads, the span processor's included), not wall time: on a shared machine the
wall clock mostly measures the other tenants. "added" is the median over rounds
of (observer - baseline) within the same round. ``bench/instructions.py`` counts
instructions instead (opt-in, under callgrind), which no load can move.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from entra_guard import AuthObserver
from entra_guard.contrib.opentelemetry import OpenTelemetryObserver
from entra_guard.contrib.prometheus import PrometheusObserver
from entra_guard.testing import FakeEntraID, LiveServer

from . import apps
from .common import CLIENT_ID, TENANT_ID, http_scope, median, realistic_token

Message = MutableMapping[str, Any]

#: µs a traced request may add over the untraced one (cache-hit path, no-op exporter).
TARGET_US = 15.0


class DropSpans(SpanExporter):
    """A no-op exporter: what is left is the SDK's and entra-guard's own cost."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DropMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._temporality = AggregationTemporality.CUMULATIVE

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class OtelResult:
    baseline_us: float
    prometheus_us: float
    otel_us: float
    otel_hit_spans_us: float
    #: medians of the per-round differences to the baseline
    prometheus_added_us: float
    otel_added_us: float
    otel_hit_spans_added_us: float
    rounds: int


def _scope(token: str) -> dict[str, Any]:
    return http_scope(
        "/hello",
        [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench"),
            (b"accept", b"*/*"),
            (b"authorization", b"Bearer " + token.encode()),
        ],
    )


def observers() -> tuple[dict[str, AuthObserver | None], Callable[[], None]]:
    """The contenders by name (``None``: no observer) and a function that shuts the
    SDK providers down (flushing the spans)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(DropMetrics(), 1000)]
    )
    providers: dict[str, Any] = {
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
    }
    contenders: dict[str, AuthObserver | None] = {
        "baseline": None,
        "prometheus": PrometheusObserver(),
        "otel": OpenTelemetryObserver(**providers),
        "otel_hit_spans": OpenTelemetryObserver(**providers, trace_cache_hits=True),
    }

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return contenders, shutdown


async def _run(token: str, rounds: int, batch: int) -> OtelResult:
    contenders, shutdown = observers()
    built = {name: apps.guarded(observer=observer) for name, observer in contenders.items()}
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def timed(app: Callable[..., Awaitable[None]]) -> float:
        started = time.process_time_ns()
        for _ in range(batch):
            await app(_scope(token), receive, send)
        return (time.process_time_ns() - started) / batch / 1000

    try:
        async with AsyncExitStack() as stack:
            for app in built.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            for app in built.values():
                await timed(app)  # warm-up: middleware stack built, token cached
            if set(statuses) != {200}:
                raise RuntimeError(f"in-process apps answered {sorted(set(statuses))}")
            samples: dict[str, list[float]] = {name: [] for name in built}
            for _ in range(rounds):
                for name, app in built.items():
                    samples[name].append(await timed(app))
    finally:
        shutdown()

    def added(name: str) -> float:
        return median([a - b for a, b in zip(samples[name], samples["baseline"], strict=True)])

    return OtelResult(
        baseline_us=median(samples["baseline"]),
        prometheus_us=median(samples["prometheus"]),
        otel_us=median(samples["otel"]),
        otel_hit_spans_us=median(samples["otel_hit_spans"]),
        prometheus_added_us=added("prometheus"),
        otel_added_us=added("otel"),
        otel_hit_spans_added_us=added("otel_hit_spans"),
        rounds=rounds,
    )


def run(rounds: int = 15, batch: int = 1000) -> OtelResult:
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    with LiveServer(idp.app) as server:
        os.environ["BENCH_IDP_URL"] = server.url
        return asyncio.run(_run(realistic_token(idp), rounds, batch))


def table(r: OtelResult) -> list[str]:
    """The markdown section of ``python -m bench`` (and docs/benchmarks.md)."""
    met = "met" if r.otel_added_us <= TARGET_US else "**MISSED**"

    def row(label: str, us: float, added: float, target: str = "", verdict: str = "") -> str:
        return (
            f"| {label} | {us:.1f} | {r.baseline_us / us:.0%} | {added:+.1f} µs "
            f"| {target} | {verdict} |"
        )

    return [
        "### 2c. Tracing: the guarded app of 2b in process, same token (cache hit), "
        "OpenTelemetry SDK with a no-op exporter (process CPU time per request; median of "
        f"{r.rounds} interleaved rounds)",
        "",
        "| observer | µs/request | vs none | added | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| none | {r.baseline_us:.1f} | 100% | | baseline | |",
        row("`PrometheusObserver`", r.prometheus_us, r.prometheus_added_us),
        row(
            "`OpenTelemetryObserver()` (default: a hit marks the request's span)",
            r.otel_us,
            r.otel_added_us,
            f"≤ {TARGET_US:.0f} µs added",
            met,
        ),
        row(
            "`OpenTelemetryObserver(trace_cache_hits=True)`: 1 SDK span per request",
            r.otel_hit_spans_us,
            r.otel_hit_spans_added_us,
        ),
    ]


if __name__ == "__main__":
    print("\n".join(table(run())))
