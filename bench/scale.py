"""Benchmark 3: scale. Memory stays bounded by the configured cache sizes and
latency does not grow with the number of tokens / users seen.

Runs in its own process (``python -m bench.scale``, JSON on stdout) so its
resident set is not mixed with the other benchmarks'. The peak RSS (VmHWM,
reset through /proc/self/clear_refs before each part) is reported as growth
over the process's resident set just before the part started, after every
token was minted and the fakes were set up.

- tokens: 10,000 distinct valid tokens (realistic: ~25 claims, 20 groups),
  each authenticated once (all cache misses), then the verified-token cache is
  probed with hits early (1,000 tokens seen) and late (10,000 seen);
- overage: 10,000 distinct users whose tokens carry the groups overage
  marker, each resolved through the fake Microsoft Graph over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from entra_guard import EntraAuth
from entra_guard.testing import FakeEntraID, LiveServer

from .common import CLIENT_ID, TENANT_ID, median, peak_rss_kib, realistic_token, rss_kib

CHUNK = 1000
#: Concurrent overage look-ups (a server's in-flight requests).
CONCURRENCY = 4
GRAPH_SECRET = "bench-secret"


@dataclass
class PartResult:
    items: int
    cache_size: int
    cache_entries: int
    base_rss_kib: int
    peak_growth_kib: int
    #: resident set growth after each chunk of CHUNK items (KiB over base)
    growth_by_chunk_kib: list[int]
    #: median µs per item (each item timed alone) for each chunk
    us_by_chunk: list[float]
    #: cache-hit µs early / late (tokens part only)
    hit_us_early: float = 0.0
    hit_us_late: float = 0.0
    graph_lookups: int = 0
    seconds: float = 0.0

    @property
    def latency_growth(self) -> float:
        """Median of the last 3 chunks over the median of the first 3 (1.0: flat)."""
        return median(self.us_by_chunk[-3:]) / median(self.us_by_chunk[:3])


@dataclass
class ScaleResult:
    tokens: PartResult
    overage: PartResult | None
    overage_note: str


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class _EveryoneInGroups(dict[str, list[str]]):
    """Fake Graph memberships: every user is in the same groups (O(1) fake memory)."""

    def __init__(self, groups: list[str]) -> None:
        super().__init__()
        self._groups = groups

    def get(self, key: str, default: Any = None) -> Any:
        return self._groups


async def _timed_hits(auth: EntraAuth, tokens: list[str], rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for token in tokens:
            await auth.authenticate(token)
        samples.append((time.perf_counter_ns() - started) / len(tokens) / 1000)
    return median(samples)


async def _tokens_part(idp: FakeEntraID, url: str, count: int, cache_size: int) -> PartResult:
    tokens = [realistic_token(idp) for _ in range(count)]
    auth = EntraAuth(idp.settings(url, token_cache_size=cache_size))
    try:
        assert await auth.warm_up()
        gc.collect()
        base = rss_kib()
        _reset_peak()
        started = time.perf_counter()
        growth: list[int] = []
        per_chunk: list[float] = []
        hit_early = 0.0
        for offset in range(0, count, CHUNK):
            chunk = tokens[offset : offset + CHUNK]
            timings = []
            for token in chunk:
                token_started = time.perf_counter_ns()
                await auth.authenticate(token)
                timings.append(time.perf_counter_ns() - token_started)
            per_chunk.append(median(timings) / 1000)
            growth.append(rss_kib() - base)
            if offset == 0:
                hit_early = await _timed_hits(auth, chunk)
        hit_late = await _timed_hits(auth, tokens[-CHUNK:])
        seconds = time.perf_counter() - started
        return PartResult(
            items=count,
            cache_size=cache_size,
            cache_entries=len(auth._verified),
            base_rss_kib=base,
            peak_growth_kib=peak_rss_kib() - base,
            growth_by_chunk_kib=growth,
            us_by_chunk=per_chunk,
            hit_us_early=hit_early,
            hit_us_late=hit_late,
            seconds=seconds,
        )
    finally:
        await auth.aclose()


async def _overage_part(
    idp: FakeEntraID, url: str, graph_url: str, graph: Any, count: int, cache_size: int
) -> PartResult:
    tokens = [
        idp.token(idp.claims(overage=True, object_id=str(uuid.uuid4()))) for _ in range(count)
    ]
    auth = EntraAuth(
        idp.settings(
            url,
            graph_url=graph_url,
            client_secret=GRAPH_SECRET,
            groups_cache_size=cache_size,
            token_cache_size=cache_size,
        )
    )

    timings: list[int] = []

    async def resolve(token: str) -> int:
        started = time.perf_counter_ns()
        principal = await auth.authenticate(token)
        assert principal.groups_overage
        groups = await auth.group_ids(principal)
        timings.append(time.perf_counter_ns() - started)
        return len(groups)

    try:
        assert await auth.warm_up()
        await resolve(idp.token(idp.claims(overage=True)))  # app token fetched once
        graph.reset_counters()
        gc.collect()
        base = rss_kib()
        _reset_peak()
        started = time.perf_counter()
        growth: list[int] = []
        per_chunk: list[float] = []
        for offset in range(0, count, CHUNK):
            chunk = tokens[offset : offset + CHUNK]
            timings.clear()
            for batch in range(0, len(chunk), CONCURRENCY):
                sizes = await asyncio.gather(
                    *(resolve(t) for t in chunk[batch : batch + CONCURRENCY])
                )
                assert all(size == 20 for size in sizes), sizes
            per_chunk.append(median(timings) / 1000)
            graph.forget_hits()  # the fake's per-path hit counter is not the API's memory
            growth.append(rss_kib() - base)
        seconds = time.perf_counter() - started
        return PartResult(
            items=count,
            cache_size=cache_size,
            cache_entries=len(auth.graph._groups),
            base_rss_kib=base,
            peak_growth_kib=peak_rss_kib() - base,
            growth_by_chunk_kib=growth,
            us_by_chunk=per_chunk,
            graph_lookups=graph.lookups(),
            seconds=seconds,
        )
    finally:
        await auth.aclose()


class _GraphHandle:
    """The fake Graph, if this checkout has it (``entra_guard.testing``)."""

    def __init__(self, idp: FakeEntraID) -> None:
        from entra_guard.testing import FakeGraph

        self.fake = FakeGraph(idp)
        self.fake.memberships = _EveryoneInGroups([str(uuid.uuid4()) for _ in range(20)])
        idp.confidential_clients[idp.client_id] = GRAPH_SECRET

    def reset_counters(self) -> None:
        self.fake.membership_lookups = 0
        self.fake.hits.clear()

    def forget_hits(self) -> None:
        self.fake.hits.clear()

    def lookups(self) -> int:
        return self.fake.membership_lookups


async def _main(tokens: int, users: int, cache_size: int, groups_cache_size: int) -> ScaleResult:
    idp = FakeEntraID(tenant_id=TENANT_ID, client_id=CLIENT_ID)
    with LiveServer(idp.app) as login:
        token_part = await _tokens_part(idp, login.url, tokens, cache_size)
        try:
            graph = _GraphHandle(idp)
        except ImportError:
            return ScaleResult(token_part, None, "pending: no fake Graph in this checkout")
        with LiveServer(graph.fake.app) as graph_server:
            overage = await _overage_part(
                idp, login.url, graph_server.url, graph, users, groups_cache_size
            )
    return ScaleResult(token_part, overage, "")


def run(
    tokens: int = 10_000, users: int = 10_000, cache_size: int = 4096, groups_cache_size: int = 4096
) -> ScaleResult:
    return asyncio.run(_main(tokens, users, cache_size, groups_cache_size))


def from_json(text: str) -> ScaleResult:
    data = json.loads(text)
    overage = data["overage"]
    return ScaleResult(
        tokens=PartResult(**data["tokens"]),
        overage=PartResult(**overage) if overage else None,
        overage_note=data["overage_note"],
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(asdict(run(*args))))
