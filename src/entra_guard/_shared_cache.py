"""One cache for every worker and replica: an in-process L1 in front of a shared backend.

What is shared (docs/operations.md "Running several workers and replicas"): groups-overage
memberships, Graph app tokens, on-behalf-of tokens (sealed with AES-GCM) and,
optionally, metadata documents. The verified-token cache stays per process.

Rules:
- every entry has a TTL; keys are namespaced by the API's client id and a
  schema version, so two APIs on one Redis never read each other's entries;
- a shared look-up is single-flight across the fleet: a short lock per key
  (``SET NX PX``); waiters poll for the holder's result with a bounded wait
  and compute it themselves if the holder dies;
- the backend is never trusted to be up: each call has a short timeout, and
  an error opens a circuit for a few seconds during which the process works
  from its own L1 (one WARNING per outage, one INFO on recovery). A failing
  backend can cost latency, never a 500 and never a wrong decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._cache import BoundedTTLCache, SingleFlight
from ._observer import AuthObserver
from ._settings import EntraSettings, encryption_keys

logger = logging.getLogger("entra_guard.cache")

#: Bump when the stored format changes: old entries are then simply not found.
SCHEMA_VERSION = "1"
#: How long the circuit stays open after a backend failure, s.
CIRCUIT_OPEN_SECONDS = 5.0
#: Lifetime of a fleet-wide single-flight lock, s (the holder's work must fit in it).
LOCK_TTL = 15.0
#: Longest a waiter polls for the lock holder's result before computing it itself, s.
MAX_LOCK_WAIT = 12.0
#: Pause between polls of a waiter, s.
POLL_INTERVAL = 0.05
#: Entries kept in the in-process L1 (and in the fallback while the backend is down).
L1_SIZE = 10_000
_SEALED_PREFIX = b"eg1"
_NONCE_BYTES = 12


class BackendError(Exception):
    """The shared backend failed or timed out; the cache degrades to in-process."""


class CacheBackend(Protocol):
    """What a shared store must offer. Values are opaque bytes; every entry has a TTL."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def acquire_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take ``key`` for ``ttl`` seconds if nobody holds it (``SET NX PX``)."""
        ...

    async def release_lock(self, key: str, owner: str) -> None:
        """Release ``key`` only if ``owner`` still holds it."""
        ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """The in-process backend: what a single worker gets without ``ENTRA_CACHE_URL``."""

    def __init__(self, maxsize: int = L1_SIZE, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._data: BoundedTTLCache[str, bytes] = BoundedTTLCache(maxsize, clock=clock)

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._data.set(key, value, self._clock() + ttl)

    async def delete(self, key: str) -> None:
        self._data.pop(key)

    async def acquire_lock(self, key: str, owner: str, ttl: float) -> bool:
        if self._data.get(key) is not None:
            return False
        self._data.set(key, owner.encode(), self._clock() + ttl)
        return True

    async def release_lock(self, key: str, owner: str) -> None:
        if self._data.get(key) == owner.encode():
            self._data.pop(key)

    async def aclose(self) -> None:
        self._data.clear()


#: Deletes the lock only when its value is still ours (a holder that overran its TTL
#: must not release somebody else's lock).
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisBackend:
    """Redis (or Valkey) through redis-py's asyncio client (extra ``entra-guard[redis]``).

    TLS (``rediss://``), user and password come from the URL. Every call is
    bounded by ``timeout`` seconds; any failure surfaces as ``BackendError``.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        try:
            from redis import asyncio as redis_asyncio
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(
                "ENTRA_CACHE_URL needs the redis extra: pip install 'entra-guard[redis]'"
            ) from exc
        self._timeout = timeout
        self._client: Any = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=64,
        )
        self._release: Any = self._client.register_script(_RELEASE_SCRIPT)

    async def _call(self, work: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await work
        except (TimeoutError, OSError) as exc:
            raise BackendError(type(exc).__name__) from None
        except Exception as exc:  # redis.RedisError and anything a broken server causes
            raise BackendError(type(exc).__name__) from None

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self._client.get(key))
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._call(self._client.set(key, value, px=max(1, int(ttl * 1000))))

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete(key))

    async def acquire_lock(self, key: str, owner: str, ttl: float) -> bool:
        return bool(
            await self._call(self._client.set(key, owner, nx=True, px=max(1, int(ttl * 1000))))
        )

    async def release_lock(self, key: str, owner: str) -> None:
        await self._call(self._release(keys=[key], args=[owner]))

    async def aclose(self) -> None:
        await self._client.aclose()


class Sealer:
    """AES-GCM for entries that hold secrets (on-behalf-of tokens).

    ``keys`` are 32-byte keys, newest first: the newest seals, every one opens,
    so keys rotate without a flush. The storage key is the associated data, so
    an entry copied under another key does not open.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        for key in keys:
            if len(key) != 32:
                raise ValueError("cache encryption keys must be 32 bytes")
        self._keys = [(hashlib.sha256(key).digest()[:4], AESGCM(key)) for key in keys]

    @classmethod
    def from_setting(cls, value: str) -> Sealer:
        """``ENTRA_CACHE_ENCRYPTION_KEY``: base64 keys, comma-separated, newest first."""
        return cls(encryption_keys(value))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        return _SEALED_PREFIX + key_id + nonce + aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes | None:
        """The plaintext, or None for an entry no current key opens (treated as a miss)."""
        if not sealed.startswith(_SEALED_PREFIX):
            return None
        body = sealed[len(_SEALED_PREFIX) :]
        key_id, nonce, ciphertext = body[:4], body[4 : 4 + _NONCE_BYTES], body[4 + _NONCE_BYTES :]
        for candidate_id, aead in self._keys:
            if candidate_id == key_id:
                try:
                    return aead.decrypt(nonce, ciphertext, context.encode())
                except InvalidTag:
                    return None
        return None


Compute = Callable[[], Awaitable[tuple[Any, float]]]


class SharedCache:
    """The door every shared piece of state goes through.

    ``await cache.get_or_compute("groups", key, compute)``: ``compute`` returns
    ``(value, ttl_seconds)``; values are JSON. Kinds listed in ``sealed`` are
    encrypted before they leave the process.
    """

    def __init__(
        self,
        namespace: str,
        backend: CacheBackend | None,
        *,
        sealer: Sealer | None = None,
        sealed: frozenset[str] = frozenset(),
        l1_ttl: float = 5.0,
        sizes: Mapping[str, int] | None = None,
        lock_wait: float = MAX_LOCK_WAIT,
        observer: AuthObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sealed and backend is not None and sealer is None:
            raise ValueError(
                "ENTRA_CACHE_ENCRYPTION_KEY is required when tokens are shared through "
                "ENTRA_CACHE_URL"
            )
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self._prefix = f"entra-guard:v{SCHEMA_VERSION}:{digest}:"
        self._backend = backend
        self._sealer = sealer
        self._sealed = sealed
        self._l1_ttl = l1_ttl
        self._lock_wait = lock_wait
        self._observer = observer or AuthObserver()
        self._clock = clock
        # The L1, one bounded map per kind: short-lived copies in front of the backend, or
        # the whole cache without one.
        self._sizes = dict(sizes or {})
        self._locals: dict[str, BoundedTTLCache[str, Any]] = {}
        self._flights: SingleFlight[str, Any] = SingleFlight()
        self._open_until: float | None = None
        self._owner = secrets.token_hex(8)

    @property
    def shared(self) -> bool:
        """True when a shared backend is configured (it may be degraded right now)."""
        return self._backend is not None

    @property
    def degraded(self) -> bool:
        return self._open_until is not None and self._clock() < self._open_until

    def key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    @property
    def pending(self) -> int:
        """Look-ups in flight in this process (callers bound it)."""
        return len(self._flights)

    def _local(self, kind: str) -> BoundedTTLCache[str, Any]:
        local = self._locals.get(kind)
        if local is None:
            size = self._sizes.get(kind, L1_SIZE)
            local = self._locals[kind] = BoundedTTLCache(size, clock=self._clock)
        return local

    def forget_local(self, kind: str) -> None:
        """Drop this process's copies of one kind (the shared entries stay)."""
        self._locals.pop(kind, None)

    def peek(self, kind: str, key: str) -> Any | None:
        """The in-process copy only (no I/O): for the hot path."""
        return self._local(kind).get(self.key(kind, key))

    async def get(self, kind: str, key: str) -> Any | None:
        full = self.key(kind, key)
        local = self._local(kind).get(full)
        if local is not None:
            return local
        return await self._shared_get(kind, full)

    async def set(self, kind: str, key: str, value: Any, ttl: float) -> None:
        full = self.key(kind, key)
        self._remember(kind, full, value, ttl)
        await self._shared_set(kind, full, value, ttl)

    async def delete(self, kind: str, key: str) -> None:
        full = self.key(kind, key)
        self._local(kind).pop(full)
        backend = self._usable_backend()
        if backend is not None:
            try:
                await backend.delete(full)
            except BackendError as exc:
                self._trip(exc)

    async def get_or_compute(self, kind: str, key: str, compute: Compute) -> Any:
        """The cached value, or ``compute()``'s, computed once across the whole fleet."""
        full = self.key(kind, key)
        local = self._local(kind).get(full)
        if local is not None:
            return local
        return await self._flights.run(full, lambda: self._fleet_single_flight(kind, full, compute))

    async def aclose(self) -> None:
        await self._flights.aclose()
        self._locals.clear()
        if self._backend is not None:
            await self._backend.aclose()

    # -- fleet-wide single flight ---------------------------------------------------

    async def _fleet_single_flight(self, kind: str, full: str, compute: Compute) -> Any:
        found = await self._shared_get(kind, full)
        if found is not None:
            return found
        backend = self._usable_backend()
        if backend is None:
            return await self._compute_and_store(kind, full, compute)
        lock = f"{full}:lock"
        deadline = self._clock() + self._lock_wait
        while True:
            try:
                taken = await backend.acquire_lock(lock, self._owner, LOCK_TTL)
            except BackendError as exc:
                self._trip(exc)
                return await self._compute_and_store(kind, full, compute)
            if taken:
                try:
                    # The previous holder may have stored it between our read and our lock.
                    found = await self._shared_get(kind, full)
                    if found is not None:
                        return found
                    return await self._compute_and_store(kind, full, compute)
                finally:
                    try:
                        await backend.release_lock(lock, self._owner)
                    except BackendError as exc:
                        self._trip(exc)
            # Somebody else is computing it: wait for their result, within bounds.
            await asyncio.sleep(POLL_INTERVAL)
            found = await self._shared_get(kind, full)
            if found is not None:
                return found
            if self._clock() >= deadline or self._usable_backend() is None:
                return await self._compute_and_store(kind, full, compute)

    async def _compute_and_store(self, kind: str, full: str, compute: Compute) -> Any:
        value, ttl = await compute()
        if ttl > 0:
            self._remember(kind, full, value, ttl)
            await self._shared_set(kind, full, value, ttl)
        return value

    # -- the backend, behind its circuit ---------------------------------------------

    def _usable_backend(self) -> CacheBackend | None:
        if self._backend is None:
            return None
        if self._open_until is not None:
            if self._clock() < self._open_until:
                return None
            self._open_until = None
            # What was learnt while cut off may be stale elsewhere (a step-up on another
            # replica): start again from the shared copy.
            self._locals.clear()
            logger.info("shared cache: retrying the backend")
        return self._backend

    def _trip(self, exc: BackendError) -> None:
        if self._open_until is None:
            logger.warning(
                "shared cache unavailable (%s): working from the in-process cache for %gs",
                exc,
                CIRCUIT_OPEN_SECONDS,
            )
            self._observer.shared_cache_degraded(reason=str(exc))
        self._open_until = self._clock() + CIRCUIT_OPEN_SECONDS

    def _remember(self, kind: str, full: str, value: Any, ttl: float) -> None:
        # With a backend the L1 only bridges a few seconds; without one it is the cache.
        local_ttl = min(ttl, self._l1_ttl) if self._backend is not None else ttl
        if self._backend is not None and self.degraded:
            local_ttl = ttl  # the backend is down: this process keeps what it learnt
        if local_ttl > 0:
            self._local(kind).set(full, value, self._clock() + local_ttl)

    async def _shared_get(self, kind: str, full: str) -> Any | None:
        backend = self._usable_backend()
        if backend is None:
            return None
        try:
            raw = await backend.get(full)
        except BackendError as exc:
            self._trip(exc)
            return None
        if raw is None:
            return None
        value = self._decode(kind, full, raw)
        if value is not None and self._l1_ttl > 0:
            self._local(kind).set(full, value, self._clock() + self._l1_ttl)
        return value

    async def _shared_set(self, kind: str, full: str, value: Any, ttl: float) -> None:
        backend = self._usable_backend()
        if backend is None:
            return
        try:
            await backend.set(full, self._encode(kind, full, value), ttl)
        except BackendError as exc:
            self._trip(exc)

    def _encode(self, kind: str, full: str, value: Any) -> bytes:
        data = json.dumps(value, separators=(",", ":")).encode()
        if kind in self._sealed:
            assert self._sealer is not None  # checked in __init__
            return self._sealer.seal(data, full)
        return data

    def _decode(self, kind: str, full: str, raw: bytes) -> Any | None:
        if kind in self._sealed:
            if self._sealer is None:
                return None
            opened = self._sealer.open(raw, full)
            if opened is None:
                return None
            raw = opened
        try:
            return json.loads(raw)
        except ValueError:
            return None  # a foreign or corrupt entry is a miss, never an error


def build_shared_cache(
    namespace: str,
    *,
    url: str | None,
    encryption_key: str | None,
    timeout: float,
    l1_ttl: float,
    sealed: frozenset[str],
    sizes: Mapping[str, int] | None = None,
    observer: AuthObserver | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SharedCache:
    """The cache ``EntraAuth`` owns: in-process only without a URL (the default)."""
    backend = RedisBackend(url, timeout=timeout) if url else None
    sealer = Sealer.from_setting(encryption_key) if encryption_key else None
    return SharedCache(
        namespace,
        backend,
        sealer=sealer,
        sealed=sealed if backend is not None else frozenset(),
        l1_ttl=l1_ttl,
        sizes=sizes,
        observer=observer,
        clock=clock,
    )


#: Kinds that hold tokens: sealed before they leave the process.
SEALED_KINDS = frozenset({"obo", "graph-token"})


def shared_cache_for(
    settings: EntraSettings, observer: AuthObserver, clock: Callable[[], float]
) -> SharedCache:
    """The cache ``EntraAuth`` owns, from ``ENTRA_CACHE_*`` (docs/settings.md)."""
    url = settings.cache_url.get_secret_value() if settings.cache_url else None
    key = settings.cache_encryption_key
    return build_shared_cache(
        settings.client_id,
        url=url,
        encryption_key=key.get_secret_value() if key else None,
        timeout=settings.cache_timeout,
        l1_ttl=settings.cache_l1_ttl,
        sealed=SEALED_KINDS,
        sizes={
            "groups": settings.groups_cache_size,
            "obo": settings.obo_cache_size,
            "graph-token": 1024,
            "graph-throttle": 1024,
        },
        observer=observer,
        clock=clock,
    )
