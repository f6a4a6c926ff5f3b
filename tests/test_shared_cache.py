"""The shared cache (docs/operations.md "Running several workers and replicas") against a
real redis-server."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time

import pytest
from pydantic import ValidationError

from entra_guard import AuthObserver, EntraSettings
from entra_guard._shared_cache import (
    CIRCUIT_OPEN_SECONDS,
    MemoryBackend,
    RedisBackend,
    Sealer,
    SharedCache,
    build_shared_cache,
)

from ._redis import RedisServer

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ5ZXMifQ.c2lnbmF0dXJl"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Counting(AuthObserver):
    def __init__(self) -> None:
        self.degraded: list[str] = []

    def shared_cache_degraded(self, *, reason: str) -> None:
        self.degraded.append(reason)


@pytest.fixture(scope="module")
def redis_server() -> object:
    with RedisServer() as server:
        yield server


def redis_cache(url: str, namespace: str = "api-1", **kw: object) -> SharedCache:
    return SharedCache(namespace, RedisBackend(url, timeout=0.2), **kw)  # type: ignore[arg-type]


async def test_in_process_cache_computes_once_for_concurrent_callers() -> None:
    cache = SharedCache("api", MemoryBackend())
    calls = 0

    async def compute() -> tuple[object, float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return ["g1", "g2"], 60

    results = await asyncio.gather(
        *(cache.get_or_compute("groups", "t/o", compute) for _ in range(100))
    )
    assert calls == 1 and all(r == ["g1", "g2"] for r in results)
    assert await cache.get_or_compute("groups", "t/o", compute) == ["g1", "g2"] and calls == 1
    await cache.aclose()


async def test_without_a_backend_the_l1_is_the_whole_cache() -> None:
    now = [0.0]
    cache = SharedCache("api", None, l1_ttl=1.0, clock=lambda: now[0])
    calls = 0

    async def compute() -> tuple[object, float]:
        nonlocal calls
        calls += 1
        return calls, 600

    assert await cache.get_or_compute("groups", "k", compute) == 1
    now[0] = 500.0  # far beyond the L1 TTL, within the entry's own TTL
    assert await cache.get_or_compute("groups", "k", compute) == 1
    now[0] = 601.0
    assert await cache.get_or_compute("groups", "k", compute) == 2
    await cache.aclose()


async def test_two_workers_make_one_computation_across_the_fleet(redis_server: RedisServer) -> None:
    workers = [redis_cache(redis_server.url) for _ in range(4)]
    calls = 0

    async def compute() -> tuple[object, float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # a Graph round trip
        return {"groups": ["a"]}, 60

    results = await asyncio.gather(
        *(w.get_or_compute("groups", "fleet/user", compute) for w in workers for _ in range(10))
    )
    assert calls == 1
    assert all(r == {"groups": ["a"]} for r in results)
    for worker in workers:
        await worker.aclose()


async def test_a_dead_lock_holder_costs_a_bounded_wait(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server.url, lock_wait=0.3)
    stuck = RedisBackend(redis_server.url, timeout=0.2)
    assert await stuck.acquire_lock(cache.key("groups", "dead") + ":lock", "someone-else", 30)
    started = time.monotonic()

    async def compute() -> tuple[object, float]:
        return "mine", 60

    assert await cache.get_or_compute("groups", "dead", compute) == "mine"
    assert 0.3 <= time.monotonic() - started < 2.0
    await stuck.aclose()
    await cache.aclose()


async def test_apis_on_one_redis_never_read_each_other(redis_server: RedisServer) -> None:
    first, second = redis_cache(redis_server.url, "api-A"), redis_cache(redis_server.url, "api-B")
    await first.set("groups", "same-key", ["secret-group"], 60)
    assert await second.get("groups", "same-key") is None
    assert await first.get("groups", "same-key") == ["secret-group"]
    assert first.key("groups", "k") != second.key("groups", "k")
    await first.aclose()
    await second.aclose()


async def test_sealed_entries_are_unreadable_in_redis_and_rotate(redis_server: RedisServer) -> None:
    old, new = new_key(), new_key()
    writer = redis_cache(
        redis_server.url, "api-S", sealer=Sealer.from_setting(old), sealed=frozenset({"obo"})
    )
    await writer.set("obo", "user-hash", {"access_token": TOKEN, "expires_at": 1}, 60)
    raw = [redis_server.get(k) or b"" for k in redis_server.stored_keys() if b"obo" in k]
    assert raw, "the entry reached Redis"
    for segment in TOKEN.split("."):
        assert all(segment.encode() not in value for value in raw)
    assert all(b"access_token" not in value for value in raw)
    # A replica already on the rotated key list (new first) still opens the old entry.
    rotated = redis_cache(
        redis_server.url,
        "api-S",
        sealer=Sealer.from_setting(f"{new},{old}"),
        sealed=frozenset({"obo"}),
        l1_ttl=0,
    )
    assert (await rotated.get("obo", "user-hash"))["access_token"] == TOKEN  # type: ignore[index]
    # A replica with an unrelated key sees a miss, never garbage or an error.
    stranger = redis_cache(
        redis_server.url, "api-S", sealer=Sealer.from_setting(new_key()), sealed=frozenset({"obo"})
    )
    assert await stranger.get("obo", "user-hash") is None
    for cache in (writer, rotated, stranger):
        await cache.aclose()


async def test_tokens_in_redis_need_an_encryption_key(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="ENTRA_CACHE_ENCRYPTION_KEY"):
        redis_cache(redis_server.url, sealed=frozenset({"obo"}))


async def test_a_hanging_redis_costs_at_most_the_timeout_then_the_circuit_opens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = Counting()
    with RedisServer() as server:
        cache = SharedCache(
            "api-H", RedisBackend(server.url, timeout=0.05), observer=observer, l1_ttl=0
        )
        await cache.set("groups", "warm", ["x"], 60)  # connection established
        server.pause()
        try:
            calls = 0

            async def compute() -> tuple[object, float]:
                nonlocal calls
                calls += 1
                return ["computed"], 60

            with caplog.at_level(logging.WARNING, logger="entra_guard.cache"):
                started = time.monotonic()
                assert await cache.get_or_compute("groups", "u1", compute) == ["computed"]
                first = time.monotonic() - started
                started = time.monotonic()
                results = await asyncio.gather(
                    *(cache.get_or_compute("groups", f"u{i}", compute) for i in range(2, 50))
                )
                rest = time.monotonic() - started
            assert first < 0.5, first  # one timeout (50 ms), not a hang
            assert rest < 0.2, rest  # circuit open: no more waiting on Redis
            assert all(r == ["computed"] for r in results)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "in-process" in warnings[0].getMessage()
            assert len(observer.degraded) == 1
        finally:
            server.resume()
        await cache.aclose()


async def test_redis_restarted_mid_load_recovers_without_errors() -> None:
    now = [0.0]
    with RedisServer() as server:
        first = SharedCache("api-R", RedisBackend(server.url, timeout=0.1), clock=lambda: now[0])
        second = SharedCache("api-R", RedisBackend(server.url, timeout=0.1), clock=lambda: now[0])
        calls = 0

        async def compute() -> tuple[object, float]:
            nonlocal calls
            calls += 1
            return ["g"], 600

        assert await first.get_or_compute("groups", "before", compute) == ["g"]
        server.restart()  # data gone, connections broken
        for i in range(20):  # every call answers, Redis or not
            assert await first.get_or_compute("groups", f"during-{i}", compute) == ["g"]
        now[0] += CIRCUIT_OPEN_SECONDS + 0.1  # the circuit closes again
        calls = 0
        assert await first.get_or_compute("groups", "after", compute) == ["g"]
        assert await second.get_or_compute("groups", "after", compute) == ["g"]
        assert calls == 1, "shared again after the restart"
        await first.aclose()
        await second.aclose()


def test_settings_refuse_bad_cache_configuration() -> None:
    base = {"tenant_id": "11111111-1111-1111-1111-111111111111", "client_id": "api"}
    with pytest.raises(ValidationError, match="ENTRA_CACHE_URL"):
        EntraSettings(**base, cache_url="http://127.0.0.1:6379")
    with pytest.raises(ValidationError, match="ENTRA_CACHE_ENCRYPTION_KEY"):
        EntraSettings(**base, cache_encryption_key="not base64!")
    with pytest.raises(ValidationError, match="32 bytes"):
        EntraSettings(**base, cache_encryption_key=base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError, match="ENTRA_CACHE_ENCRYPTION_KEY is required"):
        EntraSettings(**base, cache_url="redis://127.0.0.1:1/0")
    ok = EntraSettings(**base, cache_url="redis://127.0.0.1:1/0", cache_encryption_key=new_key())
    assert "redis" not in repr(ok) or "**" in repr(ok)  # the URL may hold a password


async def test_build_shared_cache_defaults_to_in_process() -> None:
    cache = build_shared_cache(
        "api", url=None, encryption_key=None, timeout=0.05, l1_ttl=5, sealed=frozenset({"obo"})
    )
    assert not cache.shared
    await cache.set("obo", "k", {"v": 1}, 60)
    assert await cache.get("obo", "k") == {"v": 1}
    await cache.aclose()
