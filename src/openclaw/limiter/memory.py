"""The embedded store: buckets in a bounded in-process dict.

Compiled with mypyc (see ``setup.py``); keep it strictly typed and free of dynamic tricks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

from openclaw.clock import Clock, monotonic
from openclaw.limiter.base import Limits, TakeRequest, as_limits, check_ttl
from openclaw.limiter.core import (
    NEVER,
    BucketParams,
    BucketState,
    Decision,
    check_cost,
    refill_and_take,
)

DEFAULT_MAX_BUCKETS: Final = 1_000_000
# Evicting a slice of the store at a time, not one bucket per new key, keeps the cost of
# walking the idle end (past the holes earlier deletions left there) amortised.
_EVICT_FRACTION: Final = 64
_EVICT_SCAN_FACTOR: Final = 4
_EVICT_SCAN_MIN: Final = 256


#: A stored key: when it expires (all its buckets full again, or its ``ttl`` after the write
#: if sooner: eviction goes by it), the buckets' states, and when a ``ttl`` forgets it (past
#: it the entry is no entry; None without one, a singleton that costs no float per entry: an
#: entry past full still decides by its states, as Redis's does until its expiry, even when
#: the key's limits changed). Tuples of floats and None, which the garbage collector does not
#: track.
_Entry = tuple[float, tuple[BucketState, ...], float | None]


class MemoryStore:
    """Bounded, thread-safe, asyncio-friendly (nothing here waits on I/O).

    An expired entry (its buckets full again) decides exactly like a missing one, so expiry
    needs no sweeper: entries are reclaimed when the bound is reached, about 1/64 of it at a
    time. An eviction looks at the oldest entries and drops the expired ones first, then
    those nearest to full (forgetting a bucket that is almost full costs its client almost
    nothing; forgetting a drained one would hand a burst back). The survivors move to the
    back, so the next eviction looks at other entries.
    """

    def __init__(
        self,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        clock: Clock = monotonic,
    ) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be >= 1")
        self._max = max_buckets
        self._clock = clock
        self._buckets: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def max_buckets(self) -> int:
        return self._max

    def take(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision:
        if isinstance(limits, BucketParams):
            lims: tuple[BucketParams, ...] = (limits,)
        else:
            lims = as_limits(limits)
        if not (cost >= 0.0 and cost < NEVER):
            cost = check_cost(cost)  # raises with the reason
        return self._take(key, lims, float(cost), self._clock(), check_ttl(ttl))

    def _take(
        self, key: str, lims: tuple[BucketParams, ...], cost: float, now: float, ttl: float | None
    ) -> Decision:
        buckets = self._buckets
        lock = self._lock
        lock.acquire()
        try:
            entry = buckets.get(key)
            states: tuple[BucketState, ...] = ()
            if entry is not None:
                forget = entry[2]
                if forget is None or forget > now:
                    states = entry[1]
            new_states, decision = refill_and_take(states, lims, now=now, cost=cost)
            if new_states is not None:
                if entry is None and len(buckets) >= self._max:
                    self._evict()
                keep = decision.reset_after
                if ttl is not None and ttl < keep:
                    buckets[key] = (now + ttl, new_states, now + ttl)
                else:
                    buckets[key] = (now + keep, new_states, None)
        finally:
            lock.release()
        return decision

    def take_many(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        now = self._clock()
        return [self._take(r.key, r.limits, r.cost, now, r.ttl) for r in requests]

    async def atake(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision:
        return self.take(key, limits, cost=cost, ttl=ttl)

    async def atake_many(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        return self.take_many(requests)

    def reset(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()

    async def aclose(self) -> None:
        self.close()

    def _evict(self) -> None:
        # Sorting by expiry time puts the expired entries first, then the nearest to full.
        batch = max(1, self._max // _EVICT_FRACTION)
        window = max(batch * _EVICT_SCAN_FACTOR, _EVICT_SCAN_MIN)
        oldest: list[tuple[float, str]] = []
        for key, entry in self._buckets.items():
            oldest.append((entry[0], key))
            if len(oldest) >= window:
                break
        oldest.sort()
        for _, key in oldest[:batch]:
            del self._buckets[key]
        for _, key in oldest[batch:]:
            self._buckets[key] = self._buckets.pop(key)
        self.evictions += min(batch, len(oldest))
