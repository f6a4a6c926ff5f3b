"""A bounded, expiring LRU map and a single-flight helper.

Everything an attacker can make us remember (tokens, users, tenants) goes
through ``BoundedTTLCache``, so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedTTLCache(Generic[K, V]):
    """LRU map whose entries also expire at their own deadline (monotonic seconds)."""

    __slots__ = ("_clock", "_data", "maxsize")

    def __init__(self, maxsize: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, now: float | None = None) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= (self._clock() if now is None else now):
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    def set(self, key: K, value: V, expires_at: float) -> None:
        if self.maxsize <= 0:
            return
        self._data[key] = (expires_at, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class SingleFlight(Generic[K, V]):
    """Coalesce concurrent calls per key: N callers, one execution.

    The shared work runs in its own task, so a caller that is cancelled (client
    disconnected) neither cancels the work for the others nor holds a lock
    across network I/O. The number of keys in flight is bounded by the caller.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: the awaiting callers got it

    async def aclose(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
