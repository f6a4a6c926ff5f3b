"""The verified-token cache, bounded by entries *and* by bytes (docs/benchmarks.md).

A cached principal costs memory in proportion to its token (a 200-group token
is ~12 KB of text and ~31 KB of Python objects), so a count bound alone let
4,096 large tokens hold ~125 MiB. Each entry is
charged an estimate from its token's length, measured on real principals
(``ENTRY_BYTES_PER_TOKEN_CHAR``), and the least recently used entries go when
either bound is reached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")

#: hashlib releases the GIL for inputs of 2048 bytes and more; for a 2-3 KB token the
#: release and re-acquire cost more than the hashing (measured: ~5 us vs ~2 us per
#: request inside a FastAPI app), so the token is fed in smaller slices.
_DIGEST_SLICE = 2000
_sha256 = hashlib.sha256


def digest_bytes(data: bytes) -> bytes:
    """SHA-256 of a token's bytes: the key of every per-token cache (tokens are not kept).

    Every request with a token pays this, cache hits included: the usual sizes (an Entra
    token is 1-4 KB) are fed inline, as a helper call costs more per request in a running
    app than in a loop (docs/benchmarks.md, part 2b)."""
    if len(data) < _DIGEST_SLICE:
        return _sha256(data).digest()
    state = _sha256(data[:_DIGEST_SLICE])
    if len(data) <= 2 * _DIGEST_SLICE:
        state.update(data[_DIGEST_SLICE:])
    else:
        _feed(state, data, _DIGEST_SLICE)
    return state.digest()


def token_digest(token: str) -> bytes:
    """``digest_bytes`` of an ASCII token string (the verified-token cache key)."""
    return digest_bytes(token.encode("ascii"))


def _feed(state: hashlib._Hash, data: bytes, start: int) -> None:
    """``data[start:]`` into ``state``, in slices that keep the GIL (above): slices of
    bytes, not of a memoryview, as a 2 KB copy costs less than the views."""
    for begin in range(start, len(data), _DIGEST_SLICE):
        state.update(data[begin : begin + _DIGEST_SLICE])


#: Measured (deep size of key, deadline and principal): a 1.2 KB minimal token takes ~3.1 KB,
#: a 2.6 KB realistic one (27 claims, 20 groups) ~9.0 KB, a 12 KB one with 200 groups ~31.8 KB.
#: ``2048 + 3 x length`` is above each of them (tests/test_validation_findings.py checks it).
ENTRY_BYTES_PER_TOKEN_CHAR = 3
ENTRY_FIXED_BYTES = 2048
#: Average budget per entry: ``token_cache_size`` entries of this size at most.
BUDGET_BYTES_PER_ENTRY = 10 * 1024


def entry_cost(token_length: int) -> int:
    """Estimated bytes of one cache entry, from the length of its token."""
    return ENTRY_FIXED_BYTES + ENTRY_BYTES_PER_TOKEN_CHAR * token_length


class VerifiedTokenCache(Generic[V]):
    """LRU map ``sha256(token) -> value``; entries expire at their own deadline."""

    __slots__ = ("_data", "max_bytes", "max_entries", "total_bytes")

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_entries * BUDGET_BYTES_PER_ENTRY if max_bytes is None else max_bytes
        self.total_bytes = 0
        #: key -> (expires_at, cost, value)
        self._data: OrderedDict[bytes, tuple[float, int, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes, now: float) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            self.pop(key)
            return None
        self._data.move_to_end(key)
        return item[2]

    def set(self, key: bytes, value: V, expires_at: float, token_length: int) -> None:
        cost = entry_cost(token_length)
        max_entries, max_bytes = self.max_entries, self.max_bytes
        if max_entries <= 0 or cost > max_bytes:
            return
        data = self._data
        previous = data.pop(key, None)
        total = self.total_bytes + cost - (0 if previous is None else previous[1])
        data[key] = (expires_at, cost, value)
        while len(data) > max_entries or total > max_bytes:
            total -= data.popitem(last=False)[1][1]
        self.total_bytes = total

    def pop(self, key: bytes) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.total_bytes -= item[1]

    def clear(self) -> None:
        self._data.clear()
        self.total_bytes = 0
